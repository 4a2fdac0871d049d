"""The Docker driver wired into a (constructed, not running) daemon: the real Driver on a
fake kernel, the real RIB, a speaker that records the announced set."""

from __future__ import annotations

import re
from ipaddress import ip_address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evpnd.config import Config, parse
from evpnd.daemon import Daemon
from evpnd.dataplane.events import LocalIpLearned, LocalIpRemoved, LocalMacAdded, LocalMacRemoved
from evpnd.docker import protocol as p
from evpnd.docker.driver import Driver, DriverError, gateway_mac
from evpnd.docker.state import StateStore
from evpnd.model import ENCAP_VXLAN, ImetKey, ImetRoute, MacIpKey, MacIpRoute, RouteKey
from tests.unit.docker_fakes import FakeKernel

PEER = ip_address("192.0.2.1")
REMOTE = ip_address("192.0.2.22")
FILE = """
router_id: 192.0.2.11
asn: 65000
vtep: {address: 192.0.2.11, device: eth0}
bgp: {peers: [{address: 192.0.2.1, remote_asn: 65000}]}
vnis: [{vni: 10}]
state_dir: %s
"""
NET, NET2 = "a" * 64, "b" * 64
EP = "e1" * 32
CONTAINER_MAC = "02:42:0a:01:00:02"


class FakeSpeaker:
    connected = False
    hold = 0.0
    pid = None

    def __init__(self) -> None:
        self.routes: dict[RouteKey, Any] = {}
        self.withdrawn: list[RouteKey] = []

    def announce(self, routes: Any) -> None:
        for route in routes:
            self.routes[route.key] = route

    def withdraw(self, keys: Any) -> None:
        for key in keys:
            self.withdrawn.append(key)
            self.routes.pop(key, None)

    async def flush(self, timeout: float | None = None) -> None:
        return None


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "evpnd.yaml"
        self.path.write_text(FILE % tmp_path)
        self.daemon = Daemon(parse(self.path.read_text()), self.path)
        self.speaker = FakeSpeaker()
        self.daemon.speaker = self.speaker  # type: ignore[assignment]
        self.applied: list[Config] = []
        self.watched: list[list[int]] = []

        async def apply_devices(cfg: Config) -> None:
            self.applied.append(cfg)

        async def update_vnis(vnis: Any) -> None:
            self.watched.append(sorted(v.vni for v in vnis))

        self.daemon._apply_devices = apply_devices  # type: ignore[method-assign]
        self.daemon.learner.update_vnis = update_vnis  # type: ignore[method-assign]
        self.kernel = FakeKernel()
        self.driver = Driver(plugin="evpn", host=lambda: self.daemon.file_cfg,
                             kernel=self.kernel, store=StateStore(tmp_path / "docker", "evpn"),
                             listener=self.daemon.docker, fabric=self.daemon.docker)
        self.daemon.docker.plugin = SimpleNamespace(driver=self.driver)
        self.daemon.docker.activate()
        self.daemon._announce_static(self.daemon.cfg)

    def macs(self) -> set[tuple[str, str | None]]:
        return {(r.mac, None if r.ip is None else str(r.ip))
                for r in self.speaker.routes.values() if isinstance(r, MacIpRoute)}

    def imets(self) -> set[int]:
        return {r.vni for r in self.speaker.routes.values() if isinstance(r, ImetRoute)}


def network(vni: int = 100, nid: str = NET, subnet: int = 1,
            **options: str) -> p.CreateNetworkRequest:
    return p.CreateNetworkRequest.model_validate({
        "NetworkID": nid,
        "Options": {p.GENERIC_OPTIONS: {"VxlanId": str(vni), **options}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": f"10.{subnet}.0.0/24",
                      "Gateway": f"10.{subnet}.0.1/24"}],
    })


def endpoint(eid: str = EP, nid: str = NET, address: str = "10.1.0.2/24") -> Any:
    return p.CreateEndpointRequest.model_validate({
        "NetworkID": nid, "EndpointID": eid,
        "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
    })


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def remote_route(cfg: Config, vni: int, mac: str, ip: str | None = None) -> MacIpRoute:
    return MacIpRoute(key=MacIpKey("192.0.2.22:100", 0, mac, None if ip is None else
                                   ip_address(ip)),
                      nexthop=REMOTE, vni=vni, route_targets=(f"65000:{vni}",),
                      default_gateway=True, encapsulation=ENCAP_VXLAN)


