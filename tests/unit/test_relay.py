"""The relay's bookkeeping (relay.Relay) without processes: what reaches whom, and when."""

from __future__ import annotations

import json

from evpnd.speaker import relay


class Sink:
    """Stands in for a transport: records what was written."""

    def __init__(self) -> None:
        self.data = b""
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)


def state_line(peer: str, state: str) -> bytes:
    return json.dumps({"exabgp": "5.0.15", "type": "state",
                       "neighbor": {"address": {"local": "192.0.2.1", "peer": peer},
                                    "state": state}}).encode() + b"\n"  # fmt: skip


def attached_relay() -> tuple[relay.Relay, Sink, Sink]:
    exabgp, daemon = Sink(), Sink()
    r = relay.Relay(exabgp)  # type: ignore[arg-type]
    r.attach(daemon)  # type: ignore[arg-type]
    return r, exabgp, daemon


def test_lines_pass_whole_even_when_split_across_reads() -> None:
    r, _, daemon = attached_relay()
    r.from_exabgp(b'{"type": "upd')
    assert daemon.data == b""
    r.from_exabgp(b'ate"}\n{"type": ')
    assert daemon.data == b'{"type": "update"}\n'
    r.from_exabgp(b'"x"}\n')
    assert daemon.data == b'{"type": "update"}\n{"type": "x"}\n'


def test_without_a_daemon_lines_are_dropped_and_counted() -> None:
    r, _, daemon = attached_relay()
    r.detach()
    r.from_exabgp(b'{"a": 1}\n{"b": 2}\n')
    assert r.dropped_lines == 2 and daemon.data == b""


def test_a_new_daemon_starts_at_a_line_boundary() -> None:
    r, _, _ = attached_relay()
    r.detach()
    r.from_exabgp(b'{"half": ')
    second = Sink()
    r.attach(second)  # type: ignore[arg-type]
    r.from_exabgp(b'"line"}\n{"whole": 1}\n')
    # The first line began before this daemon was there: it gets it whole or not at
    # all. Here the relay held the start, so the line arrives complete.
    assert second.data == b'{"half": "line"}\n{"whole": 1}\n'


def test_peer_states_are_remembered_and_reported_in_the_hello() -> None:
    r, _, _ = attached_relay()
    r.from_exabgp(state_line("192.0.2.2", "connected") + state_line("192.0.2.2", "up"))
    r.detach()
    r.from_exabgp(state_line("192.0.2.3", "down"))  # while nobody listens
    assert r.states == {"192.0.2.2": "up", "192.0.2.3": "down"}
    hello = relay.hello_line("tok", 42, r.states)
    assert relay.parse_hello(hello) == ("tok", 42, {"192.0.2.2": "up", "192.0.2.3": "down"})


def test_long_lines_are_not_parsed_for_states() -> None:
    r, _, daemon = attached_relay()
    big = b'{"type": "state", "pad": "' + b"x" * (relay.STATE_LINE_MAX + 10) + b'"}\n'
    r.from_exabgp(big)
    assert r.states == {} and daemon.data == big


def test_acks_owed_to_a_previous_daemon_never_reach_the_next() -> None:
    r, exabgp, first = attached_relay()
    r.from_daemon(b"announce evpn batch a\nannounce evpn batch b\n")
    assert exabgp.data.count(b"\n") == 2 and r.outstanding == 2
    r.from_exabgp(b"done\n")
    assert first.data == b"done\n"
    r.detach()  # the daemon went away with one command unanswered
    second = Sink()
    r.attach(second)  # type: ignore[arg-type]
    r.from_daemon(b"withdraw evpn batch c\n")
    r.from_exabgp(b'done\n{"type": "update"}\nerror\n')
    # The first ack answers the old daemon's command; the second is the new one's.
    assert second.data == b'{"type": "update"}\nerror\n'
    assert r.outstanding == 0 and r.all_acked.is_set()


def test_control_lines_are_kept_from_exabgp_and_set_the_hold() -> None:
    r, exabgp, _ = attached_relay()
    r.from_daemon(b"#evpnd hold 90\nannounce evpn batch a\n")
    assert r.hold == 90.0
    assert exabgp.data == b"announce evpn batch a\n" and r.outstanding == 1
    r.from_daemon(b"#evpnd hold nonsense\n#evpnd what 1\n")
    assert r.hold == 90.0 and exabgp.data == b"announce evpn batch a\n"



def test_the_daemons_hold_line_is_the_one_the_relay_reads() -> None:
    r, exabgp, _ = attached_relay()
    assert relay.hold_line(2.5) == b"#evpnd hold 2.5\n"
    r.from_daemon(relay.hold_line(2.5) + relay.hold_line(120))
    assert r.hold == 120.0 and exabgp.data == b""
    r.from_daemon(relay.hold_line(0))
    assert r.hold == 0.0


def test_half_a_command_never_reaches_exabgp() -> None:
    r, exabgp, _ = attached_relay()
    r.from_daemon(b"announce evpn batch a\nannounce evpn ba")
    assert exabgp.data == b"announce evpn batch a\n"
    r.detach()  # the daemon died mid-line
    r.attach(Sink())  # type: ignore[arg-type]
    r.from_daemon(b"withdraw evpn batch c\n")
    assert exabgp.data == b"announce evpn batch a\nwithdraw evpn batch c\n"


def test_parse_hello_rejects_what_is_not_a_hello() -> None:
    assert relay.parse_hello(b"evpnd-relay tok 12\n") == ("tok", 12, {})
    for bad in (b"", b"hello\n", b"evpnd-relay tok notapid\n", b"evpnd-relay tok 1 [1]\n",
                b"evpnd-relay tok 1 {nope\n", b"other tok 1 {}\n"):
        assert relay.parse_hello(bad) is None, bad
