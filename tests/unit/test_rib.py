"""RIB rules with plain data: import, best path, mobility, sticky, peers, stale, flood lists."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.model import (
    ENCAP_VXLAN,
    MOBILITY_SEQ_MAX,
    EadKey,
    EadRoute,
    EsKey,
    EsRoute,
    ImetKey,
    ImetRoute,
    IPAddress,
    MacIpKey,
    MacIpRoute,
    PrefixKey,
    PrefixRoute,
    Route,
)
from evpnd.rib import (
    PERMANENT,
    DadPolicy,
    LocalAdvert,
    MacConflict,
    NeighProbe,
    NexthopMismatch,
    RemoteMacPath,
    RemoteNeigh,
    Rib,
    RibChanges,
    RouteLimit,
    RouteLimitEvent,
    VniPolicy,
    auto_route_target,
)
from evpnd.speaker.encode import route_token

LOCAL = IPv4Address("10.0.0.5")
V2, V3, V9 = IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3"), IPv4Address("10.0.0.9")
P1, P2 = IPv4Address("10.255.0.1"), IPv4Address("10.255.0.2")  # route reflectors
M1, M2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
IP1, IP2 = IPv4Address("192.168.1.1"), IPv4Address("192.168.1.2")
RT100, RT200 = "65000:100", "65000:200"
ZERO_ESI = "00:00:00:00:00:00:00:00:00:00"


def new_rib() -> Rib:
    return Rib(
        LOCAL,
        [VniPolicy(100, frozenset({RT100})), VniPolicy(200, frozenset({RT200}))],
        other_own_addresses=[IPv4Address("10.0.1.5")],
    )


def mac_route(
    mac: str,
    vtep: IPAddress,
    *,
    ip: IPAddress | None = None,
    vni: int = 100,
    seq: int = 0,
    sticky: bool = False,
    rts: tuple[str, ...] = (RT100,),
    gateway: bool = False,
    encap: int | None = ENCAP_VXLAN,
) -> MacIpRoute:
    return MacIpRoute(
        key=MacIpKey(f"{vtep}:{vni}", 0, mac, ip),
        nexthop=vtep,
        vni=vni,
        route_targets=rts,
        mobility_seq=seq,
        sticky=sticky,
        default_gateway=gateway,
        encapsulation=encap,
    )


def imet(
    vtep: IPAddress,
    *,
    vni: int = 100,
    rts: tuple[str, ...] = (RT100,),
    tunnel_type: str = "ingress-replication",
    tunnel: IPAddress | None = None,
    nexthop: IPAddress | None = None,
) -> ImetRoute:
    return ImetRoute(
        key=ImetKey(f"{vtep}:{vni}", 0, vtep),
        nexthop=nexthop or vtep,
        vni=vni,
        tunnel=tunnel if tunnel_type != "none" else None,
        tunnel_type=tunnel_type,
        route_targets=rts,
    )


def path(
    mac: str,
    vtep: IPAddress,
    *,
    peer: IPAddress = P1,
    vni: int = 100,
    seq: int = 0,
    sticky: bool = False,
    default_gateway: bool = False,
    label_vni: int | None = None,
) -> RemoteMacPath:
    return RemoteMacPath(
        vni=vni,
        mac=mac,
        vtep=vtep,
        seq=seq,
        sticky=sticky,
        default_gateway=default_gateway,
        peer=peer,
        label_vni=vni if label_vni is None else label_vni,
        esi=ZERO_ESI,
    )


def vtep_of(rib: Rib, mac: str, vni: int = 100) -> IPAddress | None:
    best = rib.remote_mac(vni, mac)
    return None if best is None else best.vtep


# ----------------------------------------------------------------- basic flow


def test_announce_installs_and_withdraw_removes() -> None:
    rib = new_rib()
    route = mac_route(M1, V2)
    changes = rib.announce(P1, route)
    assert changes.macs_installed == [path(M1, V2)]
    assert rib.remote_macs() == [path(M1, V2)]
    changes = rib.withdraw(P1, route.key)
    assert changes.macs_removed == [(100, M1)]
    assert not changes.macs_installed
    assert rib.remote_macs() == []
    assert rib.counts().routes == 0


def test_identical_reannouncement_changes_nothing() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2))
    assert not rib.announce(P1, mac_route(M1, V2))


def test_withdraw_of_unknown_route_is_harmless() -> None:
    rib = new_rib()
    assert not rib.withdraw(P1, MacIpKey("x:1", 0, M1))


def test_implicit_replace_moves_the_mac() -> None:
    rib = new_rib()
    first = mac_route(M1, V2)
    rib.announce(P1, first)
    moved = MacIpRoute(key=first.key, nexthop=V3, vni=100, route_targets=(RT100,), mobility_seq=1)
    changes = rib.announce(P1, moved)
    assert changes.macs_installed == [path(M1, V3, seq=1)]
    assert len(rib.routes(P1)) == 1


def test_apply_update_is_one_change_set() -> None:
    rib = new_rib()
    old = mac_route(M1, V2)
    rib.announce(P1, old)
    changes = rib.apply_update(P1, [mac_route(M2, V2)], [old.key])
    assert changes.macs_removed == [(100, M1)]
    assert changes.macs_installed == [path(M2, V2)]


# -------------------------------------------------------------------- import


def test_a_label_naming_another_vni_is_refused_and_counted() -> None:
    """RFC 8365 5.1.3: the label carries the VNI. RT of VNI 200, label 100: refused."""
    rib = new_rib()
    route = mac_route(M1, V2, vni=100, rts=(RT200,))
    assert not rib.announce(P1, route)
    assert rib.remote_macs() == [] and rib.imported_vnis(P1, route.key) == ()
    assert rib.refusal(P1, route.key) == "label-mismatch"
    assert rib.stats.refused == {"label-mismatch": 1}
    counts = rib.counts()
    assert (counts.routes, counts.not_imported, counts.refused) == (1, 1, {"label-mismatch": 1})
    # The same route announced again is counted again (a received route each time).
    rib.announce(P1, route)
    assert rib.stats.refused == {"label-mismatch": 2}
    assert rib.counts().refused == {"label-mismatch": 1}  # one held


def test_a_vni_configured_to_accept_another_label_imports_by_route_target_alone() -> None:
    rib = Rib(LOCAL, [VniPolicy(100, frozenset({RT100})),
                      VniPolicy(200, frozenset({RT200}), accept_label_mismatch=True)])
    route = mac_route(M1, V2, vni=100, rts=(RT200,))
    rib.announce(P1, route)
    # Lands in 200, the label kept for the dataplane.
    assert rib.remote_macs() == [path(M1, V2, vni=200, label_vni=100)]
    assert rib.refusal(P1, route.key) is None and rib.stats.refused == {}


def test_route_with_several_matching_targets_lands_where_its_label_says() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, rts=(RT100, RT200)))
    assert [(p.vni, p.mac) for p in rib.remote_macs()] == [(100, M1)]
    assert rib.refusal(P1, mac_route(M1, V2).key) == "label-mismatch"  # VNI 200 refused it
    rib.withdraw(P1, mac_route(M1, V2).key)
    assert rib.remote_macs() == []
    accepting = Rib(LOCAL, [VniPolicy(100, frozenset({RT100}), accept_label_mismatch=True),
                            VniPolicy(200, frozenset({RT200}), accept_label_mismatch=True)])
    accepting.announce(P1, mac_route(M1, V2, rts=(RT100, RT200)))
    assert [(p.vni, p.mac) for p in accepting.remote_macs()] == [(100, M1), (200, M1)]


def test_a_non_zero_ethernet_tag_is_refused_for_vlan_based_service() -> None:
    """RFC 8365 5.1.2: one VNI per bridge (VLAN-based) carries Ethernet tag 0."""
    rib = new_rib()
    tagged = MacIpRoute(MacIpKey("10.0.0.2:100", 7, M1), V2, 100, route_targets=(RT100,),
                        encapsulation=ENCAP_VXLAN)  # fmt: skip
    imet_tagged = ImetRoute(ImetKey("10.0.0.2:100", 7, V2), V2, 100, V2, route_targets=(RT100,))
    assert not rib.apply_update(P1, [tagged, imet_tagged], [])
    assert rib.refusal(P1, tagged.key) == "ethernet-tag"
    assert rib.stats.refused == {"ethernet-tag": 2}
    assert rib.vteps() == {} and rib.remote_macs() == []
    # Not matching any VNI's targets, a tag is nobody's business: not counted as refused.
    rib.announce(P1, MacIpRoute(MacIpKey("10.0.0.2:9", 7, M2), V2, 9, route_targets=("1:9",)))
    assert rib.stats.refused == {"ethernet-tag": 2}


def test_a_wildcard_target_imports_any_asn() -> None:
    """`*:NN` (FRR's `route-target import *:NN`): hosts in different ASNs share a VNI."""
    rib = Rib(LOCAL, [VniPolicy(100, frozenset({"*:100"})), VniPolicy(200, frozenset({RT200}))])
    routes = [mac_route(M1, V2, rts=("4200000001:100",)), mac_route(M2, V3, rts=("65002:100",)),
              mac_route("02:00:00:00:00:03", V9, rts=("192.0.2.1:100",))]  # fmt: skip
    rib.apply_update(P1, routes, [])
    assert [(p.vni, p.vtep) for p in rib.remote_macs()] == [(100, V2), (100, V3), (100, V9)]
    # Only the local administrator counts: 65000:1100 or 65000:10 are not *:100.
    rib2 = Rib(LOCAL, [VniPolicy(100, frozenset({"*:100"}))])
    rib2.apply_update(P1, [mac_route(M1, V2, rts=("65000:1100",)),
                           mac_route(M2, V3, rts=("65000:10",))], [])  # fmt: skip
    assert rib2.remote_macs() == []


def test_auto_route_targets_in_both_forms() -> None:
    assert auto_route_target(65001, 100) == "65001:100"
    assert auto_route_target(4200000001, 100) == f"{4200000001 & 0xFFFF}:100"
    # RFC 8365 5.1.2.1: A=0 (auto), Type=1 (VXLAN), D-ID 0, VNI; FRR's rfc8365-compatible.
    assert auto_route_target(65001, 100, "rfc8365") == f"65001:{0x10000000 | 100}"
    assert auto_route_target(65001, 100, "rfc8365", any_asn=True) == f"*:{0x10000064}"
    policy = VniPolicy.from_targets(100, ["auto"], 4200000002, "rfc8365", any_asn=True)
    rib = Rib(LOCAL, [policy])
    theirs = auto_route_target(4200000001, 100, "rfc8365")
    rib.announce(P1, mac_route(M1, V2, rts=(theirs,)))
    assert [p.vtep for p in rib.remote_macs()] == [V2]


def test_unmatched_target_is_held_but_not_imported() -> None:
    rib = new_rib()
    route = mac_route(M1, V2, rts=("65000:999",))
    assert not rib.announce(P1, route)
    counts = rib.counts()
    assert (counts.routes, counts.not_imported, counts.remote_macs) == (1, 1, 0)
    assert rib.imported_vnis(P1, route.key) == ()


def test_non_vxlan_encapsulation_is_not_imported() -> None:
    rib = new_rib()
    assert not rib.announce(P1, mac_route(M1, V2, encap=10))  # MPLS
    assert rib.announce(P1, mac_route(M2, V2, encap=None)).macs_installed


def test_reconfigure_imports_again() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, rts=("65000:999",)))
    changes = rib.reconfigure([VniPolicy(100, frozenset({RT100, "65000:999"}))])
    assert changes.macs_installed == [path(M1, V2)]
    changes = rib.reconfigure([VniPolicy(100, frozenset({RT100}))])
    assert changes.macs_removed == [(100, M1)]


