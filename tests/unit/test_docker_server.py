"""The plugin's HTTP server on a unix socket in a temporary directory, spoken to like dockerd."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import aiohttp
import pytest

from evpnd.config import parse
from evpnd.docker.driver import Driver
from evpnd.docker.protocol import CONTENT_TYPE, GENERIC_OPTIONS
from evpnd.docker.server import PluginServer, write_spec
from tests.unit.docker_fakes import HOST, FakeKernel

ACCEPT = {"Accept": "application/vnd.docker.plugins.v1.2+json"}  # what dockerd 20.10 sends


@pytest.fixture
async def served(tmp_path: Path):
    driver = Driver(plugin="evpn", host=lambda: parse(HOST), kernel=FakeKernel())
    server = PluginServer(driver, tmp_path / "plugins" / "evpn.sock")
    await server.start()
    connector = aiohttp.UnixConnector(path=str(server.socket_path))
    async with aiohttp.ClientSession(connector=connector, headers=ACCEPT) as session:
        yield server, session
    await server.stop()


async def post(session: aiohttp.ClientSession, call: str, body: object = None):
    data = b"" if body is None else json.dumps(body).encode()
    async with session.post(f"http://plugin{call}", data=data) as response:
        return response.status, response.headers["Content-Type"], await response.json(
            content_type=None)


async def test_calls_over_the_socket_with_keepalive(served) -> None:
    server, session = served
    assert await post(session, "/Plugin.Activate") == (
        200, CONTENT_TYPE, {"Implements": ["NetworkDriver", "IpamDriver"]})
    assert (await post(session, "/NetworkDriver.GetCapabilities"))[2] == {
        "Scope": "local", "ConnectivityScope": "local"}
    status, _, answer = await post(session, "/NetworkDriver.CreateNetwork", {
        "NetworkID": "n1", "Options": {GENERIC_OPTIONS: {"VxlanId": "abc"}}, "IPv4Data": []})
    assert status == 200 and answer == {"Err": "evpnd: -o VxlanId=abc: not an integer"}
    status, _, answer = await post(session, "/NetworkDriver.CreateNetwork", {
        "NetworkID": "n1", "Options": {GENERIC_OPTIONS: {"VxlanId": "9"}},
        "IPv4Data": [{"Pool": "10.9.0.0/24", "Gateway": "10.9.0.1/24"}]})
    assert (status, answer) == (200, {})
    for call in ("DiscoverNew", "DiscoverDelete"):
        assert (await post(session, f"/NetworkDriver.{call}", {"DiscoveryType": 1}))[2] == {}
    assert server.calls == 6


async def test_bad_requests(served) -> None:
    _, session = served
    status, _, answer = await post(session, "/IpamDriver.Bogus", {})
    assert status == 404 and "unknown plugin call" in answer["Err"]
    # An IPAM refusal is an `Error` field: what libnetwork's remote IPAM reads.
    status, _, answer = await post(session, "/IpamDriver.RequestPool", {})
    assert status == 200 and "needs --subnet" in answer["Error"] and "Err" not in answer
    status, _, answer = await post(session, "/IpamDriver.RequestAddress", {})
    assert status == 400 and "PoolID" in answer["Err"]
    status, _, answer = await post(session, "/NetworkDriver.Join", {"NetworkID": "x"})
    assert status == 400 and "EndpointID" in answer["Err"]
    status, _, answer = await post(session, "/NetworkDriver.AllocateNetwork", {})
    assert status == 200 and "swarm" in answer["Err"]


async def test_stale_socket_is_replaced_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "evpn.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    server = PluginServer(Driver(plugin="evpn", host=lambda: parse(HOST), kernel=FakeKernel()),
                          path)
    await server.start()
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    await server.stop()
    assert not path.exists()


async def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "evpn.sock"
    path.write_text("not a socket")
    server = PluginServer(Driver(plugin="evpn", host=lambda: parse(HOST), kernel=FakeKernel()),
                          path)
    with pytest.raises(FileExistsError):
        await server.start()
    assert path.read_text() == "not a socket"


def test_spec_file(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "specs", "evpn", "/tmp/x/evpn.sock")
    assert spec.read_text() == "unix:///tmp/x/evpn.sock\n"