async def test_a_network_is_a_vni_and_its_container_is_advertised_at_join(world: World) -> None:
    d = world.daemon
    assert world.imets() == {10}
    await world.driver.create_network(network(gateway="local"))
    # The effective config: the file's VNI and the network's, everywhere the daemon looks.
    assert [v.vni for v in d.cfg.vnis] == [10, 100] and [v.vni for v in d.file_cfg.vnis] == [10]
    assert [v.vni for v in world.applied[-1].vnis] == [10, 100]  # the device reconcile
    assert world.watched[-1] == [10, 100] and set(d.devices) == {10, 100}
    assert set(d.rib.policies) == {10, 100}
    assert world.imets() == {10, 100}
    gw = gateway_mac(100)
    [gateway] = [r for r in world.speaker.routes.values()
                 if isinstance(r, MacIpRoute) and r.mac == gw]
    assert gateway.default_gateway and str(gateway.ip) == "10.1.0.1"
    assert gateway.key.rd == "192.0.2.11:100" and gateway.route_targets == ("65000:100",)

    await world.driver.create_endpoint(endpoint())
    await world.driver.join(NET, EP)
    assert world.macs() == {(gw, "10.1.0.1"), (CONTAINER_MAC, None),
                            (CONTAINER_MAC, "10.1.0.2")}

    # The bridge learns the container later: nothing to announce or withdraw (no flap).
    withdrawn = len(world.speaker.withdrawn)
    ip = ip_address("10.1.0.2")
    port = "evh" + EP[:12]
    for event in (LocalMacAdded(100, "br100", port, CONTAINER_MAC),
                  LocalIpLearned(100, "br100", CONTAINER_MAC, ip)):
        changes = d._on_local(event)
        assert changes is not None and not changes.local_advertise
        assert not changes.local_withdraw
    # ... and forgets it (ageing, neighbour gone): the container is still there.
    assert d._on_local(LocalIpRemoved(100, "br100", CONTAINER_MAC, ip)) is None
    assert d._on_local(LocalMacRemoved(100, "br100", port, CONTAINER_MAC)) is None
    assert len(world.speaker.withdrawn) == withdrawn
    assert (CONTAINER_MAC, "10.1.0.2") in world.macs()

    # Leave: withdrawn. network rm: the VNI, its Type-3 and its gateway go.
    await world.driver.leave(NET, EP)
    assert world.macs() == {(gw, "10.1.0.1")}
    await world.driver.delete_endpoint(NET, EP)
    await world.driver.delete_network(NET)
    assert world.macs() == set() and world.imets() == {10}
    assert [v.vni for v in d.cfg.vnis] == [10] and world.watched[-1] == [10]
    assert set(d.rib.policies) == {10}


async def test_a_received_route_for_our_gateway_mac_is_never_installed(world: World) -> None:
    d = world.daemon
    gw = gateway_mac(100)
    # Received before the network exists here (held, imported nowhere) ...
    d._on_rib_changes(d.rib.apply_update(PEER, [remote_route(d.cfg, 100, gw, "10.1.0.1"),
                                                remote_route(d.cfg, 100, "02:aa:00:00:00:01")],
                                         []))  # fmt: skip
    await world.driver.create_network(network(gateway="local"))
    assert d.rib.remote_mac(100, gw) is None
    assert d.rib.remote_mac(100, "02:aa:00:00:00:01") is not None
    assert not [n for n in d.rib.remote_neighs(100) if str(n.ip) == "10.1.0.1"]
    # ... and after.
    d._on_rib_changes(d.rib.apply_update(PEER, [remote_route(d.cfg, 100, gw, "10.1.0.1")], []))
    assert d.rib.remote_mac(100, gw) is None
    # Without gateway=local the same route is a plain remote MAC.
    await world.driver.delete_network(NET)
    await world.driver.create_network(network())
    assert d.rib.remote_mac(100, gw) is not None


