"""`show peers` and `show mac` for graceful restart, route limits and duplicate MACs.

The state is control_data's (routes captured from FRR 8.4.4) plus what the
daemon keeps for the new parts: its graceful-restart helper fed the OPEN
captured from FRR with `preserve-fw-state`, route limits, and a MAC made a
duplicate by moving between this host and a remote VTEP.
"""

from __future__ import annotations

import json
from dataclasses import replace

from evpnd.control import render, views
from evpnd.control.snapshot import PeerProtection, Snapshot
from evpnd.graceful import GracefulHelper
from evpnd.model import ENCAP_VXLAN, MacIpKey, MacIpRoute
from evpnd.rib import PERMANENT, DadPolicy, RouteLimit
from evpnd.speaker.decode import decode_line
from evpnd.speaker.messages import PeerOpen
from tests.conftest import SAMPLES
from tests.unit.control_data import FRR, RR2, VTEP4, build

MONO = 5000.0  # the snapshot's monotonic clock
MAC = "02:00:00:00:0c:01"


def grace_after_a_lost_session() -> GracefulHelper:
    [message] = decode_line((SAMPLES / "json_open_frr_graceful_restart_preserve_fw.json")
                            .read_text())  # fmt: skip
    assert isinstance(message, PeerOpen)
    helper = GracefulHelper(helper=True, eor_wait=60)
    helper.open_received(FRR, message.graceful_restart)
    helper.session_up(FRR, MONO - 100)
    helper.session_down(FRR, MONO - 20)  # 120 s restart time: 100 s left
    return helper


def snapshot() -> Snapshot:
    snap = build(installed_all=True)
    rib = snap.rib
    rib.mark_stale(FRR)
    rib.set_route_limits({FRR: RouteLimit(100, 80), RR2: RouteLimit(100)})
    # A MAC here and behind VTEP4 at once: five moves in a window (the first, a new
    # local MAC beaten by VTEP4, starts none), frozen for good at the fourth learn.
    rib.set_dad_policy(DadPolicy(5, 180.0, PERMANENT), now=MONO - 60)
    seq = 0
    for i in range(4):
        rib.local_mac_added(100, MAC, now=MONO - 50 + 2 * i)
        seq = rib.local_macs(100)[[m.mac for m in rib.local_macs(100)].index(MAC)].seq + 1
        rib.announce(FRR, MacIpRoute(MacIpKey("10.99.0.4:100", 0, MAC), VTEP4, 100,
                                     route_targets=("65000:100",), mobility_seq=seq,
                                     encapsulation=ENCAP_VXLAN), now=MONO - 49 + 2 * i)  # fmt: skip
    grace = grace_after_a_lost_session()
    return replace(snap, monotonic=MONO, protection={
        FRR: PeerProtection(grace.status(FRR)),
        RR2: PeerProtection(grace.status(RR2), held_down_until=MONO + 250),
    })  # fmt: skip


def test_peers_show_graceful_restart_and_route_limits() -> None:
    snap = snapshot()
    data = json.loads(json.dumps(views.peers(snap)))
    frr, rr2 = data["peers"]
    assert frr["graceful_restart"] == {
        "capability": {"restart_time": 120, "restarting": True,
                       "evpn_forwarding_preserved": True},
        "state": "restarting", "stale_routes": 9, "ends_in": 100.0, "restarts": 1,
    }  # fmt: skip
    assert frr["route_limit"] == {
        "max_routes": 100, "warning_at": 80, "action": "teardown", "restart_after": 300,
        "level": "ok", "refused": 0, "exceeded_count": 0, "held_down_for": None,
    }  # fmt: skip
    assert rr2["route_limit"]["held_down_for"] == 250.0
    assert rr2["graceful_restart"]["capability"] is None
    text = render.render_peers(data)
    assert "Graceful restart (RFC 4724" in text
    assert "120s" in text and "restarting" in text and "100s" in text
    assert "Route limits:" in text and "250s more" in text
    # A peer with no capability and nothing stale gets no graceful-restart row.
    section = text[text.index("Graceful restart") : text.index("Route limits:")]
    assert str(FRR) in section and str(RR2) not in section


def test_mac_view_flags_a_frozen_duplicate() -> None:
    snap = snapshot()
    data = json.loads(json.dumps(views.mac(snap, 100)))
    [vni] = data["vnis"]
    assert vni["duplicates"] == 1
    rows = [r for r in vni["macs"] if r["mac"] == MAC]
    assert {r["type"] for r in rows} == {"local", "remote"}
    for row in rows:
        assert row["duplicate"] == {"moves": 5, "vtep": str(VTEP4), "detected_ago": 44.0,
                                    "frozen": True, "frozen_for": None, "permanent": True}
    others = [r for r in vni["macs"] if r["mac"] != MAC]
    assert all(r["duplicate"] is None for r in others)
    text = render.render_mac(data)
    assert "D=duplicate, F=frozen" in text
    assert all("DF" in line for line in text.splitlines() if line.startswith(MAC))


def test_status_counts_duplicates() -> None:
    data = json.loads(json.dumps(views.status(snapshot())))
    assert (data["rib"]["duplicates"], data["rib"]["frozen_duplicates"]) == (1, 1)
    assert "duplicate MACs" in render.render_status(data)
