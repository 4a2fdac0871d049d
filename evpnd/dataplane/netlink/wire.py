"""NETLINK_ROUTE wire format: constants, framing, attributes, neighbour, link and route decoders.

Plain `struct`, no pyroute2: decoding is on the hot path of every FDB change
(the kernel echoes each remote MAC evpnd writes twice) and of 100k-entry
dumps, and pyroute2's generic parser costs tens of microseconds per message.
Decoded messages are NamedTuples for the same reason (a frozen dataclass costs
several times more to build).

Everything here is pure: bytes in, values out. A message that does not parse
raises `MalformedMessage`; the caller counts it and skips it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

# <linux/netlink.h>
NETLINK_ROUTE = 0
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_CAPPED = 0x100  # in NLMSG_ERROR: the echoed request was cut to its header
NLM_F_ACK_TLVS = 0x200  # in NLMSG_ERROR: extended ack attributes follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLA_TYPE_MASK = 0x3FFF

# <linux/rtnetlink.h>
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWNEIGH = 28
RTM_DELNEIGH = 29
RTM_GETNEIGH = 30
RTNLGRP_LINK = 1
RTNLGRP_NEIGH = 3
RTNLGRP_IPV4_IFADDR = 5
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV6_IFADDR = 9
RTNLGRP_IPV6_ROUTE = 11
RTNLGRP_IPV4_NETCONF = 24
RTNLGRP_IPV6_NETCONF = 25
RTM_NEWNETCONF = 80
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
AF_UNSPEC = 0
AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
AF_BRIDGE = 7

# <linux/if_link.h>, <linux/if.h>
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFF_UP = 0x1

# <linux/neighbour.h>
NDA_DST = 1
NDA_LLADDR = 2
NDA_VLAN = 5
NDA_MASTER = 9
NDA_PROTOCOL = 12
NDA_FLAGS_EXT = 15
NTF_SELF = 0x02
NTF_MASTER = 0x04
NTF_PROXY = 0x08
NTF_EXT_LEARNED = 0x10
NTF_STICKY = 0x40
NTF_EXT_LOCKED = 0x02  # in NDA_FLAGS_EXT
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_HAS_LLADDR = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT

# Neighbour protocol tag of evpnd's ARP/ND suppression entries. 238 (0xee) is
# unassigned in <linux/rtnetlink.h> and iproute2's rt_protos (186 is "bgp",
# which FRR and BIRD use for routes; 11 is zebra): `ip neigh` prints it as
# "proto 238". evpnd's routes (into the L3VNI) and gateway addresses carry it too.
RTPROT_EVPND = 238

# <linux/rtnetlink.h>: routes
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_NOWHERE = 255
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4
# <linux/if_addr.h>, <linux/netconf.h>
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, ifindex
IFA_PROTO = 11
NETCONFA_IFINDEX = 1
NETCONFA_FORWARDING = 2
NETCONFA_IFINDEX_ALL = -1
_S32 = struct.Struct("=i")

# The metric of evpnd's routes (FRR's for BGP routes): a route of the same prefix
# with a lower metric (an admin's static route has 0) wins over ours.
ROUTE_METRIC = 20

NLMSGHDR = struct.Struct("=IHHII")
NDMSG = struct.Struct("=BBHiHBB")
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTMSG = struct.Struct("=BBBBBBBBI")
IFINFOMSG = struct.Struct("=BxHiII")
RTATTR = struct.Struct("=HH")
NLMSGERR = struct.Struct("=i")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
# vxlan_fdb_info() always starts with NDA_LLADDR then NDA_DST (IPv4 here), and
# nothing after them is a field NeighMsg holds (NDA_PORT, NDA_VNI, NDA_IFINDEX,
# NDA_CACHEINFO...): one unpack of that layout (checked) spares most of a
# 100k-remote-MAC dump the generic attribute loop.
_VXLAN4 = struct.Struct("=BBHiHBBHH6s2xHH4s")


class MalformedMessage(ValueError):
    """A netlink message (or datagram) that does not parse: counted and skipped."""


# --- framing


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int, int]]:
    """Yield (type, flags, seq, pid, payload_start, payload_end) for each message of a datagram.

    Raises MalformedMessage on a header that lies about its length (after the
    messages before it); the rest of that datagram cannot be framed and is
    dropped by the caller.
    """
    off = 0
    size = len(data)
    while off + 16 <= size:
        length, mtype, flags, seq, pid = NLMSGHDR.unpack_from(data, off)
        if length < 16 or off + length > size:
            raise MalformedMessage(f"netlink header length {length} at offset {off} of {size}")
        yield mtype, flags, seq, pid, off + 16, off + length
        off += (length + 3) & ~3
    if off < size:
        raise MalformedMessage(f"{size - off} stray bytes after the last netlink message")


def iter_attrs(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield (type, value_start, value_end) of each attribute in data[start:end]."""
    pos = start
    while pos + 4 <= end:
        length, atype = RTATTR.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            raise MalformedMessage(f"attribute length {length} at {pos} (message ends {end})")
        yield atype & NLA_TYPE_MASK, pos + 4, pos + length
        pos += (length + 3) & ~3


