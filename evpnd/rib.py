"""The EVPN RIB: received routes per peer, best paths, MAC mobility, flood lists.

Pure and synchronous: the shell feeds it decoded routes, peer events and
local MAC events, and every mutating call returns a `RibChanges` saying what
to do about it (program or remove remote MACs, flood entries and neighbours;
announce or withdraw our own Type-2 routes).

Rules (RFC 7432 section 15, RFC 8365):

* Import is by route target: a route goes into every local VNI whose import
  set shares one of its RTs (`*:NN` in an import set matches NN under any ASN
  or address). RFC 8365 then has its say: the label of a Type-2 or of an
  ingress-replication Type-3 is the VNI (5.1.3), so a VNI refuses a route
  whose label names another VNI unless its policy accepts that, and
  VLAN-based service (one VNI per bridge) has Ethernet tag 0 (5.1.2): a route
  with another tag is refused. Refusals are counted by reason (`refusal`).
  Routes with an encapsulation other than VXLAN are not imported (no
  encapsulation community is accepted as VXLAN: some stacks leave it out).
* Multihoming routes (Type-1 Ethernet A-D, Type-4 Ethernet segment) are held,
  counted and shown but not acted on: no aliasing, no mass withdrawal; a
  Type-2 with a non-zero ESI is installed towards its next hop like any other
  (counted in `RibCounts.esi_routes`).
* A VTEP whose Type-2 next hops and Type-3 PMSI tunnel differ (per peer and
  RD: a transit router rewrote next hops) is reported (`nexthop_mismatches`);
  both are still used as received.
* Routes whose next hop (or Type-3 tunnel) is one of our own VTEP addresses
  are our own routes reflected back and are ignored.
* Routes are held per (peer, key), so a session loss removes exactly what
  that peer brought while another peer's copy of the same route takes over.
* Best path per (VNI, MAC), over remote routes from every peer and our own
  local MAC, by this order: a locally pinned (sticky) MAC, then remote sticky
  routes, then everything else; within a class the highest mobility sequence
  number; then the lowest VTEP address (RFC 7432 15.1 for equal sequence
  numbers, which also settles local against remote); then the lowest peer
  address and route key, only to make the choice independent of arrival order.
* Sticky conflicts are resolved by that order and reported, never hidden: two
  VTEPs claiming the same MAC as sticky ("multiple-sticky": ours wins if one
  of them is ours, RFC 7432 15.2 asks for an alert, not a move), or a MAC
  learned locally while a remote VTEP pins it ("local-vs-remote-sticky": the
  remote wins and we do not advertise).
* A local MAC is advertised with sequence number 0 if no remote route exists
  for it, otherwise one above the highest remote sequence number (a move), and
  never below the number it already had. A remote route that beats it means
  the MAC moved away: its advertisement is withdrawn (and re-announced should
  the remote route go away while the MAC is still local).
* Flood lists come from Type-3 routes with PMSI ingress replication only;
  the VTEP is the PMSI tunnel address, else the originator.
* Remote neighbours (ARP/ND suppression) come from MAC/IP routes sent by the
  VTEP that won their MAC; when two MACs claim an IP the same order decides.
* Duplicate-address detection (RFC 7432 15.1, with a `DadPolicy`): a MAC that
  moves `max_moves` times within `window` seconds is a duplicate; see
  "Duplicate MACs" below.
* Per-peer route limits (a `RouteLimit` per peer): a route the peer adds
  beyond its limit is refused (counted), and each change of the peer's level
  (ok, warning, exceeded) is reported; what to do about it (tear the session
  down, or only log) is the shell's decision.

The time: the RIB reads no clock. Calls that may detect a move or end a
freeze take `now` (seconds on a monotonic clock); a call given none counts as
happening at the latest time the RIB was given.

Duplicate MACs, compared with FRR's zebra (zebra_evpn_mac.c,
`zebra_evpn_dup_addr_detect_for_mac`; `dup-addr-detection max-moves N time M`
and `freeze`):

* The same: only moves that involve this host count, as RFC 7432 15.1 asks
  ("a PE that detects a MAC mobility event via local learning starts an
  M-second timer"): a remote MAC learned here (remote-to-local) starts the
  window, or counts within it; a local MAC beaten by a remote route with a
  higher sequence number (local-to-remote) counts only inside a window a
  local learn started. A remote-to-remote move (a new VTEP or sequence number
  alone) is left to the two VTEPs involved. A window is over when more than
  `window` seconds have passed since it started; the count starts again.
  `max_moves` moves within the window make the MAC a duplicate (FRR's
  defaults, 5 in 180 s). Without freeze a duplicate is only reported and
  flagged; the flag stays until `clear_duplicate` or until the MAC is gone
  from here and from every peer. With freeze: no advertisement of the MAC
  and no move accepted, for `freeze` seconds (then it is released, counts
  reset) or until cleared ("permanent").
* Different: FRR freezes the zebra MAC entry where the last event left it
  (a local learn is not told to BGP; a remote route is not installed). Here
  a frozen MAC keeps the remote path installed when it was frozen, as long
  as that VTEP still advertises the MAC (withdrawing it removes the entry:
  a withdrawal is no move), installs no other one, and is not advertised by
  us; the local sequence number is not raised while frozen, so a MAC that
  keeps flapping between two hosts stops raising it. FRR also marks the
  MAC's local IPs as duplicates; here the MAC/IP routes follow the MAC (they
  are withdrawn with it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from evpnd.l3.table import L3NextHop, L3Policy, L3Table, RemotePrefix
from evpnd.model import (
    ENCAP_VXLAN,
    MOBILITY_SEQ_MAX,
    MULTIHOMING_TYPES,
    ZERO_ESI,
    ImetRoute,
    IPAddress,
    IPNetwork,
    MacIpKey,
    MacIpRoute,
    PrefixRoute,
    Route,
    RouteKey,
    address_order,
    normalize_mac,
)

MacRef = tuple[int, str]  # (vni, mac)
IpRef = tuple[int, IPAddress]  # (vni, ip)
VtepRef = tuple[int, IPAddress]  # (vni, vtep)
PathId = tuple[IPAddress, RouteKey]  # (peer, route key)
Cand = tuple[IPAddress, "MacIpRoute"]  # (peer, route): one candidate path
# One received UPDATE: (peer, announced routes, withdrawn keys).
ReceivedUpdate = tuple[IPAddress, Sequence[Route], Sequence[RouteKey]]
_Where = tuple[IPAddress | None, int]  # where a MAC is (remote VTEP, None = here) and its seq
_K = TypeVar("_K")
IMPORT_CACHE_SIZE = 4096
# Lower is better: (class, -seq, VTEP, peer, route key); see the module docstring.
Rank = tuple[int, int, tuple[int, int], tuple[int, int], tuple[str, int, str, tuple[int, int]]]


AUTO_RT_ASN_VNI = "asn-vni"  # FRR's default: <ASN>:<VNI>
AUTO_RT_RFC8365 = "rfc8365"  # FRR's `autort rfc8365-compatible`
# RFC 8365 5.1.2.1, the local administrator of an auto-derived route target: A bit 0
# (auto-derived), Type 1 (VXLAN), D-ID 0, then the 24-bit VNI (FRR's EVPN_AUTORT_VXLAN).
RFC8365_VXLAN_TYPE = 0x10000000
WILDCARD = "*:"  # an import target `*:NN`: any ASN or address (validate.import_route_target)


def auto_route_target(
    asn: int, vni: int, form: str = AUTO_RT_ASN_VNI, *, any_asn: bool = False
) -> str:
    """The `auto` route target of a VNI, as FRR derives it: a 2-octet-ASN target whose
    ASN is ours (the low 16 bits of a 4-octet one: 48 bits hold no 4-octet ASN and a
    24-bit VNI together), its number the VNI, or in the RFC 8365 form the VNI with the
    VXLAN type bits. `any_asn` (imports only): `*:NN`, which matches the same number
    under any ASN, so hosts that each have their own ASN share the VNI."""
    number = vni | RFC8365_VXLAN_TYPE if form == AUTO_RT_RFC8365 else vni
    admin = "*" if any_asn else str(asn & 0xFFFF if asn > 0xFFFF else asn)
    return f"{admin}:{number}"


@dataclass(frozen=True, slots=True)
class VniPolicy:
    """A local VNI, the route targets it imports ("ASN:NN" / "A.B.C.D:NN" / "*:NN"), and
    whether it takes routes whose label names another VNI (see `Rib.refusal`)."""

    vni: int
    import_rts: frozenset[str]
    accept_label_mismatch: bool = False

    @classmethod
    def from_targets(
        cls,
        vni: int,
        targets: Iterable[str],
        asn: int,
        form: str = AUTO_RT_ASN_VNI,
        *,
        any_asn: bool = False,
        accept_label_mismatch: bool = False,
    ) -> VniPolicy:
        """Resolve config targets, "auto" as `auto_route_target` derives it."""
        auto = auto_route_target(asn, vni, form, any_asn=any_asn)
        rts = frozenset(auto if t == "auto" else t for t in targets)
        return cls(vni, rts, accept_label_mismatch)


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class RemoteMacPath:
    """The winning remote route for a MAC in a VNI: what the FDB should hold."""

    vni: int
    mac: str
    vtep: IPAddress
    seq: int
    sticky: bool
    default_gateway: bool
    peer: IPAddress
    label_vni: int
    esi: str


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class RemoteNeigh:
    """A remote IP -> MAC binding for ARP/ND suppression."""

    vni: int
    ip: IPAddress
    mac: str
    vtep: IPAddress
    peer: IPAddress


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class NeighProbe:
    """An address to probe (ARP/NS) on its VNI's bridge: its MAC moved in from a remote
    VTEP, and the route that bound them came from there. The answer makes the binding
    local (learnt, advertised); no answer, and the kernel drops it."""

    vni: int
    ip: IPAddress
    mac: str


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class LocalAdvert:
    """One Type-2 route of ours: MAC-only when `ip` is None."""

    vni: int
    mac: str
    ip: IPAddress | None
    seq: int
    sticky: bool


@dataclass(frozen=True, slots=True)
class LocalMacView:
    vni: int
    mac: str
    ips: tuple[IPAddress, ...]
    seq: int
    sticky: bool
    advertised: bool  # False while a remote route beats it


@dataclass(frozen=True, slots=True)
class MacConflict:
    vni: int
    mac: str
    reason: str  # "multiple-sticky" | "local-vs-remote-sticky"
    vteps: tuple[IPAddress, ...]


PERMANENT = math.inf  # a freeze that only `clear_duplicate` ends


@dataclass(frozen=True, slots=True)
class DadPolicy:
    """Duplicate-address detection: `max_moves` moves within `window` seconds.

    `freeze`: None reports duplicates only; a number of seconds (PERMANENT:
    until cleared) stops advertising the MAC and accepting moves for it.
    """

    max_moves: int = 5
    window: float = 180.0
    freeze: float | None = None


@dataclass(frozen=True, slots=True)
class DuplicateMac:
    """A MAC detected as a duplicate (RFC 7432 15.1)."""

    vni: int
    mac: str
    detected_at: float  # the RIB's clock (monotonic seconds)
    moves: int  # moves counted within the window
    vtep: IPAddress | None  # the remote VTEP of the last move
    frozen_until: float | None  # None: not frozen; PERMANENT: until cleared

    def frozen(self, now: float) -> bool:
        return self.frozen_until is not None and now < self.frozen_until


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """At most `max_routes` routes from a peer; a warning at `warning_percent` of it."""

    max_routes: int
    warning_percent: int = 75

    @property
    def warning_at(self) -> int:
        return max(1, math.ceil(self.max_routes * self.warning_percent / 100))


# A peer's place against its route limit.
LIMIT_OK, LIMIT_WARNING, LIMIT_EXCEEDED = "ok", "warning", "exceeded"


@dataclass(frozen=True, slots=True)
class RouteLimitEvent:
    """A peer's level changed: "warning" (at warning_at or more routes), "exceeded"
    (a route was refused: the peer sent more than max_routes) or "ok"."""

    peer: IPAddress
    level: str
    routes: int
    limit: RouteLimit


@dataclass(frozen=True, slots=True)
class NexthopMismatch:
    """One VTEP's routes pointing two ways: from `peer`, under route distinguisher `rd`,
    the Type-3 PMSI tunnel (where flooded traffic goes) is `tunnel` while the Type-2 next
    hops (where unicast goes) are `nexthops`. A transit router that rewrote the next
    hops (next-hop-self on an eBGP hop) does this: unicast and flooding then reach
    different addresses (README "Transit routers and next hops")."""

    peer: IPAddress
    rd: str
    tunnel: IPAddress
    nexthops: tuple[IPAddress, ...]


# Why a VNI whose import route targets a route matches refused it (`Rib.refusal`).
REFUSED_LABEL = "label-mismatch"  # RFC 8365 5.1.3: the label is the VNI
REFUSED_ETAG = "ethernet-tag"  # RFC 8365 5.1.2: VLAN-based service has Ethernet tag 0
_INGRESS_REPLICATION = "ingress-replication"


@dataclass(slots=True)
class RibChanges:
    """What one RIB operation changed. Each MAC, IP or VTEP appears at most once."""

    macs_installed: list[RemoteMacPath] = field(default_factory=list)  # new or replaced
    macs_removed: list[MacRef] = field(default_factory=list)
    vteps_added: list[VtepRef] = field(default_factory=list)
    vteps_removed: list[VtepRef] = field(default_factory=list)
    neighs_installed: list[RemoteNeigh] = field(default_factory=list)  # new or replaced
    neighs_removed: list[IpRef] = field(default_factory=list)
    # Announce (new, or an implicit replace with a new sequence number) / withdraw.
    local_advertise: list[LocalAdvert] = field(default_factory=list)
    local_withdraw: list[LocalAdvert] = field(default_factory=list)
    conflicts: list[MacConflict] = field(default_factory=list)  # newly detected
    duplicates: list[DuplicateMac] = field(default_factory=list)  # newly detected
    # Flags gone, with why: "cleared" (clear_duplicate), "freeze-ended", "gone" (the MAC
    # left here and every peer), "policy" (detection turned off).
    duplicates_cleared: list[tuple[DuplicateMac, str]] = field(default_factory=list)
    limit_events: list[RouteLimitEvent] = field(default_factory=list)
    # The L3 table (evpnd/l3/table.py): routes into the L3VNI and their next hops.
    prefixes_installed: list[RemotePrefix] = field(default_factory=list)  # new or replaced
    prefixes_removed: list[RemotePrefix] = field(default_factory=list)
    nexthops_installed: list[L3NextHop] = field(default_factory=list)
    nexthops_removed: list[L3NextHop] = field(default_factory=list)
    # VTEPs whose Type-2 next hops and Type-3 tunnel now differ (new or changed) / agree again.
    nexthop_mismatches: list[NexthopMismatch] = field(default_factory=list)
    nexthop_mismatches_cleared: list[NexthopMismatch] = field(default_factory=list)
    neigh_probes: list[NeighProbe] = field(default_factory=list)  # MACs that moved in

    def __bool__(self) -> bool:
        return any(
            (
                self.macs_installed,
                self.macs_removed,
                self.vteps_added,
                self.vteps_removed,
                self.neighs_installed,
                self.neighs_removed,
                self.local_advertise,
                self.local_withdraw,
                self.conflicts,
                self.duplicates,
                self.duplicates_cleared,
                self.limit_events,
                self.prefixes_installed,
                self.prefixes_removed,
                self.nexthops_installed,
                self.nexthops_removed,
                self.nexthop_mismatches,
                self.nexthop_mismatches_cleared,
                self.neigh_probes,
            )
        )


@dataclass(frozen=True, slots=True)
class RibCounts:
    routes: int
    routes_by_peer: dict[str, int]
    routes_by_type: dict[int, int]
    not_imported: int
    stale: int
    remote_macs: int
    remote_neighs: int
    vteps: int
    local_macs: int
    advertised_macs: int
    conflicts: int
    own_routes_ignored: int  # cumulative
    duplicates: int = 0  # MACs flagged as duplicates now (frozen or not)
    frozen: int = 0  # of those, frozen
    # Held routes refused by a VNI their route targets match: {reason: routes} (`refusal`).
    refused: dict[str, int] = field(default_factory=dict)
    esi_routes: int = 0  # Type-2 routes with a non-zero ESI (multihomed hosts), held
    nexthop_mismatches: int = 0  # VTEPs whose Type-2 next hops differ from their Type-3 tunnel


@dataclass(slots=True)
class RibStats:
    """Cumulative counters (they never go down), read by the metrics collector.

    `announced` and `withdrawn` count, by route type, every route a peer sent
    (reflections of our own routes included; stale sweeps and session losses
    are not withdrawals). `mac_moves` counts RFC 7432 section 15
    moves: the location of a MAC (our host, or a remote VTEP) changed straight
    to another one whose sequence number is higher. Keys: "remote-to-local",
    "local-to-remote", "remote-to-remote". A MAC that disappears and comes
    back elsewhere, or a tie settled by the VTEP address, is not a move.
    """

    # Plain dicts, not Counters: dataclasses.asdict() mangles a Counter.
    announced: dict[int, int] = field(default_factory=dict)
    withdrawn: dict[int, int] = field(default_factory=dict)
    mac_moves: dict[str, int] = field(default_factory=dict)
    duplicates_detected: int = 0
    # Routes refused because their peer was at its limit, per peer.
    routes_refused: dict[IPAddress, int] = field(default_factory=dict)
    # Times each peer's level went to "warning" / "exceeded": {peer: {level: n}}.
    limit_events: dict[IPAddress, dict[str, int]] = field(default_factory=dict)
    stale_swept: int = 0  # stale routes removed because they were not re-sent
    # Received routes a VNI their route targets match refused, by reason (`Rib.refusal`).
    refused: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Local:
    seq: int
    sticky: bool
    ips: set[IPAddress]


@dataclass(frozen=True, slots=True)
class _Adv:
    seq: int
    sticky: bool
    ips: frozenset[IPAddress]


@dataclass(slots=True)
class _Probe:
    """Duplicate-address detection of one MAC: moves counted since `start`."""

    count: int
    start: float


@dataclass(slots=True)
class _Tx:
    """What an operation touched; the published state is recomputed for these only.

    Dicts used as ordered sets: the changes come out in the order things were
    touched, which is deterministic for a given input and costs no sort.
    """

    macs: dict[MacRef, None] = field(default_factory=dict)
    ips: dict[IpRef, None] = field(default_factory=dict)
    vteps: dict[VtepRef, None] = field(default_factory=dict)
    peers: dict[IPAddress, None] = field(default_factory=dict)  # with a limit, counts changed
    refused: dict[IPAddress, None] = field(default_factory=dict)  # routes refused at the limit
    prefixes: dict[IPNetwork, None] = field(default_factory=dict)  # the L3 table's
    rds: dict[tuple[IPAddress, str], None] = field(default_factory=dict)  # (peer, RD): VTEP check


def _key_order(key: MacIpKey) -> tuple[str, int, str, tuple[int, int]]:
    return (key.rd, key.etag, key.mac, (0, 0) if key.ip is None else address_order(key.ip))


# Rank classes: lower is better.
_LOCAL_STICKY, _REMOTE_STICKY, _ORDINARY = 0, 1, 2


def _remote_rank(peer: IPAddress, route: MacIpRoute) -> Rank:
    return (
        _REMOTE_STICKY if route.sticky else _ORDINARY,
        -route.mobility_seq,
        address_order(route.nexthop),
        address_order(peer),
        _key_order(route.key),
    )


class Rib:
    """Routes in, change sets out. `local_vtep` is our VTEP; `other_own_addresses`
    lists further addresses of ours (e.g. a secondary or anycast VTEP) whose
    routes must also be recognised as reflections of our own."""

    def __init__(
        self,
        local_vtep: IPAddress,
        policies: Iterable[VniPolicy] = (),
        *,
        other_own_addresses: Iterable[IPAddress] = (),
        dad: DadPolicy | None = None,
    ) -> None:
        """`dad` None: no duplicate-address detection."""
        self.local_vtep = local_vtep
        self._own = frozenset({local_vtep, *other_own_addresses})
        self._policies: dict[int, VniPolicy] = {}
        self._gateways: frozenset[MacRef] = frozenset()
        self._rt_index: dict[str, tuple[int, ...]] = {}
        # Wildcard import targets (`*:NN`) by their number NN.
        self._wild_index: dict[str, tuple[int, ...]] = {}
        # (route targets, encapsulation, label) -> (VNIs, refusal): the codec shares one
        # RT tuple among the routes of a VTEP, so this is one lookup per route.
        self._import_cache: dict[
            tuple[tuple[str, ...], int | None, int], tuple[tuple[int, ...], str | None]
        ] = {}
        self._set_policies(policies)
        self._adj: dict[IPAddress, dict[RouteKey, Route]] = {}
        self._stale: dict[IPAddress, set[RouteKey]] = {}
        # Which mark_stale() the stale set of a peer comes from: a sweep done in parts
        # stops when a newer refresh or restart has marked the peer again.
        self._stale_marks = 0
        self._stale_mark: dict[IPAddress, int] = {}
        # Candidates per MAC and per IP: (peer, route) pairs. A tuple, not a
        # dict: nearly every MAC has one or two, and 100k small dicts cost
        # twice the memory.
        self._mac_cands: dict[MacRef, tuple[Cand, ...]] = {}
        self._ip_cands: dict[IpRef, tuple[Cand, ...]] = {}
        self._vtep_refs: dict[VtepRef, set[PathId]] = {}
        self._local: dict[MacRef, _Local] = {}
        # Published state: what the last RibChanges told the shell.
        self._remote_best: dict[MacRef, RemoteMacPath] = {}
        self._neighs: dict[IpRef, RemoteNeigh] = {}
        self._vteps: dict[int, set[IPAddress]] = {}
        self._advertised: dict[MacRef, _Adv] = {}
        self._conflicts: dict[MacRef, MacConflict] = {}
        self._own_ignored = 0
        self.stats = RibStats()
        self._now = 0.0  # the latest time a call gave (the RIB reads no clock)
        self._dad = dad
        self._probes: dict[MacRef, _Probe] = {}
        self._duplicates: dict[MacRef, DuplicateMac] = {}
        self._limits: dict[IPAddress, RouteLimit] = {}
        self._limit_level: dict[IPAddress, str] = {}
        self._l3 = L3Table(self._own)  # routing into the L3VNI: off until set_l3_policy
        # Per (peer, RD) of imported routes: Type-2 next hops and Type-3 tunnels, with
        # their route counts, and the mismatches between the two now published.
        self._rd_nexthops: dict[tuple[IPAddress, str], dict[IPAddress, int]] = {}
        self._rd_tunnels: dict[tuple[IPAddress, str], dict[IPAddress, int]] = {}
        self._mismatches: dict[tuple[IPAddress, str], NexthopMismatch] = {}

    # ------------------------------------------------------------ remote routes

    def announce(self, peer: IPAddress, route: Route, *, now: float | None = None) -> RibChanges:
        return self.apply_updates([(peer, (route,), ())], now=now)

    def withdraw(self, peer: IPAddress, key: RouteKey, *, now: float | None = None) -> RibChanges:
        return self.apply_updates([(peer, (), (key,))], now=now)

    def apply_update(
        self,
        peer: IPAddress,
        announced: Sequence[Route],
        withdrawn: Sequence[RouteKey],
        *,
        now: float | None = None,
    ) -> RibChanges:
        """One received UPDATE as a single change set (withdrawals first, as on the wire)."""
        return self.apply_updates([(peer, announced, withdrawn)], now=now)

    def apply_updates(
        self, updates: Iterable[ReceivedUpdate], *, now: float | None = None
    ) -> RibChanges:
        """Many UPDATEs, in order, as one change set.

        Best paths, neighbours and flood lists are computed once per touched
        MAC, IP or VTEP for the whole batch rather than once per UPDATE: the
        result is the same as applying them one by one and merging the
        changes, minus the intermediate states nobody needs to see.
        """
        self._tick(now)
        tx = _Tx()
        announced_count, withdrawn_count = self.stats.announced, self.stats.withdrawn
        limits = self._limits
        for peer, announced, withdrawn in updates:
            limit = limits.get(peer) if limits else None
            if limit is not None:
                tx.peers[peer] = None
            if withdrawn:
                self._withdraw_all(tx, peer, withdrawn, withdrawn_count)
            for route in announced:
                _count(announced_count, route.key.route_type)
                self._announce(tx, peer, route, limit)
        return self._commit(tx)

    def peer_down(self, peer: IPAddress, *, now: float | None = None) -> RibChanges:
        """Forget everything the peer sent (ExaBGP sends no withdrawals on session loss)."""
        self._tick(now)
        tx = _Tx()
        for route in self._adj.pop(peer, {}).values():
            self._unindex(tx, peer, route)
        self._stale.pop(peer, None)
        tx.peers[peer] = None
        return self._commit(tx)

    def mark_stale(self, peer: IPAddress) -> int:
        """Start a refresh: routes not re-received before `sweep_stale` will go.

        Every route the peer holds now is marked, whatever was marked before
        (a second restart before the first one's sweep re-marks them all).
        """
        keys = set(self._adj.get(peer, {}))
        self._stale[peer] = keys
        self._stale_marks += 1
        self._stale_mark[peer] = self._stale_marks
        return len(keys)

    def stale_count(self, peer: IPAddress) -> int:
        return len(self._stale.get(peer, ()))

    def stale_mark(self, peer: IPAddress) -> int | None:
        """Which mark_stale() the peer's stale routes come from (None: none are stale)."""
        return self._stale_mark.get(peer) if peer in self._stale else None

    def sweep_stale(
        self, peer: IPAddress, *, now: float | None = None, limit: int | None = None
    ) -> RibChanges:
        """Remove the peer's routes still marked stale (not re-sent since `mark_stale`):
        all of them, or at most `limit` (the caller sweeps the rest in later calls)."""
        self._tick(now)
        tx = _Tx()
        stale = self._stale.get(peer, set())
        if limit is None or len(stale) <= limit:
            keys: set[RouteKey] | list[RouteKey] = stale
            self._stale.pop(peer, None)
        else:
            keys = [stale.pop() for _ in range(limit)]
        self.stats.stale_swept += len(keys)
        for key in keys:
            self._withdraw(tx, peer, key)
        tx.peers[peer] = None
        return self._commit(tx)

    def set_route_limits(self, limits: Mapping[IPAddress, RouteLimit]) -> RibChanges:
        """The route limit of each peer (a peer left out has none); levels are re-evaluated."""
        tx = _Tx()
        for peer in {*self._limits, *limits}:
            tx.peers[peer] = None
        self._limits = dict(limits)
        for peer in list(self._limit_level):
            if peer not in self._limits:
                del self._limit_level[peer]
        return self._commit(tx)

    def route_limit(self, peer: IPAddress) -> tuple[RouteLimit | None, str]:
        """The peer's limit (None: unlimited) and its level ("ok", "warning", "exceeded")."""
        return self._limits.get(peer), self._limit_level.get(peer, LIMIT_OK)

    def reconfigure(
        self, policies: Iterable[VniPolicy], gateways: Iterable[MacRef] | None = None
    ) -> RibChanges:
        """New import policies (config reload): every route is imported again.

        `gateways` (None keeps the current set): (VNI, MAC) of distributed
        gateways this host owns too (Docker `gateway=local`); a received
        route for one is held but never imported into that VNI.
        """
        tx = _Tx()
        for peer, routes in self._adj.items():  # under the old policies
            for route in routes.values():
                self._unindex(tx, peer, route)
        self._set_policies(policies)
        if gateways is not None:
            self._gateways = frozenset((vni, normalize_mac(mac)) for vni, mac in gateways)
        for peer, routes in self._adj.items():
            for route in routes.values():
                self._index(tx, peer, route)
        return self._commit(tx)

    # ------------------------------------------------------- duplicate MACs

    @property
    def dad_policy(self) -> DadPolicy | None:
        return self._dad

    def set_dad_policy(self, policy: DadPolicy | None, *, now: float | None = None) -> RibChanges:
        """A new detection policy (config reload): counts start again; a duplicate stays
        flagged, its freeze following the new policy (released when it has none)."""
        self._tick(now)
        if policy == self._dad:
            return RibChanges()
        self._dad = policy
        self._probes.clear()
        tx = _Tx()
        released: list[DuplicateMac] = []
        for ref, dup in list(self._duplicates.items()):
            if policy is None:
                released.append(self._duplicates.pop(ref))
                tx.macs[ref] = None
                continue
            until = None if policy.freeze is None else dup.detected_at + policy.freeze
            if until != dup.frozen_until:
                self._duplicates[ref] = _with_freeze(dup, until)
                tx.macs[ref] = None
        changes = self._commit(tx)
        changes.duplicates_cleared.extend((dup, "policy") for dup in released)
        return changes

    def duplicates(self, vni: int | None = None) -> list[DuplicateMac]:
        return [d for ref, d in sorted(self._duplicates.items()) if vni is None or ref[0] == vni]

    def duplicate(self, vni: int, mac: str) -> DuplicateMac | None:
        return self._duplicates.get((vni, normalize_mac(mac)))

    def clear_duplicate(
        self, vni: int, mac: str, *, now: float | None = None
    ) -> tuple[RibChanges, bool]:
        """Forget a duplicate (the operator fixed it): its counts start again and, if it
        was frozen, it is advertised and moves again. Returns (changes, was flagged)."""
        self._tick(now)
        ref = (vni, normalize_mac(mac))
        dup = self._duplicates.pop(ref, None)
        self._probes.pop(ref, None)
        if dup is None:
            return RibChanges(), False
        changes = self._commit(_Tx(macs={ref: None}))
        changes.duplicates_cleared.append((dup, "cleared"))
        return changes, True

    def next_freeze_end(self) -> float | None:
        """When the earliest freeze ends (a time for `expire_duplicates`); None: no freeze."""
        ends = [d.frozen_until for d in self._duplicates.values()
                if d.frozen_until is not None and d.frozen_until != PERMANENT]  # fmt: skip
        return min(ends, default=None)

    def expire_duplicates(self, now: float) -> RibChanges:
        """Release the MACs whose freeze has ended: counts reset, advertised again."""
        self._tick(now)
        ended = [ref for ref, d in self._duplicates.items()
                 if d.frozen_until is not None and d.frozen_until <= self._now]  # fmt: skip
        released = [self._duplicates.pop(ref) for ref in ended]
        for ref in ended:
            self._probes.pop(ref, None)
        changes = self._commit(_Tx(macs=dict.fromkeys(ended)))
        changes.duplicates_cleared.extend((dup, "freeze-ended") for dup in released)
        return changes

    # --------------------------------------------------------------- local MACs

    def local_mac_added(
        self,
        vni: int,
        mac: str,
        ip: IPAddress | None = None,
        *,
        sticky: bool | None = None,
        now: float | None = None,
    ) -> tuple[RibChanges, LocalAdvert | None]:
        """A MAC (and optionally one of its IPs) is local; `sticky` None keeps the current flag.

        Returns the changes (whose `local_advertise` holds every route to
        announce) and the advertisement for this MAC/IP, or None when a
        remote route beats the local MAC (or it is a frozen duplicate).
        """
        self._tick(now)
        mac = normalize_mac(mac)
        ref = (vni, mac)
        entry = self._local.get(ref)
        if entry is None:
            entry = self._local[ref] = _Local(seq=0, sticky=bool(sticky), ips=set())
        elif sticky is not None:
            entry.sticky = sticky
        if ref not in self._advertised and not self._frozen(ref):
            # Learning a MAC that a remote VTEP holds is a move: claim it with a higher number.
            remote_max = max(
                (r.mobility_seq for _, r in self._mac_cands.get(ref, ())), default=-1
            )
            # Never past the 32 bits the community holds: a peer's route with
            # the largest number is matched, not exceeded (the tie goes to the
            # lowest VTEP), instead of a claim the encoder must refuse.
            entry.seq = max(entry.seq, min(remote_max + 1, MOBILITY_SEQ_MAX))
        if ip is not None:
            entry.ips.add(ip)
        changes = self._commit(_Tx(macs={ref: None}))
        adv = self._advertised.get(ref)
        return changes, None if adv is None else LocalAdvert(vni, mac, ip, adv.seq, adv.sticky)

    def local_mac_removed(
        self, vni: int, mac: str, ip: IPAddress | None = None, *, now: float | None = None
    ) -> RibChanges:
        """The MAC (or, with `ip`, only that IP of it) is no longer local."""
        self._tick(now)
        ref = (vni, normalize_mac(mac))
        entry = self._local.get(ref)
        if entry is None:
            return RibChanges()
        if ip is None:
            del self._local[ref]
        else:
            entry.ips.discard(ip)
        return self._commit(_Tx(macs={ref: None}))

    # ------------------------------------------------------------------ queries

    @property
    def policies(self) -> dict[int, VniPolicy]:
        return dict(self._policies)

    def peers(self) -> list[IPAddress]:
        return sorted(self._adj, key=address_order)

    def routes(self, peer: IPAddress | None = None) -> list[tuple[IPAddress, Route]]:
        peers = [peer] if peer is not None else self.peers()
        return [(p, r) for p in peers for r in self._adj.get(p, {}).values()]

    def imported_vnis(self, peer: IPAddress, key: RouteKey) -> tuple[int, ...]:
        """The L2 VNIs the route lands in, and the L3VNI when the L3 table takes it."""
        route = self._adj.get(peer, {}).get(key)
        if route is None:
            return ()
        l3 = self._l3.policy
        if l3 is not None and self._l3.accepts(route):
            return tuple(sorted({*self._imports(route), l3.vni}))
        return self._imports(route)

    def remote_macs(self, vni: int | None = None) -> list[RemoteMacPath]:
        paths = self._remote_best.values()
        return sorted(
            (p for p in paths if vni is None or p.vni == vni), key=lambda p: (p.vni, p.mac)
        )

    def remote_mac(self, vni: int, mac: str) -> RemoteMacPath | None:
        return self._remote_best.get((vni, normalize_mac(mac)))

    def remote_neighs(self, vni: int | None = None) -> list[RemoteNeigh]:
        found = (n for n in self._neighs.values() if vni is None or n.vni == vni)
        return sorted(found, key=lambda n: (n.vni, address_order(n.ip)))

    def ip_claims(
        self, vni: int, ip: IPAddress | None = None
    ) -> list[tuple[IPAddress, str, IPAddress]]:
        """(IP, MAC, VTEP) of every received MAC+IP route in `vni` (of `ip` only, when
        given), best path or not: who claims an address (the Docker IPAM and driver).
        With `ip` a lookup; without, a pass over every VNI's IPs."""
        if ip is not None:
            return [(ip, r.mac, r.nexthop) for _, r in self._ip_cands.get((vni, ip), ())]
        return [(ref[1], r.mac, r.nexthop) for ref, cands in self._ip_cands.items()
                if ref[0] == vni for _, r in cands]

    def mac_claims(self, vni: int, mac: str) -> list[IPAddress]:
        """The VTEPs of every received route for `mac` in `vni`, best path or not."""
        return [r.nexthop for _, r in self._mac_cands.get((vni, normalize_mac(mac)), ())]

    def vteps(self, vni: int | None = None) -> dict[int, tuple[IPAddress, ...]]:
        return {
            v: tuple(sorted(vteps, key=address_order))
            for v, vteps in sorted(self._vteps.items())
            if vni is None or v == vni
        }

    def local_macs(self, vni: int | None = None) -> list[LocalMacView]:
        return [
            LocalMacView(
                vni=v,
                mac=mac,
                ips=tuple(sorted(e.ips, key=address_order)),
                seq=e.seq,
                sticky=e.sticky,
                advertised=(v, mac) in self._advertised,
            )
            for (v, mac), e in sorted(self._local.items())
            if vni is None or v == vni
        ]

    def vni_counts(self) -> dict[int, dict[str, int]]:
        """Per VNI: local_macs, advertised_macs, remote_macs, remote_neighbors.

        One pass over each table and no sorting (a few ms at 100k entries),
        for the MQTT summaries; local_macs(vni) for each VNI sorts them all.
        """
        from collections import Counter

        tables = {
            "local_macs": Counter(v for v, _ in self._local),
            "advertised_macs": Counter(v for v, _ in self._advertised),
            "remote_macs": Counter(v for v, _ in self._remote_best),
            "remote_neighbors": Counter(v for v, _ in self._neighs),
        }
        vnis: set[int] = set().union(*tables.values())
        return {v: {name: counts[v] for name, counts in tables.items()} for v in vnis}

    def advertisements(self) -> list[LocalAdvert]:
        """Every route of ours that should be announced now (re-announce after a restart)."""
        out: list[LocalAdvert] = []
        for ref in sorted(self._advertised):
            out.extend(_adverts(ref, self._advertised[ref]))
        return out

    # ------------------------------------------------------------------ L3 table

    @property
    def l3_policy(self) -> L3Policy | None:
        return self._l3.policy

    def set_l3_policy(self, policy: L3Policy | None) -> RibChanges:
        """The L3VNI's import policy (None: no routing into an L3VNI); every held route
        is judged again (evpnd/l3/table.py)."""
        tx = _Tx()
        if policy == self._l3.policy:
            return RibChanges()
        for peer, routes in self._adj.items():
            for route in routes.values():
                self._l3.unindex(tx.prefixes, peer, route)
        tx.prefixes.update(dict.fromkeys(p.prefix for p in self._l3.prefixes()))
        self._l3.policy = policy
        if policy is not None:
            for peer, routes in self._adj.items():
                for route in routes.values():
                    self._l3.index(tx.prefixes, peer, route)
        return self._commit(tx)

    def l3_prefixes(self) -> list[RemotePrefix]:
        """The remote prefixes routed into the L3VNI (the winner of each)."""
        return self._l3.prefixes()

    def l3_nexthops(self) -> list[L3NextHop]:
        """The VTEPs those prefixes are routed to, with their router MACs."""
        return self._l3.nexthops()

    def l3_refusals(self) -> dict[str, int]:
        """Held L3 routes the L3 table does not take, by reason (evpnd/l3/table.py)."""
        out: dict[str, int] = {}
        if self._l3.policy is None:
            return out
        for routes in self._adj.values():
            for route in routes.values():
                why = self._l3.refusal(route)
                if why is not None:
                    out[why] = out.get(why, 0) + 1
        return out

    def l3_rmac_conflicts(self) -> dict[str, tuple[IPAddress, ...]]:
        """Router MACs two VTEPs claim: the ones left without a next hop, by MAC."""
        return self._l3.rmac_conflicts()

    def conflicts(self) -> list[MacConflict]:
        return [self._conflicts[ref] for ref in sorted(self._conflicts)]

    def refusal(self, peer: IPAddress, key: RouteKey) -> str | None:
        """Why a VNI whose import targets the held route matches refused it
        (REFUSED_LABEL, REFUSED_ETAG), or None."""
        route = self._adj.get(peer, {}).get(key)
        return None if route is None else self._import(route)[1]

    def nexthop_mismatches(self) -> list[NexthopMismatch]:
        """VTEPs whose Type-2 next hops and Type-3 PMSI tunnel differ, by peer and RD."""
        return [self._mismatches[w] for w in sorted(self._mismatches,
                                                    key=lambda w: (address_order(w[0]), w[1]))]

    def counts(self) -> RibCounts:
        by_type: dict[int, int] = {}
        not_imported = 0
        refused: dict[str, int] = {}
        esi_routes = 0
        for routes in self._adj.values():
            for route in routes.values():
                rtype = route.key.route_type
                by_type[rtype] = by_type.get(rtype, 0) + 1
                if rtype in MULTIHOMING_TYPES:
                    continue  # held and shown, not imported anywhere by design
                vnis, why = self._import(route)
                not_imported += not vnis and not self._l3.accepts(route)
                if why is not None:
                    _count(refused, why)
                if isinstance(route, MacIpRoute) and route.esi != ZERO_ESI:
                    esi_routes += 1
        return RibCounts(
            routes=sum(by_type.values()),
            routes_by_peer={str(p): len(self._adj[p]) for p in self.peers()},
            routes_by_type=dict(sorted(by_type.items())),
            not_imported=not_imported,
            stale=sum(len(s) for s in self._stale.values()),
            remote_macs=len(self._remote_best),
            remote_neighs=len(self._neighs),
            vteps=sum(len(v) for v in self._vteps.values()),
            local_macs=len(self._local),
            advertised_macs=len(self._advertised),
            conflicts=len(self._conflicts),
            own_routes_ignored=self._own_ignored,
            duplicates=len(self._duplicates),
            frozen=sum(d.frozen(self._now) for d in self._duplicates.values()),
            refused=refused,
            esi_routes=esi_routes,
            nexthop_mismatches=len(self._mismatches),
        )

    # ---------------------------------------------------------------- internals

    def _set_policies(self, policies: Iterable[VniPolicy]) -> None:
        self._policies = {p.vni: p for p in policies}
        index: dict[str, list[int]] = {}
        wild: dict[str, list[int]] = {}
        for policy in self._policies.values():
            for rt in policy.import_rts:
                if rt.startswith(WILDCARD):
                    wild.setdefault(rt[len(WILDCARD) :], []).append(policy.vni)
                else:
                    index.setdefault(rt, []).append(policy.vni)
        self._rt_index = {rt: tuple(sorted(vnis)) for rt, vnis in index.items()}
        self._wild_index = {number: tuple(sorted(vnis)) for number, vnis in wild.items()}
        self._import_cache = {}

    def _imports(self, route: Route) -> tuple[int, ...]:
        """The VNIs a route lands in (the same answer at index and unindex time:
        reconfigure unindexes everything before the policies change)."""
        return self._import(route)[0]

    def _import(self, route: Route) -> tuple[tuple[int, ...], str | None]:
        """The VNIs a route lands in, and why a VNI its route targets match refused it.

        RFC 8365: VLAN-based service (one VNI per bridge, all evpnd has) carries
        Ethernet tag 0 (5.1.2), and the label of a Type-2 or an ingress-replication
        Type-3 is the VNI (5.1.3): a VNI refuses a route whose label names another
        VNI unless its policy accepts that. Types 1 and 4 (multihoming) are held, not
        acted on: they land nowhere.
        """
        if isinstance(route, MacIpRoute):
            label = route.vni
        elif isinstance(route, ImetRoute):
            label = route.vni if route.tunnel_type == _INGRESS_REPLICATION else -1
        elif isinstance(route, PrefixRoute):
            label = -1  # the L3VNI: not an L2 VNI's label
        else:
            return (), None
        if label >= 0 and route.key.etag:
            matched = self._import_for(route.route_targets, route.encapsulation, -1)[0]
            return (), REFUSED_ETAG if matched else None
        how = (route.route_targets, route.encapsulation, label)
        found = self._import_cache.get(how)
        if found is None:
            found = self._import_for(*how)
            if len(self._import_cache) >= IMPORT_CACHE_SIZE:
                self._import_cache.clear()
            self._import_cache[how] = found
        vnis = found[0]
        if self._gateways and vnis and isinstance(route, MacIpRoute):
            return tuple(v for v in vnis if (v, route.mac) not in self._gateways), found[1]
        return found

    def _import_for(
        self, targets: tuple[str, ...], encapsulation: int | None, label: int
    ) -> tuple[tuple[int, ...], str | None]:
        if encapsulation not in (None, ENCAP_VXLAN):
            return (), None
        index, wild = self._rt_index, self._wild_index
        matched = {v for rt in targets for v in index.get(rt, ())}
        if wild:
            # `*:NN` matches any route target whose local administrator is NN.
            matched.update(v for rt in targets for v in wild.get(rt[rt.rfind(":") + 1 :], ()))
        if label < 0:
            return tuple(sorted(matched)), None
        policies = self._policies
        vnis = tuple(sorted(v for v in matched
                            if v == label or policies[v].accept_label_mismatch))  # fmt: skip
        return vnis, REFUSED_LABEL if len(vnis) < len(matched) else None

    def _is_own(self, route: Route) -> bool:
        if route.nexthop in self._own:
            return True
        return isinstance(route, ImetRoute) and route.vtep in self._own

    def _tick(self, now: float | None) -> None:
        if now is not None and now > self._now:
            self._now = now

    def _frozen(self, ref: MacRef) -> bool:
        dup = self._duplicates.get(ref) if self._duplicates else None
        return dup is not None and dup.frozen(self._now)

    def _announce(
        self, tx: _Tx, peer: IPAddress, route: Route, limit: RouteLimit | None = None
    ) -> None:
        routes = self._adj.setdefault(peer, {})
        old = routes.pop(route.key, None)
        if old is not None:
            self._unindex(tx, peer, old)
        elif limit is not None and len(routes) >= limit.max_routes and not self._is_own(route):
            # A new route past the limit: refused (a replacement of one held is not).
            refused = self.stats.routes_refused
            refused[peer] = refused.get(peer, 0) + 1
            tx.refused[peer] = None
            if not routes:
                del self._adj[peer]
            return
        stale = self._stale.get(peer)
        if stale is not None:
            stale.discard(route.key)
        if self._is_own(route):
            self._own_ignored += 1
            if not routes:
                del self._adj[peer]
            return
        routes[route.key] = route
        refusal = self._index(tx, peer, route)
        if refusal is not None:
            _count(self.stats.refused, refusal)

    def _withdraw_all(
        self, tx: _Tx, peer: IPAddress, keys: Sequence[RouteKey], counts: dict[str, int]
    ) -> None:
        """One UPDATE's withdrawals: `_withdraw` for each key, with the peer's tables
        looked up once (an address hashes in Python; an FRR UPDATE withdraws ~100)."""
        routes = self._adj.get(peer)
        stale = self._stale.get(peer) if self._stale else None
        for key in keys:
            _count(counts, key.route_type)
            route = None if routes is None else routes.pop(key, None)
            if route is None:
                continue
            self._unindex(tx, peer, route)
            if stale is not None:
                stale.discard(key)
        if routes is not None and not routes:
            del self._adj[peer]

    def _withdraw(self, tx: _Tx, peer: IPAddress, key: RouteKey) -> None:
        routes = self._adj.get(peer)
        route = None if routes is None else routes.pop(key, None)
        if route is None:
            return
        self._unindex(tx, peer, route)
        stale = self._stale.get(peer)
        if stale is not None:
            stale.discard(key)
        if not routes:
            del self._adj[peer]

    def _index(self, tx: _Tx, peer: IPAddress, route: Route) -> str | None:
        """Index a route where it is imported; returns why a VNI refused it, if one did."""
        vnis, refusal = self._import(route)
        if vnis:
            self._track_vtep(tx, peer, route, 1)
        for vni in vnis:
            if isinstance(route, MacIpRoute):
                ref = (vni, route.mac)
                tx.macs[ref] = None
                _add(self._mac_cands, ref, (peer, route))
                if route.key.ip is not None:
                    ipref = (vni, route.key.ip)
                    tx.ips[ipref] = None
                    _add(self._ip_cands, ipref, (peer, route))
            elif isinstance(route, ImetRoute) and route.tunnel_type == "ingress-replication":
                vref = (vni, route.vtep)
                tx.vteps[vref] = None
                self._vtep_refs.setdefault(vref, set()).add((peer, route.key))
        if self._l3.policy is not None:  # Type-5 and MAC+IP routes with an L3VNI label
            self._l3.index(tx.prefixes, peer, route)
        return refusal

    def _unindex(self, tx: _Tx, peer: IPAddress, route: Route) -> None:
        vnis = self._import(route)[0]
        if vnis:
            self._track_vtep(tx, peer, route, -1)
        for vni in vnis:
            if isinstance(route, MacIpRoute):
                ref = (vni, route.mac)
                tx.macs[ref] = None
                _drop(self._mac_cands, ref, peer, route.key)
                if route.key.ip is not None:
                    ipref = (vni, route.key.ip)
                    tx.ips[ipref] = None
                    _drop(self._ip_cands, ipref, peer, route.key)
            elif isinstance(route, ImetRoute) and route.tunnel_type == "ingress-replication":
                vref = (vni, route.vtep)
                tx.vteps[vref] = None
                refs = self._vtep_refs.get(vref)
                if refs is not None:
                    refs.discard((peer, route.key))
                    if not refs:
                        del self._vtep_refs[vref]
        if self._l3.policy is not None:  # set_l3_policy unindexes all before it changes
            self._l3.unindex(tx.prefixes, peer, route)

    def _track_vtep(self, tx: _Tx, peer: IPAddress, route: Route, delta: int) -> None:
        """Count an imported route's next hop (Type-2) or tunnel (Type-3) under its
        peer and RD, for the check that a VTEP's unicast and flooding agree."""
        if isinstance(route, MacIpRoute):
            table, address = self._rd_nexthops, route.nexthop
        elif isinstance(route, ImetRoute) and route.tunnel_type == _INGRESS_REPLICATION:
            table, address = self._rd_tunnels, route.vtep
        else:
            return
        where = (peer, route.key.rd)
        counts = table.get(where)
        if counts is None:
            counts = table[where] = {}
        left = counts.get(address, 0) + delta
        if left > 0:
            counts[address] = left
        else:
            counts.pop(address, None)
            if not counts:
                del table[where]
        tx.rds[where] = None

    def _mismatch(self, where: tuple[IPAddress, str]) -> NexthopMismatch | None:
        tunnels = self._rd_tunnels.get(where)
        nexthops = self._rd_nexthops.get(where)
        if not tunnels or not nexthops:
            return None
        differ = set(nexthops).symmetric_difference(tunnels)
        if not differ:
            return None
        tunnel = min(tunnels, key=address_order)
        return NexthopMismatch(where[0], where[1], tunnel,
                               tuple(sorted(nexthops, key=address_order)))  # fmt: skip

    def _select(self, ref: MacRef) -> tuple[RemoteMacPath | None, bool, MacConflict | None]:
        """The best path for a MAC: (remote winner, local wins, conflict)."""
        cands = self._mac_cands.get(ref, ())
        local = self._local.get(ref)
        if local is None and len(cands) == 1:
            # The common case: one path and nothing to compare (a lone
            # sticky route is no conflict either).
            return _path(ref, *cands[0]), False, None
        best: Rank | None = None
        winner: Cand | None = None
        for cand in cands:
            rank = _remote_rank(*cand)
            if best is None or rank < best:
                best, winner = rank, cand
        local_wins = False
        if local is not None:
            # Own VTEP never equals a remote one (reflected routes are dropped),
            # so the comparison ends at the VTEP address at the latest.
            local_rank = (
                _LOCAL_STICKY if local.sticky else _ORDINARY,
                -local.seq,
                address_order(self.local_vtep),
            )
            local_wins = best is None or local_rank < best[:3]
        conflict = self._conflict(ref, [route for _, route in cands], local)
        if local_wins or winner is None:
            return None, local_wins, conflict
        return _path(ref, *winner), False, conflict

    def _conflict(
        self, ref: MacRef, routes: Iterable[MacIpRoute], local: _Local | None
    ) -> MacConflict | None:
        sticky = {r.nexthop for r in routes if r.sticky}
        if not sticky:
            return None
        if local is not None and local.sticky:
            sticky.add(self.local_vtep)
        vteps = tuple(sorted(sticky, key=address_order))
        if len(sticky) > 1:
            return MacConflict(ref[0], ref[1], "multiple-sticky", vteps)
        if local is not None and not local.sticky:
            return MacConflict(ref[0], ref[1], "local-vs-remote-sticky", vteps)
        return None

    def _select_neigh(self, ref: IpRef) -> RemoteNeigh | None:
        best: Rank | None = None
        winner: Cand | None = None
        for cand in self._ip_cands.get(ref, ()):
            route = cand[1]
            owner = self._remote_best.get((ref[0], route.mac))
            if owner is None or owner.vtep != route.nexthop:
                continue  # the MAC is local, or lives behind another VTEP now
            rank = _remote_rank(*cand)
            if best is None or rank < best:
                best, winner = rank, cand
        if winner is None:
            return None
        peer, route = winner
        return RemoteNeigh(ref[0], ref[1], route.mac, route.nexthop, peer)

    def _commit(self, tx: _Tx) -> RibChanges:
        changes = RibChanges()
        dad, duplicates, probes = self._dad, self._duplicates, self._probes
        l3 = self._l3 if self._l3.policy is not None else None
        mac_cands, local, advertised = self._mac_cands, self._local, self._advertised
        conflicts, remote_best = self._conflicts, self._remote_best
        for ref in tx.macs:
            if (
                ref not in local and ref not in advertised and ref not in conflicts
                and not (duplicates and ref in duplicates)
            ):  # fmt: skip
                # The common cases of a big batch, without the general path's calls: a
                # MAC never local here, with no conflict, and no path or one. They end
                # as the general path would (no neighbour, advert or conflict changes).
                cands = mac_cands.get(ref)
                if cands is None:
                    if remote_best.pop(ref, None) is not None:
                        changes.macs_removed.append(ref)
                    if probes and ref in probes:
                        del probes[ref]  # gone from here and from every peer
                    if l3 is not None:
                        l3.touch_mac(tx.prefixes, ref[1])
                    continue
                if len(cands) == 1:
                    path = _path(ref, *cands[0])
                    old = remote_best.get(ref)
                    if path != old:
                        remote_best[ref] = path
                        changes.macs_installed.append(path)
                        ip = cands[0][1].key.ip
                        if ip is not None:
                            tx.ips[(ref[0], ip)] = None
                    if old is not None:
                        self._count_move((old.vtep, old.seq), (path.vtep, path.seq))
                    if l3 is not None:
                        l3.touch_mac(tx.prefixes, ref[1])
                    continue
            remote, local_wins, conflict = self._select(ref)
            before = self._location(ref)
            if duplicates and ref in duplicates:
                remote, local_wins = self._held(ref, remote, local_wins, changes)
            if dad is not None and ref not in duplicates and (
                ref in self._local or ref in self._advertised
            ):
                # Only a MAC that is or was local here can make a move that counts.
                remote, local_wins = self._detect(dad, ref, before, remote, local_wins, changes)
            if local_wins and before is not None and before[0] is not None:
                # A move in from a remote VTEP (FRR's zebra probes the same way): the
                # addresses its routes bound to the MAC are probed here.
                self._probe_moved_in(ref, changes)
            if remote != self._remote_best.get(ref):
                if remote is None:
                    del self._remote_best[ref]
                    changes.macs_removed.append(ref)
                else:
                    self._remote_best[ref] = remote
                    changes.macs_installed.append(remote)
                # Neighbours follow the VTEP that owns their MAC.
                for _, route in self._mac_cands.get(ref, ()):
                    if route.key.ip is not None:
                        tx.ips[(ref[0], route.key.ip)] = None
            self._publish_advert(ref, local_wins, changes)
            self._count_move(before, self._location(ref))
            if conflict != self._conflicts.get(ref):
                if conflict is None:
                    del self._conflicts[ref]
                else:
                    self._conflicts[ref] = conflict
                    changes.conflicts.append(conflict)
            if probes and ref in probes and ref not in self._local and ref not in self._mac_cands:
                del probes[ref]  # gone from here and from every peer
            if l3 is not None:
                l3.touch_mac(tx.prefixes, ref[1])  # host routes follow their MAC
        for ipref in tx.ips:
            neigh = self._select_neigh(ipref)
            if neigh != self._neighs.get(ipref):
                if neigh is None:
                    del self._neighs[ipref]
                    changes.neighs_removed.append(ipref)
                else:
                    self._neighs[ipref] = neigh
                    changes.neighs_installed.append(neigh)
        for vni, vtep in tx.vteps:
            present = (vni, vtep) in self._vtep_refs
            published = self._vteps.get(vni, set())
            if present and vtep not in published:
                self._vteps.setdefault(vni, set()).add(vtep)
                changes.vteps_added.append((vni, vtep))
            elif not present and vtep in published:
                published.discard(vtep)
                if not published:
                    del self._vteps[vni]
                changes.vteps_removed.append((vni, vtep))
        if tx.prefixes:
            found = self._l3.commit(tx.prefixes, self._host_route_follows_mac)
            changes.prefixes_installed = found.prefixes_installed
            changes.prefixes_removed = found.prefixes_removed
            changes.nexthops_installed = found.nexthops_installed
            changes.nexthops_removed = found.nexthops_removed
        if tx.peers or tx.refused:
            self._limit_levels(tx, changes)
        for where in tx.rds:
            mismatch = self._mismatch(where)
            old = self._mismatches.get(where)
            if mismatch == old:
                continue
            if mismatch is None:
                del self._mismatches[where]
                changes.nexthop_mismatches_cleared.append(old)  # type: ignore[arg-type]
            else:
                self._mismatches[where] = mismatch
                changes.nexthop_mismatches.append(mismatch)
        return changes

    def _probe_moved_in(self, ref: MacRef, changes: RibChanges) -> None:
        local = self._local.get(ref)
        known = local.ips if local is not None else set()
        ips = {route.key.ip for _, route in self._mac_cands.get(ref, ())
               if route.key.ip is not None and route.key.ip not in known}  # fmt: skip
        changes.neigh_probes.extend(
            NeighProbe(ref[0], ip, ref[1]) for ip in sorted(ips, key=address_order)
        )

    def _host_route_follows_mac(self, peer: IPAddress, route: MacIpRoute) -> bool:
        """A MAC+IP's host route is a candidate unless its MAC lives elsewhere in one of
        our VNIs: here (we advertise it) or behind another VTEP (as for neighbours)."""
        for vni in self._imports(route):
            ref = (vni, route.mac)
            if ref in self._advertised:
                return False
            owner = self._remote_best.get(ref)
            if owner is not None and owner.vtep != route.nexthop:
                return False
        return True

    def _held(
        self, ref: MacRef, remote: RemoteMacPath | None, local_wins: bool, changes: RibChanges
    ) -> tuple[RemoteMacPath | None, bool]:
        """A MAC flagged as duplicate: frozen, its published state stays where it is."""
        dup = self._duplicates[ref]
        if dup.frozen(self._now):
            return self._frozen_state(ref), False
        if dup.frozen_until is not None:
            # The freeze is over (the shell's timer may not have run yet): released
            # as by expire_duplicates, and this change is judged afresh.
            reason = "freeze-ended"
        elif ref not in self._local and ref not in self._mac_cands:
            reason = "gone"  # a reported duplicate gone from here and from every peer
        else:
            return remote, local_wins  # reported, not frozen: no further counting (FRR)
        del self._duplicates[ref]
        self._probes.pop(ref, None)
        changes.duplicates_cleared.append((dup, reason))
        return remote, local_wins

    def _frozen_state(self, ref: MacRef) -> RemoteMacPath | None:
        """While frozen: the remote path installed when the freeze began, as long as its
        VTEP still advertises the MAC; nothing else is installed, nothing advertised."""
        current = self._remote_best.get(ref)
        if current is None:
            return None
        for _, route in self._mac_cands.get(ref, ()):
            if route.nexthop == current.vtep:
                return current
        return None

    def _detect(
        self,
        dad: DadPolicy,
        ref: MacRef,
        before: _Where | None,
        remote: RemoteMacPath | None,
        local_wins: bool,
        changes: RibChanges,
    ) -> tuple[RemoteMacPath | None, bool]:
        """Count a move that involves this host; a duplicate found now may freeze it."""
        if local_wins:
            local = self._local[ref]
            after: _Where | None = (None, local.seq)
        else:
            after = None if remote is None else (remote.vtep, remote.seq)
        if before is None or after is None or after[1] <= before[1]:
            return remote, local_wins
        now = self._now
        probe = self._probes.get(ref)
        if before[0] is not None and after[0] is None:  # remote-to-local: starts a window
            if probe is None or now - probe.start > dad.window:
                probe = self._probes[ref] = _Probe(0, now)
            probe.count += 1
            vtep = before[0]
        elif before[0] is None and after[0] is not None:  # local-to-remote
            if probe is None or probe.count == 0:
                return remote, local_wins  # no window a local learn started
            if now - probe.start > dad.window:
                probe.count = 0
                return remote, local_wins
            probe.count += 1
            vtep = after[0]
        else:
            return remote, local_wins  # remote-to-remote: not ours to judge
        if probe.count < dad.max_moves:
            return remote, local_wins
        until = None if dad.freeze is None else now + dad.freeze
        dup = DuplicateMac(ref[0], ref[1], now, probe.count, vtep, until)
        self._duplicates[ref] = dup
        self.stats.duplicates_detected += 1
        changes.duplicates.append(dup)
        if until is None:
            return remote, local_wins
        return self._frozen_state(ref), False

    def _limit_levels(self, tx: _Tx, changes: RibChanges) -> None:
        for peer in {**tx.peers, **tx.refused}:
            limit = self._limits.get(peer)
            if limit is None:
                continue
            held = len(self._adj.get(peer, ()))
            old = self._limit_level.get(peer, LIMIT_OK)
            if peer in tx.refused or (old == LIMIT_EXCEEDED and held >= limit.max_routes):
                level = LIMIT_EXCEEDED
            elif held >= limit.warning_at:
                level = LIMIT_WARNING
            else:
                level = LIMIT_OK
            if level == old:
                continue
            if level == LIMIT_OK:
                self._limit_level.pop(peer, None)
            else:
                self._limit_level[peer] = level
                counts = self.stats.limit_events.setdefault(peer, {})
                counts[level] = counts.get(level, 0) + 1
            changes.limit_events.append(RouteLimitEvent(peer, level, held, limit))

    def _location(self, ref: MacRef) -> _Where | None:
        """Where the published state puts a MAC: (remote VTEP or None for us, seq)."""
        adv = self._advertised.get(ref)
        if adv is not None:
            return None, adv.seq
        remote = self._remote_best.get(ref)
        return None if remote is None else (remote.vtep, remote.seq)

    def _count_move(self, before: _Where | None, after: _Where | None) -> None:
        if before is None or after is None or before[0] == after[0] or after[1] <= before[1]:
            return
        origin = "local" if before[0] is None else "remote"
        target = "local" if after[0] is None else "remote"
        _count(self.stats.mac_moves, f"{origin}-to-{target}")

    def _publish_advert(self, ref: MacRef, local_wins: bool, changes: RibChanges) -> None:
        old = self._advertised.get(ref)
        local = self._local.get(ref)
        new = (
            _Adv(local.seq, local.sticky, frozenset(local.ips))
            if local_wins and local is not None
            else None
        )
        if new == old:
            return
        if new is None:
            del self._advertised[ref]
        else:
            self._advertised[ref] = new
        if old is None and new is not None:
            changes.local_advertise.extend(_adverts(ref, new))
            return
        if new is None and old is not None:
            changes.local_withdraw.extend(_adverts(ref, old))
            return
        assert old is not None and new is not None
        if (new.seq, new.sticky) != (old.seq, old.sticky):
            # A new sequence number or flag replaces every route of the MAC.
            changes.local_advertise.extend(_adverts(ref, new))
        else:
            changes.local_advertise.extend(
                LocalAdvert(ref[0], ref[1], ip, new.seq, new.sticky)
                for ip in sorted(new.ips - old.ips, key=address_order)
            )
        changes.local_withdraw.extend(
            LocalAdvert(ref[0], ref[1], ip, old.seq, old.sticky)
            for ip in sorted(old.ips - new.ips, key=address_order)
        )


def _with_freeze(dup: DuplicateMac, until: float | None) -> DuplicateMac:
    return DuplicateMac(dup.vni, dup.mac, dup.detected_at, dup.moves, dup.vtep, until)


def _adverts(ref: MacRef, adv: _Adv) -> list[LocalAdvert]:
    vni, mac = ref
    ips: list[IPAddress | None] = [None, *sorted(adv.ips, key=address_order)]
    return [LocalAdvert(vni, mac, ip, adv.seq, adv.sticky) for ip in ips]


def _count(counts: dict[_K, int], key: _K) -> None:
    counts[key] = counts.get(key, 0) + 1


def _add(index: dict[_K, tuple[Cand, ...]], ref: _K, cand: Cand) -> None:
    # The same (peer, key) was unindexed first if it was there (_announce).
    old = index.get(ref)
    index[ref] = (cand,) if old is None else (*old, cand)


def _drop(index: dict[_K, tuple[Cand, ...]], ref: _K, peer: IPAddress, key: RouteKey) -> None:
    old = index.get(ref)
    if old is None:
        return
    if len(old) == 1:  # the common case: one path
        (cand,) = old
        if cand[1].key == key and cand[0] == peer:
            del index[ref]
        return
    rest = tuple(c for c in old if not (c[1].key == key and c[0] == peer))
    if rest:
        index[ref] = rest
    else:
        del index[ref]


def _path(ref: MacRef, peer: IPAddress, route: MacIpRoute) -> RemoteMacPath:
    return RemoteMacPath(ref[0], ref[1], route.nexthop, route.mobility_seq, route.sticky,
                         route.default_gateway, peer, route.vni, route.esi)  # fmt: skip