async def test_reload_keeps_docker_vnis_and_refuses_a_clash(world: World) -> None:
    d = world.daemon
    await world.driver.create_network(network())
    world.path.write_text(world.path.read_text().replace("vnis: [{vni: 10}]",
                                                         "vnis: [{vni: 10}, {vni: 20}]"))
    assert await d.reload()
    assert [v.vni for v in d.cfg.vnis] == [10, 20, 100]
    assert [v.vni for v in world.applied[-1].vnis] == [10, 20, 100]
    assert world.imets() == {10, 20, 100}
    world.path.write_text(world.path.read_text().replace("{vni: 20}", "{vni: 100}"))
    assert not await d.reload()  # the file may not take a Docker network's VNI
    assert [v.vni for v in d.cfg.vnis] == [10, 20, 100]
    # And a Docker network may not take the file's (the driver says so to dockerd).
    with pytest.raises(Exception, match="configured in evpnd's config file"):
        await world.driver.create_network(network(20, NET2))


async def test_a_new_large_vni_that_renumbers_an_rd_re_announces_under_the_new_key(
    world: World,
) -> None:
    await world.driver.create_network(network(5_000_000))
    await world.driver.create_endpoint(endpoint())
    await world.driver.join(NET, EP)
    before = {r.key.rd for r in world.speaker.routes.values() if r.vni == 5_000_000}
    assert before == {"192.0.2.11:1"}
    # A smaller large VNI takes RD number 1; 5000000's routes move to :2.
    await world.driver.create_network(network(4_000_000, NET2, subnet=2))
    after = {r.key.rd for r in world.speaker.routes.values() if r.vni == 5_000_000}
    assert after == {"192.0.2.11:2"}
    assert MacIpKey("192.0.2.11:1", 0, CONTAINER_MAC, ip_address("10.1.0.2")) in \
        world.speaker.withdrawn
    # The Type-3 key (RD, originator) is now 4000000's: replaced, not withdrawn.
    assert world.speaker.routes[ImetKey("192.0.2.11:1", 0, ip_address("192.0.2.11"))].vni == \
        4_000_000
    assert world.macs() == {(CONTAINER_MAC, None), (CONTAINER_MAC, "10.1.0.2")}


async def test_recovered_endpoints_wait_for_activate(tmp_path: Path) -> None:
    """At start-up the driver's replay is recorded, then applied with the effective config."""
    w = World(tmp_path)
    await w.driver.create_network(network(gateway="local"))
    await w.driver.create_endpoint(endpoint())
    await w.driver.join(NET, EP)
    # A new daemon, the same driver state on disk.
    fresh = World(tmp_path)
    fresh.daemon.docker._live = False
    fresh.kernel.table = w.kernel.table
    await fresh.driver.recover()
    assert fresh.macs() == set() and fresh.daemon.docker.vnis()[0].vni == 100
    await fresh.daemon._rebase(fresh.daemon.docker.effective(fresh.daemon.file_cfg,
                                                            strict=False))
    fresh.daemon._announce_static(fresh.daemon.cfg)
    fresh.daemon.docker.activate()
    assert [v.vni for v in fresh.daemon.cfg.vnis] == [10, 100]
    assert fresh.imets() == {10, 100}
    assert fresh.macs() == {(gateway_mac(100), "10.1.0.1"), (CONTAINER_MAC, None),
                            (CONTAINER_MAC, "10.1.0.2")}


def test_the_file_wins_a_clash_at_start_up(world: World) -> None:
    glue = world.daemon.docker
    other = parse("router_id: 1.1.1.1\nasn: 1\nvtep: {address: 1.1.1.1, device: lo}\n"
                  "vnis: [{vni: 10}]")
    info = SimpleNamespace(network_id=NET, vni=other.vnis[0], gateway=None)
    glue._networks[NET] = info  # type: ignore[assignment]
    assert [v.vni for v in glue.effective(world.daemon.file_cfg, strict=False).vnis] == [10]
    with pytest.raises(ValueError, match="VNI 10 of docker network"):
        glue.effective(world.daemon.file_cfg)