def test_policy_from_config_targets() -> None:
    assert VniPolicy.from_targets(100, ["auto", "1.2.3.4:7"], 65000) == VniPolicy(
        100, frozenset({"65000:100", "1.2.3.4:7"})
    )
    # RFC 8365 auto-derivation keeps the low 16 bits of a 4-octet ASN.
    assert VniPolicy.from_targets(100, ["auto"], 4200000000).import_rts == frozenset(
        {f"{4200000000 & 0xFFFF}:100"}
    )


# ---------------------------------------------------------------- own routes


def test_own_routes_reflected_back_are_ignored() -> None:
    rib = new_rib()
    assert not rib.announce(P1, mac_route(M1, LOCAL))
    assert not rib.announce(P1, mac_route(M1, IPv4Address("10.0.1.5")))
    assert not rib.announce(P1, imet(LOCAL))
    assert not rib.announce(P1, imet(V2, tunnel=LOCAL))  # PMSI tunnel says it is ours
    counts = rib.counts()
    assert (counts.routes, counts.own_routes_ignored) == (0, 4)
    assert rib.peers() == []


def test_reannouncement_with_own_next_hop_replaces_the_old_copy() -> None:
    rib = new_rib()
    route = mac_route(M1, V2)
    rib.announce(P1, route)
    own = MacIpRoute(key=route.key, nexthop=LOCAL, vni=100, route_targets=(RT100,))
    assert rib.announce(P1, own).macs_removed == [(100, M1)]
    assert rib.counts().routes == 0


# ------------------------------------------------------------ best path rules


def test_highest_sequence_number_wins() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, seq=1))
    changes = rib.announce(P1, mac_route(M1, V3, seq=2))
    assert changes.macs_installed == [path(M1, V3, seq=2)]
    assert not rib.announce(P1, mac_route(M1, V9, seq=0))
    assert vtep_of(rib, M1) == V3


def test_equal_sequence_numbers_lowest_vtep_wins() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V9, seq=3))
    rib.announce(P1, mac_route(M1, V3, seq=3))
    rib.announce(P1, mac_route(M1, V2, seq=3))
    assert vtep_of(rib, M1) == V2


