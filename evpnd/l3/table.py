"""The L3 part of the RIB: which remote route each prefix takes, and the next hops (pure).

Symmetric IRB in the default routing table (RFC 9135, RFC 9136; this kernel
has no VRF). Two kinds of received routes carry a prefix reachable through
the L3VNI:

* a Type-2 MAC+IP route with a second label (the L3VNI) and a router MAC:
  a host route, /32 or /128, to that endpoint;
* a Type-5 IP prefix route with the L3VNI label and a router MAC.

Either is imported when it carries one of the L3VNI's import route targets
(`*:NN` matches NN under any ASN, as for the VNIs).
Each prefix takes one route (no ECMP), by this order: a Type-2 host route
before a Type-5 route of the same prefix, the highest MAC mobility sequence
number, the lowest VTEP, then the lowest peer and route key (only so the
choice never depends on arrival order). A Type-2 host route follows the L2
decision for its MAC where the MAC lives in one of our VNIs: it is no
candidate while the MAC is local here, or while another VTEP wins it (the
RIB's `judge`, as for ARP suppression neighbours), so a moved endpoint's
host route moves with its MAC.

What the kernel needs per prefix is a route `via VTEP dev <L3VNI bridge>
onlink`, and per VTEP a next hop: a neighbour `VTEP -> router MAC` on the
L3VNI bridge and an FDB entry `router MAC dst VTEP` on the L3VNI vxlan
device, exactly what FRR 8.4.4 installs (DESIGN.md section 8). The table
publishes both: prefixes (`RemotePrefix`) and next hops (`L3NextHop`, one
per VTEP that some published prefix uses, with the address families those
prefixes need: an IPv6 prefix behind an IPv4 VTEP is routed via the
IPv4-mapped address `::ffff:VTEP`, as FRR does).

A route is never installed when it could not work or would do harm; each
reason is counted (`why_not`):

* `label`: its L3 label is not our L3VNI (the encapsulated packets would
  arrive on a VNI the other VTEP does not route);
* `no-router-mac`: it carries no router MAC (RFC 9135 8.1);
* `bad-router-mac`: its router MAC is no unicast MAC (all zero, multicast,
  broadcast: `validate.unicast_mac`). The route itself stays usable for
  layer 2 (some vendors send an all-zero router MAC on routes they do not
  route), so the decoders keep it and only routing refuses it;
* `gateway-ip`: a Type-5 route with a gateway IP overlay index (recursive
  resolution, RFC 9136 4.4, is not supported);
* `esi`: a Type-5 route with a non-zero ESI overlay index;
* `family`: an IPv4 prefix behind an IPv6 VTEP (no IPv4 route has an IPv6
  gateway without RTA_VIA);
* `loop`: the prefix contains its own VTEP or ours (the tunnel's packets
  would be routed into the tunnel);
* `local`: the prefix is one of ours (a gateway subnet or a prefix we
  announce): our own route to it wins, and on IPv6 a connected route
  (metric 256) would lose to a received one.

Two VTEPs claiming one router MAC cannot both have the FDB entry: the first
one keeps it, the other's next hop is held back (`rmac_conflicts`) until the
MAC is free again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any

from evpnd import validate
from evpnd.model import (
    ENCAP_VXLAN,
    ZERO_ESI,
    IPAddress,
    IPNetwork,
    MacIpRoute,
    PrefixRoute,
    Route,
    RouteKey,
    address_order,
)

L3Route = MacIpRoute | PrefixRoute
L3Cand = tuple[IPAddress, L3Route]  # (peer, route)
# Lower is better: (Type-2 first, -seq, VTEP, peer, key).
_Rank = tuple[int, int, tuple[int, int], tuple[int, int], tuple[object, ...]]

LABEL, NO_RMAC, BAD_RMAC, GATEWAY_IP, ESI, FAMILY, LOOP, LOCAL = (
    "label", "no-router-mac", "bad-router-mac", "gateway-ip", "esi", "family", "loop", "local",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class L3Policy:
    """The L3VNI and what it imports; `local_prefixes` are ours, never taken from a peer."""

    vni: int
    import_rts: frozenset[str]
    local_prefixes: frozenset[IPNetwork] = frozenset()


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class RemotePrefix:
    """The winning remote route of a prefix: what the routing table should hold."""

    prefix: IPNetwork
    vtep: IPAddress
    router_mac: str
    peer: IPAddress
    route_type: int  # 2: a host route from a MAC+IP, 5: an IP prefix route


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class L3NextHop:
    """A VTEP some published prefix is routed to: its router MAC, and the address
    families of those prefixes (the neighbour entries the L3VNI bridge needs)."""

    vtep: IPAddress
    router_mac: str
    families: tuple[int, ...]  # (4,), (6,) or (4, 6)


@dataclass(slots=True)
class L3Changes:
    """What one commit changed (removals carry the value as it was published)."""

    prefixes_installed: list[RemotePrefix] = field(default_factory=list)
    prefixes_removed: list[RemotePrefix] = field(default_factory=list)
    nexthops_installed: list[L3NextHop] = field(default_factory=list)
    nexthops_removed: list[L3NextHop] = field(default_factory=list)


def host_prefix(address: IPAddress) -> IPNetwork:
    return ip_network(address)  # /32 or /128


def mapped(vtep: IPAddress, family: int) -> IPAddress:
    """The gateway of a route of `family` towards `vtep`: the VTEP, or (an IPv6 route
    behind an IPv4 VTEP) its IPv4-mapped IPv6 address."""
    if family == 6 and isinstance(vtep, IPv4Address):
        return IPv6Address(f"::ffff:{vtep}")
    return vtep


def route_prefix(route: Route) -> IPNetwork | None:
    """The prefix a route would install, if it is of a kind that carries one."""
    if isinstance(route, PrefixRoute):
        return route.key.prefix
    if isinstance(route, MacIpRoute) and route.key.ip is not None and route.l3vni is not None:
        return host_prefix(route.key.ip)
    return None


def why_not(
    policy: L3Policy, route: Route, own: frozenset[IPAddress]
) -> tuple[IPNetwork | None, str | None]:
    """(prefix, None) for a route the L3 table takes; (prefix, reason) for an L3 route it
    refuses; (None, None) for a route that is none of its business."""
    prefix = route_prefix(route)
    if prefix is None or (isinstance(route, MacIpRoute) and route.default_gateway):
        return None, None  # no L3 label, or an anycast gateway: never a remote endpoint
    if route.encapsulation not in (None, ENCAP_VXLAN):
        return None, None
    if not _imported(policy.import_rts, route.route_targets):
        return None, None
    label = route.l3vni if isinstance(route, MacIpRoute) else route.vni
    if label != policy.vni:
        return prefix, LABEL
    if route.router_mac is None:
        return prefix, NO_RMAC
    if not _unicast(route.router_mac):
        return prefix, BAD_RMAC
    if isinstance(route, PrefixRoute):
        if route.gateway is not None and not route.gateway.is_unspecified:
            return prefix, GATEWAY_IP
        if route.esi != ZERO_ESI:
            return prefix, ESI
    vtep = route.nexthop
    if prefix.version == 4 and vtep.version == 6:
        return prefix, FAMILY
    if any(a.version == prefix.version and a in prefix for a in (vtep, *own)):
        return prefix, LOOP
    if prefix in policy.local_prefixes:
        return prefix, LOCAL
    return prefix, None


@lru_cache(maxsize=4096)
def _imported(import_rts: frozenset[str], targets: tuple[str, ...]) -> bool:
    """A route target matches, or `*:NN` (NN under any ASN, as the VNIs import)."""
    return any(rt in import_rts or "*:" + rt[rt.rfind(":") + 1 :] in import_rts
               for rt in targets)  # fmt: skip


@lru_cache(maxsize=4096)
def _unicast(mac: str) -> bool:
    try:
        validate.unicast_mac(mac)
    except ValueError:
        return False
    return True


def _key_order(key: RouteKey) -> tuple[object, ...]:
    return (key.rd, key.etag, str(getattr(key, "mac", "")))


def _rank(peer: IPAddress, route: L3Route) -> _Rank:
    if isinstance(route, MacIpRoute):
        kind, seq = 0, route.mobility_seq
    else:
        kind, seq = 1, 0
    return (kind, -seq, address_order(route.nexthop), address_order(peer), _key_order(route.key))


Judge = Callable[[IPAddress, MacIpRoute], bool]


@dataclass(slots=True)
class _Via:
    """What the published prefixes of one VTEP need: counts per router MAC and family."""

    routes: int = 0
    rmacs: dict[str, int] = field(default_factory=dict)
    families: dict[int, int] = field(default_factory=dict)

    def add(self, prefix: RemotePrefix) -> None:
        self.routes += 1
        self.rmacs[prefix.router_mac] = self.rmacs.get(prefix.router_mac, 0) + 1
        family = prefix.prefix.version
        self.families[family] = self.families.get(family, 0) + 1

    def drop(self, prefix: RemotePrefix) -> None:
        self.routes -= 1
        _decrement(self.rmacs, prefix.router_mac)
        _decrement(self.families, prefix.prefix.version)


def _decrement(counts: dict[Any, int], key: object) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class L3Table:
    """Candidates per prefix, the published winners and next hops.

    The RIB calls `index`/`unindex` from its own (so the same routes, peers,
    stale marks and limits apply), `touch_mac` when a MAC's L2 decision may
    have changed, and `commit` at the end of every operation.
    """

    def __init__(self, own: frozenset[IPAddress]) -> None:
        self.policy: L3Policy | None = None
        self._own = own
        self._cands: dict[IPNetwork, tuple[L3Cand, ...]] = {}
        self._by_mac: dict[str, dict[IPNetwork, int]] = {}  # MAC -> host prefixes (refcount)
        self._best: dict[IPNetwork, RemotePrefix] = {}
        # Per VTEP, the published prefixes' router MACs and address families, counted: a
        # VTEP's next hop comes from these without a pass over its prefixes.
        self._via: dict[IPAddress, _Via] = {}
        self._nexthops: dict[IPAddress, L3NextHop] = {}
        self._rmac_owner: dict[str, IPAddress] = {}
        self._blocked: dict[str, set[IPAddress]] = {}  # router MAC -> VTEPs waiting for it

    # -- candidates ---------------------------------------------------------------

    def accepts(self, route: Route) -> bool:
        """The route is one the table takes (imported into the L3VNI)."""
        if self.policy is None:
            return False
        prefix, reason = why_not(self.policy, route, self._own)
        return prefix is not None and reason is None

    def refusal(self, route: Route) -> str | None:
        """Why an L3 route is not taken (None: taken, or no L3 route at all)."""
        if self.policy is None:
            return None
        return why_not(self.policy, route, self._own)[1]

    def index(self, touched: dict[IPNetwork, None], peer: IPAddress, route: Route) -> None:
        if self.policy is None:
            return
        prefix, reason = why_not(self.policy, route, self._own)
        if prefix is None or reason is not None:
            return
        assert isinstance(route, MacIpRoute | PrefixRoute)
        old = self._cands.get(prefix)
        cand = (peer, route)
        self._cands[prefix] = (cand,) if old is None else (*old, cand)
        if isinstance(route, MacIpRoute):
            refs = self._by_mac.setdefault(route.key.mac, {})
            refs[prefix] = refs.get(prefix, 0) + 1
        touched[prefix] = None

    def unindex(self, touched: dict[IPNetwork, None], peer: IPAddress, route: Route) -> None:
        if not self._cands:
            return  # the common case without an L3VNI: nothing to look up per route
        prefix = route_prefix(route)
        if prefix is None:
            return
        old = self._cands.get(prefix)
        if old is None:
            return
        key = route.key
        rest = tuple(c for c in old if not (c[0] == peer and c[1].key == key))
        if len(rest) == len(old):
            return
        if rest:
            self._cands[prefix] = rest
        else:
            del self._cands[prefix]
        if isinstance(route, MacIpRoute):
            refs = self._by_mac.get(route.key.mac)
            if refs is not None and prefix in refs:
                refs[prefix] -= 1
                if refs[prefix] <= 0:
                    del refs[prefix]
                if not refs:
                    del self._by_mac[route.key.mac]
        touched[prefix] = None

    def touch_mac(self, touched: dict[IPNetwork, None], mac: str) -> None:
        """The L2 decision of `mac` may have changed: its host routes are judged again."""
        refs = self._by_mac.get(mac)
        if refs:
            touched.update(dict.fromkeys(refs))

    # -- decisions ------------------------------------------------------------------

    def commit(self, touched: dict[IPNetwork, None], judge: Judge) -> L3Changes:
        changes = L3Changes()
        if not touched:
            return changes
        vteps: dict[IPAddress, None] = {}
        for prefix in touched:
            new = self._select(prefix, judge)
            old = self._best.get(prefix)
            if new == old:
                continue
            if old is not None:
                del self._best[prefix]
                via = self._via[old.vtep]
                via.drop(old)
                if not via.routes:
                    del self._via[old.vtep]
                vteps[old.vtep] = None
                if new is None:
                    changes.prefixes_removed.append(old)
            if new is not None:
                self._best[prefix] = new
                via = self._via.get(new.vtep)
                if via is None:
                    via = self._via[new.vtep] = _Via()
                via.add(new)
                vteps[new.vtep] = None
                changes.prefixes_installed.append(new)
        self._nexthops_for(vteps, changes)
        return changes

    def _select(self, prefix: IPNetwork, judge: Judge) -> RemotePrefix | None:
        best: _Rank | None = None
        winner: L3Cand | None = None
        for cand in self._cands.get(prefix, ()):
            peer, route = cand
            if isinstance(route, MacIpRoute) and not judge(peer, route):
                continue
            rank = _rank(peer, route)
            if best is None or rank < best:
                best, winner = rank, cand
        if winner is None:
            return None
        peer, route = winner
        assert route.router_mac is not None  # why_not refused the others
        return RemotePrefix(prefix, route.nexthop, route.router_mac, peer, route.key.route_type)

    def _wanted_nexthop(self, vtep: IPAddress) -> L3NextHop | None:
        via = self._via.get(vtep)
        if via is None or not via.routes:
            return None
        return L3NextHop(vtep, min(via.rmacs), tuple(sorted(via.families)))

    def _nexthops_for(self, vteps: dict[IPAddress, None], changes: L3Changes) -> None:
        before: dict[IPAddress, L3NextHop | None] = {}
        queue = sorted(vteps, key=address_order)
        while queue:
            vtep = queue.pop(0)
            old = self._nexthops.get(vtep)
            before.setdefault(vtep, old)
            want = self._wanted_nexthop(vtep)
            for waiting in self._blocked.values():
                waiting.discard(vtep)
            if want is not None and self._rmac_owner.get(want.router_mac, vtep) != vtep:
                self._blocked.setdefault(want.router_mac, set()).add(vtep)
                want = None  # another VTEP holds the router MAC's FDB entry
            if want == old:
                continue
            if old is not None:
                del self._nexthops[vtep]
                if self._rmac_owner.get(old.router_mac) == vtep:
                    del self._rmac_owner[old.router_mac]
                    # A VTEP waiting for this router MAC may have it now.
                    for other in sorted(self._blocked.pop(old.router_mac, ()), key=address_order):
                        if other not in queue:
                            queue.append(other)
            if want is not None:
                self._nexthops[vtep] = want
                self._rmac_owner[want.router_mac] = vtep
        for blocked in [m for m, waiting in self._blocked.items() if not waiting]:
            del self._blocked[blocked]
        for vtep in sorted(before, key=address_order):
            old, new = before[vtep], self._nexthops.get(vtep)
            if old == new:
                continue
            if old is not None:
                changes.nexthops_removed.append(old)
            if new is not None:
                changes.nexthops_installed.append(new)

    # -- queries ------------------------------------------------------------------

    def prefixes(self) -> list[RemotePrefix]:
        return sorted(
            self._best.values(),
            key=lambda p: (p.prefix.version, int(p.prefix.network_address), p.prefix.prefixlen),
        )

    def nexthops(self) -> list[L3NextHop]:
        return [self._nexthops[v] for v in sorted(self._nexthops, key=address_order)]

    def rmac_conflicts(self) -> dict[str, tuple[IPAddress, ...]]:
        """Router MAC -> the VTEPs waiting for it (another VTEP holds it)."""
        return {mac: tuple(sorted(v, key=address_order)) for mac, v in self._blocked.items() if v}
