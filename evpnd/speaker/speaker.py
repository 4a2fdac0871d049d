"""The speaker: ExaBGP as an asyncio service, desired routes in, what ExaBGP says out.

It ties together:

* supervisor.py: ExaBGP's life (spawn or adopt, restart with backoff, stop,
  leave it running for the next daemon);
* outbox.py: our adj-RIB-out (desired vs sent, batching, the window of
  unacknowledged lines, acks, withdraw tokens, prune);
* the relay connection while one is attached: a reader (acks to the outbox,
  ExaBGP's lines to `batches()`) and a writer (the outbox's lines to ExaBGP);
* handover.py: `announced.json`, kept close to what ExaBGP holds for us.

Received: ExaBGP -> relay stdin -> socket -> `batches()`. The relay reads
ExaBGP continuously, because ExaBGP blocks (keepalives included) while its
API process does not read; this side queues at most `bgp.receive_buffer`
bytes of lines and then stops reading the socket until the daemon catches
up, so the relay's own bound is what gives: it drops received UPDATEs, and
its notice becomes a `ReceiveOverflow` event (the daemon asks those peers
for a route refresh). Lines starting with `{` (JSON) or `=` (a frame of raw
UPDATEs) are passed on as bytes; the
typed events of messages.py say what happened to ExaBGP: `SpeakerRestarted`
when it was lost (and every received route with it: ExaBGP sends no
withdrawals when it dies; every local route is announced again), and
`SpeakerAttached` at every attachment with the peers' session states (after
a hand-over the daemon asks the established ones for a route refresh, since
the routes they sent went to the previous daemon).

Hand-over (bgp.restart_hold > 0): `hand_over()` leaves ExaBGP running, its
sessions up and our routes announced; the relay holds on for that many
seconds. The next Speaker on the same state_dir adopts that ExaBGP and
withdraws only what it no longer wants from `announced.json`. That file
follows the sent routes even without a hand-over (handover.AnnouncedRecord),
so a crashed daemon's successor adopts ExaBGP the same way; it is removed
once ExaBGP is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from evpnd.config import Config
from evpnd.model import Route, RouteKey
from evpnd.speaker import encode, handover, relay
from evpnd.speaker.messages import (
    ReceiveOverflow,
    SpeakerAttached,
    SpeakerEvent,
    SpeakerRestarted,
)
from evpnd.speaker.outbox import REFRESH, Outbox, OutboxCounters, RetryPolicy
from evpnd.speaker.supervisor import RelayConnection, RelaySession, SpeakerError, Supervisor

log = structlog.get_logger(__name__)

# One received batch holds at most this many lines, or lines totalling at most
# this many bytes (one line alone may be longer): the daemon computes once per
# batch, and the event loop gets a turn between batches, so the bytes bound is
# the bound on how long the loop is kept. Bytes bound routes: an EVPN NLRI is
# 19 bytes or more (a Type-2 MAC route 35), 26 in base64 (47), so 256 KiB of
# frame text is at most ~10k routes (~5.5k Type-2s: ~45 ms of decoding and RIB
# work on an idle core; JSON lines carry far fewer). 2 MiB batches (~66k routes
# in three frame lines) kept the loop up to 1 s under chaos C3's flood; with
# 256 KiB the throughput is the same (bench/pipeline.py).
BATCH_LINES = 1024
BATCH_BYTES = 256 * 1024
_EOF = object()

Received = bytes | SpeakerEvent  # an ExaBGP line (JSON or a raw frame), or an event


@dataclass(slots=True)
class SpeakerCounters(OutboxCounters):
    restarts: int = 0
    lines_received: int = 0  # lines (JSON or raw frames) handed to batches()
    adoptions: int = 0  # running ExaBGPs taken over from a previous daemon
    receive_waits: int = 0  # times the received queue was full and reading paused
    receive_overflows: int = 0  # relay notices: it dropped received UPDATEs
    update_lines_dropped: int = 0  # lines the relay dropped (a raw frame holds many)
    update_bytes_dropped: int = 0


class ReceiveQueue:
    """What batches() hands out: received lines, bounded in bytes, and events.

    `put_line` waits while `limit` bytes of lines are queued (the reader then
    stops reading the relay, whose own bound gives); events always fit, as
    they are few and must never wait behind a full queue.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0  # bytes of lines queued
        self.waits = 0
        self._items: deque[object] = deque()  # Received items and _EOF
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._discarding = False

    def __len__(self) -> int:
        return len(self._items)

    def put_event(self, item: object) -> None:
        self._items.append(item)
        self._ready.set()

    async def put_line(self, line: bytes) -> None:
        if self._discarding:
            return
        if self.size >= self.limit:
            self.waits += 1
            self._room.clear()
            while self.size >= self.limit and not self._discarding:
                await self._room.wait()
            if self._discarding:
                return
        self.size += len(line)
        self._items.append(line)
        self._ready.set()

    def discard_lines(self) -> None:
        """From now on lines go nowhere (a hand-over: the next daemon refreshes)."""
        self._discarding = True
        self._items = deque(item for item in self._items if not isinstance(item, bytes))
        self.size = 0
        self._room.set()

    async def get_batch(self, max_lines: int, max_bytes: int) -> list[object]:
        """At least one item (waits for it), then whatever is ready, within the bounds:
        at most max_lines items and max_bytes of lines, unless one line alone is longer."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        items = self._items
        batch: list[object] = []
        size = 0
        while items and len(batch) < max_lines:
            item = items[0]
            if item is _EOF:
                if not batch:
                    batch.append(_EOF)  # left in place: every iterator ends
                break
            if isinstance(item, bytes):
                if batch and size + len(item) > max_bytes:
                    break  # the next batch's first line
                size += len(item)
            batch.append(items.popleft())
        self.size -= size
        if self.size < self.limit:
            self._room.set()
        return batch


class Speaker:
    """ExaBGP as an asyncio service: desired routes in, received lines and events out."""

    def __init__(
        self,
        config: Config,
        *,
        state_dir: Path | None = None,
        python: str = sys.executable,
        batch_size: int = 100,
        window: int = 20,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        connect_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        log_level: str = "INFO",
        exec_prefix: Sequence[str] = (),
        hold: float | None = None,
        adopt_timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        """`exec_prefix` wraps the ExaBGP command line, e.g. `ip netns exec NS`
        (it must exec, not fork, so that the PID we watch is ExaBGP's).
        `hold`: seconds ExaBGP waits for the next daemon after hand_over()
        (default: the config's bgp.restart_hold). `retry`: how the routes of a
        line ExaBGP answers `error` are tried again (outbox.RetryPolicy)."""
        self.counters = SpeakerCounters()
        self._outbox = Outbox(batch_size, window, self.counters, retry)
        self.state_dir = Path(state_dir or config.state_dir)
        self._supervisor = Supervisor(
            config, attach=self._attach, detach=self._detach, lost=self._lost,
            state_dir=self.state_dir, python=python, backoff_initial=backoff_initial,
            backoff_max=backoff_max, stable_after=stable_after,
            connect_timeout=connect_timeout, stop_timeout=stop_timeout, log_level=log_level,
            exec_prefix=exec_prefix, hold=hold, adopt_timeout=adopt_timeout,
        )  # fmt: skip
        self.adopted = False  # the current ExaBGP was taken over, not started by us
        self._received = ReceiveQueue(config.bgp.receive_buffer)
        self._retry_timer: asyncio.TimerHandle | None = None  # wakes the writer for retries
        self._writer: asyncio.StreamWriter | None = None
        self._wakeup = asyncio.Event()  # the outbox may have lines to send
        self._idle = asyncio.Event()  # the outbox is idle (flush())
        self._up = asyncio.Event()  # a relay is attached
        self._stopped = asyncio.Event()
        self._record = handover.AnnouncedRecord(self.state_dir, self._sent_routes)
        self._seen_revision = -1  # of the outbox's sent view, when last recorded as changed

    # ------------------------------------------------------------------ API

    @property
    def config(self) -> Config:
        return self._supervisor.config

    @property
    def hold(self) -> float:
        """Seconds the relay keeps ExaBGP and its sessions up for the next daemon."""
        return self._supervisor.hold

    @property
    def pid(self) -> int | None:
        """PID of the running ExaBGP (the launcher), if any."""
        return self._supervisor.pid

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def socket_path(self) -> Path:
        return self._supervisor.socket_path

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        return self._supervisor.exec_prefix

    @property
    def stop_timeout(self) -> float:
        return self._supervisor.stop_timeout

    @property
    def batch_size(self) -> int:
        return self._outbox.batch_size

    @property
    def window(self) -> int:
        return self._outbox.window

    def announced(self) -> dict[RouteKey, str]:
        """The desired routes and the exact token each is (or is about to be) announced with."""
        return self._outbox.announced()

    async def start(self) -> None:
        await self._supervisor.start()  # SpeakerError the second time
        self._record.start()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until ExaBGP is running and its relay is attached."""
        await asyncio.wait_for(self._up.wait(), timeout)

    def announce(self, routes: Iterable[Route]) -> None:
        """Make these routes part of the announced set (non-blocking).

        All or nothing: a route the encoder refuses (EncodeError) leaves the
        announced set as it was.
        """
        self._outbox.announce(routes)
        self._kick()

    def withdraw(self, keys: Iterable[RouteKey]) -> None:
        """Withdraw these routes (non-blocking); unknown keys are ignored."""
        self._outbox.withdraw(keys)
        self._kick()

    def refresh(self, peer: str) -> None:
        """Ask `peer` to send its EVPN routes again (ROUTE-REFRESH; BoRR/EoRR follow)."""
        self._outbox.refresh(peer)
        self._kick()

    def teardown(self, peer: str, subcode: int) -> None:
        """Close the session with `peer` (Cease `subcode`, RFC 4486); ExaBGP reconnects
        at once unless the peer leaves its configuration (`reload`). With graceful
        restart negotiated ExaBGP 5.0.15 closes without a NOTIFICATION."""
        self._outbox.teardown(peer, subcode)
        self._kick()

    def prune(self) -> None:
        """Withdraw what a previous daemon announced and this one does not want.

        Call once every local route is known (after the first local dump):
        until then, a route missing from the desired set may just not be
        learned yet. Takes effect when an adopted ExaBGP attaches, if later.
        """
        self._log_prune(self._outbox.prune())
        self._kick()

    async def reload(self, config: Config) -> None:
        """Apply a new BGP configuration to the running ExaBGP (its own reload).

        ExaBGP re-establishes only the sessions whose neighbor changed, starts
        new ones and closes removed ones. Every route is offered again:
        ExaBGP skips what a peer's adj-rib-out already holds, and a new or
        re-created peer gets everything.
        """
        self._received.limit = config.bgp.receive_buffer  # the relay's: at its next start
        if self._supervisor.reload(config):
            self._outbox.resend_all()
            self._kick()

    async def hand_over(self, timeout: float = 5.0) -> bool:
        """Stop, leaving ExaBGP, its sessions and our routes to the next daemon.

        Falls back to stop() (and returns False) when no hold is configured
        or no ExaBGP is attached.
        """
        if self.hold <= 0 or self._writer is None or self._stopped.is_set():
            await self.stop()
            return False
        # Nobody will read what ExaBGP says from now on (the next daemon asks
        # for a route refresh): never let a full queue hold up the acks.
        self._received.discard_lines()
        with contextlib.suppress(TimeoutError, SpeakerError):
            await self.flush(timeout)
        announced = self._outbox.sent_routes()
        try:
            self._record.write(announced)
        except OSError as exc:  # ENOSPC: the last record written (2 s old at most) stays
            log.error("cannot record the announced routes for the next daemon",
                      error=str(exc), routes=len(announced))  # fmt: skip
        self._stopped.set()
        self._wakeup.set()
        await self._supervisor.leave_running()
        await self._record.stop()
        self._received.put_event(_EOF)
        log.info("speaker handed over: exabgp keeps the sessions", hold=self.hold,
                 routes=len(announced))  # fmt: skip
        return True

    async def flush(self, timeout: float | None = None) -> None:
        """Until every change so far has been acknowledged by a connected ExaBGP.

        Raises TimeoutError after `timeout` seconds, SpeakerError once stopped.
        """
        idle = asyncio.ensure_future(self._idle.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({idle, stopped}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            stopped.cancel()
        if idle in done:
            return
        if stopped in done:
            raise SpeakerError("the speaker was stopped")
        raise TimeoutError(f"{self._outbox.changes_pending} changes and "
                           f"{self._outbox.lines_in_flight} lines pending")  # fmt: skip

    async def batches(self) -> AsyncIterator[list[Received]]:
        """What ExaBGP said and what happened to it, in order, until stop().

        Each batch is everything already received, up to BATCH_LINES lines or
        BATCH_BYTES: the daemon drains a burst of UPDATEs as one change set, and
        the event loop gets a turn between two batches.
        """
        queue = self._received
        while True:
            batch = await queue.get_batch(BATCH_LINES, BATCH_BYTES)
            if batch[0] is _EOF:
                return
            yield batch  # type: ignore[misc]
            # get_batch() returns without suspending while lines are queued: without
            # this, a full queue (up to bgp.receive_buffer) would be drained batch
            # after batch with no turn for timers, the control socket or the relay.
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Terminate ExaBGP (SIGTERM, SIGKILL after stop_timeout) and close everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._wakeup.set()
        self._received.discard_lines()  # the reader must not wait on a queue nobody drains
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        await self._supervisor.stop()
        await self._record.stop()
        self._record.forget()
        self._received.put_event(_EOF)
        log.info("speaker stopped", **self.counters.as_dict())

    # ------------------------------------------- the supervisor's callbacks

    def _attach(self, connection: RelayConnection) -> RelaySession:
        adopted = connection.adopted
        if adopted:
            self.counters.adoptions += 1
        self._writer = connection.writer
        self.adopted = adopted
        # A fresh ExaBGP knows nothing; an adopted one holds what the
        # previous daemon announced, and only differences need sending.
        previous = self._previously_announced() if adopted else []
        try:
            pruned = self._outbox.attach(previous)
        except encode.EncodeError as exc:
            log.warning("unreadable record of the adopted exabgp's routes", error=str(exc))
            pruned = self._outbox.attach()
        self._log_prune(pruned)
        self._record.changed()
        states = tuple(sorted(connection.states.items()))
        self._received.put_event(SpeakerAttached(adopted, states))
        self._up.set()
        self._kick()
        log.info("exabgp relay attached", pid=connection.pid, adopted=adopted,
                 routes=self._outbox.route_count, peers=connection.states)  # fmt: skip
        return RelaySession(
            asyncio.create_task(self._read(connection.reader)),
            asyncio.create_task(self._write_loop(connection.writer)),
        )

    def _detach(self, handing_over: bool) -> None:
        if not handing_over:
            self._record.forget()
        self._writer = None
        self._up.clear()
        self._outbox.detach()
        self._idle.clear()

    def _lost(self, reason: str) -> None:
        self.counters.restarts += 1
        peers = tuple(sorted(str(peer.address) for peer in self.config.bgp.peers))
        self._received.put_event(SpeakerRestarted(self.counters.restarts, reason, peers))

    # ------------------------------------------------------- the connection

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Relay -> acks and received lines, until EOF; returns why it ended."""
        queue = self._received
        while True:
            try:
                raw = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                return "a line from exabgp exceeded the stream limit"
            except ConnectionError as exc:
                return f"relay connection lost: {exc}"
            if not raw:
                return "relay closed the connection"
            if raw.startswith((b"{", b"=")):  # JSON, or a frame of raw UPDATEs
                self.counters.lines_received += 1
                await queue.put_line(raw)  # waits while the daemon is far behind
                self.counters.receive_waits = queue.waits
                continue
            if raw.startswith(relay.CONTROL_PREFIX):
                self._relay_notice(raw)
                continue
            line = raw.decode("utf-8", "replace").strip()
            if line in ("done", "error"):
                self._acknowledge(line == "done")
            elif line:
                log.info("exabgp api output", line=line[:200])

    def _relay_notice(self, raw: bytes) -> None:
        overflow = relay.parse_overflow(raw.rstrip())
        if overflow is None:
            log.warning("unknown notice from the relay", line=raw[:200])
            return
        lines, size, peers = overflow
        if not peers:  # a line the relay could not attribute: every peer re-sends
            peers = tuple(sorted(str(peer.address) for peer in self.config.bgp.peers))
        self.counters.receive_overflows += 1
        self.counters.update_lines_dropped += lines
        self.counters.update_bytes_dropped += size
        self._received.put_event(ReceiveOverflow(peers, lines, size))

    def _acknowledge(self, ok: bool) -> None:
        now = asyncio.get_running_loop().time()
        sent = self._outbox.acknowledge(ok, now)
        if sent is None:
            log.warning("exabgp acknowledged a line we did not send", ok=ok)
            return
        if not ok:
            log.error("exabgp rejected a command line", verb=sent.verb, routes=sent.count,
                      line=sent.preview, retry=sent.verb != REFRESH)  # fmt: skip
            for refused in self._outbox.take_refused():
                log.error("exabgp refused a route every time: given up on until it changes",
                          verb=refused.verb, token=refused.token, failures=refused.failures)
            self._schedule_retry()
        self._kick()

    def _schedule_retry(self) -> None:
        """Wake the writer when the earliest rejected route is due again."""
        due = self._outbox.next_retry_at()
        timer = self._retry_timer
        if due is None or (timer is not None and not timer.cancelled() and timer.when() <= due):
            return
        if timer is not None:
            timer.cancel()
        self._retry_timer = asyncio.get_running_loop().call_at(due, self._retry_due)

    def _retry_due(self) -> None:
        self._retry_timer = None
        self._kick()  # the writer releases what is due and schedules the next

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopped.is_set():
            await self._wakeup.wait()
            self._wakeup.clear()
            lines = self._outbox.next_lines(loop.time())
            self._schedule_retry()
            if lines:
                writer.write("".join(f"{line}\n" for line in lines).encode("ascii"))
            if self._outbox.revision != self._seen_revision:
                self._seen_revision = self._outbox.revision
                self._record.changed()
            self._sync_idle()
            await writer.drain()

    def _kick(self) -> None:
        self._wakeup.set()
        self._sync_idle()

    def _sync_idle(self) -> None:
        if self._outbox.idle:
            self._idle.set()
        else:
            self._idle.clear()

    def _log_prune(self, routes: int) -> None:
        if routes:
            log.info("withdrawing routes the previous daemon announced", routes=routes)

    # ------------------------------------------------------- announced.json

    def _previously_announced(self) -> list[Route]:
        try:
            return handover.read_announced(self.state_dir)
        except FileNotFoundError:
            log.warning("no record of the adopted exabgp's routes: re-announcing ours, "
                        "cannot withdraw the previous daemon's")  # fmt: skip
        except (OSError, handover.HandoverError) as exc:
            log.warning("unreadable record of the adopted exabgp's routes", error=str(exc))
        return []

    def _sent_routes(self) -> list[Route] | None:
        """For announced.json: what the attached ExaBGP holds for us (None: none attached)."""
        return self._outbox.sent_routes() if self._writer is not None else None
