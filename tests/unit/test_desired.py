"""RIB -> desired kernel state: the full computation, and deltas held to it."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac
from evpnd.desired import StateDelta, VniDevices, delta, desired_state
from evpnd.rib import Rib, VniPolicy
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import RouteUpdate
from tests.conftest import SHARED, require
from tests.unit.test_rib import (
    IP1,
    IP2,
    M1,
    M2,
    P1,
    P2,
    RT200,
    V2,
    V3,
    V9,
    imet,
    mac_route,
    new_rib,
    operations,
    run,
)

DEVICES = {
    100: VniDevices("vxlan100", "br100"),
    200: VniDevices("vxlan200", "br200", arp_suppression=False),
}


def test_remote_macs_floods_and_neighbours() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    rib.announce(P1, mac_route(M1, V2))
    rib.announce(P1, mac_route(M2, V3, sticky=True))
    rib.announce(P1, imet(V2))
    rib.announce(P1, imet(V3))
    state = desired_state(rib, DEVICES)
    assert sorted(state.macs.values()) == [
        RemoteMac("vxlan100", M1, V2, sticky=False),
        RemoteMac("vxlan100", M2, V3, sticky=True),
    ]
    assert state.floods == {FloodEntry("vxlan100", V2), FloodEntry("vxlan100", V3)}
    assert list(state.neighs.values()) == [NeighEntry("br100", IP1, M1)]


def test_default_gateway_mac_is_installed_sticky() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1, gateway=True))
    (mac,) = desired_state(rib, DEVICES).macs.values()
    assert mac == RemoteMac("vxlan100", M1, V2, sticky=True)


def test_no_neighbours_without_arp_suppression() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, vni=200, ip=IP1, rts=(RT200,)))
    state = desired_state(rib, DEVICES)
    assert list(state.macs.values()) == [RemoteMac("vxlan200", M1, V2)]
    assert state.neighs == {}


def test_vni_without_devices_is_left_out() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    rib.announce(P1, imet(V2))
    assert desired_state(rib, {}).count() == 0


def test_local_macs_are_not_programmed() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, seq=1))
    rib.local_mac_added(100, M1)  # the MAC moved here
    assert desired_state(rib, DEVICES).macs == {}


def test_flood_modes() -> None:
    rib = new_rib()
    rib.announce(P1, imet(V2))
    rib.announce(P1, imet(V3, vni=200, rts=(RT200,)))
    devices = {
        100: VniDevices("vxlan100", "br100", flood="static", flood_peers=(V9,)),
        200: VniDevices("vxlan200", "br200", flood="multicast"),
    }
    assert desired_state(rib, devices).floods == {FloodEntry("vxlan100", V9)}
    changes = rib.announce(P2, imet(V9, vni=200, rts=(RT200,)))
    assert changes.vteps_added
    assert not delta(changes, devices)


def test_delta_of_a_move() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    changes = rib.announce(P1, mac_route(M1, V3, seq=1))
    assert delta(changes, DEVICES) == StateDelta(
        add_macs=[RemoteMac("vxlan100", M1, V3)], del_neighs=[("br100", IP1)]
    )
    rib.local_mac_added(100, M1)  # moves back here: nothing remote left to program
    changes = rib.withdraw(P1, mac_route(M1, V2, ip=IP1).key)
    assert not delta(changes, DEVICES)


def test_frr_samples_end_to_end() -> None:
    """Captured FRR routes through decoder, RIB and desired state."""
    samples = SHARED / "exabgp-samples"
    require(samples.is_dir(), f"{samples} is missing")
    rib = Rib(IPv4Address("10.99.0.1"), [VniPolicy.from_targets(100, ["auto"], 65000)])
    decoder = Decoder()
    for name in ("type2_mac_only", "type2_mac_ipv4_single_label", "type3_imet_pmsi"):
        for message in decoder.decode((samples / f"json_{name}.json").read_text()):
            assert isinstance(message, RouteUpdate)
            rib.apply_update(message.peer, message.announced, message.withdrawn)
    frr = IPv4Address("10.99.0.2")
    state = desired_state(rib, {100: VniDevices("vxlan100", "br100")})
    assert list(state.macs.values()) == [RemoteMac("vxlan100", "02:00:00:00:01:11", frr)]
    assert state.floods == {FloodEntry("vxlan100", frr)}
    assert list(state.neighs.values()) == [
        NeighEntry("br100", IPv4Address("192.168.100.11"), "02:00:00:00:01:11")
    ]
    (withdraw,) = decoder.decode((samples / "json_withdraw_type2_mac_ipv4.json").read_text())
    assert isinstance(withdraw, RouteUpdate)
    changes = rib.apply_update(withdraw.peer, withdraw.announced, withdraw.withdrawn)
    assert delta(changes, {100: VniDevices("vxlan100", "br100")}) == StateDelta(
        del_neighs=[("br100", IPv4Address("192.168.100.11"))]
    )


mixed_devices = st.fixed_dictionaries(
    {
        100: st.builds(
            VniDevices,
            st.just("vxlan100"),
            st.just("br100"),
            arp_suppression=st.booleans(),
            flood=st.sampled_from(["evpn", "static", "multicast"]),
            flood_peers=st.just((V9,)),
        ),
    },
    optional={200: st.builds(VniDevices, st.just("vxlan200"), st.just("br200"))},
)


@settings(max_examples=400)
@given(operations, mixed_devices)
def test_deltas_replay_to_the_full_computation(
    ops: list[tuple[Any, ...]], devices: dict[int, VniDevices]
) -> None:
    rib = new_rib()
    state = desired_state(rib, devices)
    for op in ops:
        changes = run(rib, op)
        if changes is not None:
            delta(changes, devices).apply(state)
    assert state == desired_state(rib, devices)


def test_state_delta_apply() -> None:
    state = ForwardingState()
    StateDelta(
        add_macs=[RemoteMac("vxlan100", M1, V2)],
        add_floods=[FloodEntry("vxlan100", V2)],
        add_neighs=[NeighEntry("br100", IP2, M2)],
    ).apply(state)
    assert state.count() == 3
    StateDelta(
        del_macs=[("vxlan100", M1)],
        del_floods=[FloodEntry("vxlan100", V2)],
        del_neighs=[("br100", IP2)],
    ).apply(state)
    assert state.count() == 0
