"""The daemon carrying out graceful restart, route limits and duplicate detection.

A real `Daemon`, constructed but not run (no sockets, no processes), is fed
what the speaker hands it: ExaBGP's JSON lines (the OPENs captured from FRR
8.4.4 with graceful restart, state changes) and typed messages. Its timers are
recorded instead of waited for, and fired by the test in the order it
chooses: no test here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

import pytest

from evpnd import config
from evpnd import daemon as daemon_mod
from evpnd.control.server import ControlServer
from evpnd.daemon import Daemon
from evpnd.dataplane.events import LocalMacAdded
from evpnd.metrics.collector import build_registry
from evpnd.model import ENCAP_VXLAN, MacIpKey, MacIpRoute
from evpnd.speaker.messages import (
    EndOfRib,
    ReceiveOverflow,
    RouteRefresh,
    RouteUpdate,
    SpeakerAttached,
    SpeakerRestarted,
)
from tests.conftest import SAMPLES
from tests.unit.test_metrics import scrape, value

RR = IPv4Address("192.0.2.2")  # the peer of the captured OPENs
V2 = IPv4Address("10.0.0.2")  # a VTEP behind the route reflector
MACS = [f"02:00:00:00:02:{i:02x}" for i in range(8)]

CONFIG = """
router_id: 192.0.2.1
asn: 65000
vtep: {address: 192.0.2.1, device: eth0}
bgp:
  eor_timeout: 60
  peers:
    - {address: 192.0.2.2, remote_asn: 65000%s}
vnis:
  - {vni: 100}
%s
"""


def daemon_for(peer: str = "", extra: str = "") -> Daemon:
    return Daemon(config.parse(CONFIG % (peer, extra)))


def line(sample: str, **peer_state: str) -> bytes:
    doc = json.loads((SAMPLES / f"json_{sample}.json").read_text())
    doc["neighbor"]["address"]["peer"] = str(RR)
    for key, field_value in peer_state.items():
        doc["neighbor"][key] = field_value
    return json.dumps(doc).encode()


OPEN_PRESERVED = line("open_frr_graceful_restart_preserve_fw")
OPEN_NOT_PRESERVED = line("open_frr_graceful_restart")
UP = line("state_up")
DOWN = line("state_down_notification_received")


def route(mac: str, seq: int = 0) -> MacIpRoute:
    return MacIpRoute(MacIpKey(f"{V2}:100", 0, mac), V2, 100, route_targets=("65000:100",),
                      mobility_seq=seq, encapsulation=ENCAP_VXLAN)  # fmt: skip


def update(*macs: str) -> RouteUpdate:
    return RouteUpdate(RR, tuple(route(m) for m in macs))


EOR = EndOfRib(RR, "l2vpn", "evpn")


def wanted(daemon: Daemon) -> set[str]:
    """The remote MACs the daemon wants in vxlan100's FDB."""
    return {mac for device, mac in daemon.reconciler.desired.macs if device == "vxlan100"}


@dataclass
class Timer:
    delay: float
    callback: Callable[..., Any]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        self.callback(*self.args)


@dataclass
class Timers:
    started: list[Timer] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(delay, callback, args)
        self.started.append(timer)
        return timer


@pytest.fixture
async def timers(monkeypatch: pytest.MonkeyPatch) -> Timers:
    recorded = Timers()
    monkeypatch.setattr(asyncio.get_running_loop(), "call_later", recorded.call_later)
    return recorded


# ------------------------------------------------------------------ graceful restart


