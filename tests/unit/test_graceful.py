"""The graceful-restart helper's decisions (RFC 4724 section 4.2), with the capabilities
decoded from OPENs captured from FRR 8.4.4."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

from evpnd.graceful import (
    IDLE,
    RESTARTING,
    SPEAKER_RESTART,
    WAITING_EOR,
    Deadline,
    Flush,
    GracefulHelper,
    KeepStale,
    Sweep,
)
from evpnd.speaker.decode import decode_line
from evpnd.speaker.messages import GracefulRestart, PeerOpen
from tests.conftest import SAMPLES

RR = IPv4Address("192.0.2.2")  # the peer of the captured OPENs
OTHER = IPv4Address("192.0.2.9")
EOR_WAIT = 60.0


def captured(name: str) -> GracefulRestart | None:
    [message] = decode_line(json.dumps(json.loads((SAMPLES / f"json_{name}.json").read_text())))
    assert isinstance(message, PeerOpen)
    return message.graceful_restart


PRESERVED = captured("open_frr_graceful_restart_preserve_fw")  # F bit set, 120 s
NOT_PRESERVED = captured("open_frr_graceful_restart")  # F bit clear


def established(helper: GracefulHelper, cap: GracefulRestart | None, now: float = 0.0) -> None:
    helper.open_received(RR, cap)
    assert helper.session_up(RR, now) == []


def token(actions: list[object]) -> int:
    [deadline] = [a for a in actions if isinstance(a, Deadline)]
    return deadline.token


def test_a_lost_session_keeps_the_routes_for_the_peers_restart_time() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    actions = helper.session_down(RR, 100.0)
    assert actions == [KeepStale(RR, "graceful restart: routes kept 120s"),
                       Deadline(RR, 220.0, token(actions))]  # fmt: skip
    assert helper.status(RR).phase == RESTARTING and helper.status(RR).restarts == 1
    # Failed reconnects ("down" again, never established) change nothing.
    assert helper.session_down(RR, 105.0) == []
    # Back with the F bit set: the stale routes wait for its End-of-RIB.
    helper.open_received(RR, PRESERVED)
    back = helper.session_up(RR, 130.0)
    assert back == [Deadline(RR, 130.0 + EOR_WAIT, token(back))]
    assert helper.status(RR).phase == WAITING_EOR
    assert helper.end_of_rib(RR) == []
    assert helper.status(RR).phase == IDLE
    # Neither wait can sweep any more.
    assert helper.expired(RR, token(actions), 220.0) == []
    assert helper.expired(RR, token(back), 190.0) == []


def test_back_without_the_forwarding_state_bit_the_stale_routes_go_at_once() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    helper.session_down(RR, 0.0)
    helper.open_received(RR, NOT_PRESERVED)
    assert helper.session_up(RR, 10.0) == [Sweep(RR, "L2VPN/EVPN forwarding state not preserved")]
    assert helper.status(RR).phase == IDLE


def test_back_without_the_capability_the_stale_routes_go_at_once() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    helper.session_down(RR, 0.0)
    helper.open_received(RR, None)
    assert helper.session_up(RR, 10.0) == [Sweep(RR, "no graceful restart in its new OPEN")]


def test_the_restart_time_running_out_sweeps() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    actions = helper.session_down(RR, 0.0)
    assert helper.expired(RR, token(actions), 120.0) == [
        Sweep(RR, "restart time over, the session did not come back")
    ]


def test_no_end_of_rib_in_time_sweeps() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    helper.session_down(RR, 0.0)
    helper.open_received(RR, PRESERVED)
    back = helper.session_up(RR, 5.0)
    assert helper.expired(RR, token(back), 65.0) == [Sweep(RR, "no End-of-RIB in time")]


def test_without_graceful_restart_the_routes_go_when_the_session_does() -> None:
    # The peer did not advertise it ...
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, None)
    assert helper.session_down(RR, 0.0) == [Flush(RR, "no graceful restart")]
    # ... it did, but not for L2VPN/EVPN ...
    ipv4_only = GracefulRestart(120, families=(("ipv4", "unicast", True),))
    established(helper, ipv4_only)
    assert helper.session_down(RR, 0.0) == [Flush(RR, "no graceful restart")]
    # ... we do not (bgp.graceful_restart: 0), so it was never negotiated ...
    helper = GracefulHelper(helper=False, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    assert helper.session_down(RR, 0.0) == [Flush(RR, "no graceful restart")]
    # ... or we closed the session ourselves (a route-limit teardown).
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    assert helper.session_down(RR, 0.0, graceful=False) == [Flush(RR, "session closed by us")]


def test_lost_again_before_end_of_rib_marks_everything_stale_again() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    first = helper.session_down(RR, 0.0)
    helper.open_received(RR, PRESERVED)
    back = helper.session_up(RR, 10.0)
    again = helper.session_down(RR, 20.0)
    assert again[0] == KeepStale(RR, "graceful restart: routes kept 120s")
    assert again[1].at == 140.0
    for old in (first, back):
        assert helper.expired(RR, token(old), 200.0) == []
    assert helper.expired(RR, token(again), 140.0) != []


def test_two_exabgp_deaths_in_a_row_each_get_the_full_wait() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    established(helper, PRESERVED)
    first = helper.speaker_lost([RR, OTHER], 0.0)
    assert [a for a in first if not isinstance(a, Deadline)] == [
        KeepStale(RR, "exabgp restarted"), KeepStale(OTHER, "exabgp restarted")
    ]
    second = helper.speaker_lost([RR, OTHER], 30.0)
    # The first death's wait ends at 60 s: it must not sweep what the second marked.
    for deadline in first:
        if isinstance(deadline, Deadline):
            assert helper.expired(deadline.peer, deadline.token, 60.0) == []
    assert helper.status(RR).phase == SPEAKER_RESTART
    ends = {a.peer: a for a in second if isinstance(a, Deadline)}
    assert ends[RR].at == ends[OTHER].at == 90.0
    assert helper.expired(RR, ends[RR].token, 90.0) == [Sweep(RR, "no End-of-RIB in time")]
    # A peer that came back after our restart waits for End-of-RIB from then on.
    helper.open_received(OTHER, None)
    back = helper.session_up(OTHER, 40.0)
    assert back == [Deadline(OTHER, 40.0 + EOR_WAIT, token(back))]
    assert helper.expired(OTHER, ends[OTHER].token, 90.0) == []


def test_an_adopted_session_has_no_known_capability_and_is_flushed() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    helper.adopted([RR])
    assert helper.session_down(RR, 0.0) == [Flush(RR, "no graceful restart")]


def test_status_shows_the_capability_of_the_last_open() -> None:
    helper = GracefulHelper(helper=True, eor_wait=EOR_WAIT)
    assert helper.status(RR).capability is None
    established(helper, PRESERVED)
    status = helper.status(RR)
    assert status.capability == PRESERVED and status.phase == IDLE and status.deadline is None
    assert PRESERVED is not None and PRESERVED.restart_time == 120 and PRESERVED.evpn
