"""Local endpoints from kernel messages: link + neighbour messages in, `LocalEvent`s out.

Pure: no sockets, no asyncio. `LocalTable` is a state machine fed decoded
`LinkMsg` / `NeighMsg` values (netlink/wire.py) one at a time; it resolves
the watched bridges and vxlan devices from link messages and turns neighbour
messages into deduplicated events. `table_from_messages` builds one from a
dump; `diff_snapshots` / `resync_events` turn (known, dumped) into events
(start-up, after a netlink overrun, when the watched set changes). The
asyncio shell that reads the kernel is `learner.LocalLearner`.

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
  (default: evpnd's own tag, RTPROT_EVPND), AND that MAC is currently a local
  MAC of the VNI. The last condition keeps bindings the SVI learned by ARPing
  a remote endpoint through the tunnel from being advertised as local; such a
  binding is held as a candidate and becomes a `LocalIpLearned` once its MAC
  turns local.
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

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType

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
from evpnd.dataplane.netlink.linkindex import LinkIndex
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    AF_INET,
    AF_UNSPEC,
    IFF_UP,
    NTF_EXT_LEARNED,
    NTF_EXT_LOCKED,
    NTF_PROXY,
    NTF_SELF,
    NTF_STICKY,
    NUD_HAS_LLADDR,
    NUD_NOARP,
    NUD_PERMANENT,
    RTPROT_EVPND,
    LinkMsg,
    NeighMsg,
    fdb_glance,
    learner_skips,
)
from evpnd.model import IPAddress, address_order

__all__ = [
    "LocalSnapshot",
    "LocalTable",
    "diff_snapshots",
    "resync_events",
    "table_from_messages",
]


def _mac_str(raw: bytes) -> str:
    return raw.hex(":")


def _is_unicast_mac(raw: bytes) -> bool:
    return len(raw) == 6 and not raw[0] & 1 and any(raw)


def _ip_key_order(key: tuple[int, IPAddress]) -> tuple[int, tuple[int, int]]:
    return (key[0], address_order(key[1]))


@dataclass(frozen=True, slots=True)
class LocalSnapshot:
    """The local endpoints known at one moment, keyed like the events' dedup keys."""

    macs: Mapping[tuple[int, str], LocalMac]
    ips: Mapping[tuple[int, IPAddress], LocalIp]


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
        self._links = LinkIndex()
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

    def ignores(self, mtype: int, data: bytes, start: int, end: int) -> bool:
        """True for a neighbour message `apply` is sure to turn into no event, read
        from its bytes: what the learner's socket filter drops (a device's own FDB
        entry, the deletion of an extern_learn entry: `learner_skips`), or an
        extern_learn bridge entry for a MAC that is no local MAC of any VNI.
        These are mostly the kernel's echo of evpnd's own writes, two per remote
        MAC; deciding before `decode_neigh` keeps a 100k-route burst cheap here.
        """
        glance = fdb_glance(data, start, end)
        if glance is None:
            return False
        flags, _master, lladdr = glance
        if lladdr is None or len(lladdr) != 6:
            return False  # decode_neigh reports it
        if learner_skips(mtype, glance):
            return True
        # extern_learn is never local; it only matters when it takes over an
        # entry we hold as local, which needs that MAC to be local.
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
        if msg.deleted:
            if self._links.remove(index) is None:
                return []
            events += self._drop_port(index)
            events += self._refresh_topology()
            return events
        old = self._links.put(msg)
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
        link = self._links.get(port)
        if link is not None and link.kind == "vxlan":
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
        name = self._links.names.get(index)
        return name if name is not None else f"if{index}"

    def _refresh_topology(self) -> list[LocalEvent]:
        by_bridge: dict[int, WatchedVni] = {}
        bridge_index: dict[int, int] = {}
        vxlan_index: dict[int, int] = {}
        for w in self.vnis.values():
            b = self._links.index(w.bridge)
            if b is not None:
                by_bridge[b] = w
                bridge_index[w.vni] = b
            x = self._links.index(w.vxlan_device)
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
        for key in sorted(keys, key=_ip_key_order):
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
        for ip in sorted(self._candidates_by_mac.get(key, ()), key=address_order):
            entry = self._ips.pop((key[0], ip), None)
            if entry is not None:
                events.append(LocalIpRemoved.of(entry))
        events.append(LocalMacRemoved.of(known.entry))
        return events

    def _activate_ips(self, vni: int, bridge: str, mac: str) -> list[LocalEvent]:
        events: list[LocalEvent] = []
        for ip in sorted(self._candidates_by_mac.get((vni, mac), ()), key=address_order):
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
    for key in sorted(known.ips, key=_ip_key_order):
        if dumped.ips.get(key) != known.ips[key]:
            events.append(LocalIpRemoved.of(known.ips[key]))
    for key in sorted(known.macs):
        if key not in dumped.macs:
            events.append(LocalMacRemoved.of(known.macs[key]))
    for key in sorted(dumped.macs):
        if known.macs.get(key) != dumped.macs[key]:
            events.append(LocalMacAdded.of(dumped.macs[key]))
    for key in sorted(dumped.ips, key=_ip_key_order):
        if known.ips.get(key) != dumped.ips[key]:
            events.append(LocalIpLearned.of(dumped.ips[key]))
    return events


def resync_events(known: LocalSnapshot, dumped: LocalSnapshot, reason: str) -> list[LocalEvent]:
    """The differences, closed by a `Resynced` marker carrying the resulting counts."""
    return [
        *diff_snapshots(known, dumped),
        Resynced(reason=reason, macs=len(dumped.macs), ips=len(dumped.ips)),
    ]
