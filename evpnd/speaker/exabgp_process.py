"""One ExaBGP as an operating-system process: its files, start, adoption, end, log.

What the supervisor (supervisor.py) does with these is its business: when to
start one, whether to adopt, when to give up on one.

* Files in state_dir: `exabgp.conf` and `exabgp.env` (from exabgp_config.py),
  `exabgp.log`, and the hand-over record `speaker.json` (handover.py).
* ExaBGP's own log (stdout and stderr) goes to `exabgp.log`, not to a pipe: a
  pipe would break when the daemon that read it hands over. `follow_log()`
  passes its warnings on.
* An ExaBGP a previous daemon left running is not our child: `AdoptedProcess`
  watches and signals it through a pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import structlog

import evpnd
from evpnd import statefiles
from evpnd.config import Config
from evpnd.speaker import exabgp_config, handover, relay

log = structlog.get_logger(__name__)

CONFIG_NAME = "exabgp.conf"
ENV_FILE_NAME = "exabgp.env"
LOG_NAME = "exabgp.log"
LOG_MAX_BYTES = 16 * 1024 * 1024  # then the file starts over (ExaBGP appends)
LOG_POLL = 0.25
LAUNCHER_MODULE = "evpnd.speaker.launcher"


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


def write_files(
    config: Config, state_dir: Path, python: str, socket_path: Path, log_level: str
) -> tuple[Path, dict[str, str]]:
    """ExaBGP's configuration and environment files; returns the config path and the env."""
    setup = exabgp_config.setup(config, python, socket_path, log_level)
    config_path = state_dir / CONFIG_NAME
    handover.write_private(config_path, setup.text)
    handover.write_private(state_dir / ENV_FILE_NAME, exabgp_config.env_file_text(setup.env))
    return config_path, setup.env


async def spawn(
    config_path: Path,
    exabgp_env: dict[str, str],
    token: str,
    *,
    state_dir: Path,
    python: str,
    exec_prefix: Sequence[str] = (),
    relay_buffer: int | None = None,
) -> asyncio.subprocess.Process:
    """Start ExaBGP (the launcher) and record it in speaker.json for a later adoption.

    `relay_buffer`: bytes its relay queues for the daemon before it drops
    received UPDATEs (bgp.receive_buffer; None: the relay's default).
    """
    # ExaBGP's log goes to a file it appends to: it must outlive us.
    log_fd = statefiles.open_private(state_dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        process = await asyncio.create_subprocess_exec(
            *exec_prefix, python, "-m", LAUNCHER_MODULE, str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            env=_child_env(state_dir, exabgp_env, token, relay_buffer),
            cwd=str(state_dir),
            start_new_session=True,  # the daemon's terminal signals are not ExaBGP's
        )
    finally:
        os.close(log_fd)
    record = handover.SpeakerRecord(process.pid, token, str(config_path))
    try:
        handover.write_record(state_dir, record)
    except OSError as exc:
        # It runs (and is ours to supervise); only a later adoption needs the record.
        log.error("cannot record the running exabgp: the next evpnd cannot adopt it",
                  file=str(state_dir / handover.RECORD_NAME), error=str(exc))  # fmt: skip
    log.info("exabgp started", pid=process.pid, config=str(config_path))
    return process


def _child_env(
    state_dir: Path, exabgp_env: dict[str, str], token: str, relay_buffer: int | None = None
) -> dict[str, str]:
    # Inherited ExaBGP settings would override ours (dotted names win).
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
    env.update(exabgp_env)
    env["EXABGP_ENVFILE"] = str(state_dir / ENV_FILE_NAME)
    env[relay.TOKEN_ENV] = token
    if relay_buffer is not None:
        env[relay.BUFFER_ENV] = str(relay_buffer)
    env["EVPND_SPEAKER_SUPERVISED"] = "1"
    # The relay and the launcher import evpnd, installed or not.
    source = str(Path(evpnd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
    return env


def left_running(state_dir: Path) -> handover.SpeakerRecord | None:
    """The ExaBGP a previous daemon left running in state_dir, if it still runs."""
    try:
        record = handover.read_record(state_dir)
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None
    except (OSError, handover.HandoverError) as exc:
        log.warning("ignoring the previous speaker record",
                    file=str(state_dir / handover.RECORD_NAME), error=str(exc))  # fmt: skip
        return None
    if LAUNCHER_MODULE.encode() not in cmdline or os.fsencode(record.config) not in cmdline:
        return None  # that PID is something else by now
    return record


def reload(process: ExabgpProcess) -> None:
    """ExaBGP's own reload: it re-reads its configuration, re-making only changed sessions."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGUSR1)


async def end(process: ExabgpProcess, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; waits until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        log.warning("exabgp ignored SIGTERM, killing it", pid=process.pid)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def follow_log(path: Path) -> None:
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
            with os.fdopen(statefiles.open_private(path, os.O_RDONLY), "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size < position:  # started over
                    position = 0
                handle.seek(position)
                data = handle.read(1024 * 1024)
                position += len(data)
        except FileNotFoundError:
            position = 0
            continue
        except OSError as exc:  # a symlink or a foreign file where the log should be
            log.warning("cannot follow the exabgp log", file=str(path), error=str(exc))
            await asyncio.sleep(LOG_POLL * 40)
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
                fd = statefiles.open_private(path, os.O_WRONLY)
                try:
                    os.ftruncate(fd, 0)
                finally:
                    os.close(fd)
            position = 0
