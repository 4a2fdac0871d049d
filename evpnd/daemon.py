"""`evpnd run`: the wiring between the kernel, the RIB and ExaBGP.

Data flows one way (ARCHITECTURE.md has the picture):
  local endpoints (netlink, MQTT, Docker) -> RIB -> our routes -> speaker
  speaker batches (raw UPDATE frames or JSON lines) -> decoder -> RIB
      -> RibChanges -> wanted kernel entries (desired.py) -> reconciler -> kernel

The RIB, the decoders, route building and the desired-state mapping are
pure; this module only moves their results between the asyncio tasks that
own sockets and processes. Everything the speaker has ready is drained as one
batch: consecutive UPDATEs become one RIB change set, and the reconciler
writes whatever is pending once per write cycle, so a burst of UPDATEs costs
a few large kernel writes instead of one per route.

Start-up keeps the kernel as the previous run left it (the reconciler holds
removals) until every peer has sent its full table again (End-of-RIB, or
the EoRR that ends a route refresh) or bgp.eor_timeout passes, so a
restart does not drop traffic while routes are re-learned.

Stopping (devices and owned FDB/neighbour entries always stay in place, see
the README):
* SIGTERM with bgp.restart_hold > 0: hand-over. ExaBGP keeps the sessions
  and our routes for that many seconds; the next `evpnd run` adopts it,
  refreshes the peers' routes and withdraws only what it no longer wants.
  Peers never see us go, so a restart or upgrade drops no traffic.
* SIGINT, or SIGTERM with restart_hold 0: withdraw our routes, stop ExaBGP.
SIGHUP (or `reload` on the control socket): reload the config file; VNI
changes apply without touching BGP, peer changes go through ExaBGP's own
reload, which re-establishes only the sessions whose settings changed.

Operations: the control socket (`evpnd show`), the Prometheus endpoint and
MQTT start once the state_dir lock is ours (a previous daemon that is
handing over still owns the socket and the port until then) and stop before
it is released. Their glue is in evpnd/services.py.

Protection against peers and faults (each decision is pure, the timers are here):
* Graceful restart (evpnd/graceful.py): a lost session of a peer that
  negotiated it keeps its routes installed, stale, for its restart time; they
  go at its End-of-RIB (what was not re-sent), on timeout, or at once when its
  new OPEN says it did not keep forwarding. Each peer has its own wait: a
  second loss (or a second ExaBGP death) supersedes the first one's timer.
* Duplicate MACs (the RIB, `dad:`): logged, counted, published; with a
  freeze, a timer here releases them when the freeze ends.
* Route limits (the RIB refuses routes past a peer's `max_routes`): at the
  limit with `max_routes_action: teardown` the session is closed (Cease/1)
  and the peer left out of ExaBGP's configuration for `max_routes_restart`
  seconds (ExaBGP would reconnect at once), then put back.

Docker (`docker.enabled`): the network driver starts after the lock too,
recovers its networks and endpoints (nothing in the kernel changes for
them), and the daemon then runs with the effective config: `self.cfg` is the
config file's VNIs plus the Docker networks' (`self.file_cfg` is the file
alone). A network created or removed later is applied like a reload adding
or removing a VNI (`_apply_config`). On a SIGTERM hand-over the driver just
stops listening: the next daemon recovers the same state. Glue in
evpnd/docker/glue.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import structlog

from evpnd import config as config_mod
from evpnd import sdnotify
from evpnd.control.peers import PeerTracker
from evpnd.control.server import ControlError, ControlServer
from evpnd.dataplane import links
from evpnd.dataplane.events import (
    LocalEvent,
    LocalIpLearned,
    LocalIpRemoved,
    LocalMacAdded,
    LocalMacRemoved,
    Resynced,
)
from evpnd.dataplane.learner import LocalLearner
from evpnd.dataplane.reconciler import Reconciler
from evpnd.derived import (
    gateways,
    l3_devices,
    l3_policy,
    speaker_identity,
    vni_devices,
    vni_policies,
    watched_vnis,
)
from evpnd.desired import apply_rib_changes, desired_state
from evpnd.docker.glue import DaemonHooks, DockerGlue, VniConflict
from evpnd.graceful import Action, Deadline, Flush, GracefulHelper, KeepStale, Sweep
from evpnd.metrics.looplag import LoopLagMonitor
from evpnd.model import IPAddress, Route, RouteKey, address_order
from evpnd.originate import mac_key, mac_route, readvertised, static_routes
from evpnd.rib import (
    LIMIT_EXCEEDED,
    PERMANENT,
    DadPolicy,
    DuplicateMac,
    LocalAdvert,
    ReceivedUpdate,
    Rib,
    RibChanges,
    RouteLimit,
    RouteLimitEvent,
)
from evpnd.services import MetricsEndpoint, MqttBridge
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import (
    DecodeError,
    EndOfRib,
    Message,
    Notification,
    PeerOpen,
    PeerState,
    ReceiveOverflow,
    RouteRefresh,
    RouteUpdate,
    SpeakerAttached,
    SpeakerRestarted,
    SpeakerShutdown,
)
from evpnd.speaker.speaker import Received, Speaker, SpeakerCounters
from evpnd.speaker.wire import FRAME_VERB, WireDecoder
from evpnd.statefiles import open_private, secure_dir

log = structlog.get_logger(__name__)

FLUSH_TIMEOUT = 2.0  # seconds a Docker Join waits for ExaBGP to take the container's routes
SWEEP_PART = 5000  # stale routes removed per event-loop turn (about as many as a batch)
CEASE_MAX_PREFIXES = 1  # RFC 4486: Cease subcode "Maximum Number of Prefixes Reached"


def dad_policy(cfg: config_mod.Config) -> DadPolicy | None:
    """The RIB's duplicate-address detection from the `dad:` section (None: off)."""
    dad = cfg.dad
    if not dad.enabled:
        return None
    freeze = None if dad.freeze is False else PERMANENT if dad.freeze == "permanent" \
        else float(dad.freeze)
    return DadPolicy(dad.max_moves, float(dad.window), freeze)


