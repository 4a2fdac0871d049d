"""The daemon's MQTT glue with a real RIB and a recording stand-in for MqttService."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address
from typing import Any

import pytest

from evpnd import config
from evpnd.mqtt.codec import EndpointRegistered, EndpointUnregistered
from evpnd.rib import Rib, RibChanges, VniPolicy
from evpnd.services import MqttBridge
from tests.unit.test_rib import M1, P1, RT100, V2, V3, mac_route

LOCAL = IPv4Address("10.0.0.5")
CFG = config.parse("""router_id: 10.0.0.5
asn: 65000
vtep: {address: 10.0.0.5, device: eth0}
bgp: {peers: [{address: 10.255.0.1, remote_asn: 65000}]}
vnis: [{vni: 100}]
mqtt: {host: 127.0.0.1, topic_prefix: evpnd/t}
""")


class FakeService:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.summaries: dict[int, dict[str, Any] | None] = {}
        self.peer_states: dict[str, dict[str, Any] | None] = {}
        self.synced = asyncio.Event()

    def publish(self, event: Any) -> bool:
        self.events.append(event.as_dict())
        return True

    def retain_summary(self, vni: int, summary: dict[str, Any]) -> bool:
        self.summaries[vni] = summary
        return True

    def clear_summary(self, vni: int) -> None:
        self.summaries[vni] = None

    def retain_peer_state(self, peer: Any, state: str, since: Any, **fields: Any) -> bool:
        self.peer_states[str(peer)] = {"state": state, "since": since, **fields}
        return True

    def clear_peer_state(self, peer: Any) -> None:
        self.peer_states[str(peer)] = None

    def pending(self) -> int:
        return 0


def bridge() -> tuple[MqttBridge, Rib, FakeService, list[RibChanges]]:
    rib = Rib(LOCAL, [VniPolicy(100, frozenset({RT100}))])
    applied: list[RibChanges] = []
    glue = MqttBridge(lambda: CFG, rib, applied.append)
    glue.service = service = FakeService()
    return glue, rib, service, applied


def names(service: FakeService) -> list[str]:
    return [e["event"] for e in service.events]


def test_remote_macs_installed_moved_removed_are_derived_from_rib_changes() -> None:
    glue, rib, service, _ = bridge()
    glue.rib_changes(rib.announce(P1, mac_route(M1, V2)))
    glue.rib_changes(rib.announce(P1, mac_route(M1, V2, seq=0)))  # the same again: nothing
    glue.rib_changes(rib.announce(P1, mac_route(M1, V3, seq=1)))  # behind another VTEP now
    glue.rib_changes(rib.withdraw(P1, mac_route(M1, V2).key))  # the loser goes: no event
    glue.rib_changes(rib.withdraw(P1, mac_route(M1, V3, seq=1).key))
    assert names(service) == ["remote_mac_installed", "remote_mac_moved", "remote_mac_removed"]
    installed, moved, removed = service.events
    assert (installed["vtep"], installed["peer"], installed["seq"]) == ("10.0.0.2", str(P1), 0)
    assert (moved["previous_vtep"], moved["vtep"], moved["seq"]) == ("10.0.0.2", "10.0.0.3", 1)
    assert (removed["vtep"], removed["peer"]) == ("10.0.0.3", str(P1))


def test_a_remote_route_taking_a_local_mac_is_a_move_from_local() -> None:
    glue, rib, service, _ = bridge()
    glue.rib_changes(rib.local_mac_added(100, M1)[0])
    glue.rib_changes(rib.announce(P1, mac_route(M1, V2, seq=5)))
    assert service.events[-1]["event"] == "remote_mac_moved"
    assert service.events[-1]["previous_vtep"] == "local"


def test_registrations_are_advertised_replaced_and_withdrawn() -> None:
    glue, rib, service, applied = bridge()
    ip1, ip2 = IPv4Address("10.100.0.5"), IPv4Address("10.100.0.6")
    glue._on_registration(EndpointRegistered(100, M1, ip1))
    assert [(a.mac, a.ip) for a in applied[-1].local_advertise] == [(M1, None), (M1, ip1)]
    assert glue.registered(100, M1)
    glue._on_registration(EndpointRegistered(100, M1, ip1))  # re-read after a reconnect
    assert len(applied) == 1
    glue._on_registration(EndpointRegistered(100, M1, ip2))  # replaces: ip1's route goes
    withdrawn = [(a.mac, a.ip) for c in applied[1:] for a in c.local_withdraw]
    advertised = [(a.mac, a.ip) for c in applied[1:] for a in c.local_advertise]
    assert withdrawn == [(M1, ip1)] and advertised == [(M1, ip2)]
    glue._on_registration(EndpointRegistered(200, M1))  # VNI not configured: ignored
    glue._on_registration(EndpointUnregistered(100, M1))
    assert [(a.mac, a.ip) for a in applied[-1].local_withdraw] == [(M1, None), (M1, ip2)]
    assert not glue.registered(100, M1) and rib.local_macs(100) == []
    learned = [e for e in service.events if e["event"] == "local_mac_learned"]
    assert [e["source"] for e in learned] == ["mqtt", "mqtt"]
    assert names(service)[-1] == "local_mac_removed"


def test_summaries_only_when_counts_change() -> None:
    glue, rib, service, _ = bridge()
    glue._dirty.add(100)
    glue.flush_summaries()
    assert service.summaries[100] == {"local_macs": 0, "advertised_macs": 0,
                                      "registered_endpoints": 0, "remote_macs": 0,
                                      "remote_neighbors": 0, "vteps": []}  # fmt: skip
    service.summaries.clear()
    glue._dirty.add(100)
    glue.flush_summaries()
    assert service.summaries == {}  # unchanged: not re-sent
    glue.rib_changes(rib.announce(P1, mac_route(M1, V2)))
    glue.flush_summaries()
    assert service.summaries[100]["remote_macs"] == 1


def test_peer_events_once_per_change_and_down_on_exabgp_restart() -> None:
    glue, _, service, _ = bridge()
    glue.peer_state(P1, "up", None)
    glue.peer_state(P1, "up", None)
    glue.peer_state(P1, "down", "hold timer expired")
    glue.peer_state(P1, "down", "connection refused")  # ExaBGP repeats it on every retry
    glue.peer_state(P1, "up", None)
    glue.speaker_restarted(1, "exabgp exited")
    assert names(service) == ["peer_up", "peer_down", "peer_up", "peer_down",
                              "exabgp_restarted"]  # fmt: skip
    assert service.events[0]["asn"] == 65000
    glue.peers_adopted([str(P1)])  # taken over: already up, no event
    assert len(service.events) == 5


def test_retained_peer_states_follow_the_sessions() -> None:
    glue, _, service, _ = bridge()
    glue.peer_state(P1, "connected", None)
    assert service.peer_states == {}  # unknown until ExaBGP is attached
    glue.speaker_attached({})  # a new ExaBGP: every configured peer is down
    assert {p: s and (s["state"], s["reason"]) for p, s in service.peer_states.items()} == {
        str(P1): ("down", "not established")}
    down_since = service.peer_states[str(P1)]["since"]
    glue.peer_state(P1, "up", None)
    up = service.peer_states[str(P1)]
    assert (up["state"], up["asn"], up["reason"], up["adopted"]) == ("up", 65000, None, False)
    assert up["since"] >= down_since
    glue.peer_state(P1, "up", None)  # the same state: nothing re-published, `since` stays
    assert service.peer_states[str(P1)] is up
    glue.speaker_restarted(1, "exabgp exited")
    assert (service.peer_states[str(P1)]["state"],
            service.peer_states[str(P1)]["reason"]) == ("down", "exabgp exited")
    glue.speaker_attached({})  # the restarted ExaBGP: P1 is known down already
    assert service.peer_states[str(P1)]["reason"] == "exabgp exited"


def test_a_handed_over_session_is_up_and_adopted() -> None:
    glue, _, service, _ = bridge()
    glue.speaker_attached({str(P1): "up"})
    glue.peers_adopted([str(P1)])
    assert (service.peer_states[str(P1)]["state"], service.peer_states[str(P1)]["adopted"]) == (
        "up", True)
    assert names(service) == []  # no peer_up event for a session that was up already


async def test_a_reload_clears_a_removed_peer_and_adds_a_new_one_down() -> None:
    glue, _, service, _ = bridge()
    glue.speaker_attached({})
    new = CFG.model_copy(update={"bgp": config.Bgp(peers=[
        config.Peer(address=IPv4Address("10.255.0.2"), remote_asn=65001)])})
    await glue.reconfigure(CFG, new)
    assert service.peer_states[str(P1)] is None  # cleared on the broker
    assert service.peer_states["10.255.0.2"]["state"] == "down"
    assert str(P1) not in {str(p) for p in glue.peer_sessions()}


async def test_a_new_service_gets_every_known_peer_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    glue, _, _, _ = bridge()
    glue.service = None
    glue.speaker_attached({})  # before MQTT started (or while a reload reconnects it)
    glue.peer_state(P1, "up", None)

    class Started(FakeService):
        async def start(self) -> None:
            pass

    started = Started()
    monkeypatch.setattr("evpnd.mqtt.client.MqttService", lambda *args, **kwargs: started)
    await glue.start()
    for task in glue._tasks:
        task.cancel()
    assert started.peer_states[str(P1)]["state"] == "up"


def test_without_mqtt_nothing_is_published() -> None:
    glue, rib, _, _ = bridge()
    glue.service = None
    glue.rib_changes(rib.announce(P1, mac_route(M1, V2)))
    glue.peer_state(P1, "up", None)
    assert glue.status() is None


def test_duplicate_macs_and_route_limits_are_published() -> None:
    from evpnd.rib import DadPolicy, RouteLimit
    from tests.unit.test_rib import flap

    glue, _, service, _ = bridge()
    rib = glue._rib = Rib(LOCAL, [VniPolicy(100, frozenset({RT100}))],
                          dad=DadPolicy(5, 180.0, freeze=60.0))  # fmt: skip
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    for changes in flap(rib, 3):
        glue.rib_changes(changes)
    glue.rib_changes(rib.expire_duplicates(100.0))
    found = [e for e in service.events if e["event"].startswith("mac_duplicate")]
    assert [e["event"] for e in found] == ["mac_duplicate", "mac_duplicate_cleared"]
    detected, cleared = found
    shown = ("vni", "mac", "moves", "window", "vtep", "frozen", "freeze")
    assert {k: detected[k] for k in shown} == {
        "vni": 100, "mac": M1, "moves": 5, "window": 180.0, "vtep": str(V2), "frozen": True,
        "freeze": 60.0,
    }  # fmt: skip
    assert cleared["reason"] == "freeze-ended"

    rib.set_route_limits({P1: RouteLimit(2)})
    changes = rib.apply_updates([(P1, [mac_route(m, V3) for m in ("02:00:00:00:00:0a",
                                                                  "02:00:00:00:00:0b")], [])])
    for event in changes.limit_events:
        glue.route_limit(event, "teardown")
    assert service.events[-1] == {
        "event": "route_limit", "time": service.events[-1]["time"], "peer": str(P1),
        "level": "exceeded", "routes": 2, "max_routes": 2, "warning_at": 2,
        "action": "teardown",
    }  # fmt: skip


class CountingRib(Rib):
    """The real RIB, counting the sorted per-VNI queries a summary pass makes."""

    sorted_queries = 0

    def local_macs(self, vni: int | None = None) -> Any:
        self.sorted_queries += 1
        return super().local_macs(vni)

    def remote_macs(self, vni: int | None = None) -> Any:
        self.sorted_queries += 1
        return super().remote_macs(vni)

    def remote_neighs(self, vni: int | None = None) -> Any:
        self.sorted_queries += 1
        return super().remote_neighs(vni)


def reference_summary(rib: Rib, glue: MqttBridge, vni: int) -> dict[str, Any]:
    """What a summary says, from the RIB's sorted per-VNI views (the slow, obvious way)."""
    local = rib.local_macs(vni)
    return {
        "local_macs": len(local),
        "advertised_macs": sum(m.advertised for m in local),
        "registered_endpoints": sum(glue.registered(vni, m.mac) for m in local),
        "remote_macs": len(rib.remote_macs(vni)),
        "remote_neighbors": len(rib.remote_neighs(vni)),
        "vteps": [str(v) for v in rib.vteps(vni).get(vni, ())],
    }