def test_same_route_from_two_peers_lowest_peer_is_reported() -> None:
    rib = new_rib()
    rib.announce(P2, mac_route(M1, V2))
    rib.announce(P1, mac_route(M1, V2))
    assert rib.remote_mac(100, M1) == path(M1, V2, peer=P1)


def test_sticky_beats_a_higher_sequence_number() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, sticky=True))
    assert not rib.announce(P1, mac_route(M1, V3, seq=10))
    assert rib.remote_mac(100, M1) == path(M1, V2, sticky=True)


def test_two_sticky_claims_are_a_reported_conflict() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V3, sticky=True, seq=1))
    changes = rib.announce(P1, mac_route(M1, V2, sticky=True))
    assert changes.conflicts == [MacConflict(100, M1, "multiple-sticky", (V2, V3))]
    assert vtep_of(rib, M1) == V3  # among sticky claims the sequence number decides
    assert rib.conflicts() == changes.conflicts
    rib.withdraw(P1, mac_route(M1, V2).key)
    assert rib.conflicts() == []


def test_default_gateway_flag_is_carried() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1, gateway=True))
    assert rib.remote_mac(100, M1) == path(M1, V2, default_gateway=True)


# -------------------------------------------------------------------- peers


def test_peer_down_removes_exactly_that_peers_routes() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, seq=1))
    rib.announce(P2, mac_route(M1, V3, seq=0))
    rib.announce(P1, mac_route(M2, V2))
    rib.announce(P2, imet(V3))
    changes = rib.peer_down(P1)
    # P2's copy of M1 takes over; M2 only came from P1.
    assert changes.macs_installed == [path(M1, V3, peer=P2)]
    assert changes.macs_removed == [(100, M2)]
    assert not changes.vteps_removed
    assert [r for _, r in rib.routes()] == [mac_route(M1, V3), imet(V3)]
    assert rib.peers() == [P2]


def test_peer_down_with_the_same_route_from_two_reflectors() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2))
    rib.announce(P2, mac_route(M1, V2))
    changes = rib.peer_down(P1)
    # Same VTEP, only the reporting peer differs: nothing to reprogram.
    assert changes.macs_installed == [path(M1, V2, peer=P2)]
    assert not changes.macs_removed
    assert rib.peer_down(P2).macs_removed == [(100, M1)]


def test_stale_routes_not_refreshed_are_swept() -> None:
    rib = new_rib()
    keep, drop, gone = mac_route(M1, V2), mac_route(M2, V2), mac_route(M1, V3, vni=200)
    for route in (keep, drop, gone):
        rib.announce(P1, route)
    assert rib.mark_stale(P1) == 3
    assert rib.counts().stale == 3
    rib.announce(P1, keep)  # re-received after the restart
    rib.withdraw(P1, gone.key)
    changes = rib.sweep_stale(P1)
    assert changes.macs_removed == [(100, M2)]
    assert [r for _, r in rib.routes()] == [keep]
    assert rib.counts().stale == 0
    assert not rib.sweep_stale(P1)


def test_peer_down_clears_stale_marks() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2))
    rib.mark_stale(P1)
    rib.peer_down(P1)
    assert rib.counts().stale == 0


# --------------------------------------------------------------- flood lists


def test_flood_list_from_type3_with_ingress_replication() -> None:
    rib = new_rib()
    changes = rib.announce(P1, imet(V2))
    assert changes.vteps_added == [(100, V2)]
    rib.announce(P1, imet(V3, vni=200, rts=(RT200,)))
    assert rib.vteps() == {100: (V2,), 200: (V3,)}
    assert rib.vteps(200) == {200: (V3,)}


def test_type3_without_pmsi_or_other_tunnel_floods_nowhere() -> None:
    rib = new_rib()
    assert not rib.announce(P1, imet(V2, tunnel_type="none"))
    assert not rib.announce(P1, imet(V3, tunnel_type="no-tunnel"))
    assert rib.vteps() == {}
    assert rib.counts().routes == 2


def test_pmsi_tunnel_address_is_the_vtep() -> None:
    rib = new_rib()
    assert rib.announce(P1, imet(V2, tunnel=V9)).vteps_added == [(100, V9)]


def test_vtep_stays_while_any_route_names_it() -> None:
    rib = new_rib()
    rib.announce(P1, imet(V2))
    rib.announce(P2, imet(V2))
    assert not rib.peer_down(P1).vteps_removed
    assert rib.peer_down(P2).vteps_removed == [(100, V2)]
    assert rib.vteps() == {}


# -------------------------------------------------------------- neighbours


def test_mac_ip_routes_give_neighbours() -> None:
    rib = new_rib()
    changes = rib.announce(P1, mac_route(M1, V2, ip=IP1))
    assert changes.neighs_installed == [RemoteNeigh(100, IP1, M1, V2, P1)]
    assert rib.withdraw(P1, mac_route(M1, V2, ip=IP1).key).neighs_removed == [(100, IP1)]


def test_neighbour_follows_the_vtep_that_owns_the_mac() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    # The MAC moved to V3, whose MAC/IP route has not arrived yet.
    changes = rib.announce(P1, mac_route(M1, V3, seq=1))
    assert changes.neighs_removed == [(100, IP1)]
    changes = rib.announce(P1, mac_route(M1, V3, ip=IP1, seq=1))
    assert changes.neighs_installed == [RemoteNeigh(100, IP1, M1, V3, P1)]


def test_ip_claimed_by_two_macs_higher_sequence_wins() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    rib.announce(P1, mac_route(M2, V3, ip=IP1, seq=1))
    assert rib.remote_neighs() == [RemoteNeigh(100, IP1, M2, V3, P1)]


# ------------------------------------------------------- local MACs, mobility


def test_local_mac_without_remote_is_advertised_with_seq_zero() -> None:
    rib = new_rib()
    changes, advert = rib.local_mac_added(100, M1)
    assert advert == LocalAdvert(100, M1, None, 0, False)
    assert changes.local_advertise == [advert]


def test_local_mac_with_mixed_case_is_normalized() -> None:
    rib = new_rib()
    _, advert = rib.local_mac_added(100, M1.upper())
    assert advert is not None and advert.mac == M1


def test_mac_moving_here_claims_remote_seq_plus_one() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, seq=3))
    rib.announce(P2, mac_route(M1, V3, seq=1))
    changes, advert = rib.local_mac_added(100, M1)
    assert advert == LocalAdvert(100, M1, None, 4, False)
    assert changes.macs_removed == [(100, M1)]  # no remote FDB entry for a local MAC
    assert rib.remote_macs() == []


def test_remote_with_higher_seq_takes_the_mac_away_and_back() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1, IP1)
    changes = rib.announce(P1, mac_route(M1, V2, seq=1))
    assert changes.local_withdraw == [
        LocalAdvert(100, M1, None, 0, False),
        LocalAdvert(100, M1, IP1, 0, False),
    ]
    assert changes.macs_installed == [path(M1, V2, seq=1)]
    assert rib.local_macs()[0].advertised is False
    # The remote goes away while the MAC is still local: ours again, same number.
    changes = rib.withdraw(P1, mac_route(M1, V2).key)
    assert changes.local_advertise == [
        LocalAdvert(100, M1, None, 0, False),
        LocalAdvert(100, M1, IP1, 0, False),
    ]
    assert changes.macs_removed == [(100, M1)]


