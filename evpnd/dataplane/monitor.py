"""Local endpoint learning: kernel bridge FDB and SVI neighbour table -> local events.

Layout (functional core, imperative shell):

* wire format: `iter_messages` splits netlink datagrams, `decode_neigh` and
  `decode_link` turn one message into a `NeighMsg` / `LinkMsg` or raise
  `MalformedMessage`. Plain `struct`, no pyroute2: decoding is on the hot path
  of every FDB refresh and pyroute2's generic parser costs tens of
  microseconds per message.
* `LocalTable`: pure state machine. It resolves the watched bridges and vxlan
  devices from link messages and turns neighbour messages into deduplicated
  `LocalEvent`s.
* `diff_snapshots` / `resync_events`: pure, (known, dumped) -> events. Used at
  start-up, after a netlink overrun (ENOBUFS) and when the watched set changes.
* `LocalLearner`: the asyncio shell. One non-blocking multicast socket read
  with `loop.add_reader`, one blocking socket for dumps run in a worker thread.

Rules (what counts as a local endpoint):

* A MAC is local when the bridge FDB of a watched bridge holds it behind a
  port that is neither the bridge itself nor a vxlan device, and the entry is
  not NUD_PERMANENT (`permanent`/`local`: the host's own bridge and port
  addresses), not NTF_EXT_LEARNED (remote entries installed by evpnd or FRR),
  and not NTF_EXT_LOCKED (an unauthenticated host on a locked port). Entries
  in a device's own table (NTF_SELF: the vxlan device's remote entries, a
  NIC's unicast/multicast filter list) are never local.
* Static entries (`bridge fdb add MAC dev PORT master static`, NUD_NOARP) and
  sticky ones ARE local: an operator pinning an endpoint's MAC to a port means
  "this endpoint lives here". They are reported with `static=True` so the
  originator can advertise them sticky.
* A MAC moving between local ports is a single `LocalMacAdded` with the new
  port (see events.py). A MAC that becomes non-local (now behind the vxlan
  device, now extern_learn) is `LocalMacRemoved`.
* An IP is local when the neighbour table of a watched bridge (its SVI) binds
  it to a MAC, in a state that has a link-layer address (REACHABLE, STALE,
  DELAY, PROBE, NOARP, PERMANENT; not INCOMPLETE/FAILED), the entry is neither
  extern_learn, proxy, nor tagged with a protocol in `owned_protocols`
  (default: evpnd's own tag, RTPROT_EVPND from dump.py), AND
  that MAC is currently a local MAC of the VNI. The last condition keeps
  bindings the SVI learned by ARPing a remote endpoint through the tunnel from
  being advertised as local; such a binding is held as a candidate and
  becomes a `LocalIpLearned` once its MAC turns local.
* IPv6 link-local (fe80::/10) neighbours are ignored unless
  `include_link_local=True`: every endpoint has one, so they add a Type-2
  route per endpoint that is useless beyond the segment (never routable in an
  L3VNI) and only saves ND multicast for link-local traffic. IPv4 link-local
  (169.254/16) is kept: hosts use it only when configured to. Multicast,
  unspecified and loopback IPs, and group or all-zero MACs, are never
  endpoints.
* Model: one traditional bridge per VNI. VLAN ids in the FDB are ignored, so a
  VLAN-aware bridge carrying several VLANs for one VNI would merge them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import cast

import structlog

from evpnd.dataplane.dump import RTPROT_EVPND
from evpnd.dataplane.events import (
    LocalEvent,
    LocalIp,
    LocalIpLearned,
    LocalIpRemoved,
    LocalMac,
    LocalMacAdded,
    LocalMacRemoved,
    Resynced,
    WatchedVni,
)
from evpnd.dataplane.netlink import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    IFF_UP,
    IFINFOMSG,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    IFLA_MASTER,
    NDA_DST,
    NDA_FLAGS_EXT,
    NDA_LLADDR,
    NDA_MASTER,
    NDA_PROTOCOL,
    NDA_VLAN,
    NDMSG,
    NETLINK_ROUTE,
    NLA_TYPE_MASK,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    NTF_EXT_LEARNED,
    NTF_EXT_LOCKED,
    NTF_PROXY,
    NTF_SELF,
    NTF_STICKY,
    NUD_HAS_LLADDR,
    NUD_NOARP,
    NUD_PERMANENT,
    RTATTR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
    SO_RCVBUFFORCE,
    attach_filter,
    device_fdb_filter,
    inside_netns,
)
from evpnd.dataplane.state import IPAddress

__all__ = [
    "LearnerCounters",
    "LinkMsg",
    "LocalLearner",
    "LocalSnapshot",
    "LocalTable",
    "MalformedMessage",
    "NeighMsg",
    "WatchedVni",
    "decode_link",
    "decode_neigh",
    "device_fdb_entry",
    "diff_snapshots",
    "fdb_glance",
    "iter_messages",
    "resync_events",
    "table_from_messages",
]

log = structlog.get_logger(__name__)

# The wire vocabulary lives in netlink.py, shared with the writer and the dump.
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_I32 = struct.Struct("=i")

# The echo of each remote MAC evpnd installs (its bridge-FDB companion) still
# reaches this socket; 8 MiB overran during a 100k install (each overrun is a
# full dump), 64 MiB (as the reconciler's monitor) did not. Only a limit: the
# memory is used only while the loop is behind.
DEFAULT_RCVBUF = 64 * 1024 * 1024
_DUMP_BUFSIZE = 1024 * 1024
_DUMP_ATTEMPTS = 5
_DUMP_TIMEOUT = 10.0
# Messages handled per reader callback before yielding to other tasks.
_READ_BATCH = 2048
# Upper bound on stale messages discarded before a dump, so a storm cannot pin us.
_DRAIN_LIMIT = 1_000_000


class MalformedMessage(ValueError):
    """A netlink message that does not parse; counted and skipped by the learner."""


# --- wire format


@dataclass(frozen=True, slots=True)
class NeighMsg:
    """One RTM_NEWNEIGH / RTM_DELNEIGH, reduced to what the rules need."""

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


@dataclass(frozen=True, slots=True)
class LinkMsg:
    """One RTM_NEWLINK / RTM_DELLINK."""

    deleted: bool
    family: int
    ifindex: int
    name: str
    master: int | None = None
    kind: str | None = None
    flags: int = 0


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int, int]]:
    """Yield (type, flags, seq, pid, payload_start, payload_end) for each message.

    Raises MalformedMessage on a header that lies about its length; the rest of
    that datagram cannot be framed and is dropped by the caller.
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


