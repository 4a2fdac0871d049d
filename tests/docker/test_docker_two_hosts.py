"""Two Docker hosts, each a network namespace with its own dockerd and its own evpnd driver,
joined by a veth underlay: a container on one pings a container on the other across the
VXLAN devices the drivers made.

BGP does not take part yet (that comes with the daemon wiring): the network floods by
multicast (`-o Group=...`) with data-plane learning, so the overlay works without routes.
What this proves now: the driver works with a dockerd in a namespace (the layout the
cross-host EVPN tests will use), and its devices, veths, MTU and addresses carry traffic.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from evpnd import netns
from evpnd.config import parse
from tests.docker.conftest import Dockerd, PluginThread, import_image, launch_dockerd, serve_plugin

pytestmark = pytest.mark.docker

SUBNET = "10.254.70.0/24"


def host_config(address: str, device: str) -> str:
    return f"router_id: {address}\nasn: 65000\nvtep: {{address: {address}, device: {device}}}\n"


@pytest.fixture
def two_hosts() -> Iterator[list[tuple[str, Dockerd, PluginThread]]]:
    with ExitStack() as stack:
        tag = secrets.token_hex(2)
        spaces = [stack.enter_context(netns.temporary(f"evd{i}")) for i in (1, 2)]
        a, b = f"evu{tag}a", f"evu{tag}b"
        netns.run(spaces[0], ["ip", "link", "add", a, "type", "veth", "peer", "name", b,
                              "netns", spaces[1]])
        hosts = []
        for space, dev, address in ((spaces[0], a, "192.0.2.1"), (spaces[1], b, "192.0.2.2")):
            netns.run(space, ["ip", "addr", "add", f"{address}/24", "dev", dev])
            netns.run(space, ["ip", "link", "set", dev, "up"])
            dockerd = stack.enter_context(launch_dockerd(space))
            plugin = stack.enter_context(
                serve_plugin(dockerd, parse(host_config(address, dev)), netns=space))
            hosts.append((space, dockerd, plugin))
        yield hosts


def test_container_to_container_across_two_docker_hosts(
    two_hosts: list[tuple[str, Dockerd, PluginThread]]
) -> None:
    vni = 5_000_000 + secrets.randbelow(1_000_000)
    ips = {}
    for index, (space, dockerd, plugin) in enumerate(two_hosts, start=1):
        image = import_image(dockerd)
        dockerd.run("network", "create", "-d", plugin.settings.plugin, "--subnet", SUBNET,
                    "--ip-range", f"10.254.70.{16 * index}/28", "--gateway", "10.254.70.1",
                    "-o", f"VxlanId={vni}", "-o", "Group=239.1.1.1", "-o", "Learning=true",
                    "-o", "arp_suppression=false", "-o", "vxlanMTU=1400", "ov")
        dockerd.run("run", "-d", "--name", "ct", "--network", "ov", image, "sleep", "600")
        ips[space] = dockerd.inspect("ct")[0]["NetworkSettings"]["Networks"]["ov"]["IPAddress"]
        [added] = plugin.recorder.of("endpoint_added")
        assert str(added.info.ips[0]) == ips[space]
        # The devices and the veth are in the host's namespace, not evpnd's.
        links = {link["ifname"]: link for link in json.loads(
            netns.run(space, ["ip", "-j", "link", "show"]).stdout)}
        assert links[added.info.port]["master"] == f"br{vni}"
        assert links[added.info.port]["mtu"] == 1400
    (space1, docker1, _), (space2, docker2, _) = two_hosts
    assert ips[space1] != ips[space2]
    for dockerd, target in ((docker1, ips[space2]), (docker2, ips[space1])):
        ping = dockerd.run("exec", "ct", "ping", "-c", "3", "-W", "2", target, check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    for space, dockerd, _plugin in two_hosts:
        dockerd.run("rm", "-f", "ct")
        dockerd.run("network", "rm", "ov")
        names = {link["ifname"] for link in json.loads(
            netns.run(space, ["ip", "-j", "link", "show"]).stdout)}
        assert not {f"br{vni}", f"vxlan{vni}"} & names
        assert not any(n.startswith(("evh", "evc")) for n in names)
