"""PeerTracker: session facts from the decoder's messages (captured ExaBGP samples)."""

from __future__ import annotations

from ipaddress import IPv4Address

from evpnd.control.peers import (
    CONNECTED,
    DOWN,
    ESTABLISHED,
    IDLE,
    PeerRecord,
    PeerTracker,
    notification_text,
)
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import EndOfRib, Notification, PeerState, RouteUpdate
from tests.unit.control_data import FRR, sample

RR = IPv4Address("10.99.0.3")


def feed(tracker: PeerTracker, name: str, at: float, peer: IPv4Address = FRR) -> None:
    for message in Decoder().decode(sample(name, peer)):
        tracker.observe(message, now=at)


def test_unknown_peer_has_no_record_and_a_default_is_idle() -> None:
    tracker = PeerTracker()
    assert tracker.get(FRR) is None
    assert PeerRecord(FRR).state == IDLE
    assert PeerRecord(FRR).uptime(100.0) is None


def test_session_up_counts_updates_and_end_of_rib() -> None:
    tracker = PeerTracker()
    feed(tracker, "state_connected", 10)
    assert tracker.get(FRR).state == CONNECTED
    feed(tracker, "state_up", 11)
    feed(tracker, "type2_mac_ip_v4_v6_two_labels_rmac_L3VNI", 12)  # 2 routes, 1 UPDATE
    feed(tracker, "withdraw_type2_mac_only_and_mac_ipv6", 13)  # 3 withdrawals
    feed(tracker, "eor", 14)
    rec = tracker.get(FRR)
    assert rec.state == ESTABLISHED
    assert (rec.since, rec.established_at, rec.established_count) == (11, 11, 1)
    assert rec.uptime(71) == 60
    assert (rec.updates, rec.announced, rec.withdrawn, rec.last_update_at) == (2, 2, 3, 13)
    assert rec.eor is True
    # A repeated "up" does not restart the clock.
    feed(tracker, "state_up", 50)
    assert tracker.get(FRR).established_at == 11


def test_notification_then_down_is_the_last_error() -> None:
    tracker = PeerTracker()
    feed(tracker, "state_up", 11)
    feed(tracker, "eor", 12)
    feed(tracker, "bgp_notification_received", 200)
    feed(tracker, "state_down_notification_received", 200)
    rec = tracker.get(FRR)
    assert rec.state == DOWN
    assert (rec.since, rec.drops, rec.established_at, rec.eor) == (200, 1, None, False)
    assert rec.last_down_reason == "notification received (6,2)"
    note = rec.last_notification
    assert note is not None
    assert (note.code, note.subcode, note.direction) == (6, 2, "receive")
    assert note.text == "Cease/Administrative Shutdown"
    assert note.message == 'Shutdown Communication: "maintenance-window"'


def test_repeated_down_keeps_the_first_time_and_counts_one_drop() -> None:
    tracker = PeerTracker()
    feed(tracker, "state_up", 1)
    feed(tracker, "state_down_exabgp_shutdown", 5)
    feed(tracker, "state_down_connect_attempt_failed", 9)
    rec = tracker.get(FRR)
    assert (rec.since, rec.drops, rec.last_down_at) == (5, 1, 5)
    assert rec.last_down_reason == "closing connection"
    feed(tracker, "state_up", 20)
    rec = tracker.get(FRR)
    assert (rec.state, rec.established_count, rec.since) == (ESTABLISHED, 2, 20)


def test_speaker_restart_drops_every_session_and_peers_are_separate() -> None:
    tracker = PeerTracker()
    tracker.observe(PeerState(FRR, "up"), now=1)
    tracker.observe(PeerState(RR, "connected"), now=2)
    tracker.speaker_restarted(now=30)
    assert tracker.get(FRR).state == DOWN and tracker.get(FRR).drops == 1
    assert tracker.get(RR).state == DOWN and tracker.get(RR).drops == 0
    assert tracker.get(FRR).last_down_reason == "exabgp restarted"
    assert set(tracker.records()) == {FRR, RR}
    tracker.forget(RR)
    assert set(tracker.records()) == {FRR}


def test_adopted_sessions_are_established_with_a_minimum_uptime() -> None:
    tracker = PeerTracker()
    tracker.adopted({"10.99.0.2": "up", "10.99.0.3": "connected", "bogus": "up"}, now=100)
    rec = tracker.get(FRR)
    assert (rec.state, rec.established_at, rec.adopted) == (ESTABLISHED, 100, True)
    assert tracker.get(RR).state == CONNECTED
    tracker.observe(PeerState(FRR, "down", "hold timer expired"), now=150)
    tracker.observe(PeerState(FRR, "up"), now=160)
    assert tracker.get(FRR).adopted is False


def test_records_are_a_read_only_copy() -> None:
    tracker = PeerTracker()
    tracker.observe(RouteUpdate(FRR), now=1)
    records = tracker.records()
    tracker.observe(Notification(FRR, 4, 0, direction="send"), now=2)
    assert records[FRR].last_notification is None
    assert tracker.get(FRR).last_notification.text == "Hold Timer Expired/0"
    tracker.observe(EndOfRib(FRR, "ipv4", "unicast"), now=3)
    assert tracker.get(FRR).eor is False  # only the EVPN family counts


def test_notification_names() -> None:
    assert notification_text(6, 4) == "Cease/Administrative Reset"
    assert notification_text(3, 9) == "UPDATE Message Error/9"
    assert notification_text(42, 1) == "code 42/1"
