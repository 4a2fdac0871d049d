"""Local endpoint learning, the asyncio shell: kernel notifications -> `LocalEvent`s.

One non-blocking multicast socket (RTNLGRP_LINK + RTNLGRP_NEIGH) read with
`loop.add_reader`, one blocking socket for dumps run in a worker thread. The
rules live in the pure `localtable.LocalTable`; this module reads, drains,
resyncs (start-up, netlink overrun, watched-set change) and queues events.

The queue of events is bounded (`queue_max`): once the consumer is that far
behind, the learner stops reading the socket (nothing more is applied to the
table, so the table and what the consumer was told stay consistent) until
the consumer has taken half of it. Meanwhile the kernel queues the
notifications in the socket's receive buffer; if that overruns too, the
ENOBUFS that follows is a full resync, which emits exactly the differences.
Nothing is lost for good and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass, field
from typing import cast

import structlog

from evpnd.dataplane.events import LocalEvent, WatchedVni
from evpnd.dataplane.localtable import (
    LocalSnapshot,
    LocalTable,
    resync_events,
    table_from_messages,
)
from evpnd.dataplane.netlink.bpf import learner_filter
from evpnd.dataplane.netlink.routesocket import LINK_DUMP_REQUEST, Dumped, RouteSocket
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    NDMSG,
    RTM_DELNEIGH,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_NEWNEIGH,
    RTMGRP_LINK,
    RTMGRP_NEIGH,
    RTPROT_EVPND,
    LinkMsg,
    MalformedMessage,
    NeighMsg,
    decode,
    device_fdb_entry,
    fdb_glance,
    iter_messages,
)

__all__ = ["DEFAULT_RCVBUF", "LearnerCounters", "LocalLearner"]

log = structlog.get_logger(__name__)

# The echo of each remote MAC evpnd installs (its bridge-FDB companion) still
# reaches this socket; 8 MiB overran during a 100k install (each overrun is a
# full dump), 64 MiB (as the reconciler's monitor) did not. Only a limit: the
# memory is used only while the loop is behind.
DEFAULT_RCVBUF = 64 * 1024 * 1024
_DUMP_BUFSIZE = 1024 * 1024
_DUMP_TIMEOUT = 10.0
# Messages handled per reader callback before yielding to other tasks.
_READ_BATCH = 2048
# Upper bound on stale messages discarded before a dump, so a storm cannot pin us.
_DRAIN_LIMIT = 1_000_000
# Events queued for the consumer before reading pauses (a resync's events may
# go past it: they are bounded by the size of the local tables).
DEFAULT_QUEUE_MAX = 65_536
_DUMPS = (
    (RTM_GETLINK, LINK_DUMP_REQUEST),
    (RTM_GETNEIGH, NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0, 0, 0)),
    (RTM_GETNEIGH, NDMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0)),
    (RTM_GETNEIGH, NDMSG.pack(AF_INET6, 0, 0, 0, 0, 0, 0)),
)


@dataclass(slots=True)
class LearnerCounters:
    messages: int = 0
    ignored: int = 0  # of `messages`: skipped before decoding (echoes of our own writes)
    events: int = 0
    by_event: dict[str, int] = field(default_factory=dict)  # event class name -> count
    resyncs: int = 0
    overruns: int = 0
    parse_errors: int = 0
    dump_retries: int = 0
    queue_full: int = 0  # times the consumer was queue_max events behind: reading paused


def _decode_dumped(mtype: int, data: bytes, start: int, end: int) -> NeighMsg | LinkMsg | None:
    if mtype == RTM_NEWNEIGH:
        glance = fdb_glance(data, start, end)
        if glance is not None and device_fdb_entry(glance):
            return None  # half a 100k-remote-MAC dump, never local
    return decode(mtype, data, start, end)


def _dump_all(sock: RouteSocket) -> Dumped[NeighMsg | LinkMsg]:
    """Links, then the bridge FDB and the IPv4/IPv6 neighbour tables (blocking)."""
    result: Dumped[NeighMsg | LinkMsg] = Dumped()
    for mtype, request in _DUMPS:
        # An interrupted dump is taken after a few tries: later events correct it.
        dumped = sock.dump(mtype, request, _decode_dumped, accept_interrupted=True)
        result.items += dumped.items
        result.parse_errors += dumped.parse_errors
        result.retries += dumped.retries
    return result


def _open_sockets(netns: str | None, rcvbuf: int) -> tuple[RouteSocket, RouteSocket]:
    """(multicast socket, dump socket) in `netns` (None: ours)."""
    # FORCE lifts net.core.rmem_max (we are root); a big buffer is what keeps
    # a burst of FDB changes from overrunning us.
    events = RouteSocket(netns, groups=RTMGRP_LINK | RTMGRP_NEIGH, rcvbuf=rcvbuf)
    try:
        events.setblocking(False)
        try:
            # The echo of every vxlan entry evpnd writes is dropped in the
            # kernel: it never fills the buffer nor costs a recv().
            events.attach_filter(learner_filter())
        except OSError as exc:
            log.warning("no socket filter on the learner socket", error=str(exc))
        dump = RouteSocket(netns, rcvbuf=_DUMP_BUFSIZE, timeout=_DUMP_TIMEOUT)
    except BaseException:
        events.close()
        raise
    return events, dump


_STOP = object()


class LocalLearner:
    """Learns local endpoints of the watched VNIs from the kernel of one namespace.

    Usage::

        async with LocalLearner([WatchedVni(100, "br100", "vxlan100")]) as learner:
            async for event in learner.events():
                ...

    The first events describe what is already there and end with
    `Resynced("initial")`. `events()` is meant for exactly one consumer.
    """

    def __init__(
        self,
        vnis: Iterable[WatchedVni],
        netns: str | None = None,
        *,
        rcvbuf: int = DEFAULT_RCVBUF,
        include_link_local: bool = False,
        owned_protocols: Collection[int] = (RTPROT_EVPND,),
        queue_max: int = DEFAULT_QUEUE_MAX,
    ) -> None:
        self.netns = netns
        self.rcvbuf = rcvbuf
        self.queue_max = max(1, queue_max)
        self.include_link_local = include_link_local
        self.owned_protocols = frozenset(owned_protocols)
        self.counters = LearnerCounters()
        self._table = self._new_table(vnis)  # validates the watched set early
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._sock: RouteSocket | None = None
        self._dumper: RouteSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._backlogged = False  # the consumer is queue_max events behind: not reading
        self._closed = False
        self._lock = asyncio.Lock()
        self._resync_task: asyncio.Task[None] | None = None

    def _new_table(self, vnis: Iterable[WatchedVni]) -> LocalTable:
        return LocalTable(
            vnis,
            include_link_local=self.include_link_local,
            owned_protocols=self.owned_protocols,
        )

    # -- lifecycle

    async def __aenter__(self) -> LocalLearner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._sock is not None:
            raise RuntimeError("LocalLearner already started")
        self._loop = asyncio.get_running_loop()
        # Subscribe before the first dump: a change made during the dump is
        # then either in the dump or queued on the socket, never lost.
        self._sock, self._dumper = _open_sockets(self.netns, self.rcvbuf)
        try:
            await self._resync("initial")
        except BaseException:
            self._close_sockets()
            raise

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        # Wait out an in-flight dump (bounded by the dump socket's timeout)
        # rather than closing the socket under the worker thread's feet.
        async with self._lock:
            self._close_sockets()
        if self._resync_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._resync_task
        self._queue.put_nowait(_STOP)

    def _close_sockets(self) -> None:
        self._stop_reading()
        if self._sock is not None:
            self._sock.close()
        if self._dumper is not None:
            self._dumper.close()

    # -- consumer API

    async def events(self) -> AsyncIterator[LocalEvent]:
        """Local events until the learner stops; re-raises a fatal socket error."""
        while True:
            item = await self._queue.get()
            if self._backlogged and self._queue.qsize() <= self.queue_max // 2:
                self._catch_up()
            if item is _STOP:
                self._queue.put_nowait(_STOP)  # a second iterator also ends
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(LocalEvent, item)

    def __aiter__(self) -> AsyncIterator[LocalEvent]:
        return self.events()

    def snapshot(self) -> LocalSnapshot:
        return self._table.snapshot()

    @property
    def vnis(self) -> list[WatchedVni]:
        return sorted(self._table.vnis.values())

    def resolved(self) -> dict[int, tuple[int | None, int | None]]:
        return self._table.resolved()

    def pending(self) -> int:
        """Events emitted but not yet taken by the consumer."""
        return self._queue.qsize()

    async def update_vnis(self, vnis: Iterable[WatchedVni]) -> None:
        """Change the watched set; returns once the resulting events are queued."""
        new = list(vnis)
        self._new_table(new)  # validate before touching anything
        await self._resync("config", new)

    async def resync(self) -> None:
        """Re-read the kernel tables now and emit whatever differs."""
        await self._resync("requested")

    # -- internals

    def _emit(self, events: Iterable[LocalEvent]) -> None:
        for event in events:
            self._queue.put_nowait(event)
            self.counters.events += 1
            kind = type(event).__name__
            self.counters.by_event[kind] = self.counters.by_event.get(kind, 0) + 1

    def _backlog_full(self) -> bool:
        """Stop reading while the consumer is queue_max events behind."""
        if self._queue.qsize() < self.queue_max:
            return False
        if not self._backlogged:
            self._backlogged = True
            self.counters.queue_full += 1
            log.warning("local events not taken: pausing the netlink reader",
                        queued=self._queue.qsize(), netns=self.netns)  # fmt: skip
        self._stop_reading()
        return True

    def _catch_up(self) -> None:
        """The consumer took half of the backlog: read again (an overrun meanwhile is
        reported by the socket, and resyncs)."""
        self._backlogged = False
        if not self._closed and not self._lock.locked():
            self._start_reading()
            self._on_readable()  # what queued meanwhile, without waiting for more

    def _start_reading(self) -> None:
        if self._backlogged:
            return
        if not self._reading and self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._on_readable)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None or self._closed:
            return
        for _ in range(_READ_BATCH):
            try:
                data = sock.recv_datagram()
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.counters.overruns += 1
                    log.warning("netlink overrun, resyncing", netns=self.netns)
                    self._stop_reading()
                    self._resync_task = asyncio.ensure_future(self._resync_guarded("overrun"))
                    return
                self._fail(exc)
                return
            if data is None:
                return
            self._handle(data)
            if self._backlog_full():
                return

    def _handle(self, data: bytes) -> None:
        table = self._table
        try:
            for mtype, _flags, _seq, _pid, a, b in iter_messages(data):
                self.counters.messages += 1
                if mtype in (RTM_NEWNEIGH, RTM_DELNEIGH) and table.ignores(mtype, data, a, b):
                    self.counters.ignored += 1
                    continue
                try:
                    msg = decode(mtype, data, a, b)
                except MalformedMessage as exc:
                    self.counters.parse_errors += 1
                    log.debug("skipping malformed netlink message", error=str(exc))
                    continue
                if msg is not None:
                    self._emit(table.apply(msg))
        except MalformedMessage as exc:
            self.counters.parse_errors += 1
            log.debug("skipping malformed netlink datagram", error=str(exc))

    def _fail(self, exc: BaseException) -> None:
        log.error("local learner stopped", netns=self.netns, error=str(exc))
        self._stop_reading()
        self._queue.put_nowait(exc)

    async def _resync_guarded(self, reason: str) -> None:
        try:
            await self._resync(reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    def _drain(self) -> None:
        """Discard what the socket queued: the dump that follows supersedes it."""
        assert self._sock is not None
        self._sock.discard_queued(_DRAIN_LIMIT)

    async def _resync(self, reason: str, vnis: Iterable[WatchedVni] | None = None) -> None:
        async with self._lock:
            if self._closed or self._dumper is None:
                return
            self._stop_reading()
            try:
                self._drain()
                watched = list(vnis) if vnis is not None else list(self._table.vnis.values())
                known = self._table.snapshot()  # a copy: safe to read from the worker
                dumper = self._dumper
                table, events, result = await asyncio.to_thread(
                    self._dump_and_diff, dumper, watched, known, reason
                )
                if self._closed:
                    return
                self._table = table
                self.counters.resyncs += 1
                self.counters.parse_errors += result.parse_errors
                self.counters.dump_retries += result.retries
                self._emit(events)
                log.info(
                    "local tables resynced",
                    reason=reason,
                    netns=self.netns,
                    changes=len(events) - 1,
                    macs=len(table.snapshot().macs),
                )
            finally:
                if not self._closed and not self._backlog_full():
                    self._start_reading()

    def _dump_and_diff(
        self, dumper: RouteSocket, watched: list[WatchedVni], known: LocalSnapshot, reason: str
    ) -> tuple[LocalTable, list[LocalEvent], Dumped[NeighMsg | LinkMsg]]:
        # Worker thread: only touches the dump socket and fresh objects.
        result = _dump_all(dumper)
        table = table_from_messages(
            watched,
            result.items,
            include_link_local=self.include_link_local,
            owned_protocols=self.owned_protocols,
        )
        return table, resync_events(known, table.snapshot(), reason), result
