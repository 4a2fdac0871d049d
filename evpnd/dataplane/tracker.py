"""Desired versus installed kernel entries, and the writes that follow from them (pure).

Modelled on Calico felix's delta tracker (`felix/deltatracker`, used by its
`vxlanfdb`): callers say what they want (`want_*`, `unwant_*`), the shell
says what the kernel holds (`replace_installed` after a dump) and what its
writes did (`record`), and `pending()` is always exactly the writes that
would make the kernel equal to what is wanted. There is no separate diff
step and no second copy of the state: a change costs a few dict operations,
so one UPDATE of 100 routes or a 100k-route table go the same way.

Four tables, as the kernel has them (`state.py`): remote MACs keyed by
(vxlan device, MAC), flood entries (a set: each VTEP is appended on its own,
never replaced), neighbours keyed by (bridge, IP) and routes into the L3VNI
keyed by prefix. The L3VNI's next hops are a neighbour and a remote MAC
(the router MAC) each, in the neighbour and MAC tables.

Kernel semantics encoded here (checked on 6.18):

* a remote MAC whose VTEP changed is one NLM_F_REPLACE write;
* a remote MAC whose sticky flag changed is a delete followed by a put: the
  vxlan driver ignores state and flag changes carried by an extern_learn
  write to an entry added over netlink, so a replace would keep the old
  flag. The writer performs every delete before every put;
* a neighbour whose MAC changed is one replace.

An entry the kernel refused is *parked*: it stays wanted and out of
`pending()` until its wanted value changes or `retry_parked()` is called (a
resync, a device coming back), so one missing device does not turn every
later batch into a retry of the same failures.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac, RouteEntry
from evpnd.model import IPAddress, IPNetwork, address_order

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING: object = object()

MacKey = tuple[str, str]
NeighKey = tuple[str, IPAddress]


@dataclass(slots=True)
class Changes:
    """Writes to perform; deletes carry the entry as the kernel holds it."""

    macs_put: list[RemoteMac] = field(default_factory=list)
    macs_del: list[RemoteMac] = field(default_factory=list)
    floods_add: list[FloodEntry] = field(default_factory=list)
    floods_del: list[FloodEntry] = field(default_factory=list)
    neighs_put: list[NeighEntry] = field(default_factory=list)
    neighs_del: list[NeighEntry] = field(default_factory=list)
    routes_put: list[RouteEntry] = field(default_factory=list)
    routes_del: list[RouteEntry] = field(default_factory=list)
    # Not state: addresses to probe once (a kernel neighbour in NUD_PROBE, see
    # ForwardingTracker.probe_neigh), written after the deletions.
    neighs_probe: list[NeighEntry] = field(default_factory=list)

    def count(self) -> int:
        return (
            len(self.neighs_probe)
            + len(self.macs_put)
            + len(self.macs_del)
            + len(self.floods_add)
            + len(self.floods_del)
            + len(self.neighs_put)
            + len(self.neighs_del)
            + len(self.routes_put)
            + len(self.routes_del)
        )

    def __bool__(self) -> bool:
        return self.count() > 0


class TableTracker(Generic[K, V]):
    """One keyed table: what is wanted, what is installed, what is pending.

    `wanted` and `installed` are the live dicts (read them, never write them):
    the ForwardingState views of the reconciler share them.
    """

    __slots__ = ("deletions", "installed", "parked", "updates", "wanted")

    def __init__(self) -> None:
        self.wanted: dict[K, V] = {}
        self.installed: dict[K, V] = {}
        self.updates: dict[K, V] = {}  # key -> wanted value the kernel does not hold yet
        self.deletions: set[K] = set()  # installed keys nobody wants
        self.parked: set[K] = set()  # refused by the kernel; see the module docstring

    # -- what is wanted --------------------------------------------------

    def want(self, key: K, value: V) -> None:
        self.wanted[key] = value
        self.parked.discard(key)
        self.deletions.discard(key)
        have = self.installed.get(key, _MISSING)
        if have is not _MISSING and (have is value or have == value):
            self.updates.pop(key, None)
        else:
            self.updates[key] = value

    def unwant(self, key: K) -> None:
        if self.wanted.pop(key, _MISSING) is _MISSING:
            return
        self.updates.pop(key, None)
        self.parked.discard(key)
        if key in self.installed:
            self.deletions.add(key)

    def replace_wanted(self, wanted: Mapping[K, V]) -> None:
        for key in [k for k in self.wanted if k not in wanted]:
            self.unwant(key)
        for key, value in wanted.items():
            if self.wanted.get(key, _MISSING) != value:
                self.want(key, value)

    # -- what the kernel holds -------------------------------------------

    def installed_as(self, key: K, value: V) -> None:
        """The kernel holds `value` under `key` (our write succeeded, or a dump said so)."""
        self.installed[key] = value
        want = self.wanted.get(key, _MISSING)
        if want is _MISSING:
            self.deletions.add(key)
        elif want is value or want == value:
            self.updates.pop(key, None)
        else:
            self.updates[key] = want  # type: ignore[assignment]

    def removed(self, key: K) -> None:
        """The kernel no longer holds `key` (our delete, or someone else's)."""
        self.installed.pop(key, None)
        self.deletions.discard(key)
        want = self.wanted.get(key, _MISSING)
        if want is not _MISSING:
            self.updates[key] = want  # type: ignore[assignment]

    def replace_installed(self, installed: Mapping[K, V]) -> None:
        self.installed.clear()
        self.installed.update(installed)
        self.updates = {k: v for k, v in self.wanted.items() if installed.get(k, _MISSING) != v}
        self.deletions = {k for k in installed if k not in self.wanted}
        self.parked.clear()

    def park(self, key: K) -> None:
        if key in self.updates:
            self.parked.add(key)

    def retry_parked(self) -> None:
        self.parked.clear()

    def rewrite_where(self, devices: set[str]) -> None:
        """Write these devices' wanted entries again, though the kernel holds them."""
        for key in [k for k in self.installed if _device(k) in devices and k in self.wanted]:
            self.updates[key] = self.wanted[key]

    def forget_where(self, gone: set[str], since: Callable[[K], bool] | None = None) -> None:
        """Entries of devices that are gone: the kernel flushed them with the device.
        `since` names the ones written to a new device of the same name since."""
        for key in [k for k in self.installed if _device(k) in gone]:
            if since is None or not since(key):
                self.removed(key)

    # -- what to write -----------------------------------------------------

    def pending_updates(self) -> list[V]:
        if not self.parked:
            return list(self.updates.values())
        return [v for k, v in self.updates.items() if k not in self.parked]

    def pending_deletions(self) -> list[V]:
        return [self.installed[k] for k in self.deletions]


def _device(key: object) -> str:
    if isinstance(key, tuple):
        return str(key[0])
    assert isinstance(key, FloodEntry)
    return key.device


class ForwardingTracker:
    """The four tables together; `desired` and `installed` are live ForwardingState views."""

    def __init__(self) -> None:
        self.macs: TableTracker[MacKey, RemoteMac] = TableTracker()
        self.floods: TableTracker[FloodEntry, FloodEntry] = TableTracker()
        self.neighs: TableTracker[NeighKey, NeighEntry] = TableTracker()
        self.routes: TableTracker[IPNetwork, RouteEntry] = TableTracker()
        self._desired_floods: set[FloodEntry] = set()
        self._installed_floods: set[FloodEntry] = set()
        self._probes: dict[NeighKey, NeighEntry] = {}

    # ForwardingState views over the live tables (floods are a set there).

    @property
    def desired(self) -> ForwardingState:
        return ForwardingState(
            self.macs.wanted, self._desired_floods, self.neighs.wanted, self.routes.wanted
        )

    @property
    def installed(self) -> ForwardingState:
        return ForwardingState(
            self.macs.installed, self._installed_floods, self.neighs.installed,
            self.routes.installed,
        )  # fmt: skip

    # -- wanted --------------------------------------------------------------

    def want(self, entry: RemoteMac | FloodEntry | NeighEntry | RouteEntry) -> None:
        if isinstance(entry, RemoteMac):
            self.macs.want(entry.key, entry)
        elif isinstance(entry, FloodEntry):
            self.floods.want(entry, entry)
            self._desired_floods.add(entry)
        elif isinstance(entry, RouteEntry):
            self.routes.want(entry.key, entry)
        else:
            self.neighs.want(entry.key, entry)
            self._probes.pop(entry.key, None)  # remote again: ours to write, not to probe

    def probe_neigh(self, entry: NeighEntry) -> None:
        """Probe an address once: a kernel neighbour (not ours: no protocol, not
        extern_learn) in NUD_PROBE, so the kernel asks the MAC for it (ARP or NS).
        Its answer is the local learner's to see. Written after the deletions of the
        same write, which remove our own entry for the address when it had one."""
        if entry.key not in self.neighs.wanted:
            self._probes[entry.key] = entry

    def unwant_mac(self, key: MacKey) -> None:
        self.macs.unwant(key)

    def unwant_flood(self, entry: FloodEntry) -> None:
        self.floods.unwant(entry)
        self._desired_floods.discard(entry)

    def unwant_neigh(self, key: NeighKey) -> None:
        self.neighs.unwant(key)

    def unwant_route(self, key: IPNetwork) -> None:
        self.routes.unwant(key)

    def replace_desired(self, state: ForwardingState) -> None:
        self.macs.replace_wanted(state.macs)
        self.floods.replace_wanted({f: f for f in state.floods})
        self._desired_floods.clear()
        self._desired_floods.update(state.floods)
        self.neighs.replace_wanted(state.neighs)
        self.routes.replace_wanted(state.routes)

    # -- installed -------------------------------------------------------------

    def replace_installed(self, state: ForwardingState) -> None:
        self.macs.replace_installed(state.macs)
        self.floods.replace_installed({f: f for f in state.floods})
        self._installed_floods.clear()
        self._installed_floods.update(state.floods)
        self.neighs.replace_installed(state.neighs)
        self.routes.replace_installed(state.routes)

    def removed(self, entry: RemoteMac | FloodEntry | NeighEntry | RouteEntry) -> None:
        """Someone else deleted an entry we installed: it becomes pending again if wanted."""
        if isinstance(entry, RouteEntry):
            if self.routes.installed.get(entry.key) == entry:
                self.routes.removed(entry.key)
        elif isinstance(entry, RemoteMac):
            if self.macs.installed.get(entry.key) == entry:
                self.macs.removed(entry.key)
        elif isinstance(entry, FloodEntry):
            if entry in self.floods.installed:
                self.floods.removed(entry)
                self._installed_floods.discard(entry)
        elif self.neighs.installed.get(entry.key) == entry:
            self.neighs.removed(entry.key)

    def removed_neigh(self, key: NeighKey) -> None:
        """A neighbour deletion names only the key (the kernel reports no MAC)."""
        if key in self.neighs.installed:
            self.neighs.removed(key)

    def taken_over(self, entry: RemoteMac | NeighEntry | RouteEntry) -> bool:
        """An admin's static entry replaced ours under the same key; True if ours was there."""
        table: TableTracker[Any, Any]
        if isinstance(entry, RemoteMac):
            table = self.macs
        elif isinstance(entry, RouteEntry):
            table = self.routes
        else:
            table = self.neighs
        if entry.key not in table.installed:
            return False
        table.installed.pop(entry.key)  # type: ignore[arg-type]
        table.deletions.discard(entry.key)  # type: ignore[arg-type]
        wanted = table.wanted.get(entry.key)  # type: ignore[arg-type]
        if wanted is not None:
            table.updates[entry.key] = wanted  # type: ignore[index]
        return True

    def rewrite_macs_on(self, devices: Iterable[str]) -> None:
        """Remote MACs on these vxlan devices are written again (their bridge entries
        are missing: the device joined a bridge after they were written)."""
        self.macs.rewrite_where(set(devices))

    def forget_devices(
        self, gone: Iterable[str], since: Callable[[str, Hashable], bool] | None = None
    ) -> None:
        """The kernel flushed these devices' entries with them. `since(table, key)`:
        written since to a new device of the same name ("mac", "flood", "neigh",
        "route"), so still in the kernel."""
        names = set(gone)
        self.macs.forget_where(names, None if since is None else lambda k: since("mac", k))
        self.neighs.forget_where(names, None if since is None else lambda k: since("neigh", k))
        for flood in [f for f in self.floods.installed if f.device in names]:
            if since is None or not since("flood", flood):
                self.floods.removed(flood)
                self._installed_floods.discard(flood)
        self.forget_routes_on(names, None if since is None else lambda k: since("route", k))

    def forget_routes_on(
        self, devices: Iterable[str], since: Callable[[IPNetwork], bool] | None = None
    ) -> None:
        """The kernel dropped these devices' routes (with the device, or as it went down:
        IPv4 sends no notification for either); what is still wanted is pending again.
        `since` names the routes written since (to a new device of the same name)."""
        names = set(devices)
        for key in [k for k, r in self.routes.installed.items() if r.device in names]:
            if since is None or not since(key):
                self.routes.removed(key)

    def retry_parked(self) -> None:
        self.macs.retry_parked()
        self.floods.retry_parked()
        self.neighs.retry_parked()
        self.routes.retry_parked()

    # -- writes --------------------------------------------------------------

    def pending(
        self,
        *,
        deletions: bool = True,
        skip_macs: set[MacKey] | frozenset[MacKey] = frozenset(),
        skip_floods: set[FloodEntry] | frozenset[FloodEntry] = frozenset(),
        skip_neighs: set[NeighKey] | frozenset[NeighKey] = frozenset(),
        skip_routes: AbstractSet[IPNetwork] = frozenset(),
    ) -> Changes:
        """The writes that make the kernel hold what is wanted.

        `deletions=False` holds every removal back (start-up keeps what a
        previous run installed until the peers have re-sent their tables).
        The `skip_*` keys are held by an admin's static entries: never
        written over.
        """
        out = Changes()
        installed_macs = self.macs.installed
        for mac in self.macs.pending_updates():
            if mac.key in skip_macs:
                continue
            have = installed_macs.get(mac.key)
            if have is not None and have.sticky != mac.sticky:
                out.macs_del.append(have)
            out.macs_put.append(mac)
        out.floods_add = sorted(
            (f for f in self.floods.pending_updates() if f not in skip_floods), key=_flood_order
        )
        out.neighs_put = [n for n in self.neighs.pending_updates() if n.key not in skip_neighs]
        out.routes_put = [r for r in self.routes.pending_updates() if r.key not in skip_routes]
        if deletions:
            out.macs_del += self.macs.pending_deletions()
            out.floods_del = sorted(self.floods.pending_deletions(), key=_flood_order)
            out.neighs_del = self.neighs.pending_deletions()
            out.routes_del = self.routes.pending_deletions()
            # After our own entry of the address is gone (so held at start-up too).
            out.neighs_probe = [p for k, p in self._probes.items() if k not in skip_neighs]
        return out

    def held_deletions(self) -> int:
        return (
            len(self.macs.deletions) + len(self.floods.deletions) + len(self.neighs.deletions)
            + len(self.routes.deletions)
        )  # fmt: skip

    def record(self, changes: Changes, failed: set[tuple[str, object]]) -> None:
        """What a write did: `failed` holds (op, entry) pairs the kernel refused.

        Deletes are recorded first, as the writer performs them first.
        """
        # Per entry of a 100k-MAC batch: no (op, entry) lookup when nothing failed
        # (hashing an entry hashes its address, in Python), and `is` before `==`
        # (what is deleted is the very object pending_deletions handed out).
        macs, floods, neighs, routes = self.macs, self.floods, self.neighs, self.routes
        for route in changes.routes_del:
            if failed and ("route_del", route) in failed:
                continue
            if (have := routes.installed.get(route.key)) is route or have == route:
                routes.removed(route.key)
        installed_macs = macs.installed
        for mac in changes.macs_del:
            if failed and ("mac_del", mac) in failed:
                continue
            key = (mac.device, mac.mac)
            if (have := installed_macs.get(key)) is mac or have == mac:
                macs.removed(key)
        for flood in changes.floods_del:
            if not (failed and ("flood_del", flood) in failed) and flood in floods.installed:
                floods.removed(flood)
                self._installed_floods.discard(flood)
        for neigh in changes.neighs_del:
            if failed and ("neigh_del", neigh) in failed:
                continue
            if (have := neighs.installed.get(neigh.key)) is neigh or have == neigh:
                neighs.removed(neigh.key)
        for mac in changes.macs_put:
            if failed and ("mac_put", mac) in failed:
                macs.park(mac.key)
            else:
                macs.installed_as((mac.device, mac.mac), mac)
        for flood in changes.floods_add:
            if failed and ("flood_add", flood) in failed:
                floods.park(flood)
            else:
                floods.installed_as(flood, flood)
                self._installed_floods.add(flood)
        for neigh in changes.neighs_put:
            if failed and ("neigh_put", neigh) in failed:
                neighs.park(neigh.key)
            else:
                neighs.installed_as(neigh.key, neigh)
        for route in changes.routes_put:
            if failed and ("route_put", route) in failed:
                routes.park(route.key)
            else:
                routes.installed_as(route.key, route)
        for probe in changes.neighs_probe:
            # Once, sent or refused (the writer counts a refusal): not retried.
            if self._probes.get(probe.key) == probe:
                del self._probes[probe.key]


def _flood_order(entry: FloodEntry) -> tuple[str, tuple[int, int]]:
    return (entry.device, address_order(entry.vtep))


def writes_between(desired: ForwardingState, installed: ForwardingState) -> Changes:
    """The writes that turn `installed` (owned entries only) into `desired`."""
    tracker = ForwardingTracker()
    tracker.replace_installed(installed)
    tracker.replace_desired(desired)
    return tracker.pending()
