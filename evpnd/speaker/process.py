"""Supervision of ExaBGP: start, feed, drain, restart.

Process model::

    evpnd daemon (this module, asyncio)
      |- unix socket server  <state_dir>/exabgp-api.sock
      '- child: python -m evpnd.speaker.launcher exabgp.conf   (ExaBGP + EVPN commands)
           '- API process: python -m evpnd.speaker.bridge <socket>   (relay)
                 connects back to the socket, says `evpnd-relay <token> <pid>`

* Received: ExaBGP -> relay stdin -> socket -> `lines()`. Both the relay and
  this side read continuously into unbounded buffers, because ExaBGP blocks
  (keepalives included) while its API process does not read.
* Sent: announce()/withdraw() only record the desired state and mark keys
  dirty; a writer turns dirty keys into batch lines (`batch_size` routes per
  line) and keeps at most `window` lines unacknowledged. ExaBGP answers every
  line with a bare `done` or `error`, in order, so acks are matched FIFO.
* The announced token of each key is kept, and a withdrawal repeats it: ExaBGP
  keys its adj-rib-out on the packed NLRI (labels and ESI included).
* When ExaBGP exits (or its relay disconnects) the supervisor kills what is
  left, emits a `restarted` notice into `lines()`, restarts ExaBGP with capped
  exponential backoff and re-announces every local route.
* Hand-over (bgp.restart_hold > 0): `hand_off()` leaves ExaBGP running, its
  sessions up and our routes announced; the relay holds on for that many
  seconds. The next Speaker on the same state_dir adopts that ExaBGP
  (`speaker.json` names it, `announced.json` lists what it announces for us;
  see handoff.py), so a daemon restart or upgrade drops no traffic. Every
  attachment emits an `attached` notice with the peers' session states: the
  daemon asks the established ones for a route refresh, since the routes they
  sent went to the previous daemon.
* ExaBGP's own log (stdout and stderr) goes to `<state_dir>/exabgp.log`, not
  to a pipe: a pipe would break when the daemon that read it hands over. The
  speaker follows that file and passes warnings on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import structlog

import evpnd
from evpnd.config import Config
from evpnd.model import ImetKey, Route, RouteKey
from evpnd.speaker import bridge, encode, exabgp_config, handoff

log = structlog.get_logger(__name__)

# One UPDATE with many NLRIs can become a 460 KB JSON line; leave room.
STREAM_LIMIT = 64 * 1024 * 1024
SOCKET_NAME = "exabgp-api.sock"
CONFIG_NAME = "exabgp.conf"
ENV_FILE_NAME = "exabgp.env"
RECORD_NAME = "speaker.json"
ANNOUNCED_NAME = "announced.json"
LOG_NAME = "exabgp.log"
LOG_MAX_BYTES = 16 * 1024 * 1024  # then the file starts over (ExaBGP appends)
LOG_POLL = 0.25
RECORD_DELAY = 2.0  # announced.json follows the announced set this far behind
SUN_PATH_MAX = 107

NOTICE_TYPE = "speaker"
_EOF = object()


@dataclass(slots=True)
class SpeakerCounters:
    restarts: int = 0
    announced: int = 0  # routes in announce lines ExaBGP acknowledged with `done`
    withdrawn: int = 0  # routes in withdraw lines acknowledged with `done`
    acks: int = 0  # `done` lines
    errors: int = 0  # `error` lines (the whole line was rejected)
    lines_sent: int = 0
    lines_received: int = 0  # JSON lines handed to lines()
    adoptions: int = 0  # running ExaBGPs taken over from a previous daemon
    refreshes: int = 0  # route refreshes asked of peers

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _notice(event: str, **fields: object) -> str:
    # Shaped like ExaBGP's own envelope (`type` names the message) so the
    # daemon can tell it from ExaBGP's lines before decoding.
    return json.dumps({"exabgp": "evpnd", "time": time.time(), "type": NOTICE_TYPE,
                       "speaker": {"event": event, **fields}})  # fmt: skip


def restart_notice(restarts: int, reason: str, peers: Iterable[str]) -> str:
    """The synthetic line put into lines() when ExaBGP was lost.

    Every route received before it is from a session that no longer exists
    (ExaBGP sends no withdrawals when it dies).
    """
    return _notice("restarted", restarts=restarts, reason=reason, peers=sorted(peers))


def attached_notice(adopted: bool, states: dict[str, str]) -> str:
    """Put into lines() each time an ExaBGP's relay attaches.

    `adopted`: the ExaBGP was already running (a previous daemon handed it
    over); `peers` maps each peer address to its last known session state.
    """
    return _notice("attached", adopted=adopted, peers=dict(sorted(states.items())))


def speaker_notice(line: str) -> dict[str, object] | None:
    """The body of a notice made by this module, or None for ExaBGP's own lines."""
    if f'"type": "{NOTICE_TYPE}"' not in line:
        return None
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if message.get("type") != NOTICE_TYPE or not isinstance(message.get("speaker"), dict):
        return None
    return message["speaker"]