def rtattr(attr_type: int, data: bytes) -> bytes:
    """One attribute, padded to 4 bytes as the kernel expects."""
    length = 4 + len(data)
    return RTATTR.pack(length, attr_type) + data + b"\0" * (-length & 3)


def _u32(data: bytes, start: int, end: int) -> int:
    if end - start != 4:
        raise MalformedMessage(f"u32 attribute of {end - start} bytes")
    return _U32.unpack_from(data, start)[0]


def _cstring(data: bytes, start: int, end: int) -> str:
    return bytes(data[start:end]).split(b"\0", 1)[0].decode("utf-8", "replace")


# --- decoded messages


class NeighMsg(NamedTuple):
    """One RTM_NEWNEIGH / RTM_DELNEIGH (bridge FDB or IPv4/IPv6 neighbour), addresses packed."""

    deleted: bool
    family: int
    ifindex: int
    state: int
    flags: int
    lladdr: bytes | None = None
    dst: bytes | None = None
    master: int | None = None
    vlan: int | None = None
    protocol: int | None = None
    flags_ext: int = 0


class LinkMsg(NamedTuple):
    """One RTM_NEWLINK / RTM_DELLINK."""

    deleted: bool
    family: int
    ifindex: int
    name: str
    master: int | None = None
    kind: str | None = None
    flags: int = 0


def decode_neigh(mtype: int, data: bytes, start: int, end: int) -> NeighMsg | None:
    """Decode the ndmsg in data[start:end]; None for families other than bridge, IPv4, IPv6.

    A bridge FDB entry must carry a 6-byte NDA_LLADDR, a neighbour an NDA_DST
    of its family's size (a deleted neighbour has no MAC); otherwise
    MalformedMessage.
    """
    if end - start >= _VXLAN4.size:
        (family, _p1, _p2, ifindex, state, flags, _type,
         l1, t1, lladdr, l2, t2, dst) = _VXLAN4.unpack_from(data, start)  # fmt: skip
        if family == AF_BRIDGE and l1 == 10 and t1 == NDA_LLADDR and l2 == 8 and t2 == NDA_DST:
            return NeighMsg(mtype == RTM_DELNEIGH, family, ifindex, state, flags, lladdr, dst)
    if end - start < NDMSG.size:
        raise MalformedMessage(f"ndmsg of {end - start} bytes")
    family, _, _, ifindex, state, flags, _ = NDMSG.unpack_from(data, start)
    if family not in (AF_BRIDGE, AF_INET, AF_INET6):
        return None
    lladdr = dst = None
    master = vlan = protocol = None
    flags_ext = 0
    # The attribute loop of `iter_attrs`, inline: this runs for every entry of
    # a 100k-MAC bridge FDB dump, and a generator costs a third more here.
    unpack = RTATTR.unpack_from
    pos = start + NDMSG.size
    while pos + 4 <= end:
        length, atype = unpack(data, pos)
        if length < 4 or pos + length > end:
            raise MalformedMessage(f"attribute length {length} at {pos} (message ends {end})")
        atype &= NLA_TYPE_MASK
        if atype == NDA_LLADDR:
            lladdr = data[pos + 4 : pos + length]
        elif atype == NDA_DST:
            dst = data[pos + 4 : pos + length]
        elif atype == NDA_MASTER:
            if length != 8:
                raise MalformedMessage("NDA_MASTER is not a u32")
            master = _U32.unpack_from(data, pos + 4)[0]
        elif atype == NDA_VLAN:
            if length != 6:
                raise MalformedMessage("NDA_VLAN is not a u16")
            vlan = _U16.unpack_from(data, pos + 4)[0]
        elif atype == NDA_PROTOCOL:
            if length != 5:
                raise MalformedMessage("NDA_PROTOCOL is not a u8")
            protocol = data[pos + 4]
        elif atype == NDA_FLAGS_EXT:
            if length != 8:
                raise MalformedMessage("NDA_FLAGS_EXT is not a u32")
            flags_ext = _U32.unpack_from(data, pos + 4)[0]
        pos += (length + 3) & ~3
    if family == AF_BRIDGE:
        if lladdr is None or len(lladdr) != 6:
            raise MalformedMessage("bridge FDB entry without a 6-byte NDA_LLADDR")
    elif dst is None or len(dst) != (4 if family == AF_INET else 16):
        raise MalformedMessage(f"neighbour entry with a bad NDA_DST for family {family}")
    return NeighMsg(
        mtype == RTM_DELNEIGH, family, ifindex, state, flags,
        lladdr, dst, master, vlan, protocol, flags_ext,
    )  # fmt: skip


