"""Keep the kernel's owned FDB/neighbour entries and routes equal to what is wanted.

The bookkeeping is the delta tracker's (tracker.py): callers state what
they want through `tracker` (the daemon maps each RIB change set onto it,
desired.py) and `kick()`; a write cycle takes whatever is pending, writes
it and records the outcome. Everything wanted meanwhile is pending for the
next cycle, so a burst of changes becomes a few large writes.

- start(): dump, then write only what differs (a table that is already right
  costs a dump and zero writes).
- set_desired() / update(): change what is wanted and write the difference
  now (config changes, tests).
- While running, a netlink socket subscribed to RTNLGRP_NEIGH, RTNLGRP_LINK
  and the IPv4/IPv6 route groups reports deletions: an owned entry or route
  deleted by someone else is re-added while still wanted; a device that
  comes back (or up again: the kernel drops a device's IPv4 routes silently
  when it goes down) gets its entries again. An admin's static entry holding
  a wanted key (`bridge fdb add`
  without extern_learn, `ip neigh ... nud permanent`) wins: evpnd never writes
  over it and counts it as a conflict, and takes the key back if the admin's
  entry goes away.
- A lost event (ENOBUFS) triggers a full re-dump.
- `on_devices_gone`, when set, hears of every link that was deleted (from
  the events, or found missing by a re-dump): the daemon's
  links.DeviceRepair recreates a VNI device someone deleted; its entries
  then come back like those of any device that appears.

Kernel writes and dumps run in a worker thread so the event loop keeps
draining the monitor socket during a 100k-entry write. All changes to the
kernel are serialized by one lock; events are interpreted only after the
write in flight has been recorded, so our own notifications match what is
installed and are ignored. A report read only after a later write put the same
entry again (a busy event loop under churn) is older than that write: each
report carries the number of writes done when it was read, and `RecentPuts`
tells it from a deletion that came after.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from evpnd.dataplane.dump import Classified, Classifier, dump_tables
from evpnd.dataplane.netlink.bpf import reconciler_filter
from evpnd.dataplane.netlink.linkindex import LinkIndex
from evpnd.dataplane.netlink.routesocket import RouteSocket, dump_links, groups_mask
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    IFF_UP,
    NETCONFA_IFINDEX_ALL,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWNETCONF,
    RTM_NEWROUTE,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV4_NETCONF,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV6_NETCONF,
    RTNLGRP_IPV6_ROUTE,
    RTNLGRP_LINK,
    RTNLGRP_NEIGH,
    RTPROT_EVPND,
    MalformedMessage,
    addr_proto,
    decode_link,
    decode_neigh,
    decode_route,
    iter_messages,
    netconf_forwarding,
    reconciler_skips,
)
from evpnd.dataplane.recentputs import RecentPuts
from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac, RouteEntry
from evpnd.dataplane.tracker import Changes, ForwardingTracker
from evpnd.dataplane.writer import DataplaneWriter, EntryError, WriteResult
from evpnd.model import IPAddress, IPNetwork

log = structlog.get_logger(__name__)

DRAIN_PART = 5000  # kernel events interpreted per event-loop turn

Entry = RemoteMac | FloodEntry | NeighEntry | RouteEntry
# One undecoded monitor message: (type, datagram, payload start, payload end,
# writes done when it was read).
_Event = tuple[int, bytes, int, int, int]
# Large enough to hold the notifications of a burst of our own writes while
# the loop is busy; overflowing it only costs a re-dump.
MONITOR_RCVBUF = 64 << 20


@dataclass(slots=True)
class ReconcilerStats:
    writes: int = 0  # successful kernel writes
    errors: int = 0  # entries the kernel refused
    repairs: int = 0  # entries re-added after someone else removed them
    resyncs: int = 0  # full dump + diff runs (start-up, lost events, renames)
    overruns: int = 0  # monitor receive-buffer overruns (ENOBUFS: events lost, resync)
    takeovers: int = 0  # owned entries an admin overwrote (then left alone)
    # Plain dicts with string keys, not Counters: dataclasses.asdict() mangles a Counter.
    writes_by_op: dict[str, int] = field(default_factory=dict)  # "mac_put", "flood_del", ...
    errors_by_kind: dict[str, int] = field(default_factory=dict)  # "mac_put:ENODEV", ...


class Reconciler:
    """Owner of evpnd's kernel forwarding entries in one network namespace."""

    def __init__(
        self,
        netns: str | None = None,
        desired: ForwardingState | None = None,
        *,
        monitor: bool = True,
        chunk_size: int | None = None,
        hold_removals: bool = False,
    ) -> None:
        """`hold_removals`: keep owned entries that are not desired (yet) instead of
        deleting them, until `release()`. A restarting daemon starts with an empty
        RIB; deleting what the previous run installed would drop traffic until
        BGP has re-delivered every route."""
        self.netns = netns
        self.holding = hold_removals
        self.stats = ReconcilerStats()
        self.recent_errors: deque[EntryError] = deque(maxlen=1000)
        self.tracker = ForwardingTracker()
        if desired is not None:
            self.tracker.replace_desired(desired)
        self._foreign_macs: set[tuple[str, str]] = set()
        self._foreign_floods: set[FloodEntry] = set()
        self._foreign_neighs: set[tuple[str, IPAddress]] = set()
        self._foreign_routes: dict[IPNetwork, str] = {}  # prefix -> its device
        self._want_monitor = monitor
        self._chunk_size = chunk_size
        self._writer: DataplaneWriter | None = None
        self._dumper: RouteSocket | None = None
        self._monitor: RouteSocket | None = None
        # ifindex <-> name as this reconciler last saw it (its dumps, then its events,
        # in order); only touched under the lock. The writer keeps its own: see
        # _open_writer.
        self._links = LinkIndex()
        self._classify = Classifier(self._links)
        self._lock = asyncio.Lock()
        self._pending: list[_Event] = []
        self._writes_done = 0  # writer.apply() calls returned (the events' clock)
        self._recent_puts = RecentPuts()
        self._need_resync = False
        self._drainer: asyncio.Task[None] | None = None
        self._kicked = asyncio.Event()
        self._cycler: asyncio.Task[None] | None = None
        self._started = False
        # Told the names of the links that were deleted (links.DeviceRepair).
        self.on_devices_gone: Callable[[set[str]], None] | None = None
        # Told when one of evpnd's addresses (proto 238: anycast gateways) is deleted
        # or IP forwarding is switched off (links.DeviceRepair.host_changed).
        self.on_host_changed: Callable[[str], None] | None = None

    # -- views ------------------------------------------------------------

    @property
    def desired(self) -> ForwardingState:
        """What is wanted (read-only: change it through `tracker`, set_desired() or update())."""
        return self.tracker.desired

    @property
    def installed(self) -> ForwardingState:
        """Owned entries believed to be in the kernel."""
        return self.tracker.installed

    @property
    def pending(self) -> int:
        """Writes due now (held removals and entries the kernel refused excluded)."""
        return self._pending_changes().count()

    @property
    def route_conflicts(self) -> frozenset[IPNetwork]:
        """Wanted route prefixes an admin's route of the same prefix and metric holds."""
        return frozenset(self.tracker.routes.wanted.keys() & self._foreign_routes.keys())

    @property
    def conflicts(self) -> int:
        """Desired entries whose key an admin's static entry holds."""
        d = self.tracker.desired
        return (
            len(d.macs.keys() & self._foreign_macs)
            + len(d.floods & self._foreign_floods)
            + len(d.neighs.keys() & self._foreign_neighs)
            + len(d.routes.keys() & self._foreign_routes)
        )

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> WriteResult:
        """Open the sockets, dump, diff and write the difference; then watch for deletions."""
        try:
            self._writer = self._open_writer()
            self._dumper = RouteSocket(self.netns)
            if self._want_monitor:
                # Subscribe before dumping so nothing between the two is missed.
                self._monitor = RouteSocket(
                    self.netns,
                    groups=groups_mask(
                        RTNLGRP_NEIGH, RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE,
                        RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_NETCONF,
                        RTNLGRP_IPV6_NETCONF,
                    ),
                    rcvbuf=MONITOR_RCVBUF,
                )
                self._monitor.setblocking(False)
                try:
                    # What _on_readable skips first, dropped in the kernel: the
                    # echo of each write we make never queues or wakes us.
                    self._monitor.attach_filter(reconciler_filter())
                except OSError as exc:
                    log.warning("no socket filter on the dataplane monitor", error=str(exc))
                asyncio.get_running_loop().add_reader(self._monitor.fileno(), self._on_readable)
            self._started = True
            async with self._lock:
                result = await self._resync_locked()
            self._cycler = asyncio.create_task(self._write_cycles(), name="dataplane-writer")
            return result
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop watching and close the sockets; kernel entries stay as they are."""
        self._started = False
        if self._monitor is not None:
            asyncio.get_running_loop().remove_reader(self._monitor.fileno())
        if self._cycler is not None:
            self._kicked.set()  # the cycle in flight finishes; the loop then ends
            with contextlib.suppress(Exception):
                await self._cycler
            self._cycler = None
        if self._drainer is not None:
            # Not cancelled: a write in a worker thread cannot be interrupted,
            # and the drainer exits its loop once _started is False.
            with contextlib.suppress(Exception):
                await self._drainer
            self._drainer = None
        async with self._lock:
            for sock in (self._monitor, self._dumper, self._writer):
                if sock is not None:
                    sock.close()
            self._monitor = self._dumper = self._writer = None
            self._started = False

    async def __aenter__(self) -> Reconciler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _open_writer(self) -> DataplaneWriter:
        """The writer, with a link index of its own.

        The writer re-reads the links whenever a write names a device it does not
        know or the kernel answers ENODEV: under route churn that is the moment a
        device has just been deleted or re-created. Had it refreshed the index the
        events are judged against, the reconciler would then read the device's
        RTM_DELLINK or RTM_NEWLINK against a newer state: a deletion missed by a
        resync (the device never re-created), a re-created device taken for a known
        one (the entries refused meanwhile never written again). Found by chaos C7:
        `ip link del vxlan100` under churn, 5000 remote MACs gone for good."""
        writer = DataplaneWriter(self.netns)
        if self._chunk_size:
            writer.chunk_size = self._chunk_size
        return writer

    # -- what is wanted ---------------------------------------------------

    def kick(self) -> None:
        """`tracker` changed: write what is pending (soon, in the background)."""
        self._kicked.set()

    async def set_desired(self, state: ForwardingState) -> WriteResult:
        """Replace everything wanted; writes only what differs from the kernel."""
        self.tracker.replace_desired(state)
        return await self.sync()

    async def update(self, put: Iterable[Entry] = (), remove: Iterable[Entry] = ()) -> WriteResult:
        """Want or stop wanting entries (removal is by key); write the difference now."""
        tracker = self.tracker
        for entry in remove:
            if isinstance(entry, RemoteMac):
                tracker.unwant_mac(entry.key)
            elif isinstance(entry, FloodEntry):
                tracker.unwant_flood(entry)
            elif isinstance(entry, RouteEntry):
                tracker.unwant_route(entry.key)
            else:
                tracker.unwant_neigh(entry.key)
        for entry in put:
            tracker.want(entry)
        return await self.sync()

    async def release(self) -> WriteResult:
        """End the hold: delete every owned entry that is not wanted by now."""
        self.holding = False
        return await self.sync()

    async def sync(self) -> WriteResult:
        """Write everything pending now; the writes of this call."""
        if not self._started:
            return WriteResult()
        async with self._lock:
            return await self._write_pending()

    async def resync(self) -> WriteResult:
        """Re-dump the kernel and write whatever differs (also retries refused entries)."""
        async with self._lock:
            return await self._resync_locked()

    async def _write_cycles(self) -> None:
        while self._started:
            await self._kicked.wait()
            self._kicked.clear()
            if not self._started:
                return
            try:
                await self.sync()
            except Exception as exc:
                # A write cycle must not end the writer: the next kick or
                # resync tries again.
                log.exception("dataplane write cycle failed", error=str(exc), netns=self.netns)

    # -- kernel I/O (callers hold the lock) --------------------------------

    def _pending_changes(self) -> Changes:
        return self.tracker.pending(
            deletions=not self.holding,
            skip_macs=self._foreign_macs,
            skip_floods=self._foreign_floods,
            skip_neighs=self._foreign_neighs,
            skip_routes=self._foreign_routes.keys(),
        )

    async def _write_pending(self) -> WriteResult:
        """Write until nothing is pending (what was wanted during a write goes next)."""
        total = WriteResult()
        while self._writer is not None:
            changes = self._pending_changes()
            if not changes:
                break
            result = await asyncio.to_thread(self._writer.apply, changes)
            # The kernel queued its reports of this write (and of everything before
            # its end) on the monitor socket as it wrote: read them now, stamped
            # with the writes done before this one, so that none read later is
            # mistaken for news about what this write put.
            self._on_readable()
            self._writes_done += 1
            if not self._pending:
                self._recent_puts.clear()  # no earlier report left to judge
            self._recent_puts.add(self._writes_done, changes)
            self._record(changes, result)
            total.merge(result)
            if result.errors:
                # A refused put is parked, a refused delete stays pending: writing again
                # now would send the same refused deletes over and over, holding the lock
                # the event handler needs (seen: 16 million ENODEV in a minute while the
                # deletion of the device itself waited). The next kick or resync retries.
                break
        return total

    def _record(self, changes: Changes, result: WriteResult) -> None:
        self.tracker.record(changes, result.failed() if result.errors else set())
        self.stats.writes += result.total
        self.stats.errors += len(result.errors)
        by_op, by_kind = self.stats.writes_by_op, self.stats.errors_by_kind
        for op, n in result.writes.items():
            by_op[op] = by_op.get(op, 0) + n
        for error in result.errors:
            kind = f"{error.op}:{errno.errorcode.get(error.errno, error.errno)}"
            by_kind[kind] = by_kind.get(kind, 0) + 1
        self.recent_errors.extend(result.errors)
        if result.errors:
            log.warning(
                "dataplane write errors",
                count=len(result.errors),
                first=str(result.errors[0]),
                netns=self.netns,
            )

    async def _resync_locked(self) -> WriteResult:
        assert self._dumper is not None and self._writer is not None
        # Events queued so far are older than the dump, which supersedes them.
        self._pending.clear()
        self._recent_puts.clear()
        self._need_resync = False
        tables = await asyncio.to_thread(dump_tables, self._dumper)
        gone = set(self._links.names.values()) - set(tables.links.names.values())
        self._links.reset(tables.links)
        self._writer.links.reset(self._links)  # one link dump serves both
        if gone:
            self._devices_gone(gone)  # deleted while we were not listening
        # Flood remotes this run appended to an entry it did not create are
        # indistinguishable from the admin's in the dump; we remember them.
        ours = tables.foreign_floods & self.tracker.installed.floods
        tables.owned.floods |= ours
        found = tables.owned.count()
        self.tracker.replace_installed(tables.owned)
        self._foreign_macs = set(tables.foreign_macs)
        self._foreign_floods = tables.foreign_floods - ours
        self._foreign_neighs = set(tables.foreign_neighs)
        self._foreign_routes = {k: r.device for k, r in tables.foreign_routes.items()}
        self.stats.resyncs += 1
        if self.holding and self.tracker.held_deletions():
            log.info("dataplane holding stale entries", held=self.tracker.held_deletions(),
                     netns=self.netns)  # fmt: skip
        result = await self._write_pending()
        log.info(
            "dataplane resynced",
            owned=found,
            writes=result.total,
            errors=len(result.errors),
            conflicts=self.conflicts,
            netns=self.netns,
        )
        return result

    # -- events -----------------------------------------------------------

    def _on_readable(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        try:
            while (data := monitor.recv_datagram()) is not None:
                self._queue_events(data)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.stats.overruns += 1
            else:
                log.error("dataplane monitor failed", error=str(exc), netns=self.netns)
            self._need_resync = True
            self._pending.clear()
            self._recent_puts.clear()
        if (self._pending or self._need_resync) and (self._drainer is None or self._drainer.done()):
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    def _queue_events(self, data: bytes) -> None:
        """Keep a datagram's messages, undecoded, for `_interpret`."""
        pending, done = self._pending, self._writes_done
        try:
            for mtype, _flags, _seq, _pid, start, end in iter_messages(data):
                # A bridge's own entries and new extern_learn remote MACs
                # (ours, or another control plane's) need nothing from us, and
                # the echo of a burst of our own writes should not pile up
                # here (reconciler_filter drops them in the kernel already,
                # when it could be attached).
                if not reconciler_skips(mtype, data, start, end):
                    pending.append((mtype, data, start, end, done))
        except MalformedMessage:
            pass  # the rest of a datagram that does not frame

    async def _drain(self) -> None:
        async with self._lock:
            try:
                await self._drain_locked()
            except Exception as exc:
                # Keep the daemon alive (the namespace may be going away); the
                # next event or resync() tries again from a fresh dump.
                log.exception("dataplane event handling failed", error=str(exc), netns=self.netns)
                self._pending.clear()
                self._recent_puts.clear()
                self._need_resync = True

    async def _drain_locked(self) -> None:
        while self._started and (self._pending or self._need_resync):
            if self._need_resync:
                await self._resync_locked()
                continue
            events = self._pending[:DRAIN_PART]
            self._pending = self._pending[DRAIN_PART:]
            self._recent_puts.forget_through(events[0][4])
            if self._interpret(events):
                self._need_resync = True
            else:
                await self._write_pending()
            if self._pending:
                # The echoes of a 100k-route withdrawal are 200k events: the event
                # loop gets its turn between parts (about 0.05 s each), in order.
                await asyncio.sleep(0)

    def _interpret(self, events: list[_Event]) -> bool:
        """Bring the tracker's view of the kernel up to date with events; True when only
        a full resync can sort things out. What must be put back is then pending."""
        gone_links: dict[str, int] = {}  # name -> writes done when its deletion was read
        gone_indexes: set[int] = set()
        deleted: set[str] = set()  # devices deleted, not just gone from their bridge
        went_down: set[str] = set()  # devices set down: their IPv4 routes went silently
        joined: set[str] = set()  # devices that entered a bridge (or another one)
        new_device = went_up = False
        for mtype, data, start, end, done in events:
            if mtype not in (RTM_NEWLINK, RTM_DELLINK):
                continue
            try:
                link = decode_link(mtype, data, start, end)
            except MalformedMessage:
                continue
            index = link.ifindex
            if link.deleted:
                gone_indexes.add(index)
                known = self._links.remove(index)
                gone_links[known.name if known is not None else link.name] = done
                if link.family != AF_BRIDGE:  # AF_BRIDGE: the port left its bridge
                    deleted.add(known.name if known is not None else link.name)
                continue
            old = self._links.names.get(index)
            if old is not None and old != link.name:
                return True  # a rename moves entries between device names
            before = self._links.get(index)
            self._links.put(link)
            if old is None:
                new_device = True
                continue
            if before is not None and link.master is not None and before.master != link.master:
                joined.add(link.name)
            if before is not None and (before.flags ^ link.flags) & IFF_UP:
                if link.flags & IFF_UP:
                    went_up = True
                else:
                    went_down.add(link.name)
        if (gone_links or new_device or joined) and self._writer is not None:
            self._writer.refresh_links()
        if joined:
            # A remote MAC's bridge entry went with the bridge the device left, or was
            # never written (the device was no bridge port then): write them again.
            self.tracker.rewrite_macs_on(joined)
        if gone_links or new_device:
            for device, done in gone_links.items():
                self._forget_device(device, done)
            if deleted:
                self._devices_gone(deleted)
        if went_down:
            self.tracker.forget_routes_on(went_down)
        names_refreshed = False
        for mtype, data, start, end, done in events:
            if mtype not in (RTM_NEWNEIGH, RTM_DELNEIGH):
                continue
            try:
                raw = decode_neigh(mtype, data, start, end)
            except MalformedMessage:
                continue
            if raw is None or raw.ifindex in gone_indexes:
                continue
            if raw.ifindex not in self._links.names and not names_refreshed and self._dumper:
                names_refreshed = True
                self._links.update(dump_links(self._dumper))
            if mtype == RTM_DELNEIGH and raw.family != AF_BRIDGE:
                # A deleted neighbour is reported without its MAC and flags.
                key = self._classify.neigh_key(raw)
                if key is not None and key[0] not in gone_links:
                    self._neigh_deleted(key, raw.protocol == RTPROT_EVPND, done)
                continue
            item = self._classify(raw)
            if item is None or item.entry.device in gone_links:
                continue
            if mtype == RTM_DELNEIGH:
                self._fdb_deleted(item, done)
            elif not item.owned and item.static:
                self._foreign_added(item.entry)
        for mtype, data, start, end, done in events:
            if mtype not in (RTM_NEWROUTE, RTM_DELROUTE):
                continue
            try:
                route = decode_route(mtype, data, start, end)
            except MalformedMessage:
                continue
            if route is None or route.oif in gone_indexes:
                continue
            item = self._classify.route(route)
            if item is None or item.entry.device in gone_links:
                continue
            if route.deleted:
                self._route_deleted(item, done)
            elif not item.owned:
                self._foreign_added(item.entry)
        self._host_events(events)
        if new_device or went_up:
            # A (re)created device, or one up again, has nothing of ours yet: what
            # the kernel refused for want of it is worth trying again.
            self.tracker.retry_parked()
        return False

    def _host_events(self, events: list[_Event]) -> None:
        """An address of ours deleted, forwarding switched off: the listener decides."""
        if self.on_host_changed is None:
            return
        why: list[str] = []
        for mtype, data, start, end, _ in events:
            try:
                if mtype == RTM_DELADDR:
                    family, ifindex, proto = addr_proto(data, start, end)
                    if proto == RTPROT_EVPND:
                        name = self._links.names.get(ifindex, str(ifindex))
                        why.append(f"an address of ours deleted from {name}")
                elif mtype == RTM_NEWNETCONF:
                    family, ifindex, forwarding = netconf_forwarding(data, start, end)
                    if ifindex == NETCONFA_IFINDEX_ALL and forwarding == 0:
                        why.append(f"forwarding switched off (family {family})")
            except MalformedMessage:
                continue
        if why:
            try:
                self.on_host_changed("; ".join(dict.fromkeys(why)))
            except Exception:  # the listener's bug must not stop event handling
                log.exception("host change listener failed")

    def _devices_gone(self, names: set[str]) -> None:
        if self.on_devices_gone is not None:
            try:
                self.on_devices_gone(names)
            except Exception:  # the listener's bug must not stop event handling
                log.exception("device deletion listener failed", devices=sorted(names))

    def _forget_device(self, device: str, done: int) -> None:
        """The kernel flushed the device's tables with it; what our writes put since
        (read late: to a new device of the same name) is in the kernel."""
        if self._writer is not None:
            self._writer.refresh_links()
        puts = self._recent_puts
        self.tracker.forget_devices([device], lambda table, key: puts.put_after(done, table, key))
        self._foreign_macs = {k for k in self._foreign_macs if k[0] != device}
        self._foreign_floods = {f for f in self._foreign_floods if f.device != device}
        self._foreign_neighs = {k for k in self._foreign_neighs if k[0] != device}
        self._foreign_routes = {k: d for k, d in self._foreign_routes.items() if d != device}

    def _route_deleted(self, item: Classified, done: int) -> None:
        entry, tracker = item.entry, self.tracker
        assert isinstance(entry, RouteEntry)
        if item.owned and tracker.routes.installed.get(entry.key) == entry:
            if self._recent_puts.put_after(done, "route", entry.key):
                return  # older than our write of it again
            tracker.removed(entry)
            self._count_repair(entry.key in tracker.routes.wanted)
        elif not item.owned and entry.key in self._foreign_routes:
            del self._foreign_routes[entry.key]  # the key is ours to write again

    def _fdb_deleted(self, item: Classified, done: int) -> None:
        entry, tracker = item.entry, self.tracker
        if isinstance(entry, RemoteMac):
            if tracker.macs.installed.get(entry.key) == entry:
                if self._recent_puts.put_after(done, "mac", entry.key):
                    return  # older than our write of it again
                tracker.removed(entry)
                self._count_repair(entry.key in tracker.macs.wanted)
            elif entry.key in self._foreign_macs and not item.owned:
                self._foreign_macs.discard(entry.key)  # the key is ours to write again
            # else: an old notification of our own replace or delete
        elif isinstance(entry, FloodEntry):
            if entry in tracker.floods.installed:
                if self._recent_puts.put_after(done, "flood", entry):
                    return  # older than our write of it again
                tracker.removed(entry)
                self._count_repair(entry in tracker.floods.wanted)
            elif entry in self._foreign_floods:
                self._foreign_floods.discard(entry)

    def _neigh_deleted(self, key: tuple[str, IPAddress], tagged: bool, done: int) -> None:
        tracker = self.tracker
        if key in tracker.neighs.installed:
            if self._recent_puts.put_after(done, "neigh", key):
                return  # older than our write of it again
            tracker.removed_neigh(key)
            self._count_repair(key in tracker.neighs.wanted)
        elif key in self._foreign_neighs and not tagged:
            self._foreign_neighs.discard(key)

    def _count_repair(self, wanted: bool) -> None:
        if wanted:
            self.stats.repairs += 1

    def _foreign_added(self, entry: Entry) -> None:
        """Someone else's static entry appeared, possibly over one of ours."""
        if isinstance(entry, RemoteMac):
            if self.tracker.taken_over(entry):
                self.stats.takeovers += 1
            self._foreign_macs.add(entry.key)
        elif isinstance(entry, FloodEntry):
            # Appending to a flood entry evpnd created clears its extern_learn
            # flag: the notification then names some remote, maybe ours.
            if entry not in self.tracker.floods.installed:
                self._foreign_floods.add(entry)
        elif isinstance(entry, RouteEntry):
            if self.tracker.taken_over(entry):
                self.stats.takeovers += 1
            self._foreign_routes[entry.key] = entry.device
        else:
            if self.tracker.taken_over(entry):
                self.stats.takeovers += 1
            self._foreign_neighs.add(entry.key)