async def test_a_graceful_peer_lost_keeps_its_routes_until_end_of_rib(timers: Timers) -> None:
    daemon = daemon_for()
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:3]), EOR])
    assert wanted(daemon) == set(MACS[:3])
    daemon._on_received([DOWN])  # the route reflector's bgpd killed
    assert wanted(daemon) == set(MACS[:3])  # nothing removed from the FDB
    assert daemon.rib.counts().stale == 3
    [restart_time] = timers.started
    assert restart_time.delay == pytest.approx(120, abs=1)  # FRR's restart time
    # Back, the forwarding state kept: it re-sends two of the three, then End-of-RIB.
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:2])])
    assert restart_time.cancelled and wanted(daemon) == set(MACS[:3])
    daemon._on_received([EOR])
    assert wanted(daemon) == set(MACS[:2])  # the one not re-sent is gone
    assert daemon.rib.counts().stale == 0
    assert daemon.graceful.status(RR).restarts == 1
    samples = scrape(build_registry(daemon, process=False))
    assert value(samples, "evpnd_bgp_graceful_restarts_total", peer=str(RR)) == 1
    assert value(samples, "evpnd_bgp_stale_routes_swept_total") == 1


async def test_the_peer_back_without_forwarding_state_drops_the_stale_routes(
    timers: Timers,
) -> None:
    daemon = daemon_for()
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:3]), EOR, DOWN])
    assert wanted(daemon) == set(MACS[:3])
    daemon._on_received([OPEN_NOT_PRESERVED, UP])  # F bit clear: RFC 4724 4.2
    assert wanted(daemon) == set()


async def test_the_restart_time_running_out_removes_the_stale_routes(timers: Timers) -> None:
    daemon = daemon_for()
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:3]), EOR, DOWN])
    timers.started[-1].fire()
    assert wanted(daemon) == set()


async def test_a_peer_without_graceful_restart_is_flushed_at_once(timers: Timers) -> None:
    doc = json.loads(OPEN_PRESERVED)
    del doc["neighbor"]["open"]["capabilities"]["64"]
    daemon = daemon_for()
    daemon._on_received([json.dumps(doc).encode(), UP, update(*MACS[:3]), EOR, DOWN])
    assert wanted(daemon) == set()
    assert timers.started == []
    # And so is any peer when we do not advertise graceful restart ourselves.
    daemon = Daemon(config.parse((CONFIG % ("", "")).replace("eor_timeout: 60",
                                                            "graceful_restart: 0")))
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:3]), EOR, DOWN])
    assert wanted(daemon) == set()


async def test_two_exabgp_deaths_in_a_row_keep_the_full_grace_period(timers: Timers) -> None:
    daemon = daemon_for()
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:3]), EOR])
    daemon._on_received([SpeakerRestarted(1, "exabgp exited")])
    first = list(timers.started)
    daemon._on_received([SpeakerRestarted(2, "exabgp exited")])
    # The first death's wait ends first: it must not sweep what the second one marked.
    for timer in first:
        timer.fire()
    assert wanted(daemon) == set(MACS[:3])
    assert daemon.rib.counts().stale == 3
    # The peer back after the second: what it re-sends stays, End-of-RIB sweeps the rest.
    daemon._on_received([OPEN_PRESERVED, UP, update(MACS[0]), EOR])
    assert wanted(daemon) == {MACS[0]}


# ------------------------------------------------------------------ route limits