def _nla(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    pos = start
    while pos + 4 <= end:
        length, atype = RTATTR.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            raise MalformedMessage(f"attribute length {length} at {pos} (message ends {end})")
        yield atype & NLA_TYPE_MASK, pos + 4, pos + length
        pos += (length + 3) & ~3


def _u32(data: bytes, start: int, end: int) -> int:
    if end - start != 4:
        raise MalformedMessage(f"u32 attribute of {end - start} bytes")
    return _U32.unpack_from(data, start)[0]


def decode_neigh(mtype: int, data: bytes, start: int, end: int) -> NeighMsg | None:
    """Decode an ndmsg; None for families the learner never looks at."""
    if end - start < NDMSG.size:
        raise MalformedMessage(f"ndmsg of {end - start} bytes")
    family, _, _, ifindex, state, flags, _ = NDMSG.unpack_from(data, start)
    if family not in (AF_BRIDGE, AF_INET, AF_INET6):
        return None
    lladdr = dst = None
    master = vlan = protocol = None
    flags_ext = 0
    for atype, a, b in _nla(data, start + NDMSG.size, end):
        if atype == NDA_LLADDR:
            lladdr = bytes(data[a:b])
        elif atype == NDA_DST:
            dst = bytes(data[a:b])
        elif atype == NDA_MASTER:
            master = _u32(data, a, b)
        elif atype == NDA_VLAN:
            if b - a != 2:
                raise MalformedMessage("NDA_VLAN is not a u16")
            vlan = _U16.unpack_from(data, a)[0]
        elif atype == NDA_PROTOCOL:
            if b - a != 1:
                raise MalformedMessage("NDA_PROTOCOL is not a u8")
            protocol = data[a]
        elif atype == NDA_FLAGS_EXT:
            flags_ext = _u32(data, a, b)
    if family == AF_BRIDGE:
        if lladdr is None or len(lladdr) != 6:
            raise MalformedMessage("bridge FDB entry without a 6-byte NDA_LLADDR")
    elif dst is None or len(dst) != (4 if family == AF_INET else 16):
        raise MalformedMessage(f"neighbour entry with a bad NDA_DST for family {family}")
    return NeighMsg(
        deleted=mtype == RTM_DELNEIGH,
        family=family,
        ifindex=ifindex,
        state=state,
        flags=flags,
        lladdr=lladdr,
        dst=dst,
        master=master,
        vlan=vlan,
        protocol=protocol,
        flags_ext=flags_ext,
    )


def _cstring(data: bytes, a: int, b: int) -> str:
    return bytes(data[a:b]).split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_link(mtype: int, data: bytes, start: int, end: int) -> LinkMsg:
    if end - start < IFINFOMSG.size:
        raise MalformedMessage(f"ifinfomsg of {end - start} bytes")
    family, _, ifindex, flags, _ = IFINFOMSG.unpack_from(data, start)
    name: str | None = None
    master: int | None = None
    kind: str | None = None
    for atype, a, b in _nla(data, start + IFINFOMSG.size, end):
        if atype == IFLA_IFNAME:
            name = _cstring(data, a, b)
        elif atype == IFLA_MASTER:
            master = _u32(data, a, b) or None
        elif atype == IFLA_LINKINFO:
            for itype, c, d in _nla(data, a, b):
                if itype == IFLA_INFO_KIND:
                    kind = _cstring(data, c, d)
    if name is None:
        raise MalformedMessage(f"link message for ifindex {ifindex} without IFLA_IFNAME")
    return LinkMsg(
        deleted=mtype == RTM_DELLINK,
        family=family,
        ifindex=ifindex,
        name=name,
        master=master,
        kind=kind,
        flags=flags,
    )


def decode(mtype: int, data: bytes, start: int, end: int) -> NeighMsg | LinkMsg | None:
    if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
        return decode_neigh(mtype, data, start, end)
    if mtype in (RTM_NEWLINK, RTM_DELLINK):
        return decode_link(mtype, data, start, end)
    return None


def fdb_glance(data: bytes, start: int, end: int) -> tuple[int, bool, bytes | None] | None:
    """(ndm_flags, has NDA_MASTER, NDA_LLADDR) of an AF_BRIDGE ndmsg, without decoding it.

    None when the message is no AF_BRIDGE ndmsg or does not frame cleanly:
    `decode_neigh` then decides (and counts what is malformed). Cheap enough
    to run on every message, before the full decoder.
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
    entries, as evpnd writes them), which `LocalTable.apply_fdb` never looks at."""
    flags, master, lladdr = glance
    return bool(flags & NTF_SELF) and not master and lladdr is not None and len(lladdr) == 6


# --- functional core


def _mac_str(raw: bytes) -> str:
    return raw.hex(":")


def _is_unicast_mac(raw: bytes) -> bool:
    return len(raw) == 6 and not raw[0] & 1 and any(raw)


def _ip_order(ip: IPAddress) -> tuple[int, IPAddress]:
    return (ip.version, ip)


@dataclass(frozen=True, slots=True)
class LocalSnapshot:
    """The local endpoints known at one moment, keyed like the events' dedup keys."""

    macs: Mapping[tuple[int, str], LocalMac]
    ips: Mapping[tuple[int, IPAddress], LocalIp]


@dataclass(slots=True)
class _Link:
    name: str
    master: int | None
    kind: str | None
    flags: int


@dataclass(slots=True)
class _Mac:
    entry: LocalMac
    port_index: int


class LocalTable:
    """Kernel link + neighbour messages in, deduplicated local endpoint events out. No I/O."""

    def __init__(
        self,
        vnis: Iterable[WatchedVni],
        *,
        include_link_local: bool = False,
        owned_protocols: Collection[int] = (RTPROT_EVPND,),
    ) -> None:
        self.vnis: dict[int, WatchedVni] = {}
        for w in vnis:
            if w.vni in self.vnis:
                raise ValueError(f"VNI {w.vni} watched twice")
            self.vnis[w.vni] = w
        bridges = [w.bridge for w in self.vnis.values()]
        if len(set(bridges)) != len(bridges):
            raise ValueError("one bridge per VNI: a bridge is watched for two VNIs")
        self.include_link_local = include_link_local
        self.owned_protocols = frozenset(owned_protocols)
        self._links: dict[int, _Link] = {}
        self._index_by_name: dict[str, int] = {}
        self._vxlan_kind: set[int] = set()
        self._by_bridge: dict[int, WatchedVni] = {}
        self._bridge_index: dict[int, int] = {}  # vni -> bridge ifindex
        self._vxlan_index: dict[int, int] = {}  # vni -> configured vxlan ifindex
        self._macs: dict[tuple[int, str], _Mac] = {}
        # Raw MAC -> how many VNIs hold it as local: lets `ignores` tell the
        # echo of a remote (extern_learn) entry from a local MAC moving away.
        self._local_lladdrs: dict[bytes, int] = {}
        # Every usable SVI binding, local MAC or not; `_ips` holds the local subset.
        self._candidates: dict[tuple[int, IPAddress], str] = {}
        self._candidates_by_mac: dict[tuple[int, str], set[IPAddress]] = {}
        self._ips: dict[tuple[int, IPAddress], LocalIp] = {}

    # -- queries

    def snapshot(self) -> LocalSnapshot:
        return LocalSnapshot(
            macs=MappingProxyType({k: m.entry for k, m in self._macs.items()}),
            ips=MappingProxyType(dict(self._ips)),
        )

    def resolved(self) -> dict[int, tuple[int | None, int | None]]:
        """vni -> (bridge ifindex, vxlan ifindex) as currently resolved (None: absent)."""
        return {vni: (self._bridge_index.get(vni), self._vxlan_index.get(vni)) for vni in self.vnis}

    # -- input

    def ignores(self, data: bytes, start: int, end: int) -> bool:
        """True for a neighbour message `apply` is sure to turn into no event, read
        from its bytes: a device's own FDB entry (NTF_SELF without NDA_MASTER), or
        an extern_learn bridge entry for a MAC that is no local MAC of any VNI.
        These are mostly the kernel's echo of evpnd's own writes, two per remote
        MAC; deciding before `decode_neigh` keeps a 100k-route burst cheap here.
        """
        glance = fdb_glance(data, start, end)
        if glance is None:
            return False
        flags, _master, lladdr = glance
        if lladdr is None or len(lladdr) != 6:
            return False  # decode_neigh reports it
        if device_fdb_entry(glance):
            return True
        # extern_learn is never local; it only matters when it takes over (or
        # deletes) an entry we hold as local, which needs that MAC to be local.
        return bool(flags & NTF_EXT_LEARNED) and lladdr not in self._local_lladdrs

    def apply(self, msg: NeighMsg | LinkMsg) -> list[LocalEvent]:
        if isinstance(msg, LinkMsg):
            return self.apply_link(msg)
        if msg.family == AF_BRIDGE:
            return self.apply_fdb(msg)
        return self.apply_neigh(msg)

    def apply_link(self, msg: LinkMsg) -> list[LocalEvent]:
        # AF_BRIDGE link messages are the bridge's per-port notifications; an
        # AF_BRIDGE RTM_DELLINK means "left the bridge", not "deleted".
        if msg.family != AF_UNSPEC:
            return []
        events: list[LocalEvent] = []
        index = msg.ifindex
        old = self._links.get(index)
        if msg.deleted:
            if old is None:
                return []
            del self._links[index]
            if self._index_by_name.get(old.name) == index:
                del self._index_by_name[old.name]
            self._vxlan_kind.discard(index)
            events += self._drop_port(index)
            events += self._refresh_topology()
            return events
        self._links[index] = _Link(msg.name, msg.master, msg.kind, msg.flags)
        if old is not None and old.name != msg.name and self._index_by_name.get(old.name) == index:
            del self._index_by_name[old.name]
        self._index_by_name[msg.name] = index
        if msg.kind == "vxlan":
            self._vxlan_kind.add(index)
        else:
            self._vxlan_kind.discard(index)
        if old is not None and old.master != msg.master:
            # The bridge flushes a departing port's entries itself; this makes
            # sure we agree even if those notifications were lost.
            events += self._drop_port(index)
        if old is None or old.name != msg.name:
            if old is not None:
                events += self._rename_port(index, msg.name)
            events += self._refresh_topology()
        if (
            old is not None
            and old.flags & IFF_UP
            and not msg.flags & IFF_UP
            and index in self._by_bridge
        ):
            # Taking the SVI down flushes its neighbour table. 6.18 sends a
            # RTM_DELNEIGH per entry (then this finds nothing left); without
            # them, or if they were lost, the bindings would linger here.
            events += self._drop_ips(self._by_bridge[index].vni)
        return events

    def apply_fdb(self, msg: NeighMsg) -> list[LocalEvent]:
        bridge_index = msg.master
        if bridge_index is None:
            if msg.flags & NTF_SELF:
                return []  # a device's own table, not the bridge's
            port = self._links.get(msg.ifindex)
            bridge_index = port.master if port is not None else None
        watched = self._by_bridge.get(bridge_index) if bridge_index is not None else None
        if watched is None or msg.lladdr is None:
            return []
        mac = _mac_str(msg.lladdr)
        key = (watched.vni, mac)
        known = self._macs.get(key)
        if msg.deleted:
            # The bridge keys entries by (mac, vlan): a delete naming another
            # port is about a different entry than the one we report.
            if known is not None and known.port_index == msg.ifindex:
                return self._remove_mac(key)
            return []
        if not self._fdb_is_local(msg, watched, bridge_index):
            # Same (mac, vlan) entry, now permanent, extern_learn or behind the
            # vxlan device: the endpoint is no longer ours.
            return self._remove_mac(key) if known is not None else []
        entry = LocalMac(
            vni=watched.vni,
            bridge=watched.bridge,
            port=self._name(msg.ifindex),
            mac=mac,
            static=bool(msg.state & NUD_NOARP or msg.flags & NTF_STICKY),
        )
        if known is not None and known.entry == entry and known.port_index == msg.ifindex:
            return []  # refresh / state change (REACHABLE <-> STALE): nothing to say
        self._macs[key] = _Mac(entry, msg.ifindex)
        events: list[LocalEvent] = [LocalMacAdded.of(entry)]
        if known is None:
            raw = msg.lladdr
            self._local_lladdrs[raw] = self._local_lladdrs.get(raw, 0) + 1
            events += self._activate_ips(watched.vni, watched.bridge, mac)
        return events

    def apply_neigh(self, msg: NeighMsg) -> list[LocalEvent]:
        watched = self._by_bridge.get(msg.ifindex)
        if watched is None or msg.dst is None:
            return []
        ip: IPAddress = IPv4Address(msg.dst) if msg.family == AF_INET else IPv6Address(msg.dst)
        key = (watched.vni, ip)
        mac = None if msg.deleted else self._neigh_mac(msg, ip)
        old = self._candidates.get(key)
        if mac == old:
            return []
        events = self._forget_ip(key) if old is not None else []
        if mac is None:
            return events
        self._candidates[key] = mac
        self._candidates_by_mac.setdefault((watched.vni, mac), set()).add(ip)
        if (watched.vni, mac) in self._macs:
            entry = LocalIp(watched.vni, watched.bridge, mac, ip)
            self._ips[key] = entry
            events.append(LocalIpLearned.of(entry))
        return events

    # -- rules

    def _fdb_is_local(self, msg: NeighMsg, watched: WatchedVni, bridge_index: int) -> bool:
        if msg.state & NUD_PERMANENT:
            return False
        if msg.flags & (NTF_EXT_LEARNED | NTF_SELF) or msg.flags_ext & NTF_EXT_LOCKED:
            return False
        port = msg.ifindex
        if port == bridge_index or port == self._vxlan_index.get(watched.vni):
            return False
        if port in self._vxlan_kind:
            return False
        return msg.lladdr is not None and _is_unicast_mac(msg.lladdr)

    def _neigh_mac(self, msg: NeighMsg, ip: IPAddress) -> str | None:
        if not msg.state & NUD_HAS_LLADDR:
            return None
        if msg.flags & (NTF_EXT_LEARNED | NTF_PROXY):
            return None
        if msg.protocol is not None and msg.protocol in self.owned_protocols:
            return None
        if msg.lladdr is None or not _is_unicast_mac(msg.lladdr):
            return None
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback:
            return None
        if isinstance(ip, IPv6Address) and ip.is_link_local and not self.include_link_local:
            return None
        return _mac_str(msg.lladdr)

    # -- state helpers

    def _name(self, index: int) -> str:
        link = self._links.get(index)
        return link.name if link is not None else f"if{index}"

    def _refresh_topology(self) -> list[LocalEvent]:
        by_bridge: dict[int, WatchedVni] = {}
        bridge_index: dict[int, int] = {}
        vxlan_index: dict[int, int] = {}
        for w in self.vnis.values():
            b = self._index_by_name.get(w.bridge)
            if b is not None:
                by_bridge[b] = w
                bridge_index[w.vni] = b
            x = self._index_by_name.get(w.vxlan_device)
            if x is not None:
                vxlan_index[w.vni] = x
        events: list[LocalEvent] = []
        for vni, old in self._bridge_index.items():
            if bridge_index.get(vni) != old:
                # Bridge gone, renamed or recreated: nothing learned on the old one holds.
                events += self._drop_vni(vni)
        self._by_bridge = by_bridge
        self._bridge_index = bridge_index
        self._vxlan_index = vxlan_index
        return events

    def _rename_port(self, index: int, name: str) -> list[LocalEvent]:
        events: list[LocalEvent] = []
        for m in self._macs.values():
            if m.port_index == index and m.entry.port != name:
                e = m.entry
                m.entry = LocalMac(e.vni, e.bridge, name, e.mac, e.static)
                events.append(LocalMacAdded.of(m.entry))
        return events

    def _drop_port(self, index: int) -> list[LocalEvent]:
        events: list[LocalEvent] = []
        for key in [k for k, m in self._macs.items() if m.port_index == index]:
            events += self._remove_mac(key)
        return events

    def _drop_ips(self, vni: int) -> list[LocalEvent]:
        events: list[LocalEvent] = []
        keys = [k for k in self._candidates if k[0] == vni]
        for key in sorted(keys, key=lambda k: _ip_order(k[1])):
            events += self._forget_ip(key)
        return events

    def _drop_vni(self, vni: int) -> list[LocalEvent]:
        events = self._drop_ips(vni)
        for key in [k for k in self._macs if k[0] == vni]:
            events += self._remove_mac(key)
        return events

    def _remove_mac(self, key: tuple[int, str]) -> list[LocalEvent]:
        known = self._macs.pop(key)
        raw = bytes.fromhex(key[1].replace(":", ""))
        left = self._local_lladdrs.pop(raw, 1) - 1
        if left > 0:
            self._local_lladdrs[raw] = left
        events: list[LocalEvent] = []
        for ip in sorted(self._candidates_by_mac.get(key, ()), key=_ip_order):
            entry = self._ips.pop((key[0], ip), None)
            if entry is not None:
                events.append(LocalIpRemoved.of(entry))
        events.append(LocalMacRemoved.of(known.entry))
        return events

    def _activate_ips(self, vni: int, bridge: str, mac: str) -> list[LocalEvent]:
        events: list[LocalEvent] = []
        for ip in sorted(self._candidates_by_mac.get((vni, mac), ()), key=_ip_order):
            entry = LocalIp(vni, bridge, mac, ip)
            self._ips[(vni, ip)] = entry
            events.append(LocalIpLearned.of(entry))
        return events

    def _forget_ip(self, key: tuple[int, IPAddress]) -> list[LocalEvent]:
        mac = self._candidates.pop(key)
        ips = self._candidates_by_mac.get((key[0], mac))
        if ips is not None:
            ips.discard(key[1])
            if not ips:
                del self._candidates_by_mac[(key[0], mac)]
        entry = self._ips.pop(key, None)
        return [LocalIpRemoved.of(entry)] if entry is not None else []


def table_from_messages(
    vnis: Iterable[WatchedVni],
    messages: Iterable[NeighMsg | LinkMsg],
    *,
    include_link_local: bool = False,
    owned_protocols: Collection[int] = (RTPROT_EVPND,),
) -> LocalTable:
    """A table built from a dump; the events of building it are discarded."""
    table = LocalTable(vnis, include_link_local=include_link_local, owned_protocols=owned_protocols)
    for msg in messages:
        table.apply(msg)
    return table


def diff_snapshots(known: LocalSnapshot, dumped: LocalSnapshot) -> list[LocalEvent]:
    """Events that turn a consumer holding `known` into one holding `dumped`.

    Ordered so the consumer never sees an IP for a MAC it does not hold: IP
    removals, MAC removals, MAC additions (new, moved or changed), IP additions.
    """
    events: list[LocalEvent] = []
    for key in sorted(known.ips, key=lambda k: (k[0], _ip_order(k[1]))):
        if dumped.ips.get(key) != known.ips[key]:
            events.append(LocalIpRemoved.of(known.ips[key]))
    for key in sorted(known.macs):
        if key not in dumped.macs:
            events.append(LocalMacRemoved.of(known.macs[key]))
    for key in sorted(dumped.macs):
        if known.macs.get(key) != dumped.macs[key]:
            events.append(LocalMacAdded.of(dumped.macs[key]))
    for key in sorted(dumped.ips, key=lambda k: (k[0], _ip_order(k[1]))):
        if known.ips.get(key) != dumped.ips[key]:
            events.append(LocalIpLearned.of(dumped.ips[key]))
    return events


def resync_events(known: LocalSnapshot, dumped: LocalSnapshot, reason: str) -> list[LocalEvent]:
    """The differences, closed by a `Resynced` marker carrying the resulting counts."""
    return [
        *diff_snapshots(known, dumped),
        Resynced(reason=reason, macs=len(dumped.macs), ips=len(dumped.ips)),
    ]


# --- imperative shell


@dataclass(slots=True)
class LearnerCounters:
    messages: int = 0
    ignored: int = 0  # of `messages`: skipped before decoding (echoes of our own writes)
    events: int = 0
    by_event: dict[str, int] = field(default_factory=dict)  # event class name -> count
    resyncs: int = 0
    overruns: int = 0
    parse_errors: int = 0
    dump_retries: int = 0


def _make_sockets(rcvbuf: int) -> tuple[socket.socket, socket.socket]:
    raw = socket.SOCK_RAW | socket.SOCK_CLOEXEC
    events = socket.socket(socket.AF_NETLINK, raw | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
    try:
        try:
            # FORCE lifts net.core.rmem_max (we are root); a big buffer is what
            # keeps a burst of FDB changes from overrunning us.
            events.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        events.bind((0, RTMGRP_LINK | RTMGRP_NEIGH))
        try:
            # The echo of every vxlan entry evpnd writes is dropped in the
            # kernel: it never fills the buffer nor costs a recv().
            attach_filter(events, device_fdb_filter())
        except OSError as exc:
            log.warning("no socket filter on the learner socket", error=str(exc))
        dump = socket.socket(socket.AF_NETLINK, raw, NETLINK_ROUTE)
    except BaseException:
        events.close()
        raise
    try:
        dump.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _DUMP_BUFSIZE)
        dump.bind((0, 0))
        dump.settimeout(_DUMP_TIMEOUT)
    except BaseException:
        events.close()
        dump.close()
        raise
    return events, dump


def open_sockets(netns: str | None, rcvbuf: int) -> tuple[socket.socket, socket.socket]:
    """(multicast socket, dump socket) bound to `netns` (None: ours).

    A netlink socket stays tied to the namespace it was created in; the
    calling thread enters the namespace only for the two socket() calls.
    """
    with inside_netns(netns):
        return _make_sockets(rcvbuf)


_DUMPS = (
    (RTM_GETLINK, struct.pack("=BxHiII", AF_UNSPEC, 0, 0, 0, 0)),
    (RTM_GETNEIGH, NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0, 0, 0)),
    (RTM_GETNEIGH, NDMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0)),
    (RTM_GETNEIGH, NDMSG.pack(AF_INET6, 0, 0, 0, 0, 0, 0)),
)


