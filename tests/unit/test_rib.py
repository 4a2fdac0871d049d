"""RIB rules with plain data: import, best path, mobility, sticky, peers, stale, flood lists."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.model import (
    ENCAP_VXLAN,
    MOBILITY_SEQ_MAX,
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
    LocalAdvert,
    MacConflict,
    RemoteMacPath,
    RemoteNeigh,
    Rib,
    RibChanges,
    VniPolicy,
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


def test_import_is_by_route_target_not_by_label() -> None:
    rib = new_rib()
    # Label VNI 100 but RT of VNI 200: lands in 200, label kept for the dataplane.
    rib.announce(P1, mac_route(M1, V2, vni=100, rts=(RT200,)))
    assert rib.remote_macs() == [path(M1, V2, vni=200, label_vni=100)]


def test_route_with_several_matching_targets_lands_in_each_vni() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, rts=(RT100, RT200)))
    assert [(p.vni, p.mac) for p in rib.remote_macs()] == [(100, M1), (200, M1)]
    rib.withdraw(P1, mac_route(M1, V2).key)
    assert rib.remote_macs() == []


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
