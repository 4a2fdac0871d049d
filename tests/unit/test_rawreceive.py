"""The raw EVPN receive path's pieces: the structural check, the scan, the frame,
the buffered reader against ExaBGP's own, and the self-check against a changed ExaBGP.

The UPDATEs are built by bench.bgpsend, the encoder the benchmarks send with.
"""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import bgpsend
from evpnd.speaker import rawreceive
from evpnd.speaker.rawreceive import evpn_only, frame_line, raw_recipients, scan

REPO = Path(__file__).resolve().parents[2]
ASN, VNI = 65000, 100
NEXTHOP = bgpsend.vtep(0)
COMMON = bgpsend.common_attributes(ASN, VNI)


def type2(i: int) -> bytes:
    return bgpsend.reach(NEXTHOP, bgpsend.type2(i, NEXTHOP, VNI), COMMON)


def type3_with_pmsi() -> bytes:
    pmsi = bgpsend.attribute(0xC0, 22, bytes((0, 6)) + VNI.to_bytes(3, "big") + NEXTHOP.packed)
    return bgpsend.reach(NEXTHOP, bgpsend.type3(NEXTHOP, VNI), COMMON + pmsi)


def packed(count: int) -> bytes:
    nlri = b"".join(bgpsend.type2(i, NEXTHOP, VNI) for i in range(count))
    return bgpsend.reach(NEXTHOP, nlri, COMMON)


def update(attributes: bytes, withdrawn: bytes = b"", nlri: bytes = b"") -> bytes:
    return bgpsend.message(bgpsend.UPDATE, struct.pack("!H", len(withdrawn)) + withdrawn
                           + struct.pack("!H", len(attributes)) + attributes + nlri)


def mp_reach(afi: int, safi: int, nlri: bytes, flags: int = 0x80) -> bytes:
    value = struct.pack("!HBB", afi, safi, 4) + NEXTHOP.packed + b"\0" + nlri
    if flags & 0x10:
        return struct.pack("!BBH", flags, 14, len(value)) + value
    return bgpsend.attribute(flags, 14, value)


def ipv4_unicast() -> bytes:
    attributes = (bgpsend.attribute(0x40, 1, b"\0") + bgpsend.attribute(0x40, 2, b"")
                  + bgpsend.attribute(0x40, 3, NEXTHOP.packed))
    return update(attributes, nlri=bytes((24, 10, 1, 2)))


def checks(message: bytes) -> bool:
    return evpn_only(message, 19, len(message))


EVPN_TYPE2 = bgpsend.type2(7, NEXTHOP, VNI)


# ---------------------------------------------------------------------------
# evpn_only


@pytest.mark.parametrize("message", [
    type2(1), type3_with_pmsi(), packed(100), bgpsend.unreach(EVPN_TYPE2), bgpsend.eor(),
    update(mp_reach(25, 70, EVPN_TYPE2, flags=0x90) + COMMON),  # extended length
    update(mp_reach(25, 70, EVPN_TYPE2)
           + bgpsend.attribute(0x80, 15, struct.pack("!HB", 25, 70) + EVPN_TYPE2)),
], ids=["type2", "type3-pmsi", "packed", "withdraw", "eor", "extended-length", "reach+unreach"])
def test_evpn_only_updates_pass(message: bytes) -> None:
    assert checks(message)


@pytest.mark.parametrize("message", [
    ipv4_unicast(),
    bgpsend.message(bgpsend.UPDATE, b"\0\0\0\0"),  # IPv4 End-of-RIB
    update(COMMON),  # attributes and nothing else
    update(mp_reach(25, 70, EVPN_TYPE2) + COMMON, withdrawn=bytes((24, 10, 1, 2))),
    update(mp_reach(25, 70, EVPN_TYPE2) + COMMON, nlri=bytes((24, 10, 1, 2))),
    update(mp_reach(1, 1, bytes((24, 10, 1, 2))) + COMMON),  # IPv4 unicast over MP_REACH
    update(mp_reach(25, 65, b"") + COMMON),  # L2VPN VPLS
    update(mp_reach(25, 70, EVPN_TYPE2)
           + bgpsend.attribute(0x80, 15, struct.pack("!HB", 2, 1))),  # EVPN + IPv6 withdraw
    update(mp_reach(25, 70, EVPN_TYPE2) + mp_reach(25, 70, EVPN_TYPE2)),  # MP_REACH twice
    update(mp_reach(25, 70, EVPN_TYPE2) + COMMON + bgpsend.attribute(0x40, 1, b"\0")),
    update(bgpsend.attribute(0x80, 14, b"\0\x19")),  # MP_REACH too short for AFI/SAFI
], ids=["ipv4", "ipv4-eor", "no-mp", "withdrawn-field", "nlri-field", "mp-ipv4", "vpls",
        "mixed-families", "mp-twice", "origin-twice", "mp-short"])
