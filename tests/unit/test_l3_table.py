"""The L3 part of the RIB and its kernel mapping: routes into the L3VNI, next hops.

Real data where there is some (FRR's Type-5 and two-label MAC+IP routes as
ExaBGP delivered them), generated operations for the rules that must hold
whatever the order: the choice per prefix does not depend on arrival order,
and the change sets replay to the full computation (desired.py).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.dataplane.state import NeighEntry, RemoteMac, RouteEntry
from evpnd.dataplane.tracker import ForwardingTracker
from evpnd.desired import L3Devices, VniDevices, apply_rib_changes, desired_state
from evpnd.l3.table import L3NextHop, L3Policy, RemotePrefix, why_not
from evpnd.model import (
    ENCAP_VXLAN,
    IPAddress,
    MacIpKey,
    MacIpRoute,
    PrefixKey,
    PrefixRoute,
)
from evpnd.rib import Rib, VniPolicy
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import RouteUpdate
from tests.conftest import SAMPLES, require

LOCAL = IPv4Address("10.0.0.5")
V2, V3 = IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3")
P1, P2 = IPv4Address("10.255.0.1"), IPv4Address("10.255.0.2")
M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
R2, R3 = "02:00:00:00:50:02", "02:00:00:00:50:03"  # router MACs of V2 and V3
IP1 = IPv4Address("10.100.0.11")
RT100, RT5000 = "65000:100", "65000:5000"
POLICY = L3Policy(5000, frozenset({RT5000}), frozenset({ip_network("10.100.0.0/24")}))
L3 = L3Devices("br5000", "vxlan5000")
DEVICES = {100: VniDevices("vxlan100", "br100")}
NET50 = IPv4Network("10.50.0.0/24")


def new_rib(policy: L3Policy | None = POLICY) -> Rib:
    rib = Rib(LOCAL, [VniPolicy(100, frozenset({RT100}))])
    rib.set_l3_policy(policy)
    return rib


def host(
    mac: str,
    vtep: IPAddress,
    ip: IPAddress = IP1,
    *,
    seq: int = 0,
    rmac: str | None = None,
    l3vni: int | None = 5000,
    rts: tuple[str, ...] = (RT100, RT5000),
    gateway: bool = False,
) -> MacIpRoute:
    return MacIpRoute(
        key=MacIpKey(f"{vtep}:100", 0, mac, ip), nexthop=vtep, vni=100, l3vni=l3vni,
        route_targets=rts, mobility_seq=seq, router_mac=rmac or rmac_of(vtep),
        default_gateway=gateway, encapsulation=ENCAP_VXLAN,
    )  # fmt: skip


def prefix(
    net: IPv4Network | IPv6Network,
    vtep: IPAddress,
    *,
    label: int = 5000,
    rmac: str | None = None,
    gateway: IPAddress | None = None,
    rts: tuple[str, ...] = (RT5000,),
) -> PrefixRoute:
    return PrefixRoute(
        key=PrefixKey(f"{vtep}:5000", 0, net), nexthop=vtep, vni=label, gateway=gateway,
        route_targets=rts, router_mac=rmac or rmac_of(vtep), encapsulation=ENCAP_VXLAN,
    )  # fmt: skip


def rmac_of(vtep: IPAddress) -> str:
    return {V2: R2, V3: R3}.get(vtep, "02:00:00:00:50:99")  # type: ignore[call-overload]


# ------------------------------------------------------------------ FRR's routes


def decoded(name: str) -> RouteUpdate:
    require(SAMPLES.is_dir(), f"{SAMPLES} is missing")
    (message,) = Decoder().decode((SAMPLES / f"json_{name}.json").read_text())
    assert isinstance(message, RouteUpdate)
    return message


def test_frr_mac_ip_with_two_labels_becomes_host_routes_v4_and_v6() -> None:
    """FRR's MAC+IP routes (L2VNI 100, L3VNI 5000, Rmac): a /32 and a /128, one next hop."""
    update = decoded("type2_mac_ip_v4_v6_two_labels_rmac_L3VNI")
    rib = Rib(IPv4Address("10.99.0.1"), [VniPolicy(100, frozenset({RT100}))])
    rib.set_l3_policy(L3Policy(5000, frozenset({RT5000})))
    changes = rib.apply_update(update.peer, update.announced, update.withdrawn)
    frr, rmac = IPv4Address("10.99.0.2"), "02:00:00:00:50:fe"
    assert {p.prefix for p in changes.prefixes_installed} == {
        ip_network("192.168.100.11/32"), ip_network("2001:db8:100::11/128")}  # fmt: skip
    assert changes.nexthops_installed == [L3NextHop(frr, rmac, (4, 6))]
    state = desired_state(rib, {100: VniDevices("vxlan100", "br100")}, L3)
    mapped = IPv6Address("::ffff:10.99.0.2")
    assert state.routes == {
        ip_network("192.168.100.11/32"): RouteEntry(ip_network("192.168.100.11/32"), "br5000", frr),
        ip_network("2001:db8:100::11/128"):
            RouteEntry(ip_network("2001:db8:100::11/128"), "br5000", mapped),
    }  # fmt: skip
    assert state.macs[("vxlan5000", rmac)] == RemoteMac("vxlan5000", rmac, frr)
    assert state.neighs[("br5000", frr)] == NeighEntry("br5000", frr, rmac)
    assert state.neighs[("br5000", mapped)] == NeighEntry("br5000", mapped, rmac)
    # ... and the L2 side as before: the MAC on vxlan100, both IPs for ARP/ND suppression.
    assert state.macs[("vxlan100", "02:00:00:00:01:11")].vtep == frr
    assert ("br100", IPv4Address("192.168.100.11")) in state.neighs
    key = update.announced[0].key
    assert rib.imported_vnis(update.peer, key) == (100, 5000)