def test_summaries_of_many_vnis_cost_one_pass_and_say_what_the_rib_holds() -> None:
    vnis = list(range(100, 140))
    cfg = config.parse(
        "router_id: 10.0.0.5\nasn: 65000\nvtep: {address: 10.0.0.5, device: eth0}\n"
        f"vnis: [{', '.join(f'{{vni: {v}}}' for v in vnis)}]\n"
        "mqtt: {host: 127.0.0.1, topic_prefix: evpnd/t}\n"
    )
    rib = CountingRib(LOCAL, [VniPolicy(v, frozenset({f"65000:{v}"})) for v in vnis])
    glue = MqttBridge(lambda: cfg, rib, lambda changes: None)
    glue.service = service = FakeService()
    for i in range(400):
        vni = vnis[i % len(vnis)]
        mac = f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}"
        if i % 3:
            ip = IPv4Address(f"10.1.{i >> 8}.{i & 255}")
            glue.rib_changes(rib.local_mac_added(vni, mac, ip)[0])
        if i % 4 == 0:  # remote too: some local MACs lose (higher sequence), some are remote only
            route = mac_route(mac, V2 if i % 8 else V3, vni=vni, seq=5, rts=(f"65000:{vni}",),
                              ip=IPv4Address(f"10.2.{i >> 8}.{i & 255}"))
            glue.rib_changes(rib.announce(P1, route))
    glue._on_registration(EndpointRegistered(vnis[0], "02:00:00:00:09:01"))
    rib.sorted_queries = 0
    glue._dirty.update(vnis)
    glue.flush_summaries()
    # One pass for all forty VNIs: none of the per-VNI sorted views (a sort of
    # every entry each, which took 8.5 s at 50k MACs over 100 VNIs).
    assert rib.sorted_queries == 0
    for vni in vnis:
        assert service.summaries[vni] == reference_summary(rib, glue, vni), vni
    assert any(s["advertised_macs"] < s["local_macs"] for s in service.summaries.values())
    assert sum(s["remote_neighbors"] for s in service.summaries.values()) > 0
