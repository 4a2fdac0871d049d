"""The raw EVPN receive path in a real ExaBGP: evpnd's launcher, the configuration
evpnd generates, and a minimal BGP sender, in a namespace of the test's own.

    namespace lo: 192.0.2.1 ExaBGP (launcher) --iBGP, hold 3 s-- 192.0.2.2 sender (this process)
                  ExaBGP's API process records every line it gets (bench.exabgp_receive record)

The session carries L2VPN/EVPN and IPv4 unicast, so an IPv4 UPDATE and the
IPv4 End-of-RIB can show that what is not EVPN still comes as ExaBGP's JSON.
With `bgp.receive: raw` the EVPN UPDATEs must come as `=evpn` frames carrying
the very bytes sent, and the session must survive several hold times of
UPDATEs with no KEEPALIVE from the sender (a raw UPDATE still counts as
traffic for ExaBGP's hold timer); with `json` the same input gives JSON and
no frame, and a reload to `raw` switches the running session over.
Against FRR: see test_raw_receive_frr.py.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import bgpsend
from bench.exabgp_receive import (
    AFI_IPV4,
    SAFI_UNICAST,
    SENDER_IP,
    Peering,
    body,
    ipv4_eor,
    ipv4_update,
    packed_updates,
    route_refresh,
    type2_updates,
)

pytestmark = pytest.mark.netns

HOLD = 3  # seconds: the smallest hold time RFC 4271 allows
STREAM_SECONDS = 4 * HOLD + 1  # UPDATEs only, no KEEPALIVE, for longer than 4 hold times
FAMILIES = ((bgpsend.AFI_L2VPN, bgpsend.SAFI_EVPN), (AFI_IPV4, SAFI_UNICAST))


@dataclass
class Recorded:
    """The lines ExaBGP wrote to its API process, from the recorder's file."""

    path: Path

    def lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return self.path.read_text().splitlines()

    def wait(self, predicate: Callable[[str], bool], timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if any(predicate(line) for line in lines):
                return lines
            assert time.monotonic() < deadline, f"no such line in {lines[-5:]}"
            time.sleep(0.1)


def frames(lines: list[str]) -> list[tuple[str, list[bytes]]]:
    found = []
    for line in lines:
        if line.startswith("="):
            verb, peer, *bodies = line.split(" ")
            assert verb == "=evpn" and bodies, line[:200]
            found.append((peer, [base64.b64decode(b, validate=True) for b in bodies]))
    return found


def messages(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def updates(lines: list[str]) -> list[dict]:
    return [m["neighbor"]["message"] for m in messages(lines) if m["type"] == "update"]


def bodies_before(lines: list[str], predicate: Callable[[str], bool]) -> int:
    """How many EVPN bodies were framed before the first JSON line matching `predicate`."""
    count = 0
    for line in lines:
        if line.startswith("="):
            count += line.count(" ") - 1
        elif predicate(line):
            return count
    raise AssertionError("no such JSON line")


def is_refresh(subtype: str) -> Callable[[str], bool]:
    def check(line: str) -> bool:
        if not line.startswith("{"):
            return False
        message = json.loads(line)
        return (message["type"] == "refresh"
                and message["neighbor"]["route-refresh"]["subtype"] == subtype)

    return check


def is_state(state: str) -> Callable[[str], bool]:
    def check(line: str) -> bool:
        return line.startswith("{") and json.loads(line).get("neighbor", {}).get("state") == state

    return check


@pytest.fixture
def make_peering(ns: str, tmp_path: Path) -> Iterator[Callable[[str], tuple[Peering, Recorded]]]:
    started: list[Peering] = []

    def make(receive: str) -> tuple[Peering, Recorded]:
        recorded = Recorded(tmp_path / "lines")
        api = [sys.executable, "-m", "bench.exabgp_receive", "record", str(recorded.path)]
        session = Peering(ns, tmp_path, api, receive=receive, hold=HOLD, families=FAMILIES,
                          keepalive_interval=1.0)
        started.append(session)
        session.start()
        recorded.wait(is_state("up"))
        return session, recorded

    try:
        yield make
    finally:
        for session in started:
            session.close()


@dataclass
class Sent:
    """What the exercise sent, in order, and where the JSON-only messages fell."""

    evpn: list[bytes]  # UPDATE bodies, EVPN only, in the order sent
    before_ipv4: int  # EVPN UPDATEs sent before the IPv4 UPDATE
    before_borr: int
    streamed: int


def exercise(session: Peering) -> Sent:
    """Bursts, a packed UPDATE, IPv4, both End-of-RIBs, a refresh around UPDATEs streamed
    for several hold times without any KEEPALIVE from us, closed by the EoRR."""
    burst = type2_updates(300)
    packed = packed_updates(200, 50)
    session.send(b"".join(burst) + b"".join(packed))
    session.send(ipv4_update("10.1.2.0", 24) + ipv4_eor())
    eor = bgpsend.eor()
    refreshed = type2_updates(5, first=1000)
    session.send(eor + route_refresh(1) + b"".join(refreshed))
    streamed: list[bytes] = []
    session.keepalives.clear()
    started = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS:
        streamed += type2_updates(1, first=2000 + len(streamed))
        session.send(streamed[-1])
        time.sleep(0.5)
    session.keepalives.set()
    session.send(route_refresh(2))
    evpn = [body(u) for u in [*burst, *packed, eor, *refreshed, *streamed]]
    return Sent(evpn, len(burst) + len(packed), len(burst) + len(packed) + 1, len(streamed))


def assert_session_survived(session: Peering, recorded: Recorded) -> None:
    assert session.notifications() == [], "ExaBGP sent a NOTIFICATION"
    assert not session.closed.is_set(), "ExaBGP closed the session"
    assert not any(is_state("down")(line) for line in recorded.lines())


def test_evpn_updates_come_as_frames_and_everything_else_as_json(
        make_peering: Callable[[str], tuple[Peering, Recorded]]) -> None:
    session, recorded = make_peering("raw")
    sent = exercise(session)
    lines = recorded.wait(is_refresh("end"))

    # Every EVPN UPDATE (packed, End-of-RIB included) arrived in a frame, byte for byte,
    # in order, several to a line, and named the peer as ExaBGP's JSON does.
    up = next(m for m in messages(lines) if m.get("neighbor", {}).get("state") == "up")
    assert up["neighbor"]["address"]["peer"] == SENDER_IP
    got = frames(lines)
    assert {peer for peer, _ in got} == {SENDER_IP}
    assert [b for _, bodies in got for b in bodies] == sent.evpn
    assert max(len(bodies) for _, bodies in got) > 1
    assert all(len(line) <= 1 << 20 and line.count(" ") <= 1001 for line in lines)

    # Not one EVPN UPDATE as JSON; the IPv4 UPDATE and End-of-RIB are, in their place.
    assert updates(lines) == [
        {"update": {"attribute": {"origin": "igp", "local-preference": 100},
                    "announce": {"ipv4 unicast": {SENDER_IP: [{"nlri": "10.1.2.0/24"}]}}}},
        {"eor": {"afi": "ipv4", "safi": "unicast"}},
    ]
    assert bodies_before(lines, lambda line: '"ipv4 unicast"' in line) == sent.before_ipv4
    assert bodies_before(lines, is_refresh("begin")) == sent.before_borr
    assert bodies_before(lines, is_refresh("end")) == len(sent.evpn)

    # The UPDATEs alone kept the session up for more than four hold times.
    assert sent.streamed >= 2 * STREAM_SECONDS - 1
    assert_session_survived(session, recorded)


def test_receive_json_gives_json_and_a_reload_switches_to_frames(
        make_peering: Callable[[str], tuple[Peering, Recorded]]) -> None:
    session, recorded = make_peering("json")
    sent = exercise(session)
    lines = recorded.wait(is_refresh("end"))
    assert frames(lines) == []
    evpn = [u for u in updates(lines) if u != {"eor": {"afi": "ipv4", "safi": "unicast"}}
            and "ipv4 unicast" not in json.dumps(u)]
    # One JSON line per EVPN UPDATE, the EVPN End-of-RIB as ExaBGP's `eor`.
    assert len(evpn) == len(sent.evpn)
    assert {"eor": {"afi": "l2vpn", "safi": "evpn"}} in evpn
    assert_session_survived(session, recorded)

    # bgp.receive changed and reloaded: the running session hands over frames now.
    session.reload("raw")
    log = session.log_path
    deadline = time.monotonic() + 30
    while log.read_text().count("performing reload") < 2:
        assert time.monotonic() < deadline, "ExaBGP did not reload"
        time.sleep(0.1)
    # The read ExaBGP was waiting in when the reload came finishes the old way:
    # one more message (an IPv4 End-of-RIB, JSON either way) lets it finish.
    session.send(ipv4_eor())
    recorded.wait(lambda line: len(updates([line])) == 1 and line not in lines)
    after = type2_updates(3, first=5000)
    session.send(b"".join(after) + route_refresh(2))
    lines = recorded.wait(lambda line: is_refresh("end")(line) and line not in lines)
    assert [b for _, bodies in frames(lines) for b in bodies] == [body(u) for u in after]
    assert updates(lines)[-1] == {"eor": {"afi": "ipv4", "safi": "unicast"}}
    assert_session_survived(session, recorded)
