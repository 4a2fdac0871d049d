"""A capture of VXLAN traffic on an underlay interface of a lab node, for the fabric tests.

No tcpdump: a raw AF_PACKET socket in the node's namespace (this module run as a
program there, `python -m tests.netns.vxlan_capture IFACE SECONDS`), which
prints one JSON object per VXLAN packet it saw: the VNI, and of the inner frame
its Ethernet addresses and what it carries (IPv4: addresses, TTL, protocol;
ARP: operation and addresses). `Capture` starts it, and stops and parses it.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

VXLAN_PORT = 4789
ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
REPO = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class VxlanPacket:
    vni: int
    outer_src: str
    outer_dst: str
    inner_src_mac: str
    inner_dst_mac: str
    ethertype: int
    src: str | None = None  # IPv4 source, or ARP sender address
    dst: str | None = None  # IPv4 destination, or ARP target address
    ttl: int | None = None  # IPv4 only
    proto: int | None = None  # IPv4 only
    arp_op: int | None = None  # ARP only: 1 request, 2 reply


def parse(frame: bytes) -> VxlanPacket | None:
    """One Ethernet frame off the underlay: the VXLAN packet in it, or None."""
    if len(frame) < 14 + 20 + 8 + 8 + 14:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != ETH_P_IP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != socket.IPPROTO_UDP:
        return None
    outer_src = str(IPv4Address(frame[26:30]))
    outer_dst = str(IPv4Address(frame[30:34]))
    udp = 14 + ihl
    (dport,) = struct.unpack_from("!H", frame, udp + 2)
    if dport != VXLAN_PORT:
        return None
    vxlan = udp + 8
    vni = int.from_bytes(frame[vxlan + 4 : vxlan + 7], "big")
    inner = vxlan + 8
    dst_mac, src_mac = frame[inner : inner + 6].hex(":"), frame[inner + 6 : inner + 12].hex(":")
    (inner_type,) = struct.unpack_from("!H", frame, inner + 12)
    base = {"vni": vni, "outer_src": outer_src, "outer_dst": outer_dst,
            "inner_src_mac": src_mac, "inner_dst_mac": dst_mac,
            "ethertype": inner_type}  # fmt: skip
    payload = inner + 14
    if inner_type == ETH_P_IP and len(frame) >= payload + 20:
        return VxlanPacket(**base, src=str(IPv4Address(frame[payload + 12 : payload + 16])),
                           dst=str(IPv4Address(frame[payload + 16 : payload + 20])),
                           ttl=frame[payload + 8], proto=frame[payload + 9])  # fmt: skip
    if inner_type == ETH_P_ARP and len(frame) >= payload + 28:
        (op,) = struct.unpack_from("!H", frame, payload + 6)
        return VxlanPacket(**base, src=str(IPv4Address(frame[payload + 14 : payload + 18])),
                           dst=str(IPv4Address(frame[payload + 24 : payload + 28])),
                           arp_op=op)  # fmt: skip
    return VxlanPacket(**base)


def _capture(interface: str, seconds: float) -> None:
    """Print the VXLAN packets seen on `interface` for `seconds` (run inside the namespace)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((interface, 0))
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        frame, address = sock.recvfrom(65535)
        packet = parse(frame)
        if packet is not None:
            out = {**packet.__dict__, "outgoing": address[2] == socket.PACKET_OUTGOING}
            print(json.dumps(out), flush=True)


class Capture:
    """`with Capture(netns, "eth1", 5) as cap: ...; cap.packets` (the capture runs in the
    background for at most `seconds`; leaving the block stops it and parses its output)."""

    def __init__(self, netns: str, interface: str, seconds: float = 10.0) -> None:
        self.argv = ["ip", "netns", "exec", netns, sys.executable, "-m",
                     "tests.netns.vxlan_capture", interface, str(seconds)]  # fmt: skip
        self.packets: list[VxlanPacket] = []
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Capture:
        self._proc = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline()  # the socket is bound: nothing is missed
        if first.strip() != "ready":
            self._proc.kill()
            raise RuntimeError(f"capture did not start: {first!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        time.sleep(0.3)  # the last packets of the traffic under test
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        for line in out.splitlines():
            data: dict[str, Any] = json.loads(line)
            data.pop("outgoing", None)
            self.packets.append(VxlanPacket(**data))


if __name__ == "__main__":
    _capture(sys.argv[1], float(sys.argv[2]))