def test_relearning_a_mac_that_moved_away_bumps_the_sequence() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1)
    rib.announce(P1, mac_route(M1, V2, seq=5))
    changes, advert = rib.local_mac_added(100, M1)
    assert advert == LocalAdvert(100, M1, None, 6, False)
    assert changes.macs_removed == [(100, M1)]


def test_a_peer_at_the_largest_sequence_number_cannot_push_ours_past_32_bits() -> None:
    """A received route with seq 2**32-1 and the MAC then learned here: the claim
    stays within the 32-bit community (it used to be 2**32, which the encoder
    refused, killing the daemon from the local-learning path)."""
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V9, seq=MOBILITY_SEQ_MAX))  # 10.0.0.9 > us: we win the tie
    changes, advert = rib.local_mac_added(100, M1, IP1)
    assert advert == LocalAdvert(100, M1, IP1, MOBILITY_SEQ_MAX, False)
    assert changes.macs_removed == [(100, M1)]
    for adv in changes.local_advertise:  # what the daemon hands the speaker must encode
        route_token(mac_route(adv.mac, LOCAL, ip=adv.ip, seq=adv.seq))
    # Behind a lower VTEP the peer keeps the MAC at the same number: nothing to announce.
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, seq=MOBILITY_SEQ_MAX))
    changes, advert = rib.local_mac_added(100, M1)
    assert advert is None and not changes.local_advertise
    assert vtep_of(rib, M1) == V2


def test_local_seq_never_goes_down() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, seq=6))
    rib.local_mac_added(100, M1)  # seq 7
    rib.withdraw(P1, mac_route(M1, V2).key)
    assert not rib.announce(P1, mac_route(M1, V2, seq=2))  # stale remote: we keep it
    changes, advert = rib.local_mac_added(100, M1, IP1)
    assert advert == LocalAdvert(100, M1, IP1, 7, False)
    assert changes.local_advertise == [advert]  # only the new IP route


def test_winning_local_mac_is_not_bumped_by_a_lower_remote() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1)
    rib.announce(P1, mac_route(M1, V9, seq=0))  # same seq, higher VTEP: we win
    changes, advert = rib.local_mac_added(100, M1, IP1)
    assert advert == LocalAdvert(100, M1, IP1, 0, False)
    assert changes.local_advertise == [advert]


def test_equal_sequence_with_a_lower_remote_vtep_loses() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1)
    changes = rib.announce(P1, mac_route(M1, V2, seq=0))  # 10.0.0.2 < 10.0.0.5
    assert changes.local_withdraw == [LocalAdvert(100, M1, None, 0, False)]
    assert vtep_of(rib, M1) == V2


def test_local_sticky_wins_over_remote_sticky_and_is_reported() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1, sticky=True)
    changes = rib.announce(P1, mac_route(M1, V2, sticky=True, seq=9))
    assert not changes.local_withdraw
    assert changes.conflicts == [MacConflict(100, M1, "multiple-sticky", (V2, LOCAL))]
    assert rib.remote_macs() == []


def test_remote_sticky_beats_a_locally_learned_mac() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, sticky=True))
    changes, advert = rib.local_mac_added(100, M1)
    assert advert is None
    assert not changes.local_advertise
    assert changes.conflicts == [MacConflict(100, M1, "local-vs-remote-sticky", (V2,))]
    assert vtep_of(rib, M1) == V2


def test_local_sticky_flag_change_readvertises_everything() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1, IP1)
    changes, _ = rib.local_mac_added(100, M1, sticky=True)
    assert changes.local_advertise == [
        LocalAdvert(100, M1, None, 0, True),
        LocalAdvert(100, M1, IP1, 0, True),
    ]
    # An IP learnt later does not reset the flag.
    _, advert = rib.local_mac_added(100, M1, IP2)
    assert advert == LocalAdvert(100, M1, IP2, 0, True)


def test_local_removal_withdraws_and_hands_over_to_remote() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1, IP1)
    rib.local_mac_added(100, M1, IP2)
    changes = rib.local_mac_removed(100, M1, IP1)
    assert changes.local_withdraw == [LocalAdvert(100, M1, IP1, 0, False)]
    rib.announce(P1, mac_route(M1, V9, seq=0))  # loses to us on VTEP address
    changes = rib.local_mac_removed(100, M1)
    assert changes.local_withdraw == [
        LocalAdvert(100, M1, None, 0, False),
        LocalAdvert(100, M1, IP2, 0, False),
    ]
    assert changes.macs_installed == [path(M1, V9)]
    assert rib.local_macs() == []
    assert not rib.local_mac_removed(100, M2)


def test_advertisements_lists_everything_to_reannounce() -> None:
    rib = new_rib()
    rib.local_mac_added(100, M1, IP1)
    rib.local_mac_added(200, M2)
    rib.announce(P1, mac_route(M2, V2, vni=200, rts=(RT200,), seq=4))  # takes M2 away
    assert rib.advertisements() == [
        LocalAdvert(100, M1, None, 0, False),
        LocalAdvert(100, M1, IP1, 0, False),
    ]


def test_local_mac_does_not_give_a_remote_neighbour() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    changes, _ = rib.local_mac_added(100, M1)
    assert changes.neighs_removed == [(100, IP1)]


# ---------------------------------------------------------------- type 5, show


def test_prefix_routes_are_held_and_counted() -> None:
    rib = new_rib()
    route = PrefixRoute(
        key=PrefixKey("10.0.0.2:1", 0, ip_network("10.1.0.0/24")),
        nexthop=V2,
        vni=5000,
        route_targets=(RT100,),
    )
    assert not rib.announce(P1, route)
    counts = rib.counts()
    assert counts.routes_by_type == {5: 1}
    assert counts.routes_by_peer == {str(P1): 1}


def test_counts_for_show() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    rib.announce(P1, mac_route(M1, V2))
    rib.announce(P1, imet(V2))
    rib.local_mac_added(100, M2)
    counts = rib.counts()
    assert (counts.routes, counts.remote_macs, counts.remote_neighs, counts.vteps) == (3, 1, 1, 1)
    assert (counts.local_macs, counts.advertised_macs) == (1, 1)
    assert counts.routes_by_type == {2: 2, 3: 1}


def test_ipv6_vteps_and_peers_sort_after_ipv4() -> None:
    rib = new_rib()
    v6: IPAddress = ip_address("2001:db8::2")
    rib.announce(v6, imet(v6))
    rib.announce(P1, imet(V2))
    assert rib.vteps() == {100: (V2, v6)}
    assert rib.peers() == [P1, v6]


# ---------------------------------------------------------------- properties

PEERS = [P1, P2]
VTEPS = [V2, V3, V9]
MACS = [M1, M2]

