"""Readiness and status for a service manager: the sd_notify(3) protocol, without libsystemd.

systemd (`Type=notify`) passes `$NOTIFY_SOCKET`: a unix datagram socket, a
path or, when it starts with `@`, an abstract name. Each datagram holds
newline-separated `KEY=VALUE` lines: `READY=1` (start-up is done),
`RELOADING=1` (with `MONOTONIC_USEC`, the clock the reload started at),
`STOPPING=1`, and `STATUS=...`, the line `systemctl status` shows.

evpnd says READY=1 once start-up has converged (every peer sent its full
table, or `bgp.eor_timeout` ran out, and the entries no route asks for are
removed; with no peers, once its devices are reconciled), brackets every
config reload with RELOADING=1 ... READY=1, says STOPPING=1 when it begins
to stop, and keeps STATUS current ("converged, 3 of 3 peers up, 2 VNIs").
Without `$NOTIFY_SOCKET` (not under systemd, or
`Type=simple`) every call does nothing. A failed send is logged once and
never stops the daemon: notifications are advisory.

The variable is removed from the environment when it is read (like
sd_notify's `unset_environment`), which `evpnd run` does before the daemon
starts anything: ExaBGP, a child that outlives the daemon across a
hand-over, must not inherit it and speak for the daemon.

The process has one service manager, so it has one notifier (`service()`);
the daemon calls the hooks at the bottom of this module. The text and the
datagrams are built by pure functions (`encode`, `status_text`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)

ENV = "NOTIFY_SOCKET"
STATUS_INTERVAL = 2.0  # seconds between two looks at the daemon's state for STATUS

Address = str | bytes  # a path, or an abstract name as bytes starting with NUL


# ---------------------------------------------------------------- pure core


def parse_address(value: str | None) -> Address | None:
    """`$NOTIFY_SOCKET` -> an AF_UNIX address; None when unset or not a unix socket.

    `/run/systemd/notify` is a path; `@name` is the abstract name `\\0name`.
    (systemd 254+ also knows `vsock:CID:PORT`, for virtual machines: not a
    daemon's case, so not supported here.)
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def encode(fields: Sequence[tuple[str, str]]) -> bytes:
    """One datagram: `KEY=VALUE` lines. A value may not hold a newline (it would end
    the assignment early): newlines become spaces."""
    lines = []
    for key, value in fields:
        if not key or "=" in key or "\n" in key:
            raise ValueError(f"not a notification key: {key!r}")
        lines.append(f"{key}={value.replace(chr(10), ' ')}")
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True, slots=True)
class StatusFacts:
    """What the STATUS line says about the daemon."""

    converged: bool  # every peer's table arrived (or eor_timeout passed): removals allowed
    peers: int  # configured BGP peers
    peers_up: int  # of them, established
    vnis: int  # VNIs served (the config file's and Docker's)
    note: str | None = None  # e.g. a refused reload: said first, until the next good one


def status_text(facts: StatusFacts) -> str:
    """"converged, 3 of 3 peers up, 2 VNIs" (what `systemctl status` shows)."""
    state = "converged" if facts.converged else "waiting for the peers' routes (End-of-RIB)"
    peers = f"{facts.peers_up} of {facts.peers} peers up" if facts.peers else "no BGP peers"
    vnis = f"{facts.vnis} VNI" + ("" if facts.vnis == 1 else "s")
    text = f"{state}, {peers}, {vnis}"
    return f"{facts.note}; {text}" if facts.note else text


# ---------------------------------------------------------------- shell


class Notifier:
    """Sends datagrams to the service manager's socket; without one, does nothing."""

    def __init__(self, address: Address | None) -> None:
        self.address = address
        self._failed = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """From `$NOTIFY_SOCKET`, which is removed so that children do not inherit it."""
        env = os.environ if environ is None else environ
        value = env.pop(ENV, None)
        address = parse_address(value)
        if value and address is None:
            log.warning("NOTIFY_SOCKET is not a unix socket address: not notifying", value=value)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, fields: Sequence[tuple[str, str]]) -> bool:
        if self.address is None:
            return False
        data = encode(fields)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # the manager reads at once; never stall the loop
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._failed:  # once: a manager that went away would repeat it forever
                log.warning("service manager notification failed", address=repr(self.address),
                            error=str(exc))
                self._failed = True
            return False
        self._failed = False
        return True


