"""Netlink messages for unit tests: a small bridge topology as decoded messages, and
builders for the same messages on the wire (struct-packed, as the kernel sends them)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, ip_address

from evpnd.dataplane.events import WatchedVni
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    IFF_UP,
    NUD_REACHABLE,
    LinkMsg,
    NeighMsg,
)

BR, VX, P1, P2, OTHER_BR, OTHER_PORT = 10, 11, 12, 13, 20, 21
W100 = WatchedVni(100, "br100", "vxlan100")
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
IP_A = IPv4Address("10.100.0.10")


def raw_mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def link(
    index: int,
    name: str,
    master: int | None = None,
    kind: str | None = None,
    deleted: bool = False,
    flags: int = IFF_UP,
    family: int = AF_UNSPEC,
) -> LinkMsg:
    return LinkMsg(deleted, family, index, name, master, kind, flags)


def fdb(
    mac: str,
    port: int = P1,
    *,
    deleted: bool = False,
    state: int = NUD_REACHABLE,
    flags: int = 0,
    master: int | None = BR,
    flags_ext: int = 0,
) -> NeighMsg:
    return NeighMsg(
        deleted, AF_BRIDGE, port, state, flags, raw_mac(mac), None, master, None, None, flags_ext
    )


def neigh(
    ip: str,
    mac: str | None,
    *,
    dev: int = BR,
    deleted: bool = False,
    state: int = NUD_REACHABLE,
    flags: int = 0,
    protocol: int | None = None,
) -> NeighMsg:
    addr = ip_address(ip)
    return NeighMsg(
        deleted,
        AF_INET if addr.version == 4 else AF_INET6,
        dev,
        state,
        flags,
        raw_mac(mac) if mac is not None else None,
        addr.packed,
        None,
        None,
        protocol,
        0,
    )


def topology() -> list[LinkMsg]:
    return [
        link(BR, "br100", kind="bridge"),
        link(VX, "vxlan100", master=BR, kind="vxlan"),
        link(P1, "vep1", master=BR, kind="veth"),
        link(P2, "vep2", master=BR, kind="veth"),
        link(OTHER_BR, "br-other", kind="bridge"),
        link(OTHER_PORT, "vep9", master=OTHER_BR, kind="veth"),
    ]


# --- on the wire


def nla(atype: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, atype) + payload + b"\0" * (-length % 4)


def nlmsg(mtype: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, mtype, flags, seq, 0) + body + b"\0" * (-length % 4)


def ndmsg(family: int, ifindex: int, state: int, flags: int, *attrs: bytes) -> bytes:
    return struct.pack("=BBHiHBB", family, 0, 0, ifindex, state, flags, 0) + b"".join(attrs)


def ifinfomsg(family: int, ifindex: int, flags: int, *attrs: bytes) -> bytes:
    return struct.pack("=BxHiII", family, 0, ifindex, flags, 0) + b"".join(attrs)