def route_limits(cfg: config_mod.Config) -> dict[IPAddress, RouteLimit]:
    """Each peer's route limit (`max_routes` 0: none)."""
    return {p.address: RouteLimit(p.max_routes, p.max_routes_warning)
            for p in cfg.bgp.peers if p.max_routes > 0}  # fmt: skip



@dataclass
class DaemonStats:
    started: float = field(default_factory=time.time)
    local_events: int = 0
    updates: int = 0
    decode_errors: int = 0
    peer_downs: int = 0
    speaker_restarts: int = 0
    speaker_adopted: bool = False
    converged_at: float | None = None


class Daemon:
    def __init__(
        self,
        cfg: config_mod.Config,
        config_path: str | Path | None = None,
        *,
        converge_timeout: float | None = None,
    ) -> None:
        self.file_cfg = cfg  # the config file as read; self.cfg adds the Docker networks' VNIs
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.converge_timeout = float(
            cfg.bgp.eor_timeout if converge_timeout is None else converge_timeout
        )
        self.stats = DaemonStats()
        self.decoder = Decoder()
        self.wire = WireDecoder(self.decoder.stats)  # raw UPDATE frames; the same counters
        self.rib = Rib(cfg.vtep.address, vni_policies(cfg), dad=dad_policy(cfg))
        self.rib.set_route_limits(route_limits(cfg))
        self.graceful = GracefulHelper(cfg.bgp.graceful_restart > 0, self.converge_timeout)
        self._grace_timers: dict[IPAddress, asyncio.TimerHandle] = {}
        self._freeze_timer: asyncio.TimerHandle | None = None
        # Peers left out of ExaBGP's configuration after a route-limit teardown:
        # peer -> when they come back (time.monotonic()).
        self.held_down: dict[IPAddress, float] = {}
        self.devices = vni_devices(cfg)
        self.l3 = l3_devices(cfg)  # the L3VNI's devices (README "Routing between segments")
        self.rib.set_l3_policy(l3_policy(cfg))
        self.reconciler = Reconciler(
            None, desired_state(self.rib, self.devices, self.l3), hold_removals=True
        )
        self.speaker = self._new_speaker(cfg)
        self.learner = LocalLearner(watched_vnis(cfg))
        self._stop = asyncio.Event()
        self._hand_over = False
        self._reload = asyncio.Event()
        self._lock_fd: int | None = None
        self._eor_waiting: set[IPAddress] = set()  # peers whose full table is due
        # Peers asked for a route refresh after the relay dropped some of their
        # UPDATEs: until its EoRR, an End-of-RIB of theirs ends an incomplete table.
        self._refresh_due: set[IPAddress] = set()
        # Peers asked for a route refresh whose BoRR has not come yet: an EoRR before
        # it ends an earlier refresh (one a killed daemon asked for, whose BoRR and
        # routes the relay dropped while no daemon was attached), not ours.
        self._refresh_asked: set[IPAddress] = set()
        self._local_routes: dict[RouteKey, Route] = {}
        self._static_keys: set[RouteKey] = set()  # Type-3s and gateways: from the config
        self._tasks: list[asyncio.Task[None]] = []  # services: run for the daemon's life
        self._one_shots: set[asyncio.Task[None]] = set()
        self._reload_lock = asyncio.Lock()  # SIGHUP and the control socket both reload
        # A VNI device someone deletes comes back without a reload.
        self.device_repair = links.DeviceRepair(lambda: self.cfg, lock=self._reload_lock)
        self.reconciler.on_devices_gone = self.device_repair.devices_gone
        # ... and a gateway address or forwarding someone took away (routing between segments).
        self.reconciler.on_host_changed = self.device_repair.host_changed
        # Operations: `evpnd show`, metrics, MQTT (started in run(), after the lock).
        self.peer_tracker = PeerTracker()
        self.control = ControlServer.for_daemon(self, reload=self.reload,
                                                clear_duplicate=self.clear_duplicate)
        self.loop_lag = LoopLagMonitor(cfg.metrics.lag_interval)
        self.metrics = MetricsEndpoint(self)
        self.mqtt = MqttBridge(lambda: self.cfg, self.rib, self._on_rib_changes)
        self.docker = DockerGlue(DaemonHooks(
            file_config=lambda: self.file_cfg, rib=lambda: self.rib, apply=self._on_rib_changes,
            vnis_changed=self._docker_vnis_changed, flush=self._flush_speaker,
        ))  # fmt: skip

    def _new_speaker(self, cfg: config_mod.Config) -> Speaker | NoSpeaker:
        # Without peers (static or multicast flooding only) there is nothing
        # for ExaBGP to do, and it would refuse every command.
        if not cfg.bgp.peers:
            return NoSpeaker()
        return Speaker(self._speaker_config(cfg), state_dir=cfg.state_dir)

    def _speaker_config(self, cfg: config_mod.Config) -> config_mod.Config:
        """What ExaBGP runs: the config without the peers held down after a teardown."""
        held = self.held_down
        if not held:
            return cfg
        peers = [p for p in cfg.bgp.peers if p.address not in held]
        return cfg.model_copy(update={"bgp": cfg.bgp.model_copy(update={"peers": peers})})

    # -- lifecycle ----------------------------------------------------------

    def request_stop(self, hand_over: bool) -> None:
        self._hand_over = hand_over
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, True)
        loop.add_signal_handler(signal.SIGINT, self.request_stop, False)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        await self._lock_state_dir()
        await self._start_operations()
        await self._start_docker()
        async with self.docker.serialized():  # Docker calls wait until we run
            await self._rebase(self.docker.effective(self.file_cfg, strict=False))
            await self._apply_devices(self.cfg)
            self.cfg = await self._with_router_mac(self.cfg)
            await self.reconciler.start()
            await self.learner.start()
            await self.speaker.start()
            self._announce_static(self.cfg)
            self.docker.activate()
        self._eor_waiting = {p.address for p in self.cfg.bgp.peers}
        if not self._eor_waiting:
            self._converged("no BGP peers configured")
        self._tasks = [
            asyncio.create_task(self._local_loop(), name="local-learning"),
            asyncio.create_task(self._bgp_loop(), name="bgp-input"),
            asyncio.create_task(self._reload_loop(), name="reload"),
        ]
        self._one_shot(self._converge(), "converge")
        log.info("evpnd running", vnis=[v.vni for v in self.cfg.vnis],
                 docker_vnis=[v.vni for v in self.docker.vnis()],
                 peers=[str(p.address) for p in self.cfg.bgp.peers])
        self._one_shot(sdnotify.report_status(self), "service-status")
        failed = await self._until_stopped()
        for task in failed:
            error = repr(task.exception()) if not task.cancelled() and task.exception() \
                else "ended on its own"
            log.error("task failed", task=task.get_name(), error=error)
            self.mqtt.error("task_failed", error, task=task.get_name())
        await self.shutdown()
        return 1 if failed else 0

    async def _until_stopped(self) -> list[asyncio.Task[None]]:
        """Until a stop signal, or until one of the service tasks ends (a failure:
        they run for the daemon's life). A task replaced meanwhile (a speaker
        restart re-creates bgp-input) is not an end."""
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            while True:
                done, _ = await asyncio.wait([stop, *self._tasks],
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if stop in done:
                    return []
                ended = [t for t in done if t in self._tasks]
                if ended:
                    return ended
        finally:
            stop.cancel()

    def _one_shot(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A task that is meant to end; its failure is logged, never silent."""

        def finished(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("task failed", task=name, error=repr(task.exception()))

        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(finished)
        self._one_shots.add(task)
        task.add_done_callback(self._one_shots.discard)

    async def shutdown(self) -> None:
        sdnotify.stopping(self)
        # First: no Docker call may change anything while we stop. Its devices,
        # veths and state stay; the next daemon recovers them.
        await self.docker.stop()
        handed_over = False
        speaker = self.speaker
        if (self._hand_over and isinstance(speaker, Speaker) and speaker.hold > 0
                and speaker.connected):
            log.info("evpnd stopping: handing the BGP sessions over", hold=speaker.hold)
            await self._cancel_tasks()
            handed_over = await speaker.hand_over()
        if not handed_over:
            log.info("evpnd stopping: withdrawing local routes")
            self.speaker.withdraw(list(self._local_routes))
            with contextlib.suppress(Exception):
                await self.speaker.flush(timeout=5)
            await self._cancel_tasks()
            await self.speaker.stop()
        await self._stop_operations()
        await self.learner.stop()
        await self.device_repair.stop()
        await self.reconciler.stop()
        self._unlock_state_dir()
        log.info("evpnd stopped; devices and installed entries left in place",
                 sessions="held for the next evpnd" if handed_over else "closed")

    async def _start_operations(self) -> None:
        try:
            await self.control.start()
        except (ControlError, OSError) as exc:
            self._unlock_state_dir()
            raise DaemonError(f"control socket: {exc}") from None
        self.loop_lag.start()
        await self.mqtt.start()
        problem = await self.metrics.start(self.cfg.metrics)
        if problem:
            self.mqtt.error("metrics_endpoint", problem)

    async def _start_docker(self) -> None:
        try:
            await self.docker.start(self.file_cfg)
        except Exception as exc:
            await self._stop_operations()
            self._unlock_state_dir()
            raise DaemonError(f"docker network driver: {exc}") from None

    async def _rebase(self, cfg: config_mod.Config) -> None:
        """Before anything runs: the RIB, devices and learner take `cfg` (the effective one)."""
        self.cfg = cfg
        self.devices = vni_devices(cfg)
        self.l3 = l3_devices(cfg)
        self._on_rib_changes(self.rib.reconfigure(vni_policies(cfg), gateways(cfg)))
        self._on_rib_changes(self.rib.set_l3_policy(l3_policy(cfg)))
        self.learner = LocalLearner(watched_vnis(cfg))
        await self.reconciler.set_desired(desired_state(self.rib, self.devices, self.l3))

    async def _stop_operations(self) -> None:
        await self.control.stop()
        await self.metrics.stop()
        await self.loop_lag.stop()
        await self.mqtt.stop()

    async def _cancel_tasks(self) -> None:
        tasks = [*self._tasks, *self._one_shots]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _lock_state_dir(self, wait: float = 15.0) -> None:
        """One daemon per state_dir: a second would fight over ExaBGP and the kernel.

        Waits a little, for a previous daemon that is still handing over. The
        directory must be evpnd's alone (statefiles.secure_dir: created 0700,
        refused when another user owns it or may write to it), and the lock is
        never opened through a symlink.
        """
        state_dir = Path(self.cfg.state_dir)
        try:
            secure_dir(state_dir)
            fd = open_private(state_dir / "evpnd.lock", os.O_RDWR | os.O_CREAT)
        except OSError as exc:
            raise DaemonError(f"state_dir: {exc}") from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise DaemonError(
                        f"another evpnd is running with state_dir {state_dir}"
                    ) from None
                await asyncio.sleep(0.1)
        self._lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:  # a full state_dir: the lock holds, the pid is only a hint
            log.warning("cannot write the pid into the lock file", state_dir=str(state_dir),
                        error=str(exc))

    def _unlock_state_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    # -- devices ------------------------------------------------------------

    async def _apply_devices(self, cfg: config_mod.Config) -> None:
        result = await links.reconcile(cfg)
        for line in result.lines():
            (log.info if line.startswith("done") else log.warning)("device", change=line)

    async def _with_router_mac(self, cfg: config_mod.Config) -> config_mod.Config:
        """`cfg` with the L3VNI's router MAC, read from its bridge unless configured: what
        our routes carry (and what a recreated bridge is given back)."""
        l3 = cfg.l3vni
        if l3 is None or l3.router_mac is not None:
            return cfg
        mac = await links.bridge_mac(l3.bridge_name)
        if mac is None:
            log.warning("no router MAC: the L3VNI bridge is missing; routes go out without "
                        "the L3VNI", bridge=l3.bridge_name)
            return cfg
        return cfg.model_copy(update={"l3vni": l3.model_copy(update={"router_mac": mac})})

    # -- local endpoints -> routes --------------------------------------------

    async def _local_loop(self) -> None:
        async for event in self.learner:
            self.stats.local_events += 1
            changes = self._on_local(event)
            if changes is not None:
                self._on_rib_changes(changes)

    def _on_local(self, event: LocalEvent) -> RibChanges | None:
        if isinstance(event, LocalMacAdded):
            log.debug("local mac", vni=event.vni, mac=event.mac, port=event.port)
            changes, advert = self.rib.local_mac_added(event.vni, event.mac, sticky=event.static,
                                                       now=time.monotonic())
            self.mqtt.local_mac(event.vni, event.mac, learned=True, port=event.port,
                                sticky=event.static, seq=None if advert is None else advert.seq)
            return changes
        if isinstance(event, LocalMacRemoved):
            log.debug("local mac gone", vni=event.vni, mac=event.mac)
            if self.mqtt.registered(event.vni, event.mac) or \
                    self.docker.registered(event.vni, event.mac):
                return None  # still registered over MQTT or by Docker: stays advertised
            self.mqtt.local_mac(event.vni, event.mac, learned=False, port=event.port)
            return self.rib.local_mac_removed(event.vni, event.mac, now=time.monotonic())
        if isinstance(event, LocalIpLearned):
            log.debug("local ip", vni=event.vni, mac=event.mac, ip=str(event.ip))
            changes, _ = self.rib.local_mac_added(event.vni, event.mac, event.ip,
                                                  now=time.monotonic())
            return changes
        if isinstance(event, LocalIpRemoved):
            if self.docker.registered(event.vni, event.mac, event.ip):
                return None  # a container's address: stays advertised while it is there
            return self.rib.local_mac_removed(event.vni, event.mac, event.ip,
                                              now=time.monotonic())
        if isinstance(event, Resynced):
            log.info("local endpoints resynced", reason=event.reason, macs=event.macs,
                     ips=event.ips)
            if event.reason == "initial":
                # Every local route is known now (once MQTT's registrations are
                # read too): what a previous daemon announced beyond them can go.
                self._one_shot(self._prune(), "prune")
        return None

    async def _prune(self) -> None:
        await self.mqtt.initial_sync()
        self.speaker.prune()

    # -- BGP input -> RIB ---------------------------------------------------------

    async def _bgp_loop(self) -> None:
        async for batch in self.speaker.batches():
            self._on_received(batch)

    def _on_received(self, batch: list[Received]) -> None:
        """One batch from the speaker: consecutive UPDATEs become one RIB change set,
        in order with everything else (a session that went down in between, EoR)."""
        updates: list[ReceivedUpdate] = []
        for item in batch:
            messages = self._decode(item) if isinstance(item, bytes) else [item]
            for message in messages:
                if isinstance(message, RouteUpdate):
                    updates.append((message.peer, message.announced, message.withdrawn))
                    continue
                if updates:
                    self._apply_updates(updates)
                    updates = []
                if isinstance(message, SpeakerRestarted):
                    self._on_speaker_restart(message.reason)
                elif isinstance(message, SpeakerAttached):
                    self._on_attached(message)
                elif isinstance(message, ReceiveOverflow):
                    self._on_receive_overflow(message)
                else:
                    self._on_message(message)
        if updates:
            self._apply_updates(updates)

    def _apply_updates(self, updates: list[ReceivedUpdate]) -> None:
        now = time.monotonic()
        self.stats.updates += len(updates)
        # Per-peer counters once per run of UPDATEs, not once per UPDATE.
        counts: dict[IPAddress, list[int]] = {}
        for peer, announced, withdrawn in updates:
            count = counts.get(peer)
            if count is None:
                count = counts[peer] = [0, 0, 0]
            count[0] += 1
            count[1] += len(announced)
            count[2] += len(withdrawn)
        at = time.time()
        for peer, (n, announced_n, withdrawn_n) in counts.items():
            self.peer_tracker.updates_received(peer, n, announced_n, withdrawn_n, at)
        self._on_rib_changes(self.rib.apply_updates(updates, now=now))

    def _decode(self, line: bytes) -> list[Message]:
        if line.startswith(FRAME_VERB):
            return self.wire.decode_frame(line)
        return self.decoder.decode(line)

    def _on_message(self, message: Message) -> None:
        self.peer_tracker.observe(message)
        if isinstance(message, PeerState):
            log.info("peer state", peer=str(message.peer), state=message.state,
                     reason=message.reason)
            self.mqtt.peer_state(message.peer, message.state, message.reason)
            if message.state == "up":
                self._on_grace(self.graceful.session_up(message.peer, time.monotonic()))
            elif message.state == "down":
                self.stats.peer_downs += 1
                self._refresh_due.discard(message.peer)  # it sends its full table when back
                self._refresh_asked.discard(message.peer)
                # ExaBGP sends no withdrawals for a lost session: its routes go now,
                # or (graceful restart) stay, stale, until the peer is back.
                self._on_grace(self.graceful.session_down(
                    message.peer, time.monotonic(), graceful=message.peer not in self.held_down
                ))  # fmt: skip
                if message.peer in self.held_down:
                    # Torn down by us: whatever came meanwhile goes too.
                    self._on_rib_changes(self.rib.peer_down(message.peer))
        elif isinstance(message, PeerOpen):
            cap = message.graceful_restart
            log.info("peer open", peer=str(message.peer), hold_time=message.hold_time,
                     graceful_restart=None if cap is None else cap.restart_time,
                     evpn_forwarding_preserved=None if cap is None else cap.evpn)
            self.graceful.open_received(message.peer, cap)
        elif isinstance(message, EndOfRib):
            if message.is_evpn and message.peer in self._refresh_due:
                log.info("end-of-rib after dropped updates: waiting for the route refresh",
                         peer=str(message.peer))
            elif message.is_evpn:
                self._table_complete(message.peer, "end-of-rib")
        elif isinstance(message, RouteRefresh):
            if message.is_evpn and message.subtype == "begin":
                # RFC 7313: what the peer does not re-send before EoRR is gone.
                self._refresh_asked.discard(message.peer)
                self.rib.mark_stale(message.peer)
            elif message.is_evpn and message.subtype == "end":
                if message.peer in self._refresh_asked:
                    log.info("end of an earlier route refresh: waiting for ours",
                             peer=str(message.peer))
                    return
                self._refresh_due.discard(message.peer)
                self._table_complete(message.peer, "route refresh")
        elif isinstance(message, Notification):
            log.warning("bgp notification", peer=str(message.peer), code=message.code,
                        subcode=message.subcode, message=message.message,
                        direction=message.direction)
        elif isinstance(message, DecodeError):
            self.stats.decode_errors += 1
            log.warning("malformed input dropped", peer=str(message.peer),
                        reason=message.reason, detail=message.detail)
            self.mqtt.error("malformed_input", message.detail, reason=message.reason,
                            peer=str(message.peer))
        elif isinstance(message, SpeakerShutdown):
            log.info("exabgp reported shutdown")

    def _table_complete(self, peer: IPAddress, why: str) -> None:
        self._on_grace(self.graceful.end_of_rib(peer))
        swept = self._sweep_stale(peer)
        if swept:
            log.info("stale routes not re-sent removed", peer=str(peer), routes=swept, why=why)
        self._eor_waiting.discard(peer)
        if not self._eor_waiting and self.reconciler.holding:
            self._converged(f"{why} from every peer")

    def _sweep_stale(self, peer: IPAddress) -> int:
        """Remove the peer's routes it did not send again; how many. A large sweep (a
        refresh of 100k routes of which most went) goes in parts with the event loop's
        turn between them, as a received batch does, rather than in one long stretch."""
        routes = self.rib.stale_count(peer)
        self._on_rib_changes(self.rib.sweep_stale(peer, now=time.monotonic(),
                                                  limit=SWEEP_PART))  # fmt: skip
        mark = self.rib.stale_mark(peer)
        if mark is not None:
            self._one_shot(self._sweep_rest(peer, mark), "stale sweep")
        return routes

    async def _sweep_rest(self, peer: IPAddress, mark: int) -> None:
        # Ends when nothing of this mark is left, or a newer refresh, restart or session
        # loss has taken over the peer's stale routes (its own end sweeps them).
        while True:
            await asyncio.sleep(0)
            if self.rib.stale_mark(peer) != mark:
                return
            self._on_rib_changes(self.rib.sweep_stale(peer, now=time.monotonic(),
                                                      limit=SWEEP_PART))  # fmt: skip

    def _on_receive_overflow(self, event: ReceiveOverflow) -> None:
        # The relay dropped UPDATEs while we were behind: the peers re-send their
        # tables (BoRR ... EoRR, where what they no longer hold is swept).
        log.warning("received updates dropped while evpnd was behind: refreshing routes",
                    peers=list(event.peers), lines=event.lines, bytes=event.size)
        for peer in event.peers:
            self.speaker.refresh(peer)
            address = ip_address(peer)
            self._refresh_due.add(address)
            self._refresh_asked.add(address)
            if self.reconciler.holding:
                self._eor_waiting.add(address)  # start-up is not over until the EoRR

    def _on_attached(self, event: SpeakerAttached) -> None:
        self.mqtt.speaker_attached(dict(event.peers))  # every peer's state is known now
        if not event.adopted:
            return
        # The established sessions sent their routes to the previous daemon:
        # ask for them again (BoRR ... EoRR ends the wait).
        self.stats.speaker_adopted = True
        states = dict(event.peers)
        up = [p for p, s in states.items() if s == "up"]
        log.info("took over the running exabgp: refreshing routes", peers_up=up)
        self.peer_tracker.adopted(states)
        self.mqtt.peers_adopted(up)
        self.graceful.adopted([ip_address(p) for p in up])
        for peer in up:
            self.speaker.refresh(peer)
            self._refresh_asked.add(ip_address(peer))

    def _on_speaker_restart(self, reason: str) -> None:
        self.stats.speaker_restarts += 1
        self.peer_tracker.speaker_restarted(reason=reason)
        self.mqtt.speaker_restarted(self.stats.speaker_restarts, reason)
        # Each peer's routes are stale until it re-sends them (End-of-RIB) or its
        # own wait ends: a later restart supersedes an earlier one's wait.
        peers = sorted({*self.rib.peers(), *(p.address for p in self.cfg.bgp.peers)},
                       key=address_order)  # fmt: skip
        self._on_grace(self.graceful.speaker_lost(peers, time.monotonic()))
        log.warning("exabgp restarted: received routes are stale until re-sent",
                    stale=self.rib.counts().stale, reason=reason)

    # -- graceful restart: the helper's decisions carried out ------------------------

    def _on_grace(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, KeepStale):
                routes = self.rib.mark_stale(action.peer)
                if routes:
                    log.info("routes kept as stale", peer=str(action.peer), routes=routes,
                             why=action.reason)
            elif isinstance(action, Flush):
                self._on_rib_changes(self.rib.peer_down(action.peer, now=time.monotonic()))
            elif isinstance(action, Sweep):
                routes = self._sweep_stale(action.peer)
                if routes:
                    log.info("stale routes removed", peer=str(action.peer), routes=routes,
                             why=action.reason)
            elif isinstance(action, Deadline):
                self._grace_deadline(action)

    def _grace_deadline(self, deadline: Deadline) -> None:
        """One timer per peer: a new wait replaces the one before (its token is void)."""
        old = self._grace_timers.pop(deadline.peer, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, deadline.at - time.monotonic())
        self._grace_timers[deadline.peer] = asyncio.get_running_loop().call_later(
            delay, self._grace_expired, deadline.peer, deadline.token
        )

    def _grace_expired(self, peer: IPAddress, token: int) -> None:
        self._grace_timers.pop(peer, None)
        self._on_grace(self.graceful.expired(peer, token, time.monotonic()))

    # -- RIB changes -> speaker and dataplane --------------------------------------

    def _on_rib_changes(self, changes: RibChanges) -> None:
        if not changes:
            return
        if changes.local_withdraw:
            keys = [mac_key(self.cfg, a) for a in changes.local_withdraw]
            for key in keys:
                self._local_routes.pop(key, None)
            self.speaker.withdraw(keys)
        if changes.local_advertise:
            self._announce([mac_route(self.cfg, a) for a in changes.local_advertise])
        for conflict in changes.conflicts:
            log.warning("mac conflict", vni=conflict.vni, mac=conflict.mac,
                        reason=conflict.reason, vteps=[str(v) for v in conflict.vteps])
        for dup in changes.duplicates:
            self._log_duplicate(dup)
        for dup, reason in changes.duplicates_cleared:
            log.info("duplicate mac released", vni=dup.vni, mac=dup.mac, reason=reason)
        if changes.duplicates or changes.duplicates_cleared:
            self._schedule_freeze_end()
        for event in changes.limit_events:
            self._on_route_limit(event)
        for m in changes.nexthop_mismatches:
            # Unicast goes to the next hops, flooding to the tunnel: a transit router
            # rewrote next hops (README "Transit routers and next hops").
            log.warning("vtep next hops differ from its type-3 tunnel", peer=str(m.peer),
                        rd=m.rd, tunnel=str(m.tunnel), nexthops=[str(n) for n in m.nexthops])
        for m in changes.nexthop_mismatches_cleared:
            log.info("vtep next hops agree with its type-3 tunnel again", peer=str(m.peer),
                     rd=m.rd, tunnel=str(m.tunnel))
        self.mqtt.rib_changes(changes)
        apply_rib_changes(self.reconciler.tracker, changes, self.devices, self.l3)
        self.reconciler.kick()

    # -- duplicate MACs ------------------------------------------------------------

    def _log_duplicate(self, dup: DuplicateMac) -> None:
        policy = self.rib.dad_policy
        if dup.frozen_until is None:
            frozen = "no (dad.freeze is off)"
        elif dup.frozen_until == PERMANENT:
            frozen = "until cleared (evpnd clear duplicate)"
        else:
            frozen = f"{dup.frozen_until - dup.detected_at:g}s"
        log.warning("duplicate mac detected", vni=dup.vni, mac=dup.mac, moves=dup.moves,
                    window=None if policy is None else policy.window,
                    vtep=None if dup.vtep is None else str(dup.vtep), frozen=frozen)

    def _schedule_freeze_end(self) -> None:
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
            self._freeze_timer = None
        at = self.rib.next_freeze_end()
        if at is None:
            return
        self._freeze_timer = asyncio.get_running_loop().call_later(
            max(0.0, at - time.monotonic()), self._freeze_ended
        )

    def _freeze_ended(self) -> None:
        self._freeze_timer = None
        self._on_rib_changes(self.rib.expire_duplicates(time.monotonic()))
        self._schedule_freeze_end()

    def clear_duplicate(self, vni: int, mac: str) -> bool:
        """`evpnd clear duplicate VNI MAC`: False if the MAC was not flagged."""
        changes, found = self.rib.clear_duplicate(vni, mac, now=time.monotonic())
        self._on_rib_changes(changes)
        return found

    # -- route limits ----------------------------------------------------------------

    def _on_route_limit(self, event: RouteLimitEvent) -> None:
        peer_cfg = next((p for p in self.cfg.bgp.peers if p.address == event.peer), None)
        action = "warning" if peer_cfg is None else peer_cfg.max_routes_action
        limit = event.limit
        fields = {"peer": str(event.peer), "routes": event.routes, "max_routes": limit.max_routes,
                  "action": action}  # fmt: skip
        if event.level == LIMIT_EXCEEDED:
            log.error("peer route limit exceeded: further routes refused", **fields,
                      restart_after=None if peer_cfg is None else peer_cfg.max_routes_restart)
        elif event.level == "warning":
            log.warning("peer route limit warning", **fields, warning_at=limit.warning_at)
        else:
            log.info("peer below its route limit warning again", **fields)
        self.mqtt.route_limit(event, action)
        if (event.level == LIMIT_EXCEEDED and peer_cfg is not None and action == "teardown"
                and event.peer not in self.held_down):  # fmt: skip
            self._hold_down(event.peer, peer_cfg.max_routes_restart)

    def _hold_down(self, peer: IPAddress, seconds: float) -> None:
        """Close the session (Cease/1) and keep ExaBGP from reconnecting for `seconds`."""
        self.held_down[peer] = time.monotonic() + seconds
        self.speaker.teardown(str(peer), CEASE_MAX_PREFIXES)
        self._one_shot(self._leave_out(peer), f"hold-down {peer}")
        asyncio.get_running_loop().call_later(seconds, self._release_hold, peer)

    async def _leave_out(self, peer: IPAddress) -> None:
        # The NOTIFICATION goes first; then ExaBGP forgets the peer, or it would
        # reconnect at once and receive the same table again.
        await self._flush_speaker()
        await self._reload_speaker(f"route limit of {peer} exceeded: held down")
        self._on_grace(self.graceful.session_down(peer, time.monotonic(), graceful=False))
        self._on_rib_changes(self.rib.peer_down(peer, now=time.monotonic()))

    def _release_hold(self, peer: IPAddress) -> None:
        if self.held_down.pop(peer, None) is not None:
            self._one_shot(self._reload_speaker(f"hold-down of {peer} over: reconnecting"),
                           f"release {peer}")  # fmt: skip

    async def _reload_speaker(self, why: str) -> None:
        async with self._reload_lock:
            if isinstance(self.speaker, Speaker):
                log.info("exabgp peers changed", why=why,
                         held_down=[str(p) for p in self.held_down])
                await self.speaker.reload(self._speaker_config(self.cfg))

    def _announce(self, routes: list[Route]) -> None:
        for route in routes:
            self._local_routes[route.key] = route
        self.speaker.announce(routes)

    async def _converge(self) -> None:
        await asyncio.sleep(self.converge_timeout)
        if self.reconciler.holding:
            self._converged(f"timeout {self.converge_timeout:g}s")

    def _converged(self, why: str) -> None:
        if self.stats.converged_at is not None:  # End-of-RIB and the timeout may both fire
            return
        self.stats.converged_at = time.time()
        log.info("converged: removing entries no route asks for", why=why)
        asyncio.get_running_loop().create_task(self._release())

    async def _release(self) -> None:
        result = await self.reconciler.release()
        log.info("stale entries removed", writes=result.total)
        # systemd Type=notify: READY=1 once start-up is over, so that `systemctl
        # start` (and a restart's hand-over) returns with the kernel converged.
        sdnotify.started(self)

    # -- reload -----------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            await self.reload()

    async def reload(self) -> bool:
        async with self.docker.serialized(), self._reload_lock:
            sdnotify.reloading(self)
            applied = False
            try:
                applied = await self._reload_config()
            finally:  # READY=1 again even if applying failed: the daemon still runs
                sdnotify.reloaded(self, applied)
            return applied

    async def _reload_config(self) -> bool:
        if self.config_path is None:
            log.warning("reload requested but the config was not read from a file")
            return False
        try:
            new = config_mod.load(self.config_path)
            effective = self.docker.effective(new)
        except (config_mod.ConfigError, VniConflict) as exc:
            errors = [str(i) for i in exc.issues] if isinstance(exc, config_mod.ConfigError) \
                else [str(exc)]
            log.error("reload refused: invalid config, keeping the running one", errors=errors)
            self.mqtt.error("reload_refused", f"{len(errors)} error(s) in "
                            f"{self.config_path}", errors=errors)
            return False
        if new.docker != self.file_cfg.docker:
            log.warning("docker settings changed: they take effect at the next start")
            new = new.model_copy(update={"docker": self.file_cfg.docker})
            effective = effective.model_copy(update={"docker": self.file_cfg.docker})
        self.file_cfg = new
        await self._apply_config(effective)
        return True

    async def _docker_vnis_changed(self) -> None:
        """A Docker network came or went: its VNI is added or removed like by a reload."""
        async with self._reload_lock:  # the driver's lock is held by the Docker call
            await self._apply_config(self.docker.effective(self.file_cfg, strict=False))

    async def _flush_speaker(self) -> None:
        if self.speaker.connected:
            with contextlib.suppress(Exception):
                await self.speaker.flush(timeout=FLUSH_TIMEOUT)

    async def _apply_config(self, new: config_mod.Config) -> None:
        """Make the running daemon follow `new` (the effective config): VNIs, peers, services."""
        old = self.cfg
        await self._apply_devices(new)
        new = await self._with_router_mac(new)
        removed_vnis = {v.vni for v in old.vnis} - {v.vni for v in new.vnis}
        for vni in sorted(removed_vnis):
            # Withdraw the VNI's own MACs while the old config still names its RD.
            for local in self.rib.local_macs(vni):
                self._on_rib_changes(self.rib.local_mac_removed(vni, local.mac))
        adverts = self.rib.advertisements()
        self.cfg = new
        self._readvertise(old, new, adverts)
        self.devices = vni_devices(new)
        self.l3 = l3_devices(new)
        self._on_rib_changes(self.rib.reconfigure(vni_policies(new), gateways(new)))
        self._on_rib_changes(self.rib.set_l3_policy(l3_policy(new)))
        self._on_rib_changes(self.rib.set_dad_policy(dad_policy(new), now=time.monotonic()))
        self._on_rib_changes(self.rib.set_route_limits(route_limits(new)))
        self.graceful.set_helper(new.bgp.graceful_restart > 0, self.converge_timeout)
        await self.learner.update_vnis(watched_vnis(new))
        await self.reconciler.set_desired(desired_state(self.rib, self.devices, self.l3))
        self._announce_static(new)
        for peer in {p.address for p in old.bgp.peers} - {p.address for p in new.bgp.peers}:
            self.peer_tracker.forget(peer)
            self.graceful.forget(peer)
            self.held_down.pop(peer, None)
            self._on_rib_changes(self.rib.peer_down(peer, now=time.monotonic()))
        await self.mqtt.reconfigure(old, new)
        problem = await self.metrics.reconfigure(old.metrics, new.metrics)
        if problem:
            self.mqtt.error("metrics_endpoint", problem)
        if speaker_identity(old) != speaker_identity(new):
            if isinstance(self.speaker, Speaker) and new.bgp.peers:
                log.info("bgp settings changed: reloading exabgp")
                await self.speaker.reload(self._speaker_config(new))
            else:
                log.info("bgp peers added or removed entirely: restarting the speaker")
                await self._restart_speaker(new)
        log.info("config applied", vnis=[v.vni for v in new.vnis], removed=sorted(removed_vnis),
                 docker_vnis=[v.vni for v in self.docker.vnis()])

    def _readvertise(
        self, old: config_mod.Config, new: config_mod.Config, adverts: list[LocalAdvert]
    ) -> None:
        withdraw, announce = readvertised(old, new, adverts)
        for key in withdraw:
            self._local_routes.pop(key, None)
        self.speaker.withdraw(withdraw)
        if announce:
            log.info("local routes re-announced: RD or route targets changed",
                     routes=len(announce))
            self._announce(announce)

    def _announce_static(self, cfg: config_mod.Config) -> None:
        """Routes that follow from the config alone: Type-3s, anycast gateways (configured
        and Docker's), Type-5 prefixes."""
        routes: list[Route] = static_routes(cfg)
        keys = {r.key for r in routes}
        stale = self._static_keys - keys
        if stale:
            self.speaker.withdraw(stale)
            for key in stale:
                self._local_routes.pop(key, None)
        self._static_keys = keys
        self._announce(routes)

    async def _restart_speaker(self, cfg: config_mod.Config) -> None:
        routes = list(self._local_routes.values())
        old = self.speaker
        await old.stop()
        self.speaker = self._new_speaker(cfg)
        await self.speaker.start()
        self.speaker.announce(routes)
        for task in self._tasks:
            if task.get_name() == "bgp-input":
                task.cancel()
        self._tasks = [t for t in self._tasks if t.get_name() != "bgp-input"]
        self._tasks.append(asyncio.create_task(self._bgp_loop(), name="bgp-input"))
        self._on_speaker_restart("bgp peers added or removed by a reload")


class DaemonError(RuntimeError):
    pass


class NoSpeaker:
    """The speaker of a config without BGP peers: routes go nowhere."""

    pid = None
    connected = False
    hold = 0.0

    def __init__(self) -> None:
        self._stopped = asyncio.Event()
        self.counters = SpeakerCounters()  # all zero: nothing is ever sent

    def announced(self) -> dict[RouteKey, str]:
        return {}

    async def start(self) -> None:
        return None

    def announce(self, routes: object) -> None:
        return None

    def withdraw(self, keys: object) -> None:
        return None

    async def flush(self, timeout: float | None = None) -> None:
        return None

    def refresh(self, peer: str) -> None:
        return None

    def teardown(self, peer: str, subcode: int) -> None:
        return None

    def prune(self) -> None:
        return None

    async def stop(self) -> None:
        self._stopped.set()

    async def batches(self) -> AsyncIterator[list[Received]]:
        await self._stopped.wait()
        return
        yield  # an async generator that ends when the daemon stops


async def run(cfg: config_mod.Config, config_path: str | Path | None = None) -> int:
    return await Daemon(cfg, config_path).run()