remote_routes = st.one_of(
    st.builds(
        mac_route,
        st.sampled_from(MACS),
        st.sampled_from(VTEPS),
        ip=st.sampled_from([None, IP1, IP2]),
        seq=st.integers(0, 3),
        sticky=st.sampled_from([False, False, False, True]),
        rts=st.sampled_from([(RT100,), (RT200,), (RT100, RT200), ("65000:999",)]),
    ),
    st.builds(imet, st.sampled_from(VTEPS), rts=st.sampled_from([(RT100,), (RT200,)])),
)
announcements = st.lists(
    st.tuples(st.sampled_from(PEERS), remote_routes),
    max_size=12,
    unique_by=lambda pr: (pr[0], pr[1].key),
)


def snapshot(rib: Rib) -> tuple[object, ...]:
    return (rib.remote_macs(), rib.vteps(), rib.remote_neighs(), rib.conflicts())


@settings(max_examples=300)
@given(st.data(), announcements)
def test_best_path_does_not_depend_on_arrival_order(
    data: st.DataObject, routes: list[tuple[IPv4Address, Route]]
) -> None:
    first, second = new_rib(), new_rib()
    for peer, route in routes:
        first.announce(peer, route)
    for peer, route in data.draw(st.permutations(routes)):
        second.announce(peer, route)
    assert snapshot(first) == snapshot(second)


@settings(max_examples=200)
@given(announcements, st.permutations(PEERS))
def test_rib_is_empty_after_every_peer_went_down(
    routes: list[tuple[IPv4Address, Route]], order: list[IPv4Address]
) -> None:
    rib = new_rib()
    for peer, route in routes:
        rib.announce(peer, route)
    for peer in order:
        rib.peer_down(peer)
    assert snapshot(rib) == ([], {}, [], [])
    assert rib.counts().routes == 0
    assert rib.peers() == []


operations = st.lists(
    st.one_of(
        st.tuples(st.just("announce"), st.sampled_from(PEERS), remote_routes),
        st.tuples(st.just("withdraw"), st.sampled_from(PEERS), remote_routes),
        st.tuples(st.just("down"), st.sampled_from(PEERS)),
        st.tuples(st.just("stale"), st.sampled_from(PEERS)),
        st.tuples(st.just("sweep"), st.sampled_from(PEERS)),
        st.tuples(
            st.just("local"),
            st.sampled_from([100, 200]),
            st.sampled_from(MACS),
            st.sampled_from([None, IP1, IP2]),
            st.sampled_from([None, False, True]),
        ),
        st.tuples(
            st.just("unlocal"),
            st.sampled_from([100, 200]),
            st.sampled_from(MACS),
            st.sampled_from([None, IP1]),
        ),
    ),
    max_size=25,
)


def run(rib: Rib, op: tuple[Any, ...]) -> RibChanges | None:
    """One generated operation (shared with test_desired)."""
    match op:
        case ("announce", peer, route):
            return rib.announce(peer, route)
        case ("withdraw", peer, route):
            return rib.withdraw(peer, route.key)
        case ("down", peer):
            return rib.peer_down(peer)
        case ("stale", peer):
            rib.mark_stale(peer)
            return None
        case ("sweep", peer):
            return rib.sweep_stale(peer)
        case ("local", vni, mac, ip, sticky):
            return rib.local_mac_added(vni, mac, ip, sticky=sticky)[0]
        case ("unlocal", vni, mac, ip):
            return rib.local_mac_removed(vni, mac, ip)
    raise AssertionError(op)


@settings(max_examples=400)
@given(operations)
def test_change_sets_replay_to_the_rib_state(ops: list[tuple[Any, ...]]) -> None:
    """Applying every RibChanges in order reproduces the RIB's own view, adverts included."""
    rib = new_rib()
    macs: dict[tuple[int, str], RemoteMacPath] = {}
    vteps: set[tuple[int, IPAddress]] = set()
    neighs: dict[tuple[int, IPAddress], RemoteNeigh] = {}
    adverts: dict[tuple[int, str, IPAddress | None], LocalAdvert] = {}
    for op in ops:
        changes = run(rib, op)
        if changes is None:
            continue
        for ref in changes.macs_removed:
            del macs[ref]
        macs.update(((p.vni, p.mac), p) for p in changes.macs_installed)
        vteps.difference_update(changes.vteps_removed)
        vteps.update(changes.vteps_added)
        for ipref in changes.neighs_removed:
            del neighs[ipref]
        neighs.update(((n.vni, n.ip), n) for n in changes.neighs_installed)
        for advert in changes.local_withdraw:
            del adverts[(advert.vni, advert.mac, advert.ip)]
        adverts.update(((a.vni, a.mac, a.ip), a) for a in changes.local_advertise)
        # Invariant: a MAC is never both advertised by us and installed as remote.
        assert not {(v, m) for v, m, _ in adverts} & set(macs)
    assert sorted(macs.values(), key=lambda p: (p.vni, p.mac)) == rib.remote_macs()
    assert {(v, t) for v, ts in rib.vteps().items() for t in ts} == vteps
    assert sorted(neighs.values(), key=lambda n: (n.vni, int(n.ip))) == rib.remote_neighs()
    advert_order = sorted(
        adverts.values(), key=lambda a: (a.vni, a.mac, a.ip is not None, int(a.ip or 0))
    )
    assert advert_order == rib.advertisements()


# ------------------------------------------------------------- counters (metrics)


def test_received_routes_are_counted_by_type_and_action() -> None:
    rib = new_rib()
    prefix = PrefixRoute(
        key=PrefixKey("10.0.0.2:100", 0, ip_network("10.1.0.0/24")),
        nexthop=V2,
        vni=100,
        gateway=None,
        route_targets=(RT100,),
    )
    rib.apply_update(P1, [mac_route(M1, V2), mac_route(M2, V2), imet(V2), prefix], [])
    rib.announce(P1, mac_route(M1, V3, seq=1))
    rib.withdraw(P1, mac_route(M2, V2).key)
    rib.apply_update(P1, [], [imet(V2).key, prefix.key])
    rib.announce(P1, mac_route(M2, LOCAL))  # our own route reflected back still arrived
    assert rib.stats.announced == {2: 4, 3: 1, 5: 1}
    assert rib.stats.withdrawn == {2: 1, 3: 1, 5: 1}
    # Session loss and stale sweeps remove routes nobody sent a withdrawal for.
    rib.mark_stale(P1)
    rib.sweep_stale(P1)
    rib.announce(P2, mac_route(M2, V3))
    rib.peer_down(P2)
    assert rib.stats.withdrawn[2] == 1


def test_mac_moves_are_counted_by_direction() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2))  # first seen: not a move
    rib.announce(P1, mac_route(M1, V3, seq=1))  # another VTEP claims it with seq 1
    assert dict(rib.stats.mac_moves) == {"remote-to-remote": 1}
    rib.local_mac_added(100, M1)  # learned here: claimed with seq 2
    assert rib.stats.mac_moves["remote-to-local"] == 1
    rib.announce(P1, mac_route(M1, V9, seq=3))  # and away again
    assert rib.stats.mac_moves["local-to-remote"] == 1
    assert sum(rib.stats.mac_moves.values()) == 3


