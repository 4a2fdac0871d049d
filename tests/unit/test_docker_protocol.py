"""Contract tests: every call dockerd 20.10.24 made (shared/libnetwork/) against our models
and our driver, in the order dockerd made them, with and without evpnd restarts between."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from evpnd.config import parse
from evpnd.docker import ipam
from evpnd.docker import protocol as p
from evpnd.docker.driver import Driver
from evpnd.docker.server import dispatch
from evpnd.docker.state import StateStore
from tests.conftest import require
from tests.unit.docker_fakes import HOST, FakeKernel, Recorder

TRACE_NAME = "libnetwork/dockerd-20.10.24-remote-driver-trace.jsonl"


@pytest.fixture(scope="module")
def trace(shared_dir: Path) -> list[dict[str, Any]]:
    path = shared_dir / TRACE_NAME
    require(path.exists(), f"{path} missing")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rpcs(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in trace if r["kind"] == "rpc"]


RESPONSES: dict[str, type[p._Response]] = {
    "Activate": p.ActivateResponse,
    "GetCapabilities": p.CapabilitiesResponse,
    "CreateEndpoint": p.CreateEndpointResponse,
    "Join": p.JoinResponse,
    "EndpointOperInfo": p.OperInfoResponse,
    "IpamDriver.GetCapabilities": p.IpamCapabilitiesResponse,
    "IpamDriver.GetDefaultAddressSpaces": p.AddressSpacesResponse,
    "IpamDriver.RequestPool": p.RequestPoolResponse,
    "IpamDriver.RequestAddress": p.RequestAddressResponse,
}


def test_every_recorded_call_is_known_and_parses(trace: list[dict[str, Any]]) -> None:
    seen = set()
    for rpc in rpcs(trace):
        call = p.call_name(rpc["path"])
        assert call is not None, rpc["path"]
        seen.add(call)
        body = None if rpc["request"] is None else json.dumps(rpc["request"])
        request = p.parse_request(call, body) if p.CALLS.get(call) else None
        if rpc["request"] is not None and p.CALLS.get(call):
            assert request is not None
        # What the recorded plugin answered (and dockerd accepted) fits our models.
        response = rpc["response"]
        if "Err" in response:
            assert p.ErrorResponse.model_validate(response).Err
        elif call in RESPONSES:
            RESPONSES[call].model_validate(response)
        else:
            assert response == {}
    assert seen == {"Activate", "GetCapabilities", "CreateNetwork", "DeleteNetwork",
                    "CreateEndpoint", "DeleteEndpoint", "Join", "Leave", "EndpointOperInfo",
                    "ProgramExternalConnectivity", "RevokeExternalConnectivity",
                    *(f"IpamDriver.{c}" for c in ("GetCapabilities", "GetDefaultAddressSpaces",
                                                  "RequestPool", "ReleasePool", "RequestAddress",
                                                  "ReleaseAddress"))}


def test_generic_options_and_ip_data(trace: list[dict[str, Any]]) -> None:
    first = next(r for r in rpcs(trace) if r["path"] == "/NetworkDriver.CreateNetwork")
    request = p.parse_request("CreateNetwork", json.dumps(first["request"]))
    assert isinstance(request, p.CreateNetworkRequest)
    assert request.generic_options() == {"VtepDev": "lo", "s4.vni": "4244"}
    assert request.IPv4Data[0].Gateway == "10.254.44.1/24"
    assert request.IPv4Data[0].Pool == "10.254.44.0/24"


def test_malformed_requests() -> None:
    with pytest.raises(p.ProtocolError, match="not JSON"):
        p.parse_request("Join", b"{")
    with pytest.raises(p.ProtocolError, match="EndpointID"):
        p.parse_request("Join", b'{"NetworkID": "n"}')
    with pytest.raises(p.ProtocolError, match="JSON object"):
        p.parse_request("Leave", b"[]")
    assert p.parse_request("GetCapabilities", b"") is None
    assert p.call_name("/NetworkDriver.Bogus") is None
    assert p.call_name("/Plugin.Activate") == "Activate"


def test_discovery_calls_are_accepted() -> None:
    request = p.parse_request("DiscoverNew", b'{"DiscoveryType": 1, "DiscoveryData": {}}')
    assert isinstance(request, p.DiscoveryRequest)


# ---------------------------------------------------------------------------
# Replay through the driver


class Ours:
    """What our IPAM answered in place of the recorded plugin: its pool ids and addresses,
    by the recorded ones, so the calls that follow carry ours (as dockerd's would)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def learn(self, rpc: dict[str, Any], answer: dict[str, Any]) -> None:
        recorded = rpc["response"]
        if rpc["path"] == "/IpamDriver.RequestPool":
            self.names[recorded["PoolID"]] = answer["PoolID"]
        if rpc["path"] == "/IpamDriver.RequestAddress":
            self.names[recorded["Address"]] = answer["Address"]
            self.names[recorded["Address"].split("/")[0]] = answer["Address"].split("/")[0]

    def rename(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.rename(v) for k, v in value.items()}
        return self.names.get(value, value) if isinstance(value, str) else value


def _replay_body(rpc: dict[str, Any], vnis: dict[str, int], ours: Ours) -> str | None:
    """The recorded body; CreateNetwork gets evpnd options (the recorded plugin took any),
    RequestPool no --ipam-opt (ours takes none), and pool ids and addresses are ours.

    One VNI per network; run3's network uses gateway=local.
    """
    request = rpc["request"]
    if request is None:
        return None
    request = ours.rename(json.loads(json.dumps(request)))
    if rpc["path"] == "/NetworkDriver.CreateNetwork":
        vni = vnis.setdefault(request["NetworkID"], 4240 + len(vnis) + 1)
        options = {"VxlanId": str(vni)}
        if rpc["run"] == "run3-gateway-ok":
            options["gateway"] = "local"
        request["Options"][p.GENERIC_OPTIONS] = options
    if rpc["path"] == "/IpamDriver.RequestPool":
        request["Options"] = {}
    return json.dumps(request)


async def _replay(trace: list[dict[str, Any]], tmp_path: Path, restart_between: bool) -> None:
    kernel = FakeKernel()
    recorder = Recorder()
    config = parse(HOST)
    store = StateStore(tmp_path, "evpn")

    def fresh() -> Driver:
        return Driver(plugin="evpn", host=lambda: config, kernel=kernel, store=store,
                      listener=recorder)

    driver = fresh()
    vnis: dict[str, int] = {}
    ours = Ours()
    for rpc in rpcs(trace):
        if restart_between:
            driver = fresh()
            await driver.recover()
        status, answer = await dispatch(driver, rpc["path"], _replay_body(rpc, vnis, ours))
        where = f"{rpc['run']} {rpc['path']}"
        assert status == 200 and "Err" not in answer and "Error" not in answer, (where, answer)
        ours.learn(rpc, answer)
        call = p.call_name(rpc["path"])
        if call == "Activate":
            assert answer == {"Implements": ["NetworkDriver", "IpamDriver"]}
        if call == "IpamDriver.RequestAddress":
            gateway = rpc["request"]["Options"] is not None
            # The gateway dockerd asked for; a container's address: the first of this
            # host's block (nothing else in the pool, no fabric).
            gw = ip_address("10.254.47.1")
            mine = ipam.choose_address(ip_network("10.254.47.0/24"), None, me=config.vtep.address,
                                       taken={gw}, shared={gw}, claims=())
            assert answer["Address"] == ("10.254.47.1/24" if gateway else f"{mine}/24")
        if call == "GetCapabilities":  # what run1's plugin answered; run6 shows "global" fails
            assert answer == {"Scope": "local", "ConnectivityScope": "local"}
        if call == "Join":
            assert answer["InterfaceName"]["DstPrefix"] == "eth"
            assert answer["InterfaceName"]["SrcName"] in kernel.table
        if call == "CreateEndpoint":
            assert answer["Interface"]["MacAddress"].startswith("02:42:")
    # Run5's first network failed by injection in the recording (ours worked) and its
    # second was never removed: `docker network rm` for both, then nothing may be left.
    left = sorted(driver.state.networks)
    assert len(left) == 2
    for network_id in left:
        assert await dispatch(driver, "/NetworkDriver.DeleteNetwork",
                              json.dumps({"NetworkID": network_id})) == (200, {})
    assert kernel.foreign() == set()
    assert store.load().networks == {} and store.load().endpoints == {}
    assert store.load().pools == {}  # run4's pool and addresses all released
    added = [i for k, i in recorder.events if k == "endpoint_added"]
    removed = [i for k, i in recorder.events if k == "endpoint_removed"]
    assert {e.endpoint_id for e in added} == {e.endpoint_id for e in removed}
    assert len(added) >= 5  # runs 1-5 each joined at least once (run3 three times)


async def test_replay_every_recorded_sequence(trace: list[dict[str, Any]], tmp_path: Path) -> None:
    await _replay(trace, tmp_path, restart_between=False)


async def test_replay_with_a_restart_between_every_call(
    trace: list[dict[str, Any]], tmp_path: Path
) -> None:
    await _replay(trace, tmp_path, restart_between=True)


async def test_join_answers_the_networks_gateway(trace: list[dict[str, Any]],
                                                 tmp_path: Path) -> None:
    driver = Driver(plugin="evpn", host=lambda: parse(HOST), kernel=FakeKernel())
    run3 = [r for r in rpcs(trace) if r["run"] == "run3-gateway-ok"]
    vnis: dict[str, int] = {}
    for rpc in run3[:2]:  # CreateNetwork, CreateEndpoint
        await dispatch(driver, rpc["path"], _replay_body(rpc, vnis, Ours()))
    _, answer = await dispatch(driver, run3[2]["path"], _replay_body(run3[2], vnis, Ours()))
    assert answer["Gateway"] == "10.254.46.1" == run3[2]["response"]["Gateway"]
    assert "GatewayIPv6" not in answer  # empty fields are left out
