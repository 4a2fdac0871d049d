"""Read the kernel's FDB and neighbour tables and tell evpnd's entries from everyone else's.

For the reconciler: `dump_tables` reads through the shared netlink stack
(netlink/routesocket.py, decoders in netlink/wire.py); `Classifier` turns one
decoded `NeighMsg` into an evpnd entry, owned or foreign, for the dump and for
the reconciler's event handling alike.

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

- Routes (into the L3VNI, main table): the kernel keeps the protocol, so a
  route is evpnd's when it has protocol RTPROT_EVPND. evpnd's routes have
  metric ROUTE_METRIC; only a main-table unicast route of that metric can
  hold the same key (prefix, metric) as ours: another one is foreign.
  Routes of other metrics live beside ours and are none of evpnd's business.

Foreign entries are returned too: the reconciler must not write over an admin's
static entry that holds the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import NamedTuple

from evpnd.dataplane.netlink.linkindex import LinkIndex
from evpnd.dataplane.netlink.routesocket import RouteSocket, dump_links
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    NDMSG,
    NTF_EXT_LEARNED,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    ROUTE_METRIC,
    RT_TABLE_MAIN,
    RTM_GETNEIGH,
    RTM_GETROUTE,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTMSG,
    RTN_UNICAST,
    RTPROT_EVPND,
    NeighMsg,
    RouteMsg,
    decode_neigh,
    decode_route,
)
from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac, RouteEntry
from evpnd.model import IPAddress, IPNetwork

_FLOOD_BYTES = b"\0" * 6


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


Entry = RemoteMac | FloodEntry | NeighEntry | RouteEntry
_NO_GATEWAY = {4: IPv4Address(0), 6: IPv6Address(0)}


class Classified(NamedTuple):
    entry: Entry
    owned: bool
    # Statically configured by someone (permanent/noarp): never written over.
    static: bool


class Classifier:
    """Turns neighbour messages into evpnd entries; shared by the dump and the reconciler."""

    def __init__(self, links: LinkIndex) -> None:
        self.links = links
        self._names = links.names  # the index's live mapping, looked up per message
        self._addr = _Addresses()

    def __call__(self, raw: NeighMsg) -> Classified | None:
        device = self._names.get(raw.ifindex)
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

    def route(self, raw: RouteMsg) -> Classified | None:
        """A main-table unicast route of evpnd's metric: ours (RTPROT_EVPND) or foreign."""
        if raw.table != RT_TABLE_MAIN or raw.type != RTN_UNICAST or raw.priority != ROUTE_METRIC:
            return None
        device = self._names.get(raw.oif) if raw.oif is not None else None
        if device is None:
            return None
        prefix = _prefix(raw)
        gateway = _NO_GATEWAY[prefix.version] if raw.gateway is None else self._addr(raw.gateway)
        owned = raw.protocol == RTPROT_EVPND
        return Classified(RouteEntry(prefix, device, gateway), owned, True)

    def neigh_key(self, raw: NeighMsg) -> tuple[str, IPAddress] | None:
        """Key of an IPv4/IPv6 neighbour message, which on deletion has no MAC or flags."""
        device = self._names.get(raw.ifindex)
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
    foreign_routes: dict[IPNetwork, RouteEntry] = field(default_factory=dict)
    # Every neighbour message, decoded but not classified, when asked for (inspection and tests).
    raw: list[NeighMsg] | None = None
    links: LinkIndex = field(default_factory=LinkIndex)

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
        elif isinstance(entry, RouteEntry):
            if item.owned:
                self.owned.add_route(entry)
            else:
                self.foreign_routes[entry.key] = entry
        elif item.owned:
            self.owned.add_neigh(entry)
        elif item.static:
            self.foreign_neighs[entry.key] = entry


def _new_neigh(mtype: int, data: bytes, start: int, end: int) -> NeighMsg | None:
    return decode_neigh(mtype, data, start, end) if mtype == RTM_NEWNEIGH else None


def dump_tables(sock: RouteSocket, *, include_raw: bool = False) -> KernelTables:
    """Dump links, the bridge FDB and the IPv4/IPv6 neighbour tables through `sock`.

    A message that does not decode is left out (its entry cannot be told apart).
    """
    links = LinkIndex(dump_links(sock))
    tables = KernelTables(links=links, raw=[] if include_raw else None)
    classify = Classifier(links)

    def classified(mtype: int, data: bytes, start: int, end: int) -> Classified | None:
        # Classified as it is read: a decoded message lives only this long
        # (200k of them kept until the end cost a third more time, in GC).
        if mtype != RTM_NEWNEIGH:
            return None
        raw = decode_neigh(mtype, data, start, end)
        return classify(raw) if raw is not None else None

    for family in (AF_BRIDGE, AF_INET, AF_INET6):
        request = NDMSG.pack(family, 0, 0, 0, 0, 0, 0)
        if tables.raw is None:
            items = sock.dump(RTM_GETNEIGH, request, classified).items
        else:
            raws = sock.dump(RTM_GETNEIGH, request, _new_neigh).items
            tables.raw += raws
            items = [item for item in map(classify, raws) if item is not None]
        for item in items:
            tables.add(item)

    def route(mtype: int, data: bytes, start: int, end: int) -> Classified | None:
        if mtype != RTM_NEWROUTE:
            return None
        raw = decode_route(mtype, data, start, end)
        return classify.route(raw) if raw is not None else None

    for family in (AF_INET, AF_INET6):
        request = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        for item in sock.dump(RTM_GETROUTE, request, route).items:
            tables.add(item)
    return tables


def _prefix(raw: RouteMsg) -> IPNetwork:
    return ip_network((raw.dst, raw.dst_len), strict=False)


def dump(netns: str | None = None, *, include_raw: bool = False) -> KernelTables:
    """Dump the tables of `netns` (None: the current namespace)."""
    with RouteSocket(netns) as sock:
        return dump_tables(sock, include_raw=include_raw)


def dump_owned(netns: str | None = None) -> ForwardingState:
    return dump(netns).owned