class RouteMsg(NamedTuple):
    """One RTM_NEWROUTE / RTM_DELROUTE (IPv4 or IPv6), addresses packed."""

    deleted: bool
    family: int
    dst_len: int
    table: int
    protocol: int
    type: int
    flags: int
    dst: bytes  # the prefix's address (all zero for a default route)
    gateway: bytes | None = None
    oif: int | None = None
    priority: int = 0


def decode_route(mtype: int, data: bytes, start: int, end: int) -> RouteMsg | None:
    """Decode the rtmsg in data[start:end]; None for families other than IPv4 and IPv6."""
    if end - start < RTMSG.size:
        raise MalformedMessage(f"rtmsg of {end - start} bytes")
    family, dst_len, _src, _tos, table, protocol, _scope, rtype, flags = RTMSG.unpack_from(
        data, start
    )
    if family not in (AF_INET, AF_INET6):
        return None
    size = 4 if family == AF_INET else 16
    if dst_len > size * 8:
        raise MalformedMessage(f"route prefix length {dst_len} for family {family}")
    dst = bytes(size)
    gateway = None
    oif = None
    priority = 0
    for atype, a, b in iter_attrs(data, start + RTMSG.size, end):
        if atype == RTA_DST:
            if b - a != size:
                raise MalformedMessage(f"RTA_DST of {b - a} bytes for family {family}")
            dst = bytes(data[a:b])
        elif atype == RTA_GATEWAY:
            if b - a != size:
                raise MalformedMessage(f"RTA_GATEWAY of {b - a} bytes for family {family}")
            gateway = bytes(data[a:b])
        elif atype == RTA_OIF:
            oif = _u32(data, a, b)
        elif atype == RTA_PRIORITY:
            priority = _u32(data, a, b)
        elif atype == RTA_TABLE:
            table = _u32(data, a, b)
    return RouteMsg(mtype == RTM_DELROUTE, family, dst_len, table, protocol, rtype, flags,
                    dst, gateway, oif, priority)  # fmt: skip


def addr_proto(data: bytes, start: int, end: int) -> tuple[int, int, int]:
    """(family, ifindex, IFA_PROTO or 0) of an RTM_NEWADDR / RTM_DELADDR."""
    if end - start < IFADDRMSG.size:
        raise MalformedMessage(f"ifaddrmsg of {end - start} bytes")
    family, _plen, _flags, _scope, ifindex = IFADDRMSG.unpack_from(data, start)
    proto = 0
    for atype, a, b in iter_attrs(data, start + IFADDRMSG.size, end):
        if atype == IFA_PROTO and b - a >= 1:
            proto = data[a]
    return family, ifindex, proto


def netconf_forwarding(data: bytes, start: int, end: int) -> tuple[int, int, int | None]:
    """(family, ifindex, forwarding or None) of an RTM_NEWNETCONF; ifindex
    NETCONFA_IFINDEX_ALL is the `all` setting (`net.ipv4.ip_forward`)."""
    if end - start < 4:
        raise MalformedMessage(f"netconfmsg of {end - start} bytes")
    family = data[start]
    ifindex, forwarding = 0, None
    for atype, a, b in iter_attrs(data, start + 4, end):
        if atype == NETCONFA_IFINDEX and b - a == 4:
            ifindex = _S32.unpack_from(data, a)[0]
        elif atype == NETCONFA_FORWARDING and b - a == 4:
            forwarding = _S32.unpack_from(data, a)[0]
    return family, ifindex, forwarding


