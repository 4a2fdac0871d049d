"""The delta tracker against a fake kernel: assert what the kernel ends up holding.

The fake kernel (faucet's `fakeoftable` idea) applies writes with the
semantics the tracker must cope with on Linux 6.18: a replace of an existing
remote MAC keeps its sticky flag, deletes run before puts, a write to a
device that does not exist fails. The tests assert the kernel's tables, not
the list of messages that got them there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac
from evpnd.dataplane.tracker import Changes, ForwardingTracker, writes_between
from evpnd.desired import VniDevices, apply_rib_changes, desired_state
from tests.unit.test_desired import batches, run_batch
from tests.unit.test_rib import M1, M2, V2, V3, new_rib, operations

IP1 = IPv4Address("192.168.1.1")
DEVICES = {100: VniDevices("vxlan100", "br100"), 200: VniDevices("vxlan200", "br200")}


@dataclass
class FakeKernel:
    """Owned entries as the kernel holds them, and the devices that exist."""

    devices: set[str] = field(default_factory=lambda: {"vxlan100", "br100", "vxlan200", "br200"})
    state: ForwardingState = field(default_factory=ForwardingState)
    writes: int = 0

    def apply(self, changes: Changes) -> set[tuple[str, object]]:
        failed: set[tuple[str, object]] = set()
        s = self.state
        for mac in changes.macs_del:
            if s.macs.get(mac.key) == mac:
                del s.macs[mac.key]
            else:
                failed.add(("mac_del", mac))
        for flood in changes.floods_del:
            s.floods.discard(flood)
        for neigh in changes.neighs_del:
            s.neighs.pop(neigh.key, None)
        for mac in changes.macs_put:
            if mac.device not in self.devices:
                failed.add(("mac_put", mac))
                continue
            have = s.macs.get(mac.key)
            # The vxlan driver keeps the flags of an existing extern_learn entry.
            s.macs[mac.key] = mac if have is None else RemoteMac(
                mac.device, mac.mac, mac.vtep, sticky=have.sticky
            )
        for flood in changes.floods_add:
            if flood.device in self.devices:
                s.floods.add(flood)
            else:
                failed.add(("flood_add", flood))
        for neigh in changes.neighs_put:
            if neigh.device in self.devices:
                s.neighs[neigh.key] = neigh
            else:
                failed.add(("neigh_put", neigh))
        self.writes += changes.count()
        return failed


def sync(tracker: ForwardingTracker, kernel: FakeKernel, *, deletions: bool = True) -> int:
    """One writer cycle, as the reconciler runs it; the number of writes."""
    changes = tracker.pending(deletions=deletions)
    if not changes:
        return 0
    tracker.record(changes, kernel.apply(changes))
    return changes.count()


def present(state: ForwardingState, devices: set[str]) -> ForwardingState:
    return ForwardingState(
        {k: v for k, v in state.macs.items() if k[0] in devices},
        {f for f in state.floods if f.device in devices},
        {k: v for k, v in state.neighs.items() if k[0] in devices},
    )


MAC = RemoteMac("vxlan100", M1, V2)
FLOOD = FloodEntry("vxlan100", V2)
NEIGH = NeighEntry("br100", IP1, M1)


def test_wanted_entries_are_written_once() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel()
    for entry in (MAC, FLOOD, NEIGH):
        tracker.want(entry)
    assert sync(tracker, kernel) == 3
    assert kernel.state == ForwardingState({MAC.key: MAC}, {FLOOD}, {NEIGH.key: NEIGH})
    assert sync(tracker, kernel) == 0
    tracker.want(MAC)  # the same again: nothing to write
    assert not tracker.pending()


def test_a_sticky_flip_is_a_delete_and_a_put() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel()
    tracker.want(MAC)
    sync(tracker, kernel)
    sticky = RemoteMac(MAC.device, MAC.mac, MAC.vtep, sticky=True)
    tracker.want(sticky)
    pending = tracker.pending()
    assert pending.macs_del == [MAC] and pending.macs_put == [sticky]
    sync(tracker, kernel)
    assert kernel.state.macs == {MAC.key: sticky}


def test_a_restart_with_the_same_table_writes_nothing() -> None:
    tracker = ForwardingTracker()
    kernel_state = ForwardingState({MAC.key: MAC}, {FLOOD}, {NEIGH.key: NEIGH})
    tracker.replace_installed(kernel_state)
    # Held: nothing wanted yet, nothing deleted while holding.
    assert not tracker.pending(deletions=False)
    assert tracker.held_deletions() == 3
    for entry in (MAC, FLOOD, NEIGH):
        tracker.want(entry)
    assert not tracker.pending() and tracker.held_deletions() == 0


def test_held_removals_go_at_release() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel()
    kernel.state = ForwardingState({MAC.key: MAC}, {FLOOD}, {})
    tracker.replace_installed(kernel.state)
    assert sync(tracker, kernel, deletions=False) == 0
    assert sync(tracker, kernel) == 2
    assert kernel.state.count() == 0


def test_an_entry_deleted_by_someone_else_is_put_back() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel()
    tracker.want(MAC)
    sync(tracker, kernel)
    del kernel.state.macs[MAC.key]
    tracker.removed(MAC)
    assert sync(tracker, kernel) == 1
    assert kernel.state.macs == {MAC.key: MAC}


def test_a_refused_entry_is_parked_until_retried() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel(devices={"br100"})
    tracker.want(MAC)
    tracker.want(NEIGH)
    assert sync(tracker, kernel) == 2  # the MAC fails: vxlan100 does not exist
    assert kernel.state.macs == {} and kernel.state.neighs == {NEIGH.key: NEIGH}
    assert not tracker.pending()  # parked: later batches do not retry it
    kernel.devices.add("vxlan100")
    tracker.retry_parked()  # the device came back
    assert sync(tracker, kernel) == 1
    assert kernel.state.macs == {MAC.key: MAC}


def test_a_new_value_unparks_the_key() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel(devices=set())
    tracker.want(MAC)
    sync(tracker, kernel)
    kernel.devices.add("vxlan100")
    moved = RemoteMac(MAC.device, MAC.mac, V3)
    tracker.want(moved)
    sync(tracker, kernel)
    assert kernel.state.macs == {MAC.key: moved}


def test_a_change_during_a_write_is_written_next() -> None:
    """The write in flight records the old value; the newer wish stays pending."""
    tracker, kernel = ForwardingTracker(), FakeKernel()
    tracker.want(MAC)
    changes = tracker.pending()
    moved = RemoteMac(MAC.device, MAC.mac, V3)
    tracker.want(moved)  # arrives while the first write runs in its thread
    tracker.record(changes, kernel.apply(changes))
    assert tracker.pending().macs_put == [moved]
    sync(tracker, kernel)
    assert kernel.state.macs == {MAC.key: moved}


def test_a_vanished_device_takes_its_entries_and_they_come_back() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel()
    for entry in (MAC, FLOOD, NEIGH, RemoteMac("vxlan200", M2, V3)):
        tracker.want(entry)
    sync(tracker, kernel)
    kernel.devices.discard("vxlan100")
    kernel.state = present(kernel.state, kernel.devices)
    tracker.forget_devices(["vxlan100"])
    assert tracker.installed == kernel.state
    kernel.devices.add("vxlan100")
    assert sync(tracker, kernel) == 2
    assert kernel.state == tracker.desired


def test_entries_written_since_to_a_new_device_of_the_same_name_stay_installed() -> None:
    tracker = ForwardingTracker()
    other = RemoteMac("vxlan100", M2, V3)
    for entry in (MAC, other, FLOOD):
        tracker.want(entry)
    tracker.record(tracker.pending(), set())
    # The old device's deletion, read after MAC was written to the new one.
    tracker.forget_devices(["vxlan100"], lambda table, key: table == "mac" and key == MAC.key)
    assert tracker.installed.macs == {MAC.key: MAC}
    assert tracker.installed.floods == set()
    assert tracker.pending().macs_put == [other]
    assert tracker.pending().floods_add == [FLOOD]


def test_an_admins_entry_is_not_written_over() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel()
    tracker.want(MAC)
    sync(tracker, kernel)
    assert tracker.taken_over(RemoteMac(MAC.device, MAC.mac, V3, sticky=True))
    assert tracker.pending(skip_macs={MAC.key}).count() == 0
    assert tracker.pending().macs_put == [MAC]  # once the admin's entry goes


kernel_faults = st.lists(
    st.sampled_from(["none", "delete-one", "device-gone", "device-back", "retry"]),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300)
@given(operations, kernel_faults)
def test_the_kernel_converges_to_the_full_computation(
    ops: list[tuple[Any, ...]], faults: list[str]
) -> None:
    """RIB batches, kernel deletions behind our back and a device coming and going:
    after a final retry and sync, the kernel holds exactly what the RIB asks for."""
    rib, tracker, kernel = new_rib(), ForwardingTracker(), FakeKernel()
    for step, batch in enumerate(batches(ops)):
        changes = run_batch(rib, batch)
        if changes is not None:
            apply_rib_changes(tracker, changes, DEVICES)
        sync(tracker, kernel)
        match faults[step % len(faults)]:
            case "delete-one" if kernel.state.macs:
                key = next(iter(kernel.state.macs))
                tracker.removed(kernel.state.macs.pop(key))
            case "device-gone":
                kernel.devices.discard("vxlan100")
                kernel.state = present(kernel.state, kernel.devices)
                tracker.forget_devices(["vxlan100"])
            case "device-back":
                kernel.devices.add("vxlan100")
                tracker.retry_parked()
            case "retry":
                tracker.retry_parked()
        assert present(tracker.installed, kernel.devices) == kernel.state
    kernel.devices.add("vxlan100")
    tracker.retry_parked()
    sync(tracker, kernel)
    assert kernel.state == desired_state(rib, DEVICES)
    assert sync(tracker, kernel) == 0


# -- any two states -------------------------------------------------------------

devices = st.sampled_from(["vxlan100", "vxlan200", "br100"])
macs = st.integers(0, 40).map(lambda i: f"02:00:00:00:00:{i:02x}")
addresses = st.one_of(
    st.integers(0, 6).map(lambda i: IPv4Address(f"192.0.2.{i + 1}")),
    st.integers(0, 3).map(lambda i: IPv6Address(f"2001:db8::{i + 1}")),
)


@st.composite
def states(draw: st.DrawFn) -> ForwardingState:
    mac_list = draw(st.lists(st.builds(RemoteMac, devices, macs, addresses, st.booleans()),
                             max_size=25))
    neigh_list = draw(st.lists(st.builds(NeighEntry, devices, addresses, macs), max_size=15))
    return ForwardingState(
        {m.key: m for m in mac_list},
        set(draw(st.lists(st.builds(FloodEntry, devices, addresses), max_size=10))),
        {n.key: n for n in neigh_list},
    )


@settings(max_examples=300)
@given(states(), states())
def test_writes_between_any_two_states_reach_the_desired_one(
    desired: ForwardingState, installed: ForwardingState
) -> None:
    copy = ForwardingState(dict(installed.macs), set(installed.floods), dict(installed.neighs))
    kernel = FakeKernel(devices={"vxlan100", "vxlan200", "br100"}, state=copy)
    changes = writes_between(desired, installed)
    assert not kernel.apply(changes)
    assert kernel.state == desired
    # Nothing already right is rewritten; a delete + put pair only for a sticky flip.
    assert all(installed.macs.get(m.key) != m for m in changes.macs_put)
    assert all(installed.neighs.get(n.key) != n for n in changes.neighs_put)
    deleted = {m.key: m for m in changes.macs_del}
    assert all(deleted[m.key].sticky != m.sticky for m in changes.macs_put if m.key in deleted)
    assert not writes_between(desired, desired)


def test_a_probe_goes_once_after_our_entry_of_the_address_is_deleted() -> None:
    tracker, kernel = ForwardingTracker(), FakeKernel()
    tracker.want(NEIGH)
    sync(tracker, kernel)
    tracker.unwant_neigh(NEIGH.key)
    tracker.probe_neigh(NEIGH)
    changes = tracker.pending(deletions=False)  # start-up holds deletions: and the probe
    assert changes.neighs_probe == [] and changes.neighs_del == []
    changes = tracker.pending()
    assert changes.neighs_del == [NEIGH] and changes.neighs_probe == [NEIGH]
    tracker.record(changes, set())
    assert not tracker.pending()  # once
    # Wanted again (the address went remote again) before the probe was written: no probe.
    tracker.probe_neigh(NEIGH)
    tracker.want(NEIGH)
    assert tracker.pending().neighs_probe == []
    # A wanted entry is never probed over.
    tracker.probe_neigh(NEIGH)
    assert tracker.pending().neighs_probe == []