def test_the_device_reconcile_never_owns_a_containers_veth() -> None:
    """Docker veths carry "evpnd:docker=..." and stay out of links.reconcile's removals."""
    from evpnd.dataplane.linkplan import LinkInfo
    from evpnd.dataplane.links import owned_devices

    current = {
        "br100": LinkInfo("br100", 5, "bridge", 1450, True, alias="evpnd:vni=100"),
        "evhe1e1e1e1e1e1": LinkInfo("evhe1e1e1e1e1e1", 6, "veth", 1450, True,
                                    alias=f"evpnd:docker=evpn:ep={EP}"),
    }
    assert owned_devices(current, []) == {"br100"}


async def test_status_shows_counts_caps_and_refusals(world: World) -> None:
    world.driver.max_endpoints_per_network = 1
    await world.driver.create_network(network())
    await world.driver.create_endpoint(endpoint())
    with pytest.raises(DriverError, match="max_endpoints_per_network"):
        await world.driver.create_endpoint(endpoint("e2" * 32, address="10.1.0.3/24"))
    with pytest.raises(DriverError, match=r"Interface\.Address"):
        await world.driver.create_endpoint(endpoint("e3" * 32, address="10.1.0.256/24"))
    status = world.daemon.docker.status()
    assert status == {
        "plugin": "evpn", "networks": 1, "endpoints": 1, "max_endpoints_per_network": 1,
        "max_endpoints": 16384, "skipped": [],
        "counters": {"endpoints_refused_cap": 1, "requests_refused_invalid": 1,
                     "records_skipped": 0, "refused_collision": 0, "collisions_detected": 0,
                     "records_rebuilt": 0},
        "ipam_pools": 0, "ipam_addresses": 0, "rebuild_pending": False, "collisions": [],
    }
    # `evpnd show status` carries it, as JSON and in the table.
    from evpnd.control import render, views
    from evpnd.control.snapshot import take_snapshot

    shown = views.show(take_snapshot(world.daemon, mtu_of=lambda _: None), "status")
    assert shown["docker"] == status
    text = render.render("status", shown)
    assert "\nDocker:\n" in text and "1 of at most 16384 (1 per network)" in text
    world.daemon.docker.plugin = None
    assert world.daemon.docker.status() is None


async def test_docker_metrics_follow_the_driver(world: World) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from evpnd.metrics.collector import build_registry

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = generate_latest(build_registry(world.daemon, process=False)).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    world.driver.max_endpoints = 1
    await world.driver.create_network(network())
    await world.driver.create_endpoint(endpoint())
    with pytest.raises(DriverError):
        await world.driver.create_endpoint(endpoint("e2" * 32, address="10.1.0.3/24"))
    samples = scrape()
    assert samples[("evpnd_docker_networks", ())] == 1
    assert samples[("evpnd_docker_endpoints", ())] == 1
    assert samples[("evpnd_docker_endpoints_max", ())] == 1
    assert samples[("evpnd_docker_endpoints_per_network_max", ())] == 4096
    assert samples[("evpnd_docker_refused_total", (("reason", "endpoint-cap"),))] == 1
    assert samples[("evpnd_docker_refused_total", (("reason", "invalid"),))] == 0
    assert samples[("evpnd_docker_records_skipped_total", ())] == 0
    assert samples[("evpnd_docker_refused_total", (("reason", "collision"),))] == 0
    assert samples[("evpnd_docker_address_collisions", ())] == 0
    assert samples[("evpnd_docker_collisions_detected_total", ())] == 0
    assert samples[("evpnd_docker_ipam_addresses", ())] == 0
    world.daemon.docker.plugin = None
    assert not any(name.startswith("evpnd_docker") for name, _ in scrape())


def claim_route(vni: int, mac: str, ip: str | None = None) -> MacIpRoute:
    """Another host's container (a plain Type-2 from VTEP REMOTE)."""
    return MacIpRoute(key=MacIpKey("192.0.2.22:100", 0, mac, None if ip is None else
                                   ip_address(ip)),
                      nexthop=REMOTE, vni=vni, route_targets=(f"65000:{vni}",),
                      encapsulation=ENCAP_VXLAN)