class ServiceNotifier:
    """The daemon's life as the service manager sees it.

    RELOADING/READY around a reload and STATUS updates are only sent once
    READY=1 was: a reload requested during start-up (SIGHUP, the control
    socket) must not tell the manager that start-up is done. Between
    RELOADING=1 and READY=1 the status says "reloading" and nothing else.
    """

    def __init__(self, notifier: Notifier,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.notifier = notifier
        self._monotonic_ns = monotonic_ns
        self.ready_sent = False
        self.stopping_sent = False
        self.reloading_now = False
        self.last_status: str | None = None
        self.note: str | None = None  # said before the status until the next good reload

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def ready(self, status: str) -> None:
        if self.stopping_sent:
            return
        self.ready_sent = True
        self.reloading_now = False
        self.last_status = status
        self.notifier.send([("READY", "1"), ("STATUS", status)])

    def reloading(self) -> None:
        if not self.ready_sent or self.stopping_sent:
            return
        self.reloading_now = True
        self.last_status = "reloading the config"
        self.notifier.send([("RELOADING", "1"),
                            ("MONOTONIC_USEC", str(self._monotonic_ns() // 1000)),
                            ("STATUS", self.last_status)])

    def reloaded(self, status: str) -> None:
        if not self.ready_sent:
            return
        self.ready(status)

    def status(self, status: str) -> None:
        """STATUS only when it changed."""
        if (not self.ready_sent or self.stopping_sent or self.reloading_now
                or status == self.last_status):
            return
        self.last_status = status
        self.notifier.send([("STATUS", status)])

    def stopping(self, status: str = "stopping") -> None:
        if self.stopping_sent:
            return
        self.stopping_sent = True
        self.last_status = status
        self.notifier.send([("STOPPING", "1"), ("STATUS", status)])


_service: ServiceNotifier | None = None


def service() -> ServiceNotifier:
    """This process's notifier, made from `$NOTIFY_SOCKET` at the first call."""
    global _service
    if _service is None:
        _service = ServiceNotifier(Notifier.from_environment())
    return _service


# ---------------------------------------------------------------- daemon hooks


class _Stats(Protocol):
    converged_at: float | None


class _PeerRecord(Protocol):
    state: str


class _PeerTracker(Protocol):
    def records(self) -> Mapping[Any, _PeerRecord]: ...


class DaemonView(Protocol):
    """What the hooks read (evpnd.daemon.Daemon has it)."""

    cfg: Any  # evpnd.config.Config: bgp.peers, vnis
    stats: _Stats
    peer_tracker: _PeerTracker


_ESTABLISHED = "established"  # evpnd.control.peers.ESTABLISHED (not imported: no cycle)
_REFUSED = "reload refused (the running config is kept, see the log)"


def facts_of(daemon: DaemonView, note: str | None = None) -> StatusFacts:
    configured = {p.address for p in daemon.cfg.bgp.peers}
    up = sum(1 for peer, rec in daemon.peer_tracker.records().items()
             if peer in configured and rec.state == _ESTABLISHED)
    return StatusFacts(converged=daemon.stats.converged_at is not None,
                       peers=len(configured), peers_up=up, vnis=len(daemon.cfg.vnis), note=note)


def started(daemon: DaemonView) -> None:
    """The daemon runs: control socket listening, devices reconciled, speaker started."""
    notifier = service()
    notifier.ready(status_text(facts_of(daemon, notifier.note)))


def reloading(daemon: DaemonView) -> None:
    service().reloading()


def reloaded(daemon: DaemonView, applied: bool) -> None:
    """After a reload: READY=1 again, whether the new config was applied or refused (the
    daemon runs either way; `evpnd reload`, systemd's ExecReload, reports the refusal)."""
    notifier = service()
    notifier.note = None if applied else _REFUSED
    notifier.reloaded(status_text(facts_of(daemon, notifier.note)))


def stopping(daemon: DaemonView) -> None:
    service().stopping()


async def report_status(daemon: DaemonView, interval: float = STATUS_INTERVAL) -> None:
    """Keep STATUS current for the daemon's life (a task the daemon cancels at stop).

    It looks every `interval` seconds instead of being told: the facts are a few
    counters, and the daemon then needs no call at every peer change. (A failure
    ends only this task; the daemon logs it.)
    """
    notifier = service()
    if not notifier.enabled:
        return
    while True:
        await asyncio.sleep(interval)
        notifier.status(status_text(facts_of(daemon, notifier.note)))
