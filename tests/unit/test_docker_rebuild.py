"""A lost state file rebuilt from dockerd's view: the driver on a fake kernel and a dockerd
that answers what dockerd 20.10.24 answered (`GET /networks/<id>`, captured below)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from evpnd.config import parse
from evpnd.docker import protocol as p
from evpnd.docker.dockerd import DockerdNetwork, DockerdUnavailable, default_gateway, networks_of
from evpnd.docker.driver import Driver, host_if
from evpnd.docker.state import StateStore
from tests.unit.docker_fakes import HOST, FakeKernel, Recorder

PLUGIN = "evpn"
# `docker network inspect` of a network made with `-d X --ipam-driver X --subnet
# 10.254.90.0/24 --ip-range 10.254.90.128/25 -o VxlanId=4009 -o VtepDev=lo` (no
# --gateway) and two containers, c1 (address from the IPAM) and c2 (`--ip 10.254.90.7`).
INSPECT = json.loads("""
{
  "Name": "ov",
  "Id": "2279e1a1597f7bf358ce10d1a79dea86a5aa3035d35fb13f08559f3d926da828",
  "Created": "2026-12-05T10:37:34.716397256Z",
  "Scope": "local",
  "Driver": "evpn",
  "EnableIPv6": false,
  "IPAM": {"Driver": "evpn", "Options": {},
           "Config": [{"Subnet": "10.254.90.0/24", "IPRange": "10.254.90.128/25"}]},
  "Internal": false, "Attachable": false, "Ingress": false,
  "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
  "Containers": {
    "6d23ff02e6505c84786b8e5ab9bc7c3f5e7d3a024f42fb1181f3824556761b68": {
      "Name": "c2",
      "EndpointID": "c02930cf18e26b2da081339c0e76a7228a981c1d217406d7db8adfeadcc34e14",
      "MacAddress": "02:42:0a:fe:5a:07", "IPv4Address": "10.254.90.7/24", "IPv6Address": ""},
    "cca437819ff9158bf9f3bc8e1ce070b852348468448d8847ba1e6e3f690d9aac": {
      "Name": "c1",
      "EndpointID": "34d5b450b071b76e476444b01917cf45c8bd36bb9d8e5cd9cd9fdce653f8efed",
      "MacAddress": "02:42:0a:fe:5a:90", "IPv4Address": "10.254.90.144/24", "IPv6Address": ""}
  },
  "Options": {"VtepDev": "lo", "VxlanId": "4009"},
  "Labels": {}
}
""")
NET = INSPECT["Id"]
EP1 = INSPECT["Containers"]["cca437819ff9158bf9f3bc8e1ce070b852348468448d8847ba1e6e3f690d9aac"][
    "EndpointID"]
EP2 = INSPECT["Containers"]["6d23ff02e6505c84786b8e5ab9bc7c3f5e7d3a024f42fb1181f3824556761b68"][
    "EndpointID"]
HOST_LO = HOST.replace("device: eth0", "device: lo")


class FakeDockerd:
    def __init__(self, *inspected: dict[str, Any]) -> None:
        self.inspected = list(inspected)
        self.down: str | None = None
        self.asked = 0

    async def networks(self, plugin: str) -> list[DockerdNetwork]:
        self.asked += 1
        if self.down is not None:
            raise DockerdUnavailable(self.down)
        return networks_of(self.inspected, plugin)


class World:
    def __init__(self, tmp_path: Path, dockerd: FakeDockerd) -> None:
        self.kernel = FakeKernel()
        self.kernel.table["lo"] = self.kernel.table["eth0"]
        self.store = StateStore(tmp_path, PLUGIN)
        self.dockerd = dockerd
        self.recorder = Recorder()
        self.config = parse(HOST_LO)

    def driver(self) -> Driver:
        self.recorder.events.clear()
        return Driver(plugin=PLUGIN, host=lambda: self.config, kernel=self.kernel,
                      store=self.store, listener=self.recorder, dockerd=self.dockerd)

    async def running(self) -> Driver:
        """The network and both containers made through the driver, as dockerd did."""
        d = self.driver()
        await d.create_network(p.CreateNetworkRequest.model_validate({
            "NetworkID": NET, "Options": {p.GENERIC_OPTIONS: INSPECT["Options"]},
            "IPv4Data": [{"AddressSpace": "local", "Pool": "10.254.90.0/24",
                          "Gateway": "10.254.90.1/24"}]}))
        for ep, address in ((EP1, "10.254.90.144/24"), (EP2, "10.254.90.7/24")):
            await d.create_endpoint(p.CreateEndpointRequest.model_validate({
                "NetworkID": NET, "EndpointID": ep, "Interface": {"Address": address}}))
            await d.join(NET, ep)
        return d


def test_the_view_of_a_network() -> None:
    [net] = networks_of([INSPECT, {**INSPECT, "Id": "x", "Driver": "bridge",
                                   "IPAM": {"Driver": "default"}}], PLUGIN)
    assert net.ours and net.ipam_ours and net.name == "ov"
    assert net.ip_data(4) == [{"AddressSpace": "local", "Pool": "10.254.90.0/24",
                               "Gateway": "10.254.90.1/24"}]
    [pool] = net.pools
    assert pool.pool_id == "local/10.254.90.0/24/10.254.90.128/25"
    assert [(e.container, e.mac, e.ipv4) for e in net.endpoints] == [
        ("c2", "02:42:0a:fe:5a:07", "10.254.90.7/24"), ("c1", "02:42:0a:fe:5a:90",
                                                        "10.254.90.144/24")]
    # The gateway a running container shows wins over the rule.
    [seen] = networks_of([INSPECT], PLUGIN, {NET: {4: "10.254.90.254"}})
    assert seen.pools[0].gateway == "10.254.90.254"


def test_default_gateways_as_dockerd_chose_them() -> None:
    # dockerd's default IPAM: the first address of --ip-range (observed: .128 for .128/25).
    assert default_gateway("10.254.91.0/24", "10.254.91.128/25", False) == "10.254.91.128"
    assert default_gateway("10.254.91.0/24", "10.254.91.0/25", False) == "10.254.91.1"
    assert default_gateway("10.254.91.0/24", "", False) == "10.254.91.1"
    # evpnd's IPAM: the subnet's first host address, whatever the range.
    assert default_gateway("10.254.91.0/24", "10.254.91.128/25", True) == "10.254.91.1"


async def test_a_lost_state_file_is_rebuilt_and_no_container_loses_its_veth(
    tmp_path: Path
) -> None:
    world = World(tmp_path, FakeDockerd(INSPECT))
    before = await world.running()
    kept = {n: world.kernel.table[n] for n in (host_if(EP1), host_if(EP2), "br4009")}
    writes = world.kernel.writes
    world.store.path.unlink()  # the state directory is lost

    d = world.driver()
    done = await d.recover()
    assert world.dockerd.asked == 1 and not d.rebuild_pending
    assert world.kernel.writes == writes, done  # nothing deleted, nothing re-made
    assert {n: world.kernel.table[n] for n in kept} == kept
    assert d.state.networks[NET].vni == before.state.networks[NET].vni
    assert d.state.networks[NET].ipv4_gateway == "10.254.90.1/24"
    assert {e: (r.mac, r.ipv4, r.joined) for e, r in d.state.endpoints.items()} == {
        e: (r.mac, r.ipv4, r.joined) for e, r in before.state.endpoints.items()}
    assert d.counters.records_rebuilt == 3
    pool = d.state.pools["local/10.254.90.0/24/10.254.90.128/25"]
    assert pool.addresses == {"10.254.90.1": "gateway", "10.254.90.7": "endpoint",
                              "10.254.90.144": "endpoint"}
    assert world.recorder.kinds() == ["vni_added", "endpoint_added", "endpoint_added"]
    # Saved: the next restart reads the file and does not ask dockerd.
    assert world.store.load().endpoints.keys() == {EP1, EP2}
    await world.driver().recover()
    assert world.dockerd.asked == 1
    # dockerd's next calls work on the rebuilt records.
    await d.leave(NET, EP1)
    await d.delete_endpoint(NET, EP1)
    assert host_if(EP1) not in world.kernel.table


async def test_while_dockerd_does_not_answer_nothing_is_removed_then_it_is_rebuilt(
    tmp_path: Path
) -> None:
    dockerd = FakeDockerd(INSPECT)
    world = World(tmp_path, dockerd)
    await world.running()
    world.store.path.unlink()
    dockerd.down = "no dockerd socket at /run/docker.sock"
    d = world.driver()
    done = await d.recover()
    assert d.rebuild_pending and "rebuild pending" in done[0]
    assert host_if(EP1) in world.kernel.table and host_if(EP2) in world.kernel.table
    assert d.state.networks == {} and world.recorder.events == []
    assert await d.rebuild_from_dockerd() is None  # still down
    # dockerd answers; c2 was stopped meanwhile: its veth is a stray now and goes.
    dockerd.down = None
    gone = copy.deepcopy(INSPECT)
    del gone["Containers"]["6d23ff02e6505c84786b8e5ab9bc7c3f5e7d3a024f42fb1181f3824556761b68"]
    dockerd.inspected = [gone]
    done2 = await d.rebuild_from_dockerd()
    assert done2 is not None and not d.rebuild_pending
    assert set(d.state.endpoints) == {EP1}
    assert host_if(EP1) in world.kernel.table and host_if(EP2) not in world.kernel.table
    assert world.recorder.kinds() == ["vni_added", "endpoint_added"]
    assert await d.rebuild_from_dockerd() == []  # nothing pending


async def test_a_network_that_no_longer_validates_is_skipped_and_counted(
    tmp_path: Path
) -> None:
    bad = {**INSPECT, "Options": {"VxlanId": "0"}}
    world = World(tmp_path, FakeDockerd(bad))
    d = world.driver()
    done = await d.recover()
    assert d.state.networks == {} and d.counters.records_skipped == 1
    assert "VxlanId=0" in d.counters.skipped[0] and any("skipped" in line for line in done)


@pytest.mark.parametrize("mode", ["missing", "corrupt"])
async def test_no_rebuild_without_a_dockerd_or_with_a_state_file(tmp_path: Path,
                                                                 mode: str) -> None:
    world = World(tmp_path, FakeDockerd(INSPECT))
    await world.running()
    if mode == "corrupt":
        world.store.path.write_text("{")
    else:
        world.store.path.unlink()
    d = world.driver()
    d.dockerd = None  # no dockerd to ask: the old behaviour, strays removed
    await d.recover()
    assert d.state.networks == {} and host_if(EP1) not in world.kernel.table