def decode_link(mtype: int, data: bytes, start: int, end: int) -> LinkMsg:
    """Decode the ifinfomsg in data[start:end]; a link without IFLA_IFNAME is malformed."""
    if end - start < IFINFOMSG.size:
        raise MalformedMessage(f"ifinfomsg of {end - start} bytes")
    family, _, ifindex, flags, _ = IFINFOMSG.unpack_from(data, start)
    name: str | None = None
    master: int | None = None
    kind: str | None = None
    for atype, a, b in iter_attrs(data, start + IFINFOMSG.size, end):
        if atype == IFLA_IFNAME:
            name = _cstring(data, a, b)
        elif atype == IFLA_MASTER:
            master = _u32(data, a, b) or None
        elif atype == IFLA_LINKINFO:
            for itype, c, d in iter_attrs(data, a, b):
                if itype == IFLA_INFO_KIND:
                    kind = _cstring(data, c, d)
    if name is None:
        raise MalformedMessage(f"link message for ifindex {ifindex} without IFLA_IFNAME")
    return LinkMsg(mtype == RTM_DELLINK, family, ifindex, name, master, kind, flags)


def decode(mtype: int, data: bytes, start: int, end: int) -> NeighMsg | LinkMsg | None:
    """A neighbour or link message decoded; None for every other message type."""
    if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
        return decode_neigh(mtype, data, start, end)
    if mtype in (RTM_NEWLINK, RTM_DELLINK):
        return decode_link(mtype, data, start, end)
    return None


# --- byte-level pre-checks: decide from a few bytes whether a message is worth
# decoding. At 100k remote MACs most neighbour messages a reader gets are the
# echo of evpnd's own writes; these keep that echo cheap. The socket filters in
# bpf.py drop the same messages in the kernel where they can be attached.


def fdb_glance(data: bytes, start: int, end: int) -> tuple[int, bool, bytes | None] | None:
    """(ndm_flags, has NDA_MASTER, NDA_LLADDR) of an AF_BRIDGE ndmsg, without decoding it.

    None when the message is no AF_BRIDGE ndmsg or does not frame cleanly:
    `decode_neigh` then decides (and raises on what is malformed). Cheap
    enough to run on every message, before the full decoder.
    """
    if end - start < NDMSG.size or data[start] != AF_BRIDGE:
        return None
    flags = data[start + 10]  # ndm_flags
    master = False
    lladdr = None
    pos = start + NDMSG.size
    while pos + 4 <= end:
        length, atype = RTATTR.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            return None
        atype &= NLA_TYPE_MASK
        if atype == NDA_LLADDR:
            lladdr = data[pos + 4 : pos + length]
        elif atype == NDA_MASTER:
            master = True
        pos += (length + 3) & ~3
    return flags, master, lladdr


def device_fdb_entry(glance: tuple[int, bool, bytes | None]) -> bool:
    """NTF_SELF without NDA_MASTER: a device's own table (a vxlan device's remote
    entries, as evpnd writes them), never a bridge's."""
    flags, master, lladdr = glance
    return bool(flags & NTF_SELF) and not master and lladdr is not None and len(lladdr) == 6


def learner_skips(mtype: int, glance: tuple[int, bool, bytes | None]) -> bool:
    """What `bpf.learner_filter` drops: a device's own entry, or the deletion of an
    extern_learn (remote) entry, which never ends a local MAC."""
    return device_fdb_entry(glance) or (
        mtype == RTM_DELNEIGH and bool(glance[0] & NTF_EXT_LEARNED)
    )


def reconciler_skips(mtype: int, data: bytes, start: int, end: int) -> bool:
    """What `bpf.reconciler_filter` drops: an AF_BRIDGE neighbour message without
    NTF_SELF (a bridge's entry, never the reconciler's), or an RTM_NEWNEIGH with
    NTF_EXT_LEARNED (a remote MAC written by evpnd or another control plane)."""
    if mtype not in (RTM_NEWNEIGH, RTM_DELNEIGH) or end - start < NDMSG.size:
        return False
    if data[start] != AF_BRIDGE:
        return False
    flags = data[start + 10]
    if not flags & NTF_SELF:
        return True
    return mtype == RTM_NEWNEIGH and bool(flags & NTF_EXT_LEARNED)