def test_changes_that_are_not_moves_are_not_counted() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V3))
    rib.announce(P2, mac_route(M1, V2))  # same sequence, lower VTEP: a tie, not a move
    assert vtep_of(rib, M1) == V2
    rib.withdraw(P2, mac_route(M1, V2).key)  # back to the older copy
    assert vtep_of(rib, M1) == V3
    rib.withdraw(P1, mac_route(M1, V3).key)  # gone ...
    rib.announce(P1, mac_route(M1, V9, seq=1))  # ... then back somewhere else
    rib.announce(P1, mac_route(M2, V2, sticky=True))
    rib.local_mac_added(100, M2)  # a sticky remote keeps it: a conflict, not a move
    assert not rib.stats.mac_moves


# ---------------------------------------------------------------- duplicate MACs

DAD = DadPolicy(max_moves=5, window=180.0)


def dad_rib(policy: DadPolicy | None = DAD) -> Rib:
    return Rib(LOCAL, [VniPolicy(100, frozenset({RT100}))], dad=policy)


def flap(rib: Rib, times: int, start: float = 0.0, step: float = 1.0) -> list[RibChanges]:
    """A MAC live behind this host and behind V2 at once: our bridge learns it (a move
    here, one above V2's number), then V2's bridge does (one above ours), `times` times."""
    out: list[RibChanges] = []
    for i in range(times):
        now = start + 2 * i * step
        changes, _ = rib.local_mac_added(100, M1, now=now)
        out.append(changes)
        ours = max((m.seq for m in rib.local_macs(100)), default=0)
        out.append(rib.announce(P1, mac_route(M1, V2, seq=ours + 1), now=now + step))
    return out


def test_without_detection_a_mac_behind_two_hosts_raises_its_number_without_end() -> None:
    rib = dad_rib(None)
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    changes = flap(rib, 1000)
    assert rib.local_macs(100)[0].seq == 1999
    assert sum(len(c.macs_installed) for c in changes) == 1000  # one FDB rewrite per flap
    assert rib.duplicates() == []


def test_five_moves_within_the_window_make_a_duplicate_once() -> None:
    rib = dad_rib()
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    changes = flap(rib, 3)  # moves: r->l, l->r, r->l, l->r, r->l, l->r
    found = [d for c in changes for d in c.duplicates]
    assert len(found) == 1
    dup = found[0]
    assert (dup.vni, dup.mac, dup.moves, dup.vtep, dup.frozen_until) == (100, M1, 5, V2, None)
    assert dup.detected_at == 4.0  # the fifth move: our third learn, at t=4
    assert [c.duplicates for c in changes].index([dup]) == 4
    assert rib.duplicates() == [dup] and rib.counts().duplicates == 1
    assert rib.stats.duplicates_detected == 1
    # Without freeze it is only reported (as FRR does): the MAC keeps moving.
    assert changes[-1].macs_installed and rib.counts().frozen == 0


def test_moves_spread_wider_than_the_window_are_no_duplicate() -> None:
    rib = dad_rib()
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    changes = flap(rib, 20, step=50.0)  # a move every 50 s: at most 4 within 180 s
    assert not any(c.duplicates for c in changes)
    assert rib.stats.mac_moves["remote-to-local"] == 20


def test_remote_to_remote_moves_are_left_to_the_vteps_involved() -> None:
    rib = dad_rib()
    for seq in range(20):
        rib.announce(P1, mac_route(M1, V2 if seq % 2 else V3, seq=seq), now=seq)
    assert rib.stats.mac_moves["remote-to-remote"] == 19
    assert rib.duplicates() == []


def test_a_local_to_remote_move_counts_only_inside_a_window_a_local_learn_started() -> None:
    rib = dad_rib(DadPolicy(max_moves=2, window=10.0))
    rib.local_mac_added(100, M1, now=0)  # new here: no move
    assert not rib.announce(P1, mac_route(M1, V2, seq=1), now=1).duplicates  # l->r: no window
    rib.local_mac_added(100, M1, now=2)  # r->l: the window starts, 1
    changes = rib.announce(P1, mac_route(M1, V2, seq=3), now=3)  # l->r inside it: 2
    assert [d.moves for d in changes.duplicates] == [2]


def test_freeze_stops_the_number_the_advertisements_and_the_fdb_rewrites() -> None:
    rib = dad_rib(DadPolicy(max_moves=5, window=180.0, freeze=600.0))
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    changes = flap(rib, 10_000, step=0.01)  # 20000 flaps within 200 s
    [dup] = rib.duplicates()
    assert dup.frozen_until == dup.detected_at + 600
    # Frozen at our third learn (the fifth move): V2's path stays, ours is never sent.
    assert rib.local_macs(100)[0].seq == 5
    assert not rib.local_macs(100)[0].advertised
    assert rib.remote_mac(100, M1) == path(M1, V2, seq=4)
    after = changes[5:]
    assert not any(c.macs_installed or c.macs_removed or c.local_advertise for c in after)
    assert sum(len(c.macs_installed) for c in changes) == 2
    assert rib.counts().frozen == 1 and rib.next_freeze_end() == dup.frozen_until


def test_a_frozen_mac_is_released_when_the_freeze_ends() -> None:
    rib = dad_rib(DadPolicy(max_moves=5, window=180.0, freeze=60.0))
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    flap(rib, 3)
    [dup] = rib.duplicates()
    assert not rib.expire_duplicates(dup.frozen_until - 1)  # not yet
    # The flapping stopped; V2 withdrew its route meanwhile (the host is only here).
    assert rib.withdraw(P1, mac_route(M1, V2).key, now=30).macs_removed == [(100, M1)]
    changes = rib.expire_duplicates(dup.frozen_until)
    assert changes.duplicates_cleared == [(dup, "freeze-ended")]
    assert changes.local_advertise == [LocalAdvert(100, M1, None, 5, False)]
    assert rib.duplicates() == [] and rib.next_freeze_end() is None


def test_flapping_past_the_freeze_is_detected_and_frozen_again() -> None:
    rib = dad_rib(DadPolicy(max_moves=5, window=180.0, freeze=60.0))
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    changes = flap(rib, 200)  # 400 s of flapping, no timer run: the RIB sees the end itself
    detected = [d for c in changes for d in c.duplicates]
    released = [r for c in changes for _, r in c.duplicates_cleared]
    assert len(detected) >= 5 and released == ["freeze-ended"] * (len(detected) - 1)
    assert all(d.frozen_until == d.detected_at + 60 for d in detected)
    # Five moves per 60 s freeze at most: the number rises a few per minute, not by two
    # per flap (399 without detection).
    assert rib.local_macs(100)[0].seq < 10 * len(detected) < 100


