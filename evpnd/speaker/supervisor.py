"""ExaBGP's life: spawn or adopt it, check its relay in, restart it, stop it.

Process model::

    evpnd daemon (asyncio)
      |- unix socket server  <state_dir>/exabgp-api.sock
      '- child: python -m evpnd.speaker.launcher exabgp.conf   (ExaBGP + EVPN commands)
           '- API process: python -m evpnd.speaker.relay <socket>   (relay.py)
                 connects back to the socket, says `evpnd-relay <token> <pid> <states>`

* Only the relay of the ExaBGP we started (or adopted) is accepted: its hello
  carries the token we gave that ExaBGP's environment.
* While a relay is attached the supervisor hands the connection to the
  speaker (speaker.py), which reads and writes it. When ExaBGP exits, or its
  relay disconnects, the supervisor kills what is left (only ever our own
  child), tells the speaker, and starts ExaBGP again with capped exponential
  backoff.
* Hand-over: `leave_running()` closes our end but leaves ExaBGP and its
  sessions up; the relay holds on for `hold` seconds (the `#evpnd hold` line
  sent at every attachment and reload). The next supervisor on the same
  state_dir adopts that ExaBGP: `speaker.json` names it (handover.py).
* The process itself (its files, start, pidfd adoption, SIGTERM/SIGKILL, its
  log file, which the supervisor follows while it runs): exabgp_process.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from evpnd import statefiles
from evpnd.config import Config
from evpnd.speaker import exabgp_process, handover, relay
from evpnd.speaker.exabgp_process import AdoptedProcess, ExabgpProcess

log = structlog.get_logger(__name__)

# One UPDATE with many NLRIs can become a 460 KB JSON line; leave room.
STREAM_LIMIT = 64 * 1024 * 1024
SOCKET_NAME = "exabgp-api.sock"
SUN_PATH_MAX = 107
HELLO_TIMEOUT = 5.0


class SpeakerError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class RelayConnection:
    """An attached relay: our end of the socket, and what its hello said."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    pid: int  # ExaBGP's
    adopted: bool  # a previous daemon started that ExaBGP
    states: dict[str, str]  # peer address -> last known session state


@dataclass(frozen=True, slots=True)
class RelaySession:
    """The speaker's work on a connection: both tasks end when the connection does."""

    reading: asyncio.Task[str]  # returns why the relay went away
    writing: asyncio.Task[None]


@dataclass(slots=True)
class _Instance:
    process: ExabgpProcess
    token: str
    connected: asyncio.Future[RelayConnection]
    adopted: bool = False


