"""The reconciliation diff on plain data, plus properties over generated states."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.dataplane.diff import Changes, apply_changes, diff, diff_keys, without_keys
from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac, ip


def state(*entries: RemoteMac | FloodEntry | NeighEntry) -> ForwardingState:
    s = ForwardingState()
    for e in entries:
        if isinstance(e, RemoteMac):
            s.add_mac(e)
        elif isinstance(e, FloodEntry):
            s.add_flood(e)
        else:
            s.add_neigh(e)
    return s


MAC_A = RemoteMac("vxlan100", "02:00:00:00:00:0a", ip("192.0.2.1"))
MAC_B = RemoteMac("vxlan100", "02:00:00:00:00:0b", ip("192.0.2.2"))
FLOOD_1 = FloodEntry("vxlan100", ip("192.0.2.1"))
FLOOD_2 = FloodEntry("vxlan100", ip("192.0.2.2"))
NEIGH_A = NeighEntry("br100", ip("10.0.0.10"), "02:00:00:00:00:0a")


def test_identical_states_need_no_writes() -> None:
    s = state(MAC_A, MAC_B, FLOOD_1, NEIGH_A)
    assert diff(s, state(MAC_A, MAC_B, FLOOD_1, NEIGH_A)).count() == 0
    assert not diff(s, s)


def test_everything_new_is_put_and_everything_stale_deleted() -> None:
    changes = diff(state(MAC_A, FLOOD_1, NEIGH_A), state(MAC_B, FLOOD_2))
    assert changes.macs_put == [MAC_A]
    assert changes.macs_del == [MAC_B]
    assert changes.floods_add == [FLOOD_1]
    assert changes.floods_del == [FLOOD_2]
    assert changes.neighs_put == [NEIGH_A]
    assert changes.neighs_del == []


def test_vtep_move_is_a_single_replace() -> None:
    moved = RemoteMac(MAC_A.device, MAC_A.mac, ip("192.0.2.99"))
    changes = diff(state(moved), state(MAC_A))
    assert changes.macs_put == [moved]
    assert changes.macs_del == []
    assert changes.count() == 1


def test_sticky_flip_deletes_then_puts() -> None:
    # The vxlan driver ignores state changes on an extern_learn replace of an
    # entry added over netlink, so the old entry has to go first.
    sticky = RemoteMac(MAC_A.device, MAC_A.mac, MAC_A.vtep, sticky=True)
    changes = diff(state(sticky), state(MAC_A))
    assert changes.macs_del == [MAC_A]
    assert changes.macs_put == [sticky]
    assert apply_changes(state(MAC_A), changes).macs == {sticky.key: sticky}


def test_neighbour_mac_change_is_a_replace() -> None:
    changed = NeighEntry(NEIGH_A.device, NEIGH_A.ip, "02:00:00:00:00:ff")
    changes = diff(state(changed), state(NEIGH_A))
    assert changes.neighs_put == [changed]
    assert changes.neighs_del == []


def test_flood_entries_are_only_added_or_deleted() -> None:
    changes = diff(state(FLOOD_1, FLOOD_2), state(FLOOD_2, FloodEntry("vxlan200", FLOOD_1.vtep)))
    assert changes.floods_add == [FLOOD_1]
    assert changes.floods_del == [FloodEntry("vxlan200", FLOOD_1.vtep)]


def test_mixed_address_families_sort_without_error() -> None:
    v6 = FloodEntry("vxlan100", ip("2001:db8::1"))
    changes = diff(state(FLOOD_1, v6), state())
    assert set(changes.floods_add) == {FLOOD_1, v6}


def test_diff_keys_only_looks_at_the_given_keys() -> None:
    desired = state(MAC_A, FLOOD_1)
    current = state(MAC_B, FLOOD_2)
    changes = diff_keys(desired, current, macs=[MAC_A.key], floods=[FLOOD_2])
    assert changes.macs_put == [MAC_A]
    assert changes.macs_del == []  # MAC_B's key was not asked about
    assert changes.floods_del == [FLOOD_2]
    assert changes.floods_add == []


def test_without_keys_leaves_the_input_alone() -> None:
    s = state(MAC_A, MAC_B, FLOOD_1, NEIGH_A)
    trimmed = without_keys(s, macs=[MAC_A.key], floods=[FLOOD_1], neighs=[NEIGH_A.key])
    assert trimmed.macs == {MAC_B.key: MAC_B}
    assert not trimmed.floods and not trimmed.neighs
    assert s.count() == 4


def test_changes_extend_and_count() -> None:
    a = Changes(macs_put=[MAC_A])
    a.extend(Changes(floods_del=[FLOOD_1], neighs_put=[NEIGH_A]))
    assert a.count() == 3


# -- properties ---------------------------------------------------------------

devices = st.sampled_from(["vxlan100", "vxlan200", "br100"])
macs = st.integers(0, 40).map(lambda i: f"02:00:00:00:00:{i:02x}")
v4 = st.integers(0, 6).map(lambda i: IPv4Address(f"192.0.2.{i + 1}"))
v6 = st.integers(0, 3).map(lambda i: IPv6Address(f"2001:db8::{i + 1}"))
addresses = st.one_of(v4, v6)
remote_macs = st.builds(RemoteMac, devices, macs, addresses, st.booleans())
floods = st.builds(FloodEntry, devices, addresses)
neighs = st.builds(NeighEntry, devices, addresses, macs)


@st.composite
def states(draw: st.DrawFn) -> ForwardingState:
    return state(
        *draw(st.lists(remote_macs, max_size=25)),
        *draw(st.lists(floods, max_size=10)),
        *draw(st.lists(neighs, max_size=15)),
    )


def same(a: ForwardingState, b: ForwardingState) -> bool:
    return a.macs == b.macs and a.floods == b.floods and a.neighs == b.neighs


@settings(max_examples=300)
@given(states(), states())
def test_applying_the_diff_yields_the_desired_state(
    desired: ForwardingState, current: ForwardingState
) -> None:
    assert same(apply_changes(current, diff(desired, current)), desired)


@settings(max_examples=200)
@given(states(), states())
def test_diff_writes_only_what_differs(desired: ForwardingState, current: ForwardingState) -> None:
    changes = diff(desired, current)
    # Nothing already right is rewritten, and every delete names a current entry.
    assert all(current.macs.get(m.key) != m for m in changes.macs_put)
    assert all(current.neighs.get(n.key) != n for n in changes.neighs_put)
    assert not set(changes.floods_add) & current.floods
    assert all(current.macs[m.key] == m for m in changes.macs_del)
    assert all(current.neighs[n.key] == n for n in changes.neighs_del)
    assert set(changes.floods_del) <= current.floods
    # A delete+put pair happens only for a sticky flip.
    deleted = {m.key: m for m in changes.macs_del}
    for put in changes.macs_put:
        if put.key in deleted:
            assert deleted[put.key].sticky != put.sticky


@settings(max_examples=200)
@given(states())
def test_diff_against_itself_is_empty(s: ForwardingState) -> None:
    assert diff(s, s).count() == 0


@settings(max_examples=200)
@given(states(), states())
def test_diff_keys_over_all_keys_equals_full_diff(
    desired: ForwardingState, current: ForwardingState
) -> None:
    full = diff(desired, current)
    partial = diff_keys(
        desired,
        current,
        macs=[*desired.macs, *current.macs],
        floods=[*desired.floods, *current.floods],
        neighs=[*desired.neighs, *current.neighs],
    )
    assert same(apply_changes(current, partial), desired)
    assert partial.count() == full.count()