def test_a_frozen_mac_loses_its_remote_entry_when_that_vtep_withdraws_it() -> None:
    rib = dad_rib(DadPolicy(max_moves=5, window=180.0, freeze=60.0))
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    flap(rib, 3)
    # Another VTEP claiming it while frozen is not installed ...
    assert not rib.announce(P2, mac_route(M1, V3, seq=99), now=10)
    # ... and V2's withdrawal (no move) removes the entry.
    assert rib.withdraw(P1, mac_route(M1, V2).key, now=11).macs_removed == [(100, M1)]
    assert rib.remote_mac(100, M1) is None and not rib.local_macs(100)[0].advertised


def test_permanent_freeze_lasts_until_cleared() -> None:
    rib = dad_rib(DadPolicy(max_moves=5, window=180.0, freeze=PERMANENT))
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    flap(rib, 3)
    assert rib.next_freeze_end() is None
    assert not rib.expire_duplicates(1e12)
    rib.withdraw(P1, mac_route(M1, V2).key, now=20)
    changes, found = rib.clear_duplicate(100, M1.upper(), now=21)
    assert found and [reason for _, reason in changes.duplicates_cleared] == ["cleared"]
    assert changes.local_advertise == [LocalAdvert(100, M1, None, 5, False)]
    assert rib.clear_duplicate(100, M1, now=22) == (RibChanges(), False)


def test_a_reported_duplicate_goes_when_the_mac_is_gone_everywhere() -> None:
    rib = dad_rib()
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    flap(rib, 3)
    assert rib.duplicates()
    rib.local_mac_removed(100, M1, now=10)
    changes = rib.withdraw(P1, mac_route(M1, V2).key, now=11)
    assert [reason for _, reason in changes.duplicates_cleared] == ["gone"]
    assert rib.duplicates() == []


def test_turning_detection_off_releases_every_duplicate() -> None:
    rib = dad_rib(DadPolicy(max_moves=5, window=180.0, freeze=PERMANENT))
    rib.announce(P1, mac_route(M1, V2, seq=0), now=0)
    flap(rib, 3)
    changes = rib.set_dad_policy(None, now=10)
    assert [reason for _, reason in changes.duplicates_cleared] == ["policy"]
    assert rib.duplicates() == [] and rib.dad_policy is None


def test_detection_reads_no_clock_a_call_without_now_is_at_the_last_time_given() -> None:
    rib = dad_rib()
    rib.announce(P1, mac_route(M1, V2, seq=0), now=1000.0)
    for _ in range(3):  # no `now`: all at t=1000, well within one window
        rib.local_mac_added(100, M1)
        ours = rib.local_macs(100)[0].seq
        rib.announce(P1, mac_route(M1, V2, seq=ours + 1))
    [dup] = rib.duplicates()
    assert dup.detected_at == 1000.0


# ---------------------------------------------------------------- route limits


def test_routes_past_a_peers_limit_are_refused_and_each_level_reported() -> None:
    rib = new_rib()
    limit = RouteLimit(10, warning_percent=70)
    assert limit.warning_at == 7
    rib.set_route_limits({P1: limit})
    macs = [f"02:00:00:00:01:{i:02x}" for i in range(12)]
    changes = rib.apply_updates([(P1, [mac_route(m, V2) for m in macs[:6]], [])], now=1)
    assert changes.limit_events == []
    changes = rib.announce(P1, mac_route(macs[6], V2), now=2)
    assert changes.limit_events == [RouteLimitEvent(P1, "warning", 7, limit)]
    changes = rib.apply_updates([(P1, [mac_route(m, V2) for m in macs[7:12]], [])], now=3)
    # Ten held, the last two refused: never installed.
    assert changes.limit_events == [RouteLimitEvent(P1, "exceeded", 10, limit)]
    assert [p.mac for p in changes.macs_installed] == macs[7:10]
    assert rib.counts().routes_by_peer == {str(P1): 10}
    assert rib.stats.routes_refused == {P1: 2}
    assert rib.route_limit(P1) == (limit, "exceeded")
    # A route held is still replaced (a new sequence number is no new route) ...
    changes = rib.announce(P1, mac_route(macs[0], V2, seq=3), now=4)
    assert changes.macs_installed == [path(macs[0], V2, seq=3)]
    # ... and another peer is not limited.
    assert rib.announce(P2, mac_route(macs[11], V3), now=5).macs_installed
    # Below the limit again: warning; the next one is accepted.
    changes = rib.withdraw(P1, mac_route(macs[9], V2).key, now=6)
    assert changes.limit_events == [RouteLimitEvent(P1, "warning", 9, limit)]
    assert rib.announce(P1, mac_route(macs[10], V2), now=7).macs_installed
    assert rib.peer_down(P1).limit_events == [RouteLimitEvent(P1, "ok", 0, limit)]
    assert rib.stats.limit_events == {P1: {"warning": 2, "exceeded": 1}}


def test_a_peer_without_a_limit_and_our_own_reflected_routes_are_never_refused() -> None:
    rib = new_rib()
    rib.set_route_limits({P1: RouteLimit(1)})
    rib.announce(P1, mac_route(M1, V2))
    # Reflections of our own routes are not held, so they neither count nor get refused.
    assert not rib.announce(P1, mac_route(M2, LOCAL)).limit_events
    assert rib.stats.routes_refused == {} and rib.counts().own_routes_ignored == 1
    assert rib.apply_updates([(P2, [mac_route(m, V3) for m in (M1, M2)], [])]).macs_installed
    assert rib.route_limit(P2) == (None, "ok")
    rib.set_route_limits({})
    assert rib.announce(P1, mac_route(M2, V2)).macs_installed


# ---------------------------------------------------------------- stale marks


def test_marking_stale_again_supersedes_the_first_mark() -> None:
    rib = new_rib()
    rib.apply_update(P1, [mac_route(M1, V2), mac_route(M2, V2)], [])
    rib.mark_stale(P1)
    rib.announce(P1, mac_route(M1, V2))  # re-sent after the first restart
    assert rib.stale_count(P1) == 1
    assert rib.mark_stale(P1) == 2  # a second restart: everything is stale again
    changes = rib.sweep_stale(P1)
    assert sorted(changes.macs_removed) == [(100, M1), (100, M2)]
    assert rib.stats.stale_swept == 2


def test_a_sweep_in_parts_removes_at_most_its_limit_and_keeps_its_mark() -> None:
    # The daemon sweeps a large refresh's leftovers in parts, the event loop's turn
    # between them; a newer mark (refresh, restart) ends the older sweep.
    rib = new_rib()
    macs = [f"02:00:00:00:10:{i:02x}" for i in range(10)]
    rib.apply_update(P1, [mac_route(m, V2) for m in macs], [])
    assert rib.stale_mark(P1) is None
    rib.mark_stale(P1)
    first = rib.stale_mark(P1)
    rib.announce(P1, mac_route(macs[0], V2))  # re-sent: not stale any more
    part = rib.sweep_stale(P1, limit=4)
    assert len(part.macs_removed) == 4 and (100, macs[0]) not in part.macs_removed
    assert rib.stale_count(P1) == 5 and rib.stale_mark(P1) == first
    rib.mark_stale(P1)  # a newer refresh: its own end sweeps
    assert rib.stale_mark(P1) != first and rib.stale_count(P1) == 6
    rest = rib.sweep_stale(P1, limit=100)
    assert len(rest.macs_removed) == 6
    assert rib.stale_mark(P1) is None and rib.stale_count(P1) == 0
    assert not rib.routes() and rib.stats.stale_swept == 10


