"""Reconciliation diff: the writes that turn the kernel's owned entries into the desired ones.

Pure functions on ForwardingState values; the kernel semantics they encode:

- A remote MAC whose VTEP changed is one NLM_F_REPLACE write (`macs_put`).
- A remote MAC whose sticky flag changed is a delete followed by a put: the
  vxlan driver ignores state and flag changes carried by an extern_learn write
  to an entry added over netlink (checked on 6.18), so a replace would leave
  the old state in place. The writer performs all deletes before all puts.
- Flood entries are a set of (device, VTEP): each is appended or deleted on
  its own, never replaced.
- A neighbour whose MAC changed is one replace.

`current` must hold only entries evpnd owns: everything in it that is not
desired gets deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac
from evpnd.model import IPAddress, address_order


@dataclass(slots=True)
class Changes:
    """Writes to perform; deletes carry the entry as the kernel holds it."""

    macs_put: list[RemoteMac] = field(default_factory=list)
    macs_del: list[RemoteMac] = field(default_factory=list)
    floods_add: list[FloodEntry] = field(default_factory=list)
    floods_del: list[FloodEntry] = field(default_factory=list)
    neighs_put: list[NeighEntry] = field(default_factory=list)
    neighs_del: list[NeighEntry] = field(default_factory=list)

    def count(self) -> int:
        return (
            len(self.macs_put)
            + len(self.macs_del)
            + len(self.floods_add)
            + len(self.floods_del)
            + len(self.neighs_put)
            + len(self.neighs_del)
        )

    def __bool__(self) -> bool:
        return self.count() > 0

    def extend(self, other: Changes) -> None:
        self.macs_put += other.macs_put
        self.macs_del += other.macs_del
        self.floods_add += other.floods_add
        self.floods_del += other.floods_del
        self.neighs_put += other.neighs_put
        self.neighs_del += other.neighs_del


def _flood_order(entry: FloodEntry) -> tuple[str, tuple[int, int]]:
    return (entry.device, address_order(entry.vtep))


def _diff_mac(want: RemoteMac | None, have: RemoteMac | None, out: Changes) -> None:
    if want == have:
        return
    if want is None:
        assert have is not None
        out.macs_del.append(have)
        return
    if have is not None and have.sticky != want.sticky:
        out.macs_del.append(have)
    out.macs_put.append(want)


def _diff_neigh(want: NeighEntry | None, have: NeighEntry | None, out: Changes) -> None:
    if want == have:
        return
    if want is None:
        assert have is not None
        out.neighs_del.append(have)
    else:
        out.neighs_put.append(want)


def diff(desired: ForwardingState, current: ForwardingState) -> Changes:
    """All writes needed to make `current` (owned entries only) equal to `desired`."""
    out = Changes()
    for key, want in desired.macs.items():
        _diff_mac(want, current.macs.get(key), out)
    for key, have in current.macs.items():
        if key not in desired.macs:
            out.macs_del.append(have)
    out.floods_add = sorted(desired.floods - current.floods, key=_flood_order)
    out.floods_del = sorted(current.floods - desired.floods, key=_flood_order)
    for key, want_n in desired.neighs.items():
        _diff_neigh(want_n, current.neighs.get(key), out)
    for key, have_n in current.neighs.items():
        if key not in desired.neighs:
            out.neighs_del.append(have_n)
    return out


def diff_keys(
    desired: ForwardingState,
    current: ForwardingState,
    macs: Iterable[tuple[str, str]] = (),
    floods: Iterable[FloodEntry] = (),
    neighs: Iterable[tuple[str, IPAddress]] = (),
) -> Changes:
    """The part of `diff(desired, current)` that concerns the given keys (incremental updates)."""
    out = Changes()
    for key in dict.fromkeys(macs):
        _diff_mac(desired.macs.get(key), current.macs.get(key), out)
    for flood in dict.fromkeys(floods):
        wanted, present = flood in desired.floods, flood in current.floods
        if wanted and not present:
            out.floods_add.append(flood)
        elif present and not wanted:
            out.floods_del.append(flood)
    for key in dict.fromkeys(neighs):
        _diff_neigh(desired.neighs.get(key), current.neighs.get(key), out)
    return out


def apply_changes(state: ForwardingState, changes: Changes) -> ForwardingState:
    """What the kernel holds after `changes` all succeed (deletes first, as the writer does)."""
    result = copy_state(state)
    for mac in changes.macs_del:
        if result.macs.get(mac.key) == mac:
            del result.macs[mac.key]
    for flood in changes.floods_del:
        result.floods.discard(flood)
    for neigh in changes.neighs_del:
        if result.neighs.get(neigh.key) == neigh:
            del result.neighs[neigh.key]
    for mac in changes.macs_put:
        result.add_mac(mac)
    result.floods.update(changes.floods_add)
    for neigh in changes.neighs_put:
        result.add_neigh(neigh)
    return result


def copy_state(state: ForwardingState) -> ForwardingState:
    return ForwardingState(
        macs=dict(state.macs), floods=set(state.floods), neighs=dict(state.neighs)
    )


def without_keys(
    state: ForwardingState,
    macs: Iterable[tuple[str, str]] = (),
    floods: Iterable[FloodEntry] = (),
    neighs: Iterable[tuple[str, IPAddress]] = (),
) -> ForwardingState:
    """`state` minus the given keys (entries held by someone else are not ours to write)."""
    result = copy_state(state)
    for key in macs:
        result.macs.pop(key, None)
    result.floods.difference_update(floods)
    for nkey in neighs:
        result.neighs.pop(nkey, None)
    return result