class Supervisor:
    def __init__(
        self,
        config: Config,
        *,
        attach: Callable[[RelayConnection], RelaySession],
        detach: Callable[[bool], None],
        lost: Callable[[str], None],
        state_dir: Path,
        python: str = sys.executable,
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
        """The speaker is called back: `attach` with each relay
        connection, to start reading and writing it; `detach(handing_over)` once
        that ExaBGP is no longer ours to talk to (also when its relay never came);
        `lost(reason)` when ExaBGP is gone and a new one is about to start.
        `exec_prefix` wraps the ExaBGP command line, e.g. `ip netns exec NS`
        (it must exec, not fork, so that the PID we watch is ExaBGP's).
        `hold`: seconds ExaBGP waits for the next daemon after leave_running()
        (default: the config's bgp.restart_hold)."""
        self.config = config
        self.state_dir = state_dir
        self.python = python
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.connect_timeout = connect_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.exec_prefix = tuple(exec_prefix)
        self.hold = float(config.bgp.restart_hold if hold is None else hold)
        self.adopt_timeout = adopt_timeout
        self.socket_path = state_dir / SOCKET_NAME
        if len(os.fsencode(self.socket_path)) > SUN_PATH_MAX:
            raise SpeakerError(f"socket path {self.socket_path} is too long for AF_UNIX")
        self._attach = attach
        self._detach = detach
        self._lost = lost
        self._server: asyncio.AbstractServer | None = None
        self._instance: _Instance | None = None
        self._connection: RelayConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._log_task: asyncio.Task[None] | None = None
        self._terminating: dict[int, asyncio.Future[None]] = {}
        self._adoptable: handover.SpeakerRecord | None = None
        self._stopping = False
        self._stopped = asyncio.Event()  # wakes the backoff wait
        self._handing_over = False

    @property
    def pid(self) -> int | None:
        """PID of the running ExaBGP (the launcher), if any."""
        instance = self._instance
        if instance is None or instance.process.returncode is not None:
            return None
        return instance.process.pid

    async def start(self) -> None:
        if self._task is not None or self._stopping:
            raise SpeakerError("a Speaker starts once")
        statefiles.secure_dir(self.state_dir)
        self._adoptable = exabgp_process.left_running(self.state_dir)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._on_relay, path=str(self.socket_path), limit=STREAM_LIMIT
        )
        os.chmod(self.socket_path, 0o600)
        self._log_task = asyncio.create_task(
            exabgp_process.follow_log(self.state_dir / exabgp_process.LOG_NAME), name="exabgp-log"
        )
        self._task = asyncio.create_task(self._supervise(), name="exabgp-supervisor")

    def reload(self, config: Config) -> bool:
        """Have the running ExaBGP re-read a new configuration (SIGUSR1: its own reload).

        Returns False when no ExaBGP is attached: the next start uses it.
        """
        self.config = config
        self.hold = float(config.bgp.restart_hold)
        instance, connection = self._instance, self._connection
        if instance is None or connection is None:
            return False
        try:
            self._write_files()
        except OSError as exc:  # ENOSPC, an unsafe state_dir: keep what runs
            log.error("cannot write the exabgp configuration: exabgp keeps its current one",
                      state_dir=str(self.state_dir), error=str(exc))  # fmt: skip
            return False
        connection.writer.write(relay.hold_line(self.hold))
        exabgp_process.reload(instance.process)
        log.info("exabgp reloading its configuration", pid=instance.process.pid)
        return True

    async def stop(self) -> None:
        """Terminate ExaBGP (SIGTERM, SIGKILL after stop_timeout) and close everything."""
        self._stopping = True
        self._stopped.set()
        instance = self._instance
        if instance is not None:
            await self._terminate(instance.process)
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.stop_timeout + 5)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self._close_server()
        await self._stop_following_log()
        handover.forget(self.state_dir, handover.RECORD_NAME)

    async def leave_running(self) -> None:
        """Stop, leaving ExaBGP and its sessions to the next daemon (hand-over)."""
        self._handing_over = True
        self._stopping = True
        self._stopped.set()
        # Stop listening first, or the relay would come straight back to us.
        await self._close_server()
        if self._connection is not None:
            self._connection.writer.close()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            self._task = None
        await self._stop_following_log()

    async def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _stop_following_log(self) -> None:
        if self._log_task is not None:
            await asyncio.sleep(exabgp_process.LOG_POLL)  # ExaBGP's last words
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
            self._lost(reason)
            if time.monotonic() - started >= self.stable_after:
                backoff = self.backoff_initial
            log.warning("exabgp lost, restarting", reason=reason, delay=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _run_instance(self, adopt: handover.SpeakerRecord | None = None) -> str:
        instance = self._adopt(adopt) if adopt is not None else None
        if instance is None:
            instance = await self._spawn()
        process = instance.process
        self._instance = instance
        exited = asyncio.create_task(process.wait())
        session: RelaySession | None = None
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
            connection = instance.connected.result()
            if instance.adopted:
                self._reload_if_changed(instance)
            # Before any command line: how long the relay keeps ExaBGP if we go.
            connection.writer.write(relay.hold_line(self.hold))
            self._connection = connection
            session = self._attach(connection)
            done, _ = await asyncio.wait(
                {exited, session.reading, session.writing}, return_when=asyncio.FIRST_COMPLETED
            )
            if self._handing_over and exited not in done:
                keep = True
                return "handed over"
            if session.reading in done and exited not in done:
                # The relay closes first when ExaBGP dies; its exit status
                # says more, and follows within moments.
                done, _ = await asyncio.wait({exited}, timeout=1)
            if exited in done:
                return f"exabgp exited with {process.returncode}"
            if session.reading.done():
                return session.reading.result()
            return f"writing to exabgp failed: {session.writing.exception()!r}"
        finally:
            self._connection = None
            self._detach(self._handing_over)
            if session is not None:
                session.writing.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await session.writing
            if not keep:
                await self._terminate(process)
            if session is not None:
                # The relay flushes what ExaBGP said last, then closes.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(session.reading, 0 if keep else 2)
            if instance.connected.done() and not instance.connected.cancelled():
                instance.connected.result().writer.close()
            else:
                instance.connected.cancel()
            exited.cancel()
            self._instance = None

    async def _spawn(self) -> _Instance:
        token = secrets.token_hex(16)
        config_path, exabgp_env = self._write_files()
        process = await exabgp_process.spawn(
            config_path, exabgp_env, token,
            state_dir=self.state_dir, python=self.python, exec_prefix=self.exec_prefix,
            relay_buffer=self.config.bgp.receive_buffer,
        )  # fmt: skip
        return _Instance(process, token, asyncio.get_running_loop().create_future())

    def _adopt(self, record: handover.SpeakerRecord) -> _Instance | None:
        try:
            process = AdoptedProcess(record.pid)
        except ProcessLookupError:
            return None
        log.info("adopting the running exabgp", pid=record.pid)
        return _Instance(process, record.token, asyncio.get_running_loop().create_future(),
                         adopted=True)  # fmt: skip

    def _reload_if_changed(self, instance: _Instance) -> None:
        """An adopted ExaBGP runs the previous daemon's configuration: reload if ours differs."""
        path = self.state_dir / exabgp_process.CONFIG_NAME
        try:
            before = path.read_text()
        except OSError:
            before = ""
        try:
            self._write_files()
            changed = path.read_text() != before
        except OSError as exc:  # ENOSPC: the adopted one keeps running as it is
            log.error("cannot write the exabgp configuration: the adopted exabgp keeps its own",
                      state_dir=str(self.state_dir), error=str(exc))  # fmt: skip
            return
        if changed:
            log.info("configuration differs from the adopted exabgp's: reloading it")
            exabgp_process.reload(instance.process)

    async def _terminate(self, process: ExabgpProcess) -> None:
        """SIGTERM, then SIGKILL after stop_timeout; only ever our own child.

        stop() and the supervision loop may both ask; the second waits for the first.
        """
        if process.returncode is not None:
            return
        pending = self._terminating.get(process.pid)
        if pending is None:
            pending = asyncio.ensure_future(exabgp_process.end(process, self.stop_timeout))
            self._terminating[process.pid] = pending
            pending.add_done_callback(lambda _: self._terminating.pop(process.pid, None))
        await asyncio.shield(pending)

    def _write_files(self) -> tuple[Path, dict[str, str]]:
        return exabgp_process.write_files(
            self.config, self.state_dir, self.python, self.socket_path, self.log_level
        )

    async def _on_relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A relay says hello: accepted only from the ExaBGP we started or adopt, once."""
        instance = self._instance
        try:
            hello = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
        except (TimeoutError, ValueError, ConnectionError):
            writer.close()
            return
        parsed = relay.parse_hello(hello)
        if (
            instance is None
            or parsed is None
            or not secrets.compare_digest(parsed[0], instance.token)
            or instance.connected.done()
        ):
            log.warning("rejected a relay connection", hello=hello[:80])
            writer.close()
            return
        instance.connected.set_result(
            RelayConnection(reader, writer, instance.process.pid, instance.adopted, parsed[2])
        )