def is_restart_notice(line: str) -> bool:
    notice = speaker_notice(line)
    return notice is not None and notice.get("event") == "restarted"


@dataclass(frozen=True, slots=True)
class _Announced:
    token: str
    identity: tuple[object, ...]
    route: Route = field(compare=False)

    @classmethod
    def of(cls, route: Route) -> _Announced:
        return cls(encode.route_token(route), encode.nlri_identity(route), route)


@dataclass(slots=True)
class _Line:
    verb: str
    count: int
    preview: str


REFRESH = "refresh"


class AdoptedProcess:
    """A running ExaBGP that is not our child: watched and signalled through a pidfd.

    Offers the part of asyncio.subprocess.Process the supervisor uses. The
    exit status of a process we did not start is not ours to collect:
    `returncode` becomes -1 once it is gone.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._fd: int | None = os.pidfd_open(pid)  # ProcessLookupError if gone
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(self._fd, self._on_exit)

    def _on_exit(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self.returncode = -1
        if not self._exited.done():
            self._exited.set_result(None)

    async def wait(self) -> int:
        await asyncio.shield(self._exited)
        return -1

    def send_signal(self, sig: int) -> None:
        if self._fd is None:
            raise ProcessLookupError(self.pid)
        signal.pidfd_send_signal(self._fd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


ExabgpProcess = asyncio.subprocess.Process | AdoptedProcess
Connected = tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, str]]


@dataclass(slots=True)
class _Instance:
    process: ExabgpProcess
    token: str
    connected: asyncio.Future[Connected]
    adopted: bool = False
    started: float = field(default_factory=time.monotonic)


class SpeakerError(RuntimeError):
    pass


class Speaker:
    """ExaBGP as an asyncio service: desired routes in, received JSON lines out."""

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
    ) -> None:
        """`exec_prefix` wraps the ExaBGP command line, e.g. `ip netns exec NS`
        (it must exec, not fork, so that the PID we watch is ExaBGP's).
        `hold`: seconds ExaBGP waits for the next daemon after hand_off()
        (default: the config's bgp.restart_hold)."""
        if batch_size < 1 or window < 1:
            raise ValueError("batch_size and window must be positive")
        self.config = config
        self.state_dir = Path(state_dir or config.state_dir)
        self.python = python
        self.batch_size = batch_size
        self.window = window
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.connect_timeout = connect_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.exec_prefix = tuple(exec_prefix)
        self.hold = float(config.bgp.restart_hold if hold is None else hold)
        self.adopt_timeout = adopt_timeout
        self.counters = SpeakerCounters()
        self.adopted = False  # the current ExaBGP was taken over, not started by us

        self._socket_path = self.state_dir / SOCKET_NAME
        if len(os.fsencode(self._socket_path)) > SUN_PATH_MAX:
            raise SpeakerError(f"socket path {self._socket_path} is too long for AF_UNIX")
        self._received: asyncio.Queue[object] = asyncio.Queue()
        # Desired state (what the daemon wants announced) and what the current
        # ExaBGP was told; `_dirty` holds the keys where the two may differ.
        self._routes: dict[RouteKey, _Announced] = {}
        self._sent: dict[RouteKey, _Announced] = {}
        self._dirty: OrderedDict[RouteKey, None] = OrderedDict()
        self._commands: deque[str] = deque()  # other command lines (route refresh)
        self._inflight: deque[_Line] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._instance: _Instance | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._terminating: dict[int, asyncio.Future[None]] = {}
        self._stopping = False
        self._handing_off = False
        self._prune_wanted = False
        self._adoptable: handoff.SpeakerRecord | None = None
        self._log_task: asyncio.Task[None] | None = None
        self._record_task: asyncio.Task[None] | None = None
        self._record_due = asyncio.Event()
        self._stopped = asyncio.Event()
        self._up = asyncio.Event()

    # ------------------------------------------------------------------ API

    @property
    def pid(self) -> int | None:
        """PID of the running ExaBGP child (the launcher), if any."""
        instance = self._instance
        if instance is None or instance.process.returncode is not None:
            return None
        return instance.process.pid

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def socket_path(self) -> Path:
        return self._socket_path

    def announced(self) -> dict[RouteKey, str]:
        """The desired routes and the exact token each is (or is about to be) announced with."""
        return {key: entry.token for key, entry in self._routes.items()}

    async def start(self) -> None:
        if self._supervisor is not None or self._stopping:
            raise SpeakerError("a Speaker starts once")
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._adoptable = self._running_exabgp()
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._on_relay, path=str(self._socket_path), limit=STREAM_LIMIT
        )
        os.chmod(self._socket_path, 0o600)
        self._log_task = asyncio.create_task(
            _follow_log(self.state_dir / LOG_NAME), name="exabgp-log"
        )
        self._record_task = asyncio.create_task(self._record_loop(), name="announced-record")
        self._supervisor = asyncio.create_task(self._supervise(), name="exabgp-supervisor")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until ExaBGP is running and its relay is attached."""
        await asyncio.wait_for(self._up.wait(), timeout)

    def announce(self, routes: Iterable[Route]) -> None:
        """Make these routes part of the announced set (non-blocking).

        All or nothing: a route the encoder refuses (EncodeError) leaves the
        announced set as it was.
        """
        encoded = [(route.key, _Announced.of(route)) for route in routes]
        for key, entry in encoded:
            if self._routes.get(key) != entry:
                self._routes[key] = entry
                self._mark(key)
        self._kick()

    def withdraw(self, keys: Iterable[RouteKey]) -> None:
        """Withdraw these routes (non-blocking); unknown keys are ignored."""
        for key in keys:
            if self._routes.pop(key, None) is not None or key in self._sent:
                self._mark(key)
        self._kick()

    def refresh(self, peer: str) -> None:
        """Ask `peer` to send its EVPN routes again (ROUTE-REFRESH; BoRR/EoRR follow)."""
        self._commands.append(f"neighbor {peer} announce route-refresh l2vpn evpn")
        self.counters.refreshes += 1
        self._idle.clear()
        self._kick()

    def prune(self) -> None:
        """Withdraw what a previous daemon announced and this one does not want.

        Call once every local route is known (after the first local dump):
        until then, a route missing from the desired set may just not be
        learned yet. Takes effect when an adopted ExaBGP attaches, if later.
        """
        self._prune_wanted = True
        if self._writer is not None:
            self._prune_now()

    def _prune_now(self) -> None:
        orphans = [key for key in self._sent if key not in self._routes]
        if orphans:
            log.info("withdrawing routes the previous daemon announced", routes=len(orphans))
        for key in orphans:
            self._mark(key)
        self._kick()

    async def reload(self, config: Config) -> None:
        """Apply a new BGP configuration to the running ExaBGP (its own reload).

        ExaBGP re-establishes only the sessions whose neighbor changed, starts
        new ones and closes removed ones. Every route is offered again:
        ExaBGP skips what a peer's adj-rib-out already holds, and a new or
        re-created peer gets everything.
        """
        self.config = config
        self.hold = float(config.bgp.restart_hold)
        instance = self._instance
        if instance is None or self._writer is None:
            return  # the next start writes the new configuration
        self._write_files()
        self._send_hold(self._writer)
        with contextlib.suppress(ProcessLookupError):
            instance.process.send_signal(signal.SIGUSR1)
        log.info("exabgp reloading its configuration", pid=instance.process.pid)
        self._sent.clear()
        for key in self._routes:
            self._mark(key)
        self._kick()

    async def hand_off(self, timeout: float = 5.0) -> bool:
        """Stop, leaving ExaBGP, its sessions and our routes to the next daemon.

        Falls back to stop() (and returns False) when no hold is configured
        or no ExaBGP is attached.
        """
        if self.hold <= 0 or self._writer is None or self._stopped.is_set():
            await self.stop()
            return False
        with contextlib.suppress(TimeoutError, SpeakerError):
            await self.flush(timeout)
        announced = self._record_announced()
        self._handing_off = True
        self._stopping = True
        self._stopped.set()
        self._wakeup.set()
        # Stop listening first, or the relay would come straight back to us.
        await self._close_server()
        writer = self._writer
        if writer is not None:
            writer.close()
        if self._supervisor is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._supervisor), 5)
            self._supervisor = None
        await self._stop_following_log()
        self._received.put_nowait(_EOF)
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
        raise TimeoutError(f"{len(self._dirty)} changes and {len(self._inflight)} lines pending")

    async def lines(self) -> AsyncIterator[str]:
        """Every JSON line ExaBGP emits, plus restart notices, until stop()."""
        while True:
            item = await self._received.get()
            if item is _EOF:
                self._received.put_nowait(_EOF)  # let other iterators end too
                return
            assert isinstance(item, str)
            yield item

    async def stop(self) -> None:
        """Terminate ExaBGP (SIGTERM, SIGKILL after stop_timeout) and close everything."""
        if self._stopped.is_set():
            return
        self._stopping = True
        self._stopped.set()
        self._wakeup.set()
        instance = self._instance
        if instance is not None:
            await self._terminate(instance.process)
        if self._supervisor is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._supervisor), self.stop_timeout + 5)
            except TimeoutError:
                self._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._supervisor
            self._supervisor = None
        await self._close_server()
        await self._stop_following_log()
        for name in (RECORD_NAME, ANNOUNCED_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / name).unlink()
        self._received.put_nowait(_EOF)
        log.info("speaker stopped", **self.counters.as_dict())

    async def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._socket_path.unlink()

    async def _stop_following_log(self) -> None:
        if self._record_task is not None:
            self._record_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._record_task
            self._record_task = None
        if self._log_task is not None:
            await asyncio.sleep(LOG_POLL)  # ExaBGP's last words
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
            self._log_task = None

    # ------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        backoff = self.backoff_initial
        while not self._stopping:
            started = time.monotonic()
            adopt, self._adoptable = self._adoptable, None
            try:
                reason = await self._run_instance(adopt)
            except OSError as exc:  # could not even start it (missing python, ...)
                reason = f"could not start exabgp: {exc}"
            except Exception as exc:  # a bug here must not end supervision
                log.exception("exabgp supervision failed")
                reason = f"supervisor error: {exc!r}"
            if self._stopping:
                return
            self.counters.restarts += 1
            self._received.put_nowait(
                restart_notice(
                    self.counters.restarts,
                    reason,
                    (str(peer.address) for peer in self.config.bgp.peers),
                )
            )
            if time.monotonic() - started >= self.stable_after:
                backoff = self.backoff_initial
            log.warning("exabgp lost, restarting", reason=reason, delay=backoff,
                        restarts=self.counters.restarts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _spawn(self) -> _Instance:
        token = secrets.token_hex(16)
        config_path, exabgp_env = self._write_files()
        # ExaBGP's log goes to a file it appends to: it must outlive us.
        log_fd = os.open(self.state_dir / LOG_NAME,
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # fmt: skip
        try:
            process = await asyncio.create_subprocess_exec(
                *self.exec_prefix, self.python, "-m", "evpnd.speaker.launcher",
                str(config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                env=self._child_env(exabgp_env, token),
                cwd=str(self.state_dir),
                start_new_session=True,  # the daemon's terminal signals are not ExaBGP's
            )
        finally:
            os.close(log_fd)
        _write_private(
            self.state_dir / RECORD_NAME,
            handoff.record_to_json(handoff.SpeakerRecord(process.pid, token, str(config_path))),
        )
        log.info("exabgp started", pid=process.pid, config=str(config_path))
        return _Instance(process, token, asyncio.get_running_loop().create_future())

    def _running_exabgp(self) -> handoff.SpeakerRecord | None:
        """The ExaBGP a previous daemon left running for us, if any."""
        path = self.state_dir / RECORD_NAME
        try:
            record = handoff.record_from_json(path.read_text())
            cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return None
        except (OSError, handoff.HandoffError) as exc:
            log.warning("ignoring the previous speaker record", file=str(path), error=str(exc))
            return None
        if b"evpnd.speaker.launcher" not in cmdline or os.fsencode(record.config) not in cmdline:
            return None  # that PID is something else by now
        return record

    async def _adopt(self, record: handoff.SpeakerRecord) -> _Instance | None:
        try:
            process = AdoptedProcess(record.pid)
        except ProcessLookupError:
            return None
        log.info("adopting the running exabgp", pid=record.pid)
        return _Instance(process, record.token, asyncio.get_running_loop().create_future(),
                         adopted=True)  # fmt: skip

    async def _run_instance(self, adopt: handoff.SpeakerRecord | None = None) -> str:
        instance = await self._adopt(adopt) if adopt is not None else None
        if instance is None:
            instance = await self._spawn()
        process = instance.process
        self._instance = instance
        exited = asyncio.create_task(process.wait())
        reader_task: asyncio.Task[str] | None = None
        writer_task: asyncio.Task[None] | None = None
        keep = False  # hand-over: ExaBGP stays up for the next daemon
        try:
            if self._stopping:  # stop() came while the child was being spawned
                return "stopping"
            timeout = self.adopt_timeout if instance.adopted else self.connect_timeout
            done, _ = await asyncio.wait(
                {instance.connected, exited}, timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if instance.connected not in done:
                if instance.adopted:
                    return ("the adopted exabgp exited" if exited in done
                            else "the adopted exabgp's relay did not come back in time")
                return (f"exabgp exited with {process.returncode} before its relay connected"
                        if exited in done else "the relay did not connect in time")
            reader, writer, states = instance.connected.result()
            if instance.adopted:
                self.counters.adoptions += 1
                await self._adopted_config(instance)
            self._attach(writer, instance.adopted, states)
            log.info("exabgp relay attached", pid=process.pid, adopted=instance.adopted,
                     routes=len(self._routes), peers=states)
            reader_task = asyncio.create_task(self._read(reader))
            writer_task = asyncio.create_task(self._write_loop(writer))
            done, _ = await asyncio.wait(
                {exited, reader_task, writer_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if self._handing_off and exited not in done:
                keep = True
                return "handed over"
            if reader_task in done and exited not in done:
                # The relay closes first when ExaBGP dies; its exit status
                # says more, and follows within moments.
                done, _ = await asyncio.wait({exited}, timeout=1)
            if exited in done:
                return f"exabgp exited with {process.returncode}"
            if reader_task.done():
                return reader_task.result()
            return f"writing to exabgp failed: {writer_task.exception()!r}"
        finally:
            self._detach()
            if writer_task is not None:
                writer_task.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await writer_task
            if not keep:
                await self._terminate(process)
            if reader_task is not None:
                # The relay flushes what ExaBGP said last, then closes.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(reader_task, 0 if keep else 2)
            if instance.connected.done() and not instance.connected.cancelled():
                instance.connected.result()[1].close()
            else:
                instance.connected.cancel()
            exited.cancel()
            self._instance = None

    async def _adopted_config(self, instance: _Instance) -> None:
        """An adopted ExaBGP runs the previous daemon's configuration: reload if ours differs."""
        path = self.state_dir / CONFIG_NAME
        try:
            before = path.read_text()
        except OSError:
            before = ""
        self._write_files()
        if path.read_text() != before:
            log.info("configuration differs from the adopted exabgp's: reloading it")
            with contextlib.suppress(ProcessLookupError):
                instance.process.send_signal(signal.SIGUSR1)

    async def _terminate(self, process: ExabgpProcess) -> None:
        """SIGTERM, then SIGKILL after stop_timeout; only ever our own child.

        stop() and the supervisor may both ask; the second waits for the first.
        """
        if process.returncode is not None:
            return
        pending = self._terminating.get(process.pid)
        if pending is None:
            pending = asyncio.ensure_future(self._signal_and_wait(process))
            self._terminating[process.pid] = pending
            pending.add_done_callback(lambda _: self._terminating.pop(process.pid, None))
        await asyncio.shield(pending)

    async def _signal_and_wait(self, process: ExabgpProcess) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("exabgp ignored SIGTERM, killing it", pid=process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def _write_files(self) -> tuple[Path, dict[str, str]]:
        setup = exabgp_config.setup(self.config, self.python, self._socket_path, self.log_level)
        config_path = self.state_dir / CONFIG_NAME
        _write_private(config_path, setup.text)
        _write_private(self.state_dir / ENV_FILE_NAME, exabgp_config.env_file_text(setup.env))
        return config_path, setup.env

    def _child_env(self, exabgp_env: dict[str, str], token: str) -> dict[str, str]:
        # Inherited ExaBGP settings would override ours (dotted names win).
        env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
        env.update(exabgp_env)
        env["EXABGP_ENVFILE"] = str(self.state_dir / ENV_FILE_NAME)
        env[bridge.TOKEN_ENV] = token
        env["EVPND_SPEAKER_SUPERVISED"] = "1"
        # The relay and the launcher import evpnd, installed or not.
        source = str(Path(evpnd.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        return env

    # ------------------------------------------------------------ the relay

    async def _on_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        instance = self._instance
        try:
            hello = await asyncio.wait_for(reader.readline(), 5)
        except (TimeoutError, ValueError, ConnectionError):
            writer.close()
            return
        parsed = bridge.parse_hello(hello)
        if (
            instance is None
            or parsed is None
            or not secrets.compare_digest(parsed[0], instance.token)
            or instance.connected.done()
        ):
            log.warning("rejected a relay connection", hello=hello[:80])
            writer.close()
            return
        instance.connected.set_result((reader, writer, parsed[2]))

    def _attach(self, writer: asyncio.StreamWriter, adopted: bool, states: dict[str, str]) -> None:
        self._writer = writer
        self._inflight.clear()
        self._send_hold(writer)
        # A fresh ExaBGP knows nothing; an adopted one holds what the
        # previous daemon announced, and only differences need sending.
        self._sent = self._previously_announced() if adopted else {}
        self._record_due.set()
        self.adopted = adopted
        keys = sorted(self._routes, key=lambda k: 0 if isinstance(k, ImetKey) else 1)
        for key in keys:
            self._mark(key)
        if self._prune_wanted:
            self._prune_now()
        self._received.put_nowait(attached_notice(adopted, states))
        self._up.set()
        self._kick()

    def _send_hold(self, writer: asyncio.StreamWriter) -> None:
        """Tell the relay how long to keep ExaBGP up if we go away (bridge.py)."""
        writer.write(f"#evpnd hold {self.hold:g}\n".encode())

    def _previously_announced(self) -> dict[RouteKey, _Announced]:
        path = self.state_dir / ANNOUNCED_NAME
        try:
            routes = handoff.routes_from_json(path.read_text())
            return {route.key: _Announced.of(route) for route in routes}
        except FileNotFoundError:
            log.warning("no record of the adopted exabgp's routes: re-announcing ours, "
                        "cannot withdraw the previous daemon's")  # fmt: skip
        except (OSError, handoff.HandoffError, encode.EncodeError) as exc:
            log.warning("unreadable record of the adopted exabgp's routes", error=str(exc))
        return {}

    def _record_announced(self) -> list[Route]:
        announced = [entry.route for entry in self._sent.values()]
        _write_private(self.state_dir / ANNOUNCED_NAME, handoff.routes_to_json(announced))
        return announced

    async def _record_loop(self) -> None:
        """Keep announced.json close to what ExaBGP holds for us, even if we crash.

        The next daemon adopts our ExaBGP after a crash as after a hand-over,
        and withdraws from this list what it no longer wants.
        """
        while True:
            await self._record_due.wait()
            await asyncio.sleep(RECORD_DELAY)
            self._record_due.clear()
            if self._writer is not None:
                try:
                    self._record_announced()
                except OSError as exc:
                    log.warning("cannot record the announced routes", error=str(exc))

    def _detach(self) -> None:
        if not self._handing_off:
            # ExaBGP is gone and took our routes along: the record is void.
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / ANNOUNCED_NAME).unlink()
        self._writer = None
        self._up.clear()
        self._idle.clear()
        self._inflight.clear()
        self._commands.clear()
        self._sent.clear()

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Relay -> acks and received lines, until EOF; returns why it ended."""
        put = self._received.put_nowait
        while True:
            try:
                raw = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                return "a line from exabgp exceeded the stream limit"
            except ConnectionError as exc:
                return f"relay connection lost: {exc}"
            if not raw:
                return "relay closed the connection"
            line = raw.decode("utf-8", "replace").strip()
            if line == "done":
                self._acknowledge(ok=True)
            elif line == "error":
                self._acknowledge(ok=False)
            elif line.startswith("{"):
                self.counters.lines_received += 1
                put(line)
            elif line:
                log.info("exabgp api output", line=line[:200])

    def _acknowledge(self, ok: bool) -> None:
        if not self._inflight:
            log.warning("exabgp acknowledged a line we did not send", ok=ok)
            return
        sent = self._inflight.popleft()
        if ok:
            self.counters.acks += 1
            if sent.verb == encode.ANNOUNCE:
                self.counters.announced += sent.count
            elif sent.verb == encode.WITHDRAW:
                self.counters.withdrawn += sent.count
        else:
            self.counters.errors += 1
            log.error("exabgp rejected a command line", verb=sent.verb, routes=sent.count,
                      line=sent.preview)
        self._kick()

    # ------------------------------------------------------------ sending

    def _mark(self, key: RouteKey) -> None:
        self._dirty[key] = None
        self._idle.clear()

    def _kick(self) -> None:
        self._wakeup.set()
        self._update_idle()

    def _update_idle(self) -> None:
        if (self._writer is not None and not self._dirty and not self._inflight
                and not self._commands):
            self._idle.set()
        else:
            self._idle.clear()

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            self._wakeup.clear()
            while len(self._inflight) < self.window:
                line = self._next_line()
                if line is None:
                    break
                text, entry = line
                writer.write(text.encode("ascii") + b"\n")
                self._inflight.append(entry)
                self.counters.lines_sent += 1
            self._update_idle()
            await writer.drain()

    def _next_line(self) -> tuple[str, _Line] | None:
        """Up to batch_size dirty keys of one verb -> one command line.

        Consumes the keys it covers and records them as sent. A key whose NLRI
        changed (another label or ESI) is withdrawn first and stays dirty, so
        the next line announces it: ExaBGP would otherwise keep both.
        """
        if self._commands:
            command = self._commands.popleft()
            return command, _Line(REFRESH, 0, command)
        verb: str | None = None
        tokens: list[str] = []
        while self._dirty and len(tokens) < self.batch_size:
            key = next(iter(self._dirty))
            desired = self._routes.get(key)
            sent = self._sent.get(key)
            if desired == sent:
                del self._dirty[key]
                continue
            if sent is not None and (desired is None or desired.identity != sent.identity):
                op, token = encode.WITHDRAW, sent.token
            else:
                assert desired is not None
                op, token = encode.ANNOUNCE, desired.token
            if verb is None:
                verb = op
            elif op != verb:
                break
            tokens.append(token)
            if op == encode.WITHDRAW:
                del self._sent[key]
                self._record_due.set()
                if desired is None:
                    del self._dirty[key]
            else:
                assert desired is not None
                self._sent[key] = desired
                self._record_due.set()
                del self._dirty[key]
        if verb is None:
            return None
        if verb == encode.ANNOUNCE:
            text = encode.announce_line(tokens)
        else:
            text = encode.withdraw_line(tokens)
        return text, _Line(verb, len(tokens), tokens[0][:120])


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


async def _follow_log(path: Path) -> None:
    """ExaBGP's own log file -> our log: warnings and errors as such, the rest at debug.

    Starts at the current end (an adopted ExaBGP's past is not news) and
    starts the file over when it grows past LOG_MAX_BYTES; ExaBGP appends,
    so it simply carries on at the new end.
    """
    try:
        position = path.stat().st_size
    except FileNotFoundError:
        position = 0
    partial = b""
    while True:
        await asyncio.sleep(LOG_POLL)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < position:  # started over
                    position = 0
                handle.seek(position)
                data = handle.read(1024 * 1024)
                position += len(data)
        except FileNotFoundError:
            position = 0
            continue
        *lines, partial = (partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            lowered = line.lower()
            if "critical" in lowered or "error" in lowered or "traceback" in lowered:
                log.warning("exabgp", line=line)
            else:
                log.debug("exabgp", line=line)
        if position >= LOG_MAX_BYTES and position >= size:
            with contextlib.suppress(OSError):
                os.truncate(path, 0)
            position = 0