async def test_an_address_another_host_advertises_is_refused_at_create_and_at_join(
    world: World,
) -> None:
    d = world.daemon
    await world.driver.create_network(network())
    d._on_rib_changes(d.rib.apply_update(PEER, [claim_route(100, "02:aa:00:00:00:09", "10.1.0.2")],
                                         []))  # fmt: skip
    with pytest.raises(DriverError, match=re.escape(
            "CreateEndpoint: address in use on VNI 100: 10.1.0.2 (02:aa:00:00:00:09) at VTEP "
            "192.0.2.22")):
        await world.driver.create_endpoint(endpoint())
    # The MAC alone (Docker's 02:42:<IPv4> MAC of the same address, on another VTEP).
    d._on_rib_changes(d.rib.apply_update(PEER, [claim_route(100, "02:42:0a:01:00:03")], []))
    with pytest.raises(DriverError, match=re.escape("MAC 02:42:0a:01:00:03 at VTEP 192.0.2.22")):
        await world.driver.create_endpoint(endpoint("e3" * 32, address="10.1.0.3/24"))
    # A route that arrives between CreateEndpoint and Join: refused at Join, not installed.
    await world.driver.create_endpoint(endpoint("e4" * 32, address="10.1.0.4/24"))
    d._on_rib_changes(d.rib.apply_update(PEER, [claim_route(100, "02:aa:00:00:00:04", "10.1.0.4")],
                                         []))  # fmt: skip
    with pytest.raises(DriverError, match=r"Join: address in use"):
        await world.driver.join(NET, "e4" * 32)
    assert "evh" + ("e4" * 32)[:12] not in world.kernel.table
    assert not [m for m, ip in world.macs() if ip == "10.1.0.4"]
    assert world.driver.counters.refused_collision == 3
    # Other addresses are fine, and other VNIs' routes are no claim.
    await world.driver.create_endpoint(endpoint("e5" * 32, address="10.1.0.5/24"))
    await world.driver.join(NET, "e5" * 32)


async def test_a_collision_that_appears_later_is_detected_counted_and_shown(
    world: World,
) -> None:
    d, glue = world.daemon, world.daemon.docker
    await world.driver.create_network(network())
    await world.driver.create_endpoint(endpoint())
    await world.driver.join(NET, EP)
    assert glue.scan_collisions() == {}
    # Another host is given the same address by hand: its route arrives.
    route = claim_route(100, "02:aa:00:00:00:09", "10.1.0.2")
    d._on_rib_changes(d.rib.apply_update(PEER, [route], []))
    assert list(glue.scan_collisions()) == [EP]
    glue.scan_collisions()  # still there: counted once
    status = glue.status()
    assert status is not None and status["counters"]["collisions_detected"] == 1
    assert status["collisions"] == [
        f"endpoint {EP[:12]} 10.1.0.2 ({CONTAINER_MAC}) on VNI 100: also 10.1.0.2 "
        "(02:aa:00:00:00:09) at VTEP 192.0.2.22"]
    from evpnd.control import render, views
    from evpnd.control.snapshot import take_snapshot

    text = render.render("status", views.show(take_snapshot(d, mtu_of=lambda _: None), "status"))
    assert "address collisions" in text and "at VTEP 192.0.2.22" in text
    # Withdrawn there: the collision ends (the count stays).
    d._on_rib_changes(d.rib.apply_update(PEER, [], [route.key]))
    assert glue.scan_collisions() == {}
    status = glue.status()
    assert status is not None and status["collisions"] == []
    assert status["counters"]["collisions_detected"] == 1


async def test_the_fabric_view_reads_every_claim_of_a_vni(world: World) -> None:
    d, glue = world.daemon, world.daemon.docker
    await world.driver.create_network(network())
    d._on_rib_changes(d.rib.apply_update(PEER, [
        claim_route(100, "02:aa:00:00:00:01", "10.1.0.7"),
        claim_route(100, "02:aa:00:00:00:02", "10.1.0.8"),
        claim_route(10, "02:aa:00:00:00:03", "10.1.0.9")], []))
    assert sorted(str(c.ip) for c in glue.claims(100)) == ["10.1.0.7", "10.1.0.8"]
    assert [str(c) for c in glue.claims_on(100, "02:aa:00:00:00:02", [])] == [
        "MAC 02:aa:00:00:00:02 at VTEP 192.0.2.22"]
    assert glue.claims_on(100, None, [ip_address("10.1.0.9")]) == []
