"""bench.bgptap's packet arithmetic: which segments count as the source's BGP data."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address

from bench import bgpsend, bgptap

PEER = IPv4Address("192.0.2.10")
US = IPv4Address("192.0.2.20")


def segment(payload: bytes, src: IPv4Address = PEER, sport: int = 179, dport: int = 40000,
            options: bytes = b"") -> bytes:
    """An IPv4 + TCP segment as an AF_PACKET SOCK_DGRAM socket hands it over."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, (5 + len(options) // 4) << 4, 0x18,
                      65535, 0, 0) + options
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0, 64,
                     socket.IPPROTO_TCP, 0, src.packed, US.packed)
    return ip + tcp + payload


KEEPALIVE = bgpsend.message(bgpsend.KEEPALIVE, b"")
UPDATE = bgpsend.reach(bgpsend.vtep(0), bgpsend.type2(0, bgpsend.vtep(0), 100),
                       bgpsend.common_attributes(65000, 100))


def test_an_update_counts_with_its_full_length_even_when_the_capture_is_cut() -> None:
    packet = segment(UPDATE * 100, options=b"\x01\x01\x08\x0a" + b"\0" * 8)  # timestamps
    found = bgptap.payload(packet[: bgptap.SNAP], PEER)
    assert found is not None
    length, head = found
    assert length == len(UPDATE) * 100
    assert bgptap.counts(length, head)


def test_a_lone_keepalive_and_a_bare_ack_do_not_count() -> None:
    for payload in (KEEPALIVE, b""):
        found = bgptap.payload(segment(payload), PEER)
        assert found is not None and not bgptap.counts(*found)
    # a KEEPALIVE followed by an UPDATE in one segment does
    found = bgptap.payload(segment(KEEPALIVE + UPDATE), PEER)
    assert found is not None and bgptap.counts(*found)


def test_only_bgp_segments_from_the_peer() -> None:
    assert bgptap.payload(segment(UPDATE, src=US), PEER) is None
    assert bgptap.payload(segment(UPDATE, sport=22, dport=40000), PEER) is None
    assert bgptap.payload(segment(UPDATE, sport=40000, dport=179), PEER) is not None


def test_the_kernel_filter_is_six_instructions_matching_the_peer() -> None:
    program = bgptap.tcp_filter(PEER)
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert len(insns) == 6
    assert insns[1][3] == socket.IPPROTO_TCP and insns[3][3] == int(PEER)
    assert insns[4] == (0x06, 0, 0, bgptap.SNAP) and insns[5] == (0x06, 0, 0, 0)