async def test_a_peer_past_its_limit_is_torn_down_and_held_down(
    timers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = daemon_for(", max_routes: 4, max_routes_restart: 300")
    calls: list[tuple[str, Any]] = []
    speaker = daemon.speaker

    async def flush(timeout: float | None = None) -> None:
        calls.append(("flush", timeout))

    async def reload(cfg: config.Config) -> None:
        calls.append(("reload", [str(p.address) for p in cfg.bgp.peers]))

    monkeypatch.setattr(speaker, "teardown", lambda peer, code: calls.append(("teardown",
                                                                             (peer, code))))
    monkeypatch.setattr(speaker, "flush", flush)
    monkeypatch.setattr(speaker, "reload", reload)
    monkeypatch.setattr(type(speaker), "connected", property(lambda self: True))
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:6])])
    assert wanted(daemon) == set(MACS[:4])  # two refused
    assert daemon.rib.stats.routes_refused == {RR: 2}
    assert calls[0] == ("teardown", (str(RR), 1))  # Cease/1, RFC 4486
    assert RR in daemon.held_down
    for _ in range(10):
        await asyncio.sleep(0)
    # ExaBGP would reconnect at once: it runs without the peer, whose routes are gone.
    assert calls[1:] == [("flush", 2.0), ("reload", [])]
    assert wanted(daemon) == set()
    # The session's "down" after our teardown is no graceful restart: nothing kept.
    daemon._on_received([DOWN])
    assert daemon.rib.counts().stale == 0
    samples = scrape(build_registry(daemon, process=False))
    assert value(samples, "evpnd_bgp_routes_refused_total", peer=str(RR)) == 2
    assert value(samples, "evpnd_bgp_route_limit_events_total", peer=str(RR),
                 level="exceeded") == 1  # fmt: skip
    assert value(samples, "evpnd_bgp_peer_held_down", peer=str(RR)) == 1
    assert value(samples, "evpnd_bgp_peer_route_limit", peer=str(RR)) == 4
    [release] = [t for t in timers.started if t.delay == 300]
    release.fire()
    for _ in range(10):
        await asyncio.sleep(0)
    assert calls[-1] == ("reload", [str(RR)]) and RR not in daemon.held_down