def test_anything_else_takes_exabgps_path(message: bytes) -> None:
    assert not checks(message)


def test_attributes_that_do_not_walk_to_the_end_are_refused() -> None:
    good = type2(1)
    body = bytearray(good[19:])
    attr_len = body[2] << 8 | body[3]
    for cut in range(1, 40):  # the attribute section declared longer than the body
        assert not evpn_only(good[: len(good) - cut], 19, len(good) - cut)
    overrun = bytearray(body)
    overrun[6] = 0xFF  # the first attribute's length runs past the section
    assert not evpn_only(bytes(overrun), 0, len(overrun))
    short = bytearray(body)
    short[2:4] = (attr_len - 1).to_bytes(2, "big")  # section ends mid-attribute
    assert not evpn_only(bytes(short), 0, len(short))
    assert not evpn_only(b"\0\0\0", 0, 3)


# ---------------------------------------------------------------------------
# scan and the frame line


def test_scan_takes_evpn_updates_up_to_the_first_other_message() -> None:
    updates = [type2(i) for i in range(5)]
    stream = b"".join(updates) + bgpsend.message(bgpsend.KEEPALIVE, b"") + type2(9)
    spans, upto = scan(stream, 0, len(stream), 4096)
    assert [stream[s:e] for s, e in spans] == [u[19:] for u in updates]
    assert upto == sum(map(len, updates))
    # ExaBGP's own path gets the KEEPALIVE; the scan goes on after it.
    rest, _ = scan(stream, upto + 19, len(stream), 4096)
    assert [stream[s:e] for s, e in rest] == [type2(9)[19:]]


@pytest.mark.parametrize("tail", [
    ipv4_unicast(),
    type2(3)[:-1],  # incomplete
    b"\xfe" + type2(3)[1:],  # bad marker: ExaBGP's reader answers it
    type2(3)[:16] + b"\x00\x16\x02" + type2(3)[19:],  # length 22 < 23
    b"\xff" * 16 + b"\x13\x89\x02" + b"\0" * 4,  # length 5001 > 4096
], ids=["ipv4", "incomplete", "marker", "too-short", "too-long"])
def test_scan_stops_before_what_is_not_raw(tail: bytes) -> None:
    head = type2(1) + type2(2)
    spans, upto = scan(head + tail, 0, len(head + tail), 4096)
    assert len(spans) == 2 and upto == len(head)


def test_scan_bounds_a_line_by_bodies_and_by_text() -> None:
    stream = b"".join(type2(i) for i in range(50))
    spans, upto = scan(stream, 0, len(stream), 4096, max_bodies=20)
    assert len(spans) == 20 and upto == 20 * len(type2(0))
    per_body = 1 + len(base64.b64encode(type2(0)[19:]))
    spans, _ = scan(stream, 0, len(stream), 4096, max_text=per_body * 7 + 3)
    assert len(spans) == 7
    big = packed(100)  # one body larger than the bound still goes (alone)
    spans, _ = scan(big + big, 0, 2 * len(big), 65535, max_text=10)
    assert len(spans) == 1


def test_frame_line_is_the_agreed_format() -> None:
    updates = [type2(1), bgpsend.eor(), packed(3)]
    stream = b"".join(updates)
    spans, _ = scan(bytearray(stream), 0, len(stream), 4096)
    line = frame_line("2001:db8::2", bytearray(stream), spans)
    verb, peer, *bodies = line.decode("ascii").split(" ")
    assert (verb, peer) == ("=evpn", "2001:db8::2")
    assert [base64.b64decode(b, validate=True) for b in bodies] == [u[19:] for u in updates]
    assert b"\n" not in line


def test_raw_recipients_only_when_no_process_would_miss_parsed_updates() -> None:
    assert raw_recipients({"receive-raw-evpn": ["evpnd"], "receive-update": ["evpnd"]}) \
        == ["evpnd"]
    assert raw_recipients({"receive-raw-evpn": [], "receive-update": ["evpnd"]}) == ()
    assert raw_recipients({"receive-update": ["evpnd"]}) == ()
    assert raw_recipients({"receive-raw-evpn": ["evpnd"],
                           "receive-update": ["evpnd", "other"]}) == ()


# ---------------------------------------------------------------------------
# The buffered reader yields what ExaBGP's Connection.reader yields


@pytest.fixture(scope="module", autouse=True)
def exabgp_logger() -> None:
    """ExaBGP's reader logs (a closed connection); its logger needs its settings first."""
    from exabgp.environment import getenv
    from exabgp.logger import log

    log.init(getenv())


def _connection(sock: socket.socket) -> Any:
    from exabgp.protocol.family import AFI
    from exabgp.reactor.network.connection import Connection

    connection = Connection(AFI.ipv4, "192.0.2.2", "192.0.2.1")
    connection.io = sock
    return connection


