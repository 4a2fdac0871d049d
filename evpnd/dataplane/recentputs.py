"""Which keys our recent kernel writes put, by write number (pure).

The reconciler stamps every kernel report with the number of writes done when
it was read (its monitor socket is read right after each write returns, and
the kernel queues its reports as it writes). A deletion reported before write
N ended says nothing about an entry write N put again; this log answers that
question for the rare report that finds an equal entry installed.
"""

from __future__ import annotations

from collections import deque

from evpnd.dataplane.tracker import Changes

TABLES = ("mac", "flood", "neigh", "route")


class RecentPuts:
    """The writes that put something, with their keys per table ("mac", "flood",
    "neigh", "route") collected on the first question about them: the report of
    our own delete finds the entry no longer installed and never asks."""

    __slots__ = ("_keys", "_writes")

    def __init__(self) -> None:
        self._writes: deque[tuple[int, Changes]] = deque()
        self._keys: dict[tuple[int, str], set[object]] = {}

    def add(self, number: int, changes: Changes) -> None:
        if changes.macs_put or changes.floods_add or changes.neighs_put or changes.routes_put:
            self._writes.append((number, changes))

    def forget_through(self, number: int) -> None:
        """No report read before write `number` ended is left to interpret."""
        while self._writes and self._writes[0][0] <= number:
            done, _ = self._writes.popleft()
            for table in TABLES:
                self._keys.pop((done, table), None)

    def clear(self) -> None:
        self._writes.clear()
        self._keys.clear()

    def put_after(self, done: int, table: str, key: object) -> bool:
        """Whether a write later than the first `done` put `key` into `table`."""
        for number, changes in reversed(self._writes):
            if number <= done:
                break
            keys = self._keys.get((number, table))
            if keys is None:
                keys = self._keys[(number, table)] = _put_keys(changes, table)
            if key in keys:
                return True
        return False


def _put_keys(changes: Changes, table: str) -> set[object]:
    if table == "mac":
        return {m.key for m in changes.macs_put}
    if table == "flood":
        return set(changes.floods_add)
    if table == "neigh":
        return {n.key for n in changes.neighs_put}
    return {r.key for r in changes.routes_put}