# ------------------------------------------------- one VTEP, two addresses; multihoming


def rewritten(mac: str, origin: IPAddress, nexthop: IPAddress) -> MacIpRoute:
    """A Type-2 of `origin` (its RD) whose next hop a transit router set to itself."""
    route = mac_route(mac, origin)
    return MacIpRoute(route.key, nexthop, route.vni, route_targets=route.route_targets,
                      encapsulation=route.encapsulation)  # fmt: skip


def test_type2_next_hops_that_differ_from_the_type3_tunnel_are_reported() -> None:
    rib = new_rib()
    tor = V9
    # V2's Type-3 keeps its PMSI tunnel (V2) while its next hop and its Type-2's were
    # rewritten by an eBGP hop: unicast would go to the ToR, flooding to V2.
    changes = rib.apply_update(P1, [imet(V2, tunnel=V2, nexthop=tor), rewritten(M1, V2, tor)], [])
    (mismatch,) = changes.nexthop_mismatches
    assert mismatch == NexthopMismatch(P1, f"{V2}:100", V2, (tor,))
    assert rib.nexthop_mismatches() == [mismatch] and rib.counts().nexthop_mismatches == 1
    # A second Type-2 with the same wrong next hop changes nothing to report.
    assert rib.announce(P1, rewritten(M2, V2, tor)).nexthop_mismatches == []
    # One next hop fixed: still a mismatch, now with both next hops.
    (partly,) = rib.announce(P1, mac_route(M1, V2)).nexthop_mismatches
    assert partly == NexthopMismatch(P1, f"{V2}:100", V2, (V2, tor))
    # Both fixed: the mismatch is cleared, once.
    changes = rib.announce(P1, mac_route(M2, V2))
    assert changes.nexthop_mismatches_cleared == [partly]
    assert rib.nexthop_mismatches() == [] and rib.counts().nexthop_mismatches == 0


def test_agreeing_vteps_and_other_peers_are_no_mismatch() -> None:
    rib = new_rib()
    changes = rib.apply_update(P1, [imet(V2, tunnel=V2), mac_route(M1, V2), mac_route(M2, V2)], [])
    assert not changes.nexthop_mismatches
    # Another peer's copy (a second RR) is judged on its own, also agreeing.
    rib.apply_update(P2, [imet(V2, tunnel=V2), mac_route(M1, V2)], [])
    # Type-2s without a Type-3 (or the reverse) are nothing to compare.
    rib.apply_update(P1, [mac_route(M1, V3), imet(V9)], [])
    assert rib.nexthop_mismatches() == []


def test_a_mismatch_goes_with_the_session_that_brought_it() -> None:
    rib = new_rib()
    rib.apply_update(P1, [imet(V2, tunnel=V2, nexthop=V9), rewritten(M1, V2, V9)], [])
    assert len(rib.nexthop_mismatches()) == 1
    changes = rib.peer_down(P1)
    assert [m.peer for m in changes.nexthop_mismatches_cleared] == [P1]
    assert rib.nexthop_mismatches() == []


def test_multihoming_routes_are_held_and_counted_never_imported() -> None:
    rib = new_rib()
    esi = "00:11:22:33:44:55:66:77:88:99"
    ead = EadRoute(EadKey(f"{V2}:100", esi, 0xFFFFFFFF), V2, 0, route_targets=(RT100,))
    es = EsRoute(EsKey(f"{V2}:1", esi, V2), V2, route_targets=("1:1",))
    assert not rib.apply_update(P1, [ead, es], [])  # nothing to act on
    counts = rib.counts()
    assert (counts.routes, counts.routes_by_type, counts.not_imported) == (2, {1: 1, 4: 1}, 0)
    assert rib.imported_vnis(P1, ead.key) == () and rib.refusal(P1, ead.key) is None
    assert rib.stats.announced == {1: 1, 4: 1}
    rib.apply_update(P1, [], [ead.key, es.key])
    assert rib.counts().routes == 0 and rib.stats.withdrawn == {1: 1, 4: 1}


def test_routes_with_a_non_zero_esi_are_counted_and_single_homed() -> None:
    """A multihomed host's MAC: installed towards the VTEP that sent it (no aliasing yet)."""
    rib = new_rib()
    route = mac_route(M1, V2)
    multihomed = MacIpRoute(route.key, V2, 100, esi="00:11:22:33:44:55:66:77:88:99",
                            route_targets=(RT100,), encapsulation=ENCAP_VXLAN)  # fmt: skip
    rib.apply_update(P1, [multihomed, mac_route(M2, V3)], [])
    assert rib.counts().esi_routes == 1
    assert rib.remote_mac(100, M1).vtep == V2  # type: ignore[union-attr]
    assert rib.remote_mac(100, M1).esi == multihomed.esi  # type: ignore[union-attr]


# -- a MAC that moves in: its addresses are probed ---------------------------


def test_a_mac_that_moves_in_has_the_addresses_its_routes_bound_probed() -> None:
    """As FRR's zebra does: the MAC+IP routes of the VTEP it left name its addresses;
    they are probed here, so the learner sees the answers and the MAC+IP routes move
    with the MAC (not only once the endpoint speaks again)."""
    rib = new_rib()
    ip6 = ip_address("2001:db8::5")
    for ip in (None, IP1, ip6):
        rib.announce(P1, mac_route(M1, V2, ip=ip, seq=3))
    rib.announce(P1, mac_route(M2, V2, ip=IP2))  # another MAC: not probed
    changes, advert = rib.local_mac_added(100, M1, now=10.0)
    assert advert is not None and advert.seq == 4
    assert changes.neigh_probes == [NeighProbe(100, IP1, M1), NeighProbe(100, ip6, M1)]
    assert {ip for _, ip in changes.neighs_removed} == {IP1, ip6}
    # Already local: nothing to probe again, nor for a second address learnt.
    again, _ = rib.local_mac_added(100, M1, IP1, now=11.0)
    assert again.neigh_probes == []


def test_no_probe_when_the_mac_stays_remote_or_was_never_remote() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1, sticky=True))  # sticky: it cannot move
    changes, advert = rib.local_mac_added(100, M1)
    assert advert is None and changes.neigh_probes == []
    fresh, _ = rib.local_mac_added(100, M2)  # never known remotely
    assert fresh.neigh_probes == []
    # An address the host already knows locally is not probed.
    rib2 = new_rib()
    rib2.local_mac_added(100, M2, IP2)
    rib2.local_mac_removed(100, M2)
    rib2.announce(P1, mac_route(M2, V2, ip=IP2, seq=5))
    rib2.announce(P1, mac_route(M2, V2, ip=IP1, seq=5))
    moved, _ = rib2.local_mac_added(100, M2, IP2)
    assert moved.neigh_probes == [NeighProbe(100, IP1, M2)]
