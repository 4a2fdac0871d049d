"""Read the kernel's FDB and neighbour tables and tell evpnd's entries from everyone else's.

Ownership as observed on Linux 6.18 (see the tests in tests/netns/test_writer.py):

- vxlan FDB entries (`bridge fdb ... self`): the vxlan driver ignores
  NDA_PROTOCOL, so the only mark that survives is NTF_EXT_LEARNED
  ("extern_learn"). An entry is evpnd's when it carries that flag. A replace
  *with* extern_learn never changes the state or flags of an entry added over
  netlink (vxlan_fdb_update_existing: "Do not allow an externally learned entry
  to take over an entry added by the user"), while any write *without* it
  clears the flag: an admin's `bridge fdb replace` takes an entry over, and
  evpnd can never silently take over an admin's entry. Another extern_learn
  writer on the same vxlan device (a second control plane) would look like us.
- Flood entries (00:00:00:00:00:00 with one remote per VTEP): the flags belong
  to the fdb entry, not to each remote. The entry keeps extern_learn only if
  evpnd created it and nobody appended to it without the flag; an admin's
  `bridge fdb append` clears it for every remote. The kernel cannot tell whose
  remote is whose on such a mixed entry, so the rule is: remotes on a flagged
  entry are evpnd's; remotes on an unflagged entry are the admin's (foreign),
  except those the running Reconciler appended itself (it remembers them).
  After a restart evpnd therefore never deletes a remote on a mixed entry: a
  stale remote may linger, an admin's remote is never removed.
- Neighbours (ARP/ND suppression entries on the bridge): the kernel keeps both
  NTF_EXT_LEARNED and NDA_PROTOCOL, so an entry is evpnd's when it has
  extern_learn *and* protocol RTPROT_EVPND. A later admin write without
  extern_learn clears the flag (and so hands the entry to the admin).

Foreign entries are returned too: the reconciler must not write over an admin's
static entry that holds the same key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from socket import AF_BRIDGE, AF_INET, AF_INET6
from typing import NamedTuple

from evpnd.dataplane.netlink import (
    NDA_DST,
    NDA_LLADDR,
    NDA_MASTER,
    NDA_PROTOCOL,
    NDMSG,
    NLA_TYPE_MASK,
    NTF_EXT_LEARNED,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    RTATTR,
    RTM_GETNEIGH,
    RTM_NEWNEIGH,
    RouteSocket,
    link_names,
)
from evpnd.dataplane.state import (
    FloodEntry,
    ForwardingState,
    IPAddress,
    NeighEntry,
    RemoteMac,
)

# Neighbour protocol tag of evpnd's ARP/ND suppression entries. 238 (0xee) is
# unassigned in <linux/rtnetlink.h> and iproute2's rt_protos (186 is "bgp",
# which FRR and BIRD use for routes; 11 is zebra): `ip neigh` prints it as
# "proto 238".
RTPROT_EVPND = 238

_FLOOD_BYTES = b"\0" * 6


class RawNeigh(NamedTuple):
    """One neighbour/FDB message as the kernel sent it (addresses still packed)."""

    family: int
    ifindex: int
    state: int
    flags: int
    lladdr: bytes | None
    dst: bytes | None
    protocol: int
    master: int


# vxlan_fdb_info() always starts with NDA_LLADDR then NDA_DST: one unpack of
# that layout (checked) spares most of a 100k-entry dump the generic loop.
_VXLAN4 = struct.Struct("=BBHiHBBHH6s2xHH4s")


def parse_neigh(buf: bytes, off: int, length: int) -> RawNeigh:
    if length >= 48:
        (family, _p1, _p2, ifindex, state, flags, _type,
         l1, t1, lladdr, l2, t2, dst) = _VXLAN4.unpack_from(buf, off + 16)  # fmt: skip
        if family == AF_BRIDGE and l1 == 10 and t1 == NDA_LLADDR and l2 == 8 and t2 == NDA_DST:
            return RawNeigh(family, ifindex, state, flags, lladdr, dst, 0, 0)
    family, _p1, _p2, ifindex, state, flags, _type = NDMSG.unpack_from(buf, off + 16)
    lladdr = dst = None
    protocol = master = 0
    pos = off + 16 + 12
    end = off + length
    unpack = RTATTR.unpack_from
    while pos + 4 <= end:
        alen, atype = unpack(buf, pos)
        if alen < 4:
            break
        atype &= NLA_TYPE_MASK
        if atype == NDA_LLADDR:
            lladdr = buf[pos + 4 : pos + alen]
        elif atype == NDA_DST:
            dst = buf[pos + 4 : pos + alen]
        elif atype == NDA_PROTOCOL:
            protocol = buf[pos + 4]
        elif atype == NDA_MASTER:
            master = int.from_bytes(buf[pos + 4 : pos + 8], "little")
        pos += (alen + 3) & ~3
    return RawNeigh(family, ifindex, state, flags, lladdr, dst, protocol, master)


class _Addresses:
    """Packed address -> ipaddress object, memoized: a table has few distinct VTEPs."""

    def __init__(self) -> None:
        self._cache: dict[bytes, IPAddress] = {}

    def __call__(self, packed: bytes) -> IPAddress:
        found = self._cache.get(packed)
        if found is None:
            found = IPv4Address(packed) if len(packed) == 4 else IPv6Address(packed)
            if len(self._cache) < 65536:
                self._cache[packed] = found
        return found


Entry = RemoteMac | FloodEntry | NeighEntry


class Classified(NamedTuple):
    entry: Entry
    owned: bool
    # Statically configured by someone (permanent/noarp): never written over.
    static: bool


class Classifier:
    """Turns raw messages into evpnd entries; shared by the dump and the event monitor."""

    def __init__(self, names: dict[int, str]) -> None:
        self.names = names
        self._addr = _Addresses()

    def __call__(self, raw: RawNeigh) -> Classified | None:
        device = self.names.get(raw.ifindex)
        if device is None or raw.lladdr is None or raw.dst is None:
            return None
        if raw.family == AF_BRIDGE:
            # Only vxlan entries carry NDA_DST; bridge (master) entries are local.
            if not raw.flags & NTF_SELF or len(raw.lladdr) != 6 or len(raw.dst) not in (4, 16):
                return None
            owned = bool(raw.flags & NTF_EXT_LEARNED)
            vtep = self._addr(raw.dst)
            if raw.lladdr == _FLOOD_BYTES:
                return Classified(FloodEntry(device, vtep), owned, True)
            if raw.lladdr[0] & 1:
                return None  # multicast group entries are never ours
            sticky = bool(raw.state & NUD_NOARP)
            mac = RemoteMac(device, raw.lladdr.hex(":"), vtep, sticky)
            return Classified(mac, owned, True)
        if raw.family in (AF_INET, AF_INET6) and len(raw.lladdr) == 6:
            owned = bool(raw.flags & NTF_EXT_LEARNED) and raw.protocol == RTPROT_EVPND
            static = bool(raw.state & (NUD_NOARP | NUD_PERMANENT))
            neigh = NeighEntry(device, self._addr(raw.dst), raw.lladdr.hex(":"))
            return Classified(neigh, owned, static)
        return None

    def neigh_key(self, raw: RawNeigh) -> tuple[str, IPAddress] | None:
        """Key of an IPv4/IPv6 neighbour message, which on deletion has no MAC or flags."""
        device = self.names.get(raw.ifindex)
        if device is None or raw.dst is None or raw.family not in (AF_INET, AF_INET6):
            return None
        return device, self._addr(raw.dst)


@dataclass(slots=True)
class KernelTables:
    """What a dump found: evpnd's entries, and the static entries of others."""

    owned: ForwardingState = field(default_factory=ForwardingState)
    foreign_macs: dict[tuple[str, str], RemoteMac] = field(default_factory=dict)
    foreign_floods: set[FloodEntry] = field(default_factory=set)
    foreign_neighs: dict[tuple[str, IPAddress], NeighEntry] = field(default_factory=dict)
    # Every message, undecoded, when asked for (inspection and tests).
    raw: list[RawNeigh] | None = None
    names: dict[int, str] = field(default_factory=dict)

    def add(self, item: Classified) -> None:
        entry = item.entry
        if isinstance(entry, RemoteMac):
            if item.owned:
                self.owned.add_mac(entry)
            else:
                self.foreign_macs[entry.key] = entry
        elif isinstance(entry, FloodEntry):
            if item.owned:
                self.owned.add_flood(entry)
            else:
                self.foreign_floods.add(entry)
        elif item.owned:
            self.owned.add_neigh(entry)
        elif item.static:
            self.foreign_neighs[entry.key] = entry


def dump_tables(sock: RouteSocket, *, include_raw: bool = False) -> KernelTables:
    """Dump links, the bridge FDB and the IPv4/IPv6 neighbour tables through `sock`."""
    names = link_names(sock)
    tables = KernelTables(names=names, raw=[] if include_raw else None)
    classify = Classifier(names)
    for family in (AF_BRIDGE, AF_INET, AF_INET6):
        request = NDMSG.pack(family, 0, 0, 0, 0, 0, 0)
        for buf, off, length, mtype in sock.dump(RTM_GETNEIGH, request):
            if mtype != RTM_NEWNEIGH:
                continue
            raw = parse_neigh(buf, off, length)
            if tables.raw is not None:
                tables.raw.append(raw)
            item = classify(raw)
            if item is not None:
                tables.add(item)
    return tables


def dump(netns: str | None = None, *, include_raw: bool = False) -> KernelTables:
    """Dump the tables of `netns` (None: the current namespace)."""
    with RouteSocket(netns) as sock:
        return dump_tables(sock, include_raw=include_raw)


def dump_owned(netns: str | None = None) -> ForwardingState:
    return dump(netns).owned
