"""RIB -> desired kernel state: the full computation, and deltas held to it."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac
from evpnd.dataplane.tracker import ForwardingTracker
from evpnd.desired import VniDevices, apply_rib_changes, desired_state
from evpnd.rib import Rib, VniPolicy
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import RouteUpdate
from tests.conftest import SAMPLES, require
from tests.unit.test_rib import (
    IP1,
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
    assert not wanted_after(changes, devices).pending()


def wanted_after(
    changes: Any, devices: dict[int, VniDevices], start: ForwardingState | None = None
) -> ForwardingTracker:
    """A tracker whose kernel holds `start`, after `changes` are applied to what it wants."""
    tracker = ForwardingTracker()
    if start is not None:
        tracker.replace_desired(start)
        tracker.replace_installed(start)
    apply_rib_changes(tracker, changes, devices)
    return tracker


def test_writes_of_a_move() -> None:
    rib = new_rib()
    rib.announce(P1, mac_route(M1, V2, ip=IP1))
    before = desired_state(rib, DEVICES)
    changes = rib.announce(P1, mac_route(M1, V3, seq=1))
    pending = wanted_after(changes, DEVICES, before).pending()
    assert pending.macs_put == [RemoteMac("vxlan100", M1, V3)]
    assert pending.neighs_del == [NeighEntry("br100", IP1, M1)]
    assert pending.count() == 2
    before = desired_state(rib, DEVICES)
    rib.local_mac_added(100, M1)  # moves back here: nothing remote left to program
    changes = rib.withdraw(P1, mac_route(M1, V2, ip=IP1).key)
    assert not wanted_after(changes, DEVICES, before).pending()


def test_frr_samples_end_to_end() -> None:
    """Captured FRR routes through decoder, RIB and desired state."""
    samples = SAMPLES
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
    devices = {100: VniDevices("vxlan100", "br100")}
    changes = rib.apply_update(withdraw.peer, withdraw.announced, withdraw.withdrawn)
    pending = wanted_after(changes, devices, state).pending()
    assert pending.neighs_del == [state.neighs[("br100", IPv4Address("192.168.100.11"))]]
    assert pending.count() == 1


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


def batches(ops: list[tuple[Any, ...]]) -> list[list[tuple[Any, ...]]]:
    """Consecutive announcements and withdrawals go as one batch, as the daemon drains them."""
    out: list[list[tuple[Any, ...]]] = []
    for op in ops:
        if op[0] in ("announce", "withdraw") and out and out[-1][0][0] in ("announce", "withdraw"):
            out[-1].append(op)
        else:
            out.append([op])
    return out


def run_batch(rib: Rib, batch: list[tuple[Any, ...]]) -> Any:
    if batch[0][0] not in ("announce", "withdraw"):
        return run(rib, batch[0])
    return rib.apply_updates(
        (peer, [route], []) if kind == "announce" else (peer, [], [route.key])
        for kind, peer, route in batch
    )


@settings(max_examples=400)
@given(operations, mixed_devices)
def test_rib_changes_replay_to_the_full_computation(
    ops: list[tuple[Any, ...]], devices: dict[int, VniDevices]
) -> None:
    """The production path (batches of UPDATEs -> RibChanges -> the tracker's wanted
    entries) always equals a full recomputation from the RIB."""
    rib = new_rib()
    tracker = ForwardingTracker()
    tracker.replace_desired(desired_state(rib, devices))
    for batch in batches(ops):
        changes = run_batch(rib, batch)
        if changes is not None:
            apply_rib_changes(tracker, changes, devices)
        assert tracker.desired == desired_state(rib, devices)