def test_frr_type5_of_its_own_underlay_subnet_is_refused_as_a_loop() -> None:
    """FRR advertised its connected underlay 10.99.0.0/24, which holds its VTEP 10.99.0.2:
    routing it into the tunnel would send the tunnel's own packets into the tunnel."""
    update = decoded("type5_ip_prefix")
    rib = Rib(IPv4Address("10.99.0.1"), [])
    rib.set_l3_policy(L3Policy(5000, frozenset({RT5000})))
    changes = rib.apply_update(update.peer, update.announced, update.withdrawn)
    assert not changes.prefixes_installed
    assert rib.l3_refusals() == {"loop": 1}
    assert rib.counts().not_imported == 1
    # The same route for another prefix is taken: route, neighbour and router MAC.
    (route,) = update.announced
    assert isinstance(route, PrefixRoute)
    other = PrefixRoute(PrefixKey(route.key.rd, 0, NET50), route.nexthop, route.vni,
                        route.gateway, route.esi, route.route_targets, route.router_mac,
                        route.encapsulation)  # fmt: skip
    changes = rib.announce(update.peer, other)
    assert changes.prefixes_installed == [
        RemotePrefix(NET50, IPv4Address("10.99.0.2"), "02:00:00:00:50:fe", update.peer, 5)]
    state = desired_state(rib, {}, L3)
    assert state.routes[NET50] == RouteEntry(NET50, "br5000", IPv4Address("10.99.0.2"))


# ------------------------------------------------------------------ rules