def _messages(reader: Any) -> Iterator[tuple[Any, ...]]:
    """Every non-waiting tuple of successive reader() runs, until one carries an error."""
    for _ in range(200):
        for item in reader():
            length, msg, header, body, notify = item
            if not length and not header:
                continue  # waiting
            yield length, msg, header, body, (
                None if notify is None else (type(notify).__name__, notify.code,
                                             notify.subcode, str(notify)))
            if notify is not None:
                return


def _both(stream: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    from exabgp.reactor.network.connection import Connection

    results = []
    for buffered in (False, True):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.sendall(stream)
        theirs.close()  # the end of the stream then reads as a lost connection
        connection = _connection(ours)
        if buffered:
            rawreceive.BufferedInput.attach(connection, rawreceive._Exa())
            reader = connection.reader
        else:
            reader = Connection.reader.__get__(connection)
        got: list[tuple[Any, ...]] = []
        with pytest.raises(Exception) as ended:
            got.extend(_messages(reader))
            raise AssertionError("no error at the end")
        got.append(("raised", type(ended.value).__name__, str(ended.value)))
        results.append(got)
        connection.close()
    return results[0], results[1]


@pytest.mark.parametrize("tail", [
    b"",  # the peer closes: LostConnection
    b"\xfe" + b"\xff" * 15 + b"\x00\x13\x04",  # bad marker: NotifyError 1/1
    b"\xff" * 16 + b"\x00\x12\x04",  # length 18: NotifyError 1/2
    b"\xff" * 16 + b"\x00\x14\x04\x00",  # KEEPALIVE of 20 octets: NotifyError 1/2
    b"\xff" * 16 + b"\x13\x89\x02",  # above the 4096 octets allowed: NotifyError 1/2
    type2(5)[:-3],  # closed in mid-message
], ids=["close", "marker", "short", "keepalive-length", "long", "mid-message"])
def test_buffered_reader_matches_exabgps_reader(tail: bytes) -> None:
    stream = (bgpsend.open_message(ASN, NEXTHOP, 9) + bgpsend.message(bgpsend.KEEPALIVE, b"")
              + type2(1) + ipv4_unicast() + packed(20) + bgpsend.eor() + tail)
    stock, buffered = _both(stream)
    assert buffered == stock
    assert len(stock) >= 7


# ---------------------------------------------------------------------------
# The self-check: a changed ExaBGP makes install() refuse, naming what is missing


@pytest.mark.parametrize(("module", "owner", "name"), [
    ("exabgp.reactor.protocol", "Protocol", "read_message"),
    ("exabgp.reactor.network.connection", "Connection", "reader"),
    ("exabgp.configuration.neighbor.api", "ParseAPI", "flatten"),
    ("exabgp.reactor.peer", "Peer", "_main"),
])
def test_a_missing_name_is_refused(monkeypatch: pytest.MonkeyPatch, module: str, owner: str,
                                   name: str) -> None:
    cls = getattr(__import__(module, fromlist=["_"]), owner)
    monkeypatch.delattr(cls, name)
    with pytest.raises(rawreceive.RawReceiveUnavailable, match=f"{owner}.{name}"):
        rawreceive._Exa()


def test_a_read_message_that_no_longer_uses_the_connection_reader_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.reactor.protocol import Protocol

    def read_message(self: Any) -> Iterator[Any]:
        yield from self.transport.frames()

    monkeypatch.setattr(Protocol, "read_message", read_message)
    with pytest.raises(rawreceive.RawReceiveUnavailable, match="'reader'"):
        rawreceive._Exa()


def test_a_peer_loop_that_no_longer_checks_the_hold_timer_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from exabgp.reactor.peer import Peer

    def _main(self: Any) -> Iterator[Any]:
        yield from self.proto.read_message()

    monkeypatch.setattr(Peer, "_main", _main)
    with pytest.raises(rawreceive.RawReceiveUnavailable, match="check_ka"):
        rawreceive._Exa()


LAUNCH_BROKEN = """
import sys
import exabgp.reactor.network.connection as connection
del connection.Connection.reader  # what a renamed ExaBGP internal looks like
from evpnd.speaker.launcher import main
sys.exit(main(["validate", "-n", sys.argv[1]]))
"""


def test_the_launcher_refuses_to_start_without_the_hook(tmp_path: Path) -> None:
    conf = tmp_path / "exabgp.conf"
    conf.write_text("process evpnd {\n    run /bin/cat;\n    encoder json;\n}\n")
    env = {"PATH": "/usr/bin:/bin", "EXABGP_ENVFILE": str(tmp_path / "none.env")}
    broken = subprocess.run([sys.executable, "-c", LAUNCH_BROKEN, str(conf)], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert "raw EVPN receive path" in broken.stderr
    assert "Connection.reader" in broken.stderr
    intact = subprocess.run(
        [sys.executable, "-m", "evpnd.speaker.launcher", "validate", "-n", str(conf)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert intact.returncode == 0, intact.stdout + intact.stderr