async def test_a_warning_only_limit_refuses_routes_and_keeps_the_session(
    timers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = daemon_for(", max_routes: 4, max_routes_action: warning")
    torn: list[str] = []
    monkeypatch.setattr(daemon.speaker, "teardown", lambda peer, code: torn.append(peer))
    daemon._on_received([OPEN_PRESERVED, UP, update(*MACS[:6])])
    assert wanted(daemon) == set(MACS[:4]) and torn == [] and daemon.held_down == {}
    assert daemon.rib.route_limit(RR)[1] == "exceeded"


# ------------------------------------------------------------------ duplicate MACs


async def test_a_frozen_duplicate_is_shown_and_cleared_over_the_control_socket(
    timers: Timers,
) -> None:
    daemon = daemon_for(extra="dad: {max_moves: 5, window: 180, freeze: permanent}")
    daemon._on_received([OPEN_PRESERVED, UP, RouteUpdate(RR, (route(MACS[0], seq=0),))])
    for _ in range(3):  # the MAC behind this host and behind V2 at once
        daemon._on_rib_changes(daemon._on_local(LocalMacAdded(100, "br100", "veth1", MACS[0])))
        ours = daemon.rib.local_macs(100)[0].seq
        daemon._on_received([RouteUpdate(RR, (route(MACS[0], seq=ours + 1),))])
    [dup] = daemon.rib.duplicates()
    assert dup.moves == 5 and dup.frozen(dup.detected_at)
    samples = scrape(build_registry(daemon, process=False))
    assert value(samples, "evpnd_mac_duplicates_frozen") == 1
    assert value(samples, "evpnd_mac_duplicates_detected_total") == 1
    server = ControlServer(daemon, "/nonexistent/control.sock",
                           clear_duplicate=daemon.clear_duplicate)  # fmt: skip
    shown = await server.handle({"command": "show", "what": "mac", "args": {"vni": 100}})
    rows = {r["type"]: r for r in shown["data"]["vnis"][0]["macs"] if r["mac"] == MACS[0]}
    # Learned here and still installed towards V2 (frozen where it was), not advertised.
    assert set(rows) == {"local", "remote"} and rows["local"]["advertised"] is False
    for row in rows.values():
        assert row["duplicate"]["frozen"] is True and row["duplicate"]["permanent"] is True
    assert shown["data"]["vnis"][0]["duplicates"] == 1
    request = {"command": "clear", "what": "duplicate", "args": {"vni": 100, "mac": MACS[0]}}
    assert await server.handle(request) == {
        "ok": True, "data": {"vni": 100, "mac": MACS[0], "cleared": True}
    }
    assert daemon.rib.duplicates() == []
    again = await server.handle(request)
    assert again["ok"] is False and "not flagged" in again["error"]
    bad = await server.handle({"command": "clear", "what": "duplicate",
                               "args": {"vni": 100, "mac": "nope"}})  # fmt: skip
    assert bad == {"ok": False, "error": "argument 'mac' must be a MAC address, not 'nope'"}


# ------------------------------------------------------------- dropped updates


async def test_an_end_of_rib_after_dropped_updates_does_not_end_start_up(
    timers: Timers,
) -> None:
    """The relay dropped some of the peer's UPDATEs (evpnd was behind) and passed its
    End-of-RIB on: the table is incomplete, so start-up keeps holding the kernel's
    entries until the route refresh asked for ends (EoRR)."""
    daemon = daemon_for()
    daemon._eor_waiting = {RR}
    daemon._on_received([UP, update(MACS[0]), ReceiveOverflow((str(RR),), 3, 300), EOR])
    assert daemon.speaker.counters.refreshes == 1
    assert daemon.stats.converged_at is None and daemon.reconciler.holding
    daemon._on_received([RouteRefresh(RR, "l2vpn", "evpn", "begin"), update(*MACS[:3]),
                         RouteRefresh(RR, "l2vpn", "evpn", "end")])  # fmt: skip
    assert daemon.stats.converged_at is not None
    assert wanted(daemon) == set(MACS[:3])


async def test_a_large_stale_sweep_goes_in_parts_with_the_event_loop_turning_between(
    timers: Timers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route refresh after which most of the peer's routes are gone: the sweep
    removes SWEEP_PART of them at once and the rest on later turns of the event
    loop, so a 100k-route sweep never holds the loop for seconds (chaos C3)."""
    monkeypatch.setattr(daemon_mod, "SWEEP_PART", 10)
    macs = [f"02:00:00:00:03:{i:02x}" for i in range(35)]
    daemon = daemon_for()
    daemon._on_received([UP, update(*macs), EOR])
    assert wanted(daemon) == set(macs)
    daemon._on_received([RouteRefresh(RR, "l2vpn", "evpn", "begin"), update(*macs[:5]),
                         RouteRefresh(RR, "l2vpn", "evpn", "end")])  # fmt: skip
    seen = [len(wanted(daemon))]  # after each turn of the loop
    while seen[-1] > 5:
        await asyncio.sleep(0)
        seen.append(len(wanted(daemon)))
        assert len(seen) < 100, seen
    assert seen[0] == 25 and seen[-1] == 5 and 15 in seen, seen
    assert wanted(daemon) == set(macs[:5])


async def test_the_end_of_an_earlier_refresh_does_not_end_the_one_asked_for(
    timers: Timers,
) -> None:
    """A daemon killed during the route refresh it asked for: the relay drops the BoRR
    and the first routes while no daemon is attached, the next daemon asks again and
    then receives the rest of the earlier refresh, EoRR included. That EoRR ends
    nothing: only one after a BoRR does (found by the chaos suite, C2: every remote
    entry was removed at start-up and written again)."""
    daemon = daemon_for()
    daemon._eor_waiting = {RR}
    daemon._on_received([SpeakerAttached(True, ((str(RR), "up"),))])
    assert daemon.speaker.counters.refreshes == 1
    daemon._on_received([update(MACS[5]), RouteRefresh(RR, "l2vpn", "evpn", "end")])
    assert daemon.stats.converged_at is None and daemon.reconciler.holding
    daemon._on_received([RouteRefresh(RR, "l2vpn", "evpn", "begin"), update(*MACS[:3]),
                         RouteRefresh(RR, "l2vpn", "evpn", "end")])  # fmt: skip
    assert daemon.stats.converged_at is not None
    assert wanted(daemon) == set(MACS[:3])