def test_refusals_name_their_reason() -> None:
    own = frozenset({LOCAL})
    assert why_not(POLICY, prefix(NET50, V2), own) == (NET50, None)
    assert why_not(POLICY, prefix(NET50, V2, label=6000), own) == (NET50, "label")
    assert why_not(POLICY, prefix(NET50, V2, gateway=IPv4Address("10.50.0.1")), own)[1] \
        == "gateway-ip"
    assert why_not(POLICY, prefix(ip_network("10.100.0.0/24"), V2), own)[1] == "local"
    assert why_not(POLICY, prefix(ip_network("10.0.0.0/8"), V2), own)[1] == "loop"
    assert why_not(POLICY, prefix(ip_network("10.0.0.5/32"), V3), own)[1] == "loop"  # ours
    v6 = IPv6Address("2001:db8::2")
    assert why_not(POLICY, prefix(NET50, v6), own)[1] == "family"
    no_rmac = PrefixRoute(PrefixKey("x:1", 0, NET50), V2, 5000, route_targets=(RT5000,))
    assert why_not(POLICY, no_rmac, own) == (NET50, "no-router-mac")
    for bad in ("00:00:00:00:00:00", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff"):
        assert why_not(POLICY, prefix(NET50, V2, rmac=bad), own)[1] == "bad-router-mac"
        # ... for routing only: the MAC+IP route is still taken for layer 2.
        rib = new_rib()
        changes = rib.announce(P1, host(M1, V2, rmac=bad))
        assert changes.macs_installed and not changes.prefixes_installed
        assert rib.l3_refusals() == {"bad-router-mac": 1}
    # `*:5000` (auto under any ASN) imports the L3VNI's target of another AS.
    wild = L3Policy(5000, frozenset({"*:5000"}))
    assert why_not(wild, prefix(NET50, V2, rts=("65001:5000",)), own) == (NET50, None)
    assert why_not(wild, prefix(NET50, V2, rts=("65001:500",)), own) == (None, None)
    # Not the table's business at all: another RT, one label, a gateway MAC+IP.
    assert why_not(POLICY, prefix(NET50, V2, rts=("65000:1",)), own) == (None, None)
    assert why_not(POLICY, host(M1, V2, l3vni=None), own) == (None, None)
    assert why_not(POLICY, host(M1, V2, gateway=True), own) == (None, None)


def test_host_route_follows_its_mac() -> None:
    rib = new_rib()
    rib.announce(P1, host(M1, V2))
    assert [p.vtep for p in rib.l3_prefixes()] == [V2]
    # The endpoint moves to V3 (seq 1): the L2 winner moves, the host route with it.
    changes = rib.announce(P1, host(M1, V3, seq=1))
    assert [p.vtep for p in changes.prefixes_installed] == [V3]
    assert changes.nexthops_removed == [L3NextHop(V2, R2, (4,))]
    assert changes.nexthops_installed == [L3NextHop(V3, R3, (4,))]
    # It moves here: no host route while the MAC is local (the connected subnet serves).
    changes, _ = rib.local_mac_added(100, M1, IP1)
    assert [p.prefix for p in changes.prefixes_removed] == [ip_network("10.100.0.11/32")]
    assert rib.l3_prefixes() == [] and rib.l3_nexthops() == []


def test_host_route_of_a_vni_we_do_not_have_goes_by_sequence_number() -> None:
    rib = new_rib()
    other_vni = (RT5000, "65000:300")
    rib.announce(P1, host(M1, V2, rts=other_vni))
    rib.announce(P1, host(M1, V3, seq=2, rts=other_vni))
    assert [p.vtep for p in rib.l3_prefixes()] == [V3]


def test_type2_host_route_beats_a_type5_of_the_same_prefix_then_lowest_vtep() -> None:
    rib = new_rib()
    rib.announce(P1, prefix(ip_network("10.100.1.11/32"), V2))
    rib.announce(P1, host(M1, V3, ip=IPv4Address("10.100.1.11")))
    assert [(p.vtep, p.route_type) for p in rib.l3_prefixes()] == [(V3, 2)]
    rib.announce(P2, prefix(NET50, V3))
    rib.announce(P1, prefix(NET50, V2))
    assert {p.prefix: p.vtep for p in rib.l3_prefixes()}[NET50] == V2


def test_a_router_mac_two_vteps_claim_goes_to_the_first_until_it_is_free() -> None:
    rib = new_rib()
    rib.announce(P1, prefix(NET50, V2, rmac=R2))
    changes = rib.announce(P1, prefix(ip_network("10.60.0.0/24"), V3, rmac=R2))
    assert changes.prefixes_installed and not changes.nexthops_installed
    assert rib.l3_rmac_conflicts() == {R2: (V3,)}
    changes = rib.withdraw(P1, prefix(NET50, V2).key)
    assert changes.nexthops_removed == [L3NextHop(V2, R2, (4,))]
    assert changes.nexthops_installed == [L3NextHop(V3, R2, (4,))]
    assert rib.l3_rmac_conflicts() == {}


def test_no_policy_no_l3_and_turning_it_off_removes_everything() -> None:
    rib = new_rib(None)
    assert not rib.announce(P1, prefix(NET50, V2)).prefixes_installed
    assert rib.imported_vnis(P1, prefix(NET50, V2).key) == ()
    changes = rib.set_l3_policy(POLICY)
    assert [p.prefix for p in changes.prefixes_installed] == [NET50]
    assert rib.imported_vnis(P1, prefix(NET50, V2).key) == (5000,)
    changes = rib.set_l3_policy(None)
    assert [p.prefix for p in changes.prefixes_removed] == [NET50]
    assert changes.nexthops_removed == [L3NextHop(V2, R2, (4,))]


def test_peer_down_and_stale_sweep_take_l3_routes_with_them() -> None:
    rib = new_rib()
    rib.announce(P1, prefix(NET50, V2))
    rib.announce(P2, prefix(NET50, V3))
    changes = rib.peer_down(P1)
    assert [p.vtep for p in changes.prefixes_installed] == [V3]
    rib.mark_stale(P2)
    changes = rib.sweep_stale(P2)
    assert [p.prefix for p in changes.prefixes_removed] == [NET50]
    assert rib.l3_nexthops() == []


# ------------------------------------------------------------------ properties

VTEPS = [V2, V3]
NETS = [NET50, ip_network("10.50.0.0/16"), ip_network("10.100.0.11/32"),
        ip_network("2001:db8:50::/64")]  # fmt: skip
l3_routes = st.one_of(
    st.builds(host, st.sampled_from([M1, M2]), st.sampled_from(VTEPS),
              seq=st.integers(0, 2), rmac=st.sampled_from([None, R2, R3]),
              l3vni=st.sampled_from([5000, 5000, None, 6000]),
              rts=st.sampled_from([(RT100, RT5000), (RT5000,), (RT100,)])),
    st.builds(prefix, st.sampled_from(NETS), st.sampled_from(VTEPS),
              rmac=st.sampled_from([None, R2, R3])),
)  # fmt: skip
ops = st.lists(
    st.one_of(
        st.tuples(st.just("announce"), st.sampled_from([P1, P2]), l3_routes),
        st.tuples(st.just("withdraw"), st.sampled_from([P1, P2]), l3_routes),
        st.tuples(st.just("down"), st.sampled_from([P1, P2])),
        st.tuples(st.just("local"), st.sampled_from([M1, M2])),
        st.tuples(st.just("unlocal"), st.sampled_from([M1, M2])),
        st.tuples(st.just("policy"), st.sampled_from([POLICY, None])),
    ),
    max_size=25,
)


def run(rib: Rib, op: tuple[Any, ...]) -> Any:
    match op:
        case ("announce", peer, route):
            return rib.announce(peer, route)
        case ("withdraw", peer, route):
            return rib.withdraw(peer, route.key)
        case ("down", peer):
            return rib.peer_down(peer)
        case ("local", mac):
            return rib.local_mac_added(100, mac, IP1)[0]
        case ("unlocal", mac):
            return rib.local_mac_removed(100, mac)
        case ("policy", policy):
            return rib.set_l3_policy(policy)
    raise AssertionError(op)


@settings(max_examples=400)
@given(ops)
def test_l3_change_sets_replay_to_the_full_computation(operations: list[Any]) -> None:
    """The daemon's path (RibChanges -> the tracker's wanted entries) equals a full
    recomputation from the RIB after every step, L3 routes and next hops included."""
    rib = new_rib()
    tracker = ForwardingTracker()
    tracker.replace_desired(desired_state(rib, DEVICES, L3))
    for op in operations:
        changes = run(rib, op)
        apply_rib_changes(tracker, changes, DEVICES, L3)
        assert tracker.desired == desired_state(rib, DEVICES, L3)
        # Every published prefix has its next hop, unless its router MAC is held elsewhere.
        nexthops = {n.vtep for n in rib.l3_nexthops()}
        waiting = {v for vteps in rib.l3_rmac_conflicts().values() for v in vteps}
        assert {p.vtep for p in rib.l3_prefixes()} <= nexthops | waiting


@settings(max_examples=300)
@given(st.data(), st.lists(st.tuples(st.sampled_from([P1, P2]), l3_routes), max_size=10,
                           unique_by=lambda pr: (pr[0], pr[1].key)))  # fmt: skip
def test_choice_per_prefix_does_not_depend_on_arrival_order(
    data: st.DataObject, routes: list[tuple[IPv4Address, Any]]
) -> None:
    first, second = new_rib(), new_rib()
    for peer, route in routes:
        first.announce(peer, route)
    for peer, route in data.draw(st.permutations(routes)):
        second.announce(peer, route)
    assert first.l3_prefixes() == second.l3_prefixes()