@dataclass(slots=True)
class _DumpResult:
    messages: list[NeighMsg | LinkMsg] = field(default_factory=list)
    parse_errors: int = 0
    retries: int = 0


class _Dumper:
    """Blocking dumps on their own socket, so replies never mix with multicast events."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0
        self.buf = bytearray(_DUMP_BUFSIZE)

    def dump_all(self) -> _DumpResult:
        result = _DumpResult()
        for mtype, header in _DUMPS:
            for attempt in range(_DUMP_ATTEMPTS):
                messages, errors, interrupted = self._dump_one(mtype, header)
                # NLM_F_DUMP_INTR: the table changed mid-dump, the pieces may
                # not fit together; take it anyway after a few tries, later
                # events will correct it.
                if not interrupted or attempt == _DUMP_ATTEMPTS - 1:
                    result.messages += messages
                    result.parse_errors += errors
                    break
                result.retries += 1
        return result

    def _dump_one(self, mtype: int, header: bytes) -> tuple[list[NeighMsg | LinkMsg], int, bool]:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        seq = self.seq
        request = NLMSGHDR.pack(16 + len(header), mtype, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        self.sock.send(request + header)
        messages: list[NeighMsg | LinkMsg] = []
        errors = 0
        interrupted = False
        while True:
            n = self.sock.recv_into(self.buf)
            data = bytes(self.buf[:n])
            try:
                for rtype, rflags, rseq, _pid, a, b in iter_messages(data):
                    if rseq != seq:
                        continue  # a reply to an earlier, abandoned request
                    if rflags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if rtype == NLMSG_DONE:
                        return messages, errors, interrupted
                    if rtype == NLMSG_ERROR:
                        code = -_I32.unpack_from(data, a)[0] if b - a >= 4 else errno.EIO
                        if code:
                            raise OSError(code, f"netlink dump {mtype}: {os.strerror(code)}")
                        continue
                    if rtype == RTM_NEWNEIGH:
                        glance = fdb_glance(data, a, b)
                        if glance is not None and device_fdb_entry(glance):
                            continue  # half a 100k-remote-MAC dump, never local
                    try:
                        msg = decode(rtype, data, a, b)
                    except MalformedMessage:
                        errors += 1
                        continue
                    if msg is not None:
                        messages.append(msg)
            except MalformedMessage:
                errors += 1


_STOP = object()


class LocalLearner:
    """Learns local endpoints of the watched VNIs from the kernel of one namespace.

    Usage::

        async with LocalLearner([WatchedVni(100, "br100", "vxlan100")]) as learner:
            async for event in learner.events():
                ...

    The first events describe what is already there and end with
    `Resynced("initial")`. `events()` is meant for exactly one consumer.
    """

    def __init__(
        self,
        vnis: Iterable[WatchedVni],
        netns: str | None = None,
        *,
        rcvbuf: int = DEFAULT_RCVBUF,
        include_link_local: bool = False,
        owned_protocols: Collection[int] = (RTPROT_EVPND,),
    ) -> None:
        self.netns = netns
        self.rcvbuf = rcvbuf
        self.include_link_local = include_link_local
        self.owned_protocols = frozenset(owned_protocols)
        self.counters = LearnerCounters()
        self._table = self._new_table(vnis)  # validates the watched set early
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._sock: socket.socket | None = None
        self._dumper: _Dumper | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._closed = False
        self._lock = asyncio.Lock()
        self._resync_task: asyncio.Task[None] | None = None
        self._buf = bytearray(65536)

    def _new_table(self, vnis: Iterable[WatchedVni]) -> LocalTable:
        return LocalTable(
            vnis,
            include_link_local=self.include_link_local,
            owned_protocols=self.owned_protocols,
        )

    # -- lifecycle

    async def __aenter__(self) -> LocalLearner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._sock is not None:
            raise RuntimeError("LocalLearner already started")
        self._loop = asyncio.get_running_loop()
        # Subscribe before the first dump: a change made during the dump is
        # then either in the dump or queued on the socket, never lost.
        self._sock, dump_sock = open_sockets(self.netns, self.rcvbuf)
        self._dumper = _Dumper(dump_sock)
        try:
            await self._resync("initial")
        except BaseException:
            self._close_sockets()
            raise

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        # Wait out an in-flight dump (bounded by the dump socket's timeout)
        # rather than closing the socket under the worker thread's feet.
        async with self._lock:
            self._close_sockets()
        if self._resync_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resync_task
        self._queue.put_nowait(_STOP)

    def _close_sockets(self) -> None:
        self._stop_reading()
        if self._sock is not None:
            self._sock.close()
        if self._dumper is not None:
            self._dumper.sock.close()

    # -- consumer API

    async def events(self) -> AsyncIterator[LocalEvent]:
        """Local events until the learner stops; re-raises a fatal socket error."""
        while True:
            item = await self._queue.get()
            if item is _STOP:
                self._queue.put_nowait(_STOP)  # a second iterator also ends
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(LocalEvent, item)

    def __aiter__(self) -> AsyncIterator[LocalEvent]:
        return self.events()

    def snapshot(self) -> LocalSnapshot:
        return self._table.snapshot()

    @property
    def vnis(self) -> list[WatchedVni]:
        return sorted(self._table.vnis.values())

    def resolved(self) -> dict[int, tuple[int | None, int | None]]:
        return self._table.resolved()

    def pending(self) -> int:
        """Events emitted but not yet taken by the consumer."""
        return self._queue.qsize()

    async def update_vnis(self, vnis: Iterable[WatchedVni]) -> None:
        """Change the watched set; returns once the resulting events are queued."""
        new = list(vnis)
        self._new_table(new)  # validate before touching anything
        await self._resync("config", new)

    async def resync(self) -> None:
        """Re-read the kernel tables now and emit whatever differs."""
        await self._resync("requested")

    # -- internals

    def _emit(self, events: Iterable[LocalEvent]) -> None:
        for event in events:
            self._queue.put_nowait(event)
            self.counters.events += 1
            kind = type(event).__name__
            self.counters.by_event[kind] = self.counters.by_event.get(kind, 0) + 1

    def _start_reading(self) -> None:
        if not self._reading and self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _on_readable(self) -> None:
        sock = self._sock
        assert sock is not None
        buf = self._buf
        for _ in range(_READ_BATCH):
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.counters.overruns += 1
                    log.warning("netlink overrun, resyncing", netns=self.netns)
                    self._stop_reading()
                    self._resync_task = asyncio.ensure_future(self._resync_guarded("overrun"))
                    return
                self._fail(exc)
                return
            self._handle(bytes(buf[:n]))

    def _handle(self, data: bytes) -> None:
        table = self._table
        try:
            for mtype, _flags, _seq, _pid, a, b in iter_messages(data):
                self.counters.messages += 1
                if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH) and table.ignores(data, a, b):
                    self.counters.ignored += 1
                    continue
                try:
                    msg = decode(mtype, data, a, b)
                except MalformedMessage as exc:
                    self.counters.parse_errors += 1
                    log.debug("skipping malformed netlink message", error=str(exc))
                    continue
                if msg is not None:
                    self._emit(table.apply(msg))
        except MalformedMessage as exc:
            self.counters.parse_errors += 1
            log.debug("skipping malformed netlink datagram", error=str(exc))

    def _fail(self, exc: BaseException) -> None:
        log.error("local learner stopped", netns=self.netns, error=str(exc))
        self._stop_reading()
        self._queue.put_nowait(exc)

    async def _resync_guarded(self, reason: str) -> None:
        try:
            await self._resync(reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    def _drain(self) -> None:
        """Discard what the socket queued: the dump that follows supersedes it."""
        sock = self._sock
        assert sock is not None
        for _ in range(_DRAIN_LIMIT):
            try:
                sock.recv_into(self._buf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise

    async def _resync(self, reason: str, vnis: Iterable[WatchedVni] | None = None) -> None:
        async with self._lock:
            if self._closed or self._dumper is None:
                return
            self._stop_reading()
            try:
                self._drain()
                watched = list(vnis) if vnis is not None else list(self._table.vnis.values())
                known = self._table.snapshot()  # a copy: safe to read from the worker
                dumper = self._dumper
                table, events, result = await asyncio.to_thread(
                    self._dump_and_diff, dumper, watched, known, reason
                )
                if self._closed:
                    return
                self._table = table
                self.counters.resyncs += 1
                self.counters.parse_errors += result.parse_errors
                self.counters.dump_retries += result.retries
                self._emit(events)
                log.info(
                    "local tables resynced",
                    reason=reason,
                    netns=self.netns,
                    changes=len(events) - 1,
                    macs=len(table.snapshot().macs),
                )
            finally:
                if not self._closed:
                    self._start_reading()

    def _dump_and_diff(
        self, dumper: _Dumper, watched: list[WatchedVni], known: LocalSnapshot, reason: str
    ) -> tuple[LocalTable, list[LocalEvent], _DumpResult]:
        # Worker thread: only touches the dump socket and fresh objects.
        result = dumper.dump_all()
        table = table_from_messages(
            watched,
            result.messages,
            include_link_local=self.include_link_local,
            owned_protocols=self.owned_protocols,
        )
        return table, resync_events(known, table.snapshot(), reason), result
