"""The IPAM driver and the rebuild from dockerd's view, against a real dockerd (Debian 20.10).

The fabric is a fixed view the test sets (`StaticFabric`: the claims a RIB
would hold), so what is checked here is dockerd's side: `--ipam-driver`
with the plugin, the addresses containers really get, a refusal reaching
`docker run` with evpnd's message, and a lost state directory rebuilt from
dockerd's own networks and containers while they keep running. The same
over real EVPN routes is tests/docker/test_docker_evpn2.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from evpnd.docker import ipam
from evpnd.docker.dockerd import DockerdClient
from evpnd.docker.driver import host_if
from evpnd.docker.fabric import Claim, conflicts
from evpnd.model import IPAddress
from tests.docker.conftest import Dockerd, PluginThread, wait_for

pytestmark = pytest.mark.docker

SUBNET = ip_network("10.254.62.0/24")
GATEWAY = "10.254.62.1"  # the evpn IPAM's gateway: the subnet's first host address
ME = ip_address("127.0.0.1")  # conftest.HOST's VTEP
OTHER = ip_address("192.0.2.99")


class StaticFabric:
    """Claims another VTEP would have advertised (a RIB's view, fixed by the test)."""

    def __init__(self) -> None:
        self.claimed: list[Claim] = []

    def claims(self, vni: int) -> Sequence[Claim]:
        return self.claimed

    def claims_on(self, vni: int, mac: str | None, ips: Sequence[IPAddress]) -> Sequence[Claim]:
        return conflicts(mac, ips, self.claimed)

    def vteps(self, vni: int) -> Sequence[IPAddress]:
        return [OTHER]


def links() -> dict[str, dict[str, Any]]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def state(plugin: PluginThread) -> dict[str, Any]:
    return json.loads((plugin.settings.state_dir /
                       f"docker-{plugin.settings.plugin}.json").read_text())


def endpoint(dockerd: Dockerd, container: str, net: str) -> dict[str, Any]:
    return dockerd.inspect(container)[0]["NetworkSettings"]["Networks"][net]


def create(dockerd: Dockerd, plugin: PluginThread, net: str, vni: int) -> None:
    name = plugin.settings.plugin
    dockerd.run("network", "create", "-d", name, "--ipam-driver", name, "--subnet", str(SUBNET),
                "-o", f"VxlanId={vni}", "-o", "VtepDev=lo", "-o", "gateway=local", net)


def test_addresses_from_the_evpn_ipam_and_a_claimed_one_refused(
    dockerd: Dockerd, plugin: PluginThread, image: str
) -> None:
    fabric = StaticFabric()
    plugin.fabric = fabric
    plugin.restart()
    vni, net = 4_100_001, "evpnd-ipam"
    create(dockerd, plugin, net, vni)
    # Another host holds a block already (one of its containers is advertised).
    mine = ipam.choose_address(SUBNET, None, me=ME, taken={ip_address(GATEWAY)},
                               shared={ip_address(GATEWAY)}, claims=(), vteps=[OTHER])
    assert mine is not None
    fabric.claimed = [Claim(OTHER, "02:42:0a:fe:3e:99", mine)]
    expected = ipam.choose_address(SUBNET, None, me=ME, taken={ip_address(GATEWAY)},
                                   shared={ip_address(GATEWAY)}, claims=fabric.claimed,
                                   vteps=[OTHER])
    dockerd.run("run", "-d", "--name", "ip1", "--network", net, image, "sleep", "600")
    got = endpoint(dockerd, "ip1", net)
    assert got["IPAddress"] == str(expected) and got["Gateway"] == GATEWAY
    assert got["IPAddress"] != str(mine)
    ping = dockerd.run("exec", "ip1", "ping", "-c", "1", "-W", "2", GATEWAY, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # The claimed address given by hand: refused by the IPAM, with evpnd's message.
    done = dockerd.run("run", "-d", "--name", "ip2", "--network", net, "--ip", str(mine),
                       image, "sleep", "600", check=False)
    assert done.returncode != 0
    assert f"evpnd: {mine} is in use on VNI {vni}: {mine} (02:42:0a:fe:3e:99) at VTEP " \
           f"{OTHER}" in done.stderr, done.stderr
    dockerd.run("rm", "-f", "ip2", check=False)
    assert plugin.plugin is not None and plugin.plugin.driver.counters.refused_collision == 1
    # Nothing of it stayed: no endpoint, no address held in the pool.
    pools = state(plugin)["pools"]
    assert [set(p["addresses"]) for p in pools] == [{GATEWAY, str(expected)}]
    dockerd.run("rm", "-f", "ip1")
    dockerd.run("network", "rm", net)
    assert state(plugin) == {"version": 1, "networks": [], "endpoints": [], "pools": []}


def test_a_claimed_address_is_refused_with_dockerds_own_ipam_too(
    dockerd: Dockerd, plugin: PluginThread, image: str
) -> None:
    """The network driver checks at CreateEndpoint whatever IPAM gave the address."""
    fabric = StaticFabric()
    fabric.claimed = [Claim(OTHER, "02:aa:00:00:00:01", ip_address("10.254.63.5"))]
    plugin.fabric = fabric
    plugin.restart()
    net = "evpnd-default-ipam"
    dockerd.run("network", "create", "-d", plugin.settings.plugin, "--subnet", "10.254.63.0/24",
                "--gateway", "10.254.63.1", "-o", "VxlanId=4100002", "-o", "VtepDev=lo", net)
    done = dockerd.run("run", "-d", "--name", "dip", "--network", net, "--ip", "10.254.63.5",
                       image, "sleep", "600", check=False)
    assert done.returncode != 0
    assert "evpnd: CreateEndpoint: address in use on VNI 4100002: 10.254.63.5 " \
           "(02:aa:00:00:00:01) at VTEP 192.0.2.99" in done.stderr, done.stderr
    dockerd.run("rm", "-f", "dip", check=False)
    assert state(plugin)["endpoints"] == []
    dockerd.run("network", "rm", net)


def test_a_lost_state_directory_is_rebuilt_from_dockerd_with_containers_running(
    dockerd: Dockerd, plugin: PluginThread, image: str
) -> None:
    vni, net = 4_100_003, "evpnd-rebuild"
    create(dockerd, plugin, net, vni)
    for name in ("rb1", "rb2"):
        dockerd.run("run", "-d", "--name", name, "--network", net, image, "sleep", "600")
    eps = {name: endpoint(dockerd, name, net) for name in ("rb1", "rb2")}
    ports = {host_if(e["EndpointID"]) for e in eps.values()}
    before = {n: links()[n]["ifindex"] for n in (*ports, f"br{vni}", f"vxlan{vni}")}
    saved = state(plugin)

    # The state directory is lost while evpnd is down; dockerd is not answering at first.
    plugin.stop()
    shutil.rmtree(plugin.settings.state_dir)
    real = plugin.settings.dockerd_socket
    plugin.settings = plugin.settings.model_copy(update={
        "dockerd_socket": plugin.settings.state_dir.parent / "not-yet.sock"})
    plugin.start()
    assert plugin.plugin is not None and plugin.plugin.driver.rebuild_pending
    assert plugin.kernel.writes == 0, "a running container's veth was touched"
    assert {n: links()[n]["ifindex"] for n in before} == before
    # dockerd answers: the retry rebuilds networks, endpoints and the pool.
    plugin.plugin.driver.dockerd = DockerdClient(real)
    wait_for("the rebuild from dockerd",
             lambda: len(plugin.recorder.of("endpoint_added")) == 2, timeout=30)
    assert not plugin.plugin.driver.rebuild_pending
    assert plugin.kernel.writes == 0 and {n: links()[n]["ifindex"] for n in before} == before
    rebuilt = state(plugin)
    assert rebuilt["networks"] == saved["networks"]
    assert rebuilt["endpoints"] == saved["endpoints"]
    assert rebuilt["pools"] == saved["pools"]
    assert {e.info.endpoint_id for e in plugin.recorder.of("endpoint_added")} == {
        e["EndpointID"] for e in eps.values()}
    assert [e.info.vni.vni for e in plugin.recorder.of("vni_added")] == [vni]

    # The containers still reach their gateway; dockerd's next calls work on the records.
    for name in eps:
        ping = dockerd.run("exec", name, "ping", "-c", "1", "-W", "2", GATEWAY, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    dockerd.run("run", "-d", "--name", "rb3", "--network", net, image, "sleep", "600")
    third = endpoint(dockerd, "rb3", net)["IPAddress"]
    assert third not in {e["IPAddress"] for e in eps.values()}
    dockerd.run("rm", "-f", "rb1", "rb2", "rb3")
    dockerd.run("network", "rm", net)
    assert state(plugin) == {"version": 1, "networks": [], "endpoints": [], "pools": []}
    assert not {f"br{vni}", f"vxlan{vni}", *ports} & set(links())

    # At start with dockerd answering, the rebuild is immediate (no retry).
    create(dockerd, plugin, net, vni)
    dockerd.run("run", "-d", "--name", "rb4", "--network", net, image, "sleep", "600")
    plugin.stop()
    shutil.rmtree(plugin.settings.state_dir)
    plugin.settings = plugin.settings.model_copy(update={"dockerd_socket": real})
    plugin.start()
    assert plugin.plugin is not None and not plugin.plugin.driver.rebuild_pending
    assert [e.info.vni.vni for e in plugin.recorder.of("vni_added")] == [vni]
    assert len(plugin.recorder.of("endpoint_added")) == 1
    dockerd.run("rm", "-f", "rb4")
    dockerd.run("network", "rm", net)
