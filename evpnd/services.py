"""The operations services around the daemon: metrics endpoint and MQTT.

Glue only, so that evpnd/daemon.py stays the orchestrator: the daemon calls
these at start, stop and reload, and hands them what it already logs.

* `MetricsEndpoint`: the HTTP /metrics server for `metrics:` (built from the
  daemon, a `MetricsSource`); restarted when a reload changes the section.
* `MqttBridge`: the daemon's events -> `MqttService.publish` (peer up/down,
  local and remote MACs, ExaBGP restarts, errors), the retained per-VNI
  summaries (at most one per VNI a second) and per-peer session states, and
  endpoint registrations from MQTT -> the RIB, advertised like MACs the
  bridge learned.

The control socket needs no glue: `ControlServer.for_daemon` reads the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from evpnd.config import Config
from evpnd.metrics.settings import MetricsConfig
from evpnd.model import IPAddress
from evpnd.rib import PERMANENT, Rib, RibChanges, RouteLimitEvent

log = structlog.get_logger(__name__)

SUMMARY_INTERVAL = 1.0  # seconds: at most one retained summary per VNI this often
# The summaries take at most this share of the event loop: a pass that took
# longer than SUMMARY_INTERVAL * SUMMARY_SHARE waits that much longer for the next.
SUMMARY_SHARE = 0.02
SYNC_TIMEOUT = 10.0  # seconds to wait for MQTT's retained registrations before pruning


@dataclass(frozen=True, slots=True)
class PeerSession:
    """A peer's session as its retained MQTT topic says it."""

    state: str  # "up" or "down"
    since: float  # time.time() of the change
    reason: str | None = None  # why it is down
    adopted: bool = False  # up since before this daemon (a hand-over): older than `since`


class MetricsEndpoint:
    """The /metrics HTTP(S) server of a `metrics:` section (with the fabric view when
    `fabric_view` is set); absent while disabled."""

    def __init__(self, source: Any) -> None:
        self.source = source  # the daemon (a metrics.source.MetricsSource)
        self.server: Any = None  # metrics.server.MetricsServer while serving

    async def start(self, cfg: MetricsConfig) -> str | None:
        """Serve if enabled; returns an error text instead of raising (the daemon keeps
        forwarding without its metrics)."""
        if not cfg.enabled:
            return None
        from evpnd.metrics.collector import build_registry
        from evpnd.metrics.server import Credentials, MetricsServer, TlsFiles

        auth = cfg.basic_auth
        server = MetricsServer(
            build_registry(self.source), str(cfg.address), cfg.port,
            tls=None if cfg.tls is None else TlsFiles(cfg.tls.cert, cfg.tls.key),
            credentials=None if auth is None
            else Credentials(auth.user, auth.password.get_secret_value()),
            pages=self._fabric_pages() if cfg.fabric_view else None,
        )  # fmt: skip
        try:
            await server.start()
        except OSError as exc:
            log.error("metrics endpoint not started", address=str(cfg.address), port=cfg.port,
                      error=str(exc))
            return f"metrics endpoint {cfg.address}:{cfg.port}: {exc.strerror or exc}"
        self.server = server
        return None

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.stop()

    async def reconfigure(self, old: MetricsConfig, new: MetricsConfig) -> str | None:
        if old == new:
            return self._reload_tls()
        await self.stop()
        return await self.start(new)

    def _reload_tls(self) -> str | None:
        """A reload with the same settings re-reads the certificate (renewed in place)."""
        if self.server is None:
            return None
        try:
            self.server.reload_tls()
        except OSError as exc:
            log.error("metrics certificate not reloaded; the previous one stays",
                      error=str(exc))
            return f"metrics endpoint: {exc}"
        return None

    def _fabric_pages(self) -> Any:
        """The fabric view's pages, over the same snapshot `evpnd show` takes."""
        from evpnd.control.snapshot import take_snapshot
        from evpnd.control.views import fabric
        from evpnd.web.routes import FabricPages

        return FabricPages(lambda: fabric(take_snapshot(self.source)))


class MqttBridge:
    """The daemon <-> MQTT: events out, endpoint registrations in (no-op without `mqtt:`).

    `apply` is the daemon's handler for RIB changes (routes to the speaker,
    entries to the dataplane); `cfg` returns the running config.
    """

    def __init__(
        self, cfg: Callable[[], Config], rib: Rib, apply: Callable[[RibChanges], None]
    ) -> None:
        self._cfg = cfg
        self._rib = rib
        self._apply = apply
        self.service: Any = None  # evpnd.mqtt.client.MqttService while configured
        self._tasks: list[asyncio.Task[None]] = []
        # (vni, mac) -> the registration advertised for it
        self._registered: dict[tuple[int, str], Any] = {}
        self._unconfirmed: set[tuple[int, str]] = set()  # to re-read after a broker change
        # (VTEP, peer) of each remote MAC reported
        self._remote: dict[tuple[int, str], tuple[IPAddress, IPAddress]] = {}
        self._peers_up: set[IPAddress] = set()
        # The retained P/peers/<address> of each peer: (state, since, reason, adopted).
        # A peer is in it once its state is known (ExaBGP attached, or an event came).
        self._peer_states: dict[IPAddress, PeerSession] = {}
        self._attached = False  # an ExaBGP is attached: every configured peer's state is known
        self._dirty: set[int] = set()  # VNIs whose summary may have changed
        self._summaries: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config = self._cfg().mqtt
        if config is None:
            return
        from evpnd.mqtt.client import MqttService

        self.service = MqttService(config, known_vnis=lambda: {v.vni for v in self._cfg().vnis})
        await self.service.start()
        self._dirty.update(v.vni for v in self._cfg().vnis)
        for peer in self._peer_states:  # a new service (reconnect after a reload)
            self._retain_peer(peer)
        self._tasks = [
            asyncio.create_task(self._registrations(self.service), name="mqtt-registrations"),
            asyncio.create_task(self._summary_loop(), name="mqtt-summaries"),
        ]

    async def stop(self) -> None:
        service, self.service = self.service, None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            if task.get_name() != "mqtt-registrations":
                task.cancel()
        if service is not None:
            await service.stop()  # ends registrations()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        self._summaries.clear()

    async def initial_sync(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Until the broker's retained registrations are in the RIB (or `timeout`)."""
        service = self.service
        if service is None:
            return
        try:
            await asyncio.wait_for(service.synced.wait(), timeout)
        except TimeoutError:
            log.warning("mqtt registrations not read yet; going on without them",
                        waited=timeout, state=service.status().state)
            return
        for _ in range(10_000):  # the consumer takes and applies each one in one step
            if not service.pending():
                return
            await asyncio.sleep(0)

    async def reconfigure(self, old: Config, new: Config) -> None:
        """After a reload: forget removed VNIs; reconnect if the `mqtt:` section changed."""
        removed = {v.vni for v in old.vnis} - {v.vni for v in new.vnis}
        for key in [k for k in self._registered if k[0] in removed]:
            del self._registered[key]  # the daemon withdrew the VNI's MACs already
            log.info("mqtt registration dropped: its VNI left the config", vni=key[0],
                     mac=key[1])
        for vni in removed:
            self._summaries.pop(vni, None)
            self._dirty.discard(vni)
            if self.service is not None:
                self.service.clear_summary(vni)
        self._dirty.update({v.vni for v in new.vnis} - {v.vni for v in old.vnis})
        self._reconfigure_peers(old, new)
        if old.mqtt == new.mqtt:
            return
        log.info("mqtt settings changed: reconnecting", broker=new.mqtt and new.mqtt.broker)
        await self.stop()
        self._unconfirmed = set(self._registered)
        await self.start()
        if self.service is None:
            stale, self._unconfirmed = self._unconfirmed, set()
            self._withdraw(stale, reason="mqtt-disabled")
            return
        # Registrations the new broker (or prefix) no longer holds are withdrawn
        # once it has sent its retained ones; the others stay advertised meanwhile.
        self._tasks.append(asyncio.create_task(self._confirm(), name="mqtt-confirm"))

    async def _confirm(self) -> None:
        await self.initial_sync()
        if self.service is not None and self.service.synced.is_set():
            stale, self._unconfirmed = self._unconfirmed, set()
            self._withdraw(stale, reason="gone-from-broker")

    # ------------------------------------------------------------ state

    def status(self) -> dict[str, Any] | None:
        """`show status` and the metrics: connection state and counters; None without MQTT."""
        if self.service is None:
            return None
        data: dict[str, Any] = self.service.status().as_dict()
        data["advertised_endpoints"] = len(self._registered)
        return data

    def registered(self, vni: int, mac: str) -> bool:
        return (vni, mac) in self._registered

    # ------------------------------------------------------------ registrations in

    async def _registrations(self, service: Any) -> None:
        async for change in service.registrations():
            try:
                self._on_registration(change)
            except Exception:  # one bad change must not end registrations
                log.exception("mqtt registration failed", vni=change.vni, mac=change.mac)

    def _on_registration(self, change: Any) -> None:
        from evpnd.mqtt import codec

        key = (change.vni, change.mac)
        old = self._registered.get(key)
        if isinstance(change, codec.EndpointUnregistered):
            self._withdraw([key], reason="unregistered")
            return
        self._unconfirmed.discard(key)
        if change == old:
            return  # re-read after a reconnect: already advertised
        if change.vni not in {v.vni for v in self._cfg().vnis}:
            log.warning("mqtt registration ignored: VNI not configured", vni=change.vni,
                        mac=change.mac)
            return
        if old is not None and old.ip is not None and old.ip != change.ip:
            # The registration replaces the previous one: its MAC+IP route goes.
            self._apply(self._rib.local_mac_removed(change.vni, change.mac, old.ip,
                                                    now=time.monotonic()))
        changes, advert = self._rib.local_mac_added(
            change.vni, change.mac, change.ip, sticky=change.sticky, now=time.monotonic()
        )
        self._registered[key] = change
        log.info("local mac (mqtt)", vni=change.vni, mac=change.mac,
                 ip=None if change.ip is None else str(change.ip), sticky=change.sticky)
        self._apply(changes)
        self.publish(codec.local_mac_learned(
            change.vni, change.mac, ip=change.ip, sticky=change.sticky,
            seq=None if advert is None else advert.seq, source="mqtt",
        ))  # fmt: skip

    def _withdraw(self, keys: Iterable[tuple[int, str]], *, reason: str) -> None:
        from evpnd.mqtt import codec

        for key in list(keys):
            if self._registered.pop(key, None) is None:
                continue
            vni, mac = key
            log.info("local mac gone (mqtt)", vni=vni, mac=mac, reason=reason)
            self._apply(self._rib.local_mac_removed(vni, mac, now=time.monotonic()))
            self.publish(codec.local_mac_removed(vni, mac, source="mqtt"))

    # ------------------------------------------------------------ events out

    def publish(self, event: Any) -> None:
        if self.service is not None:
            self.service.publish(event)

    def peer_state(self, peer: IPAddress, state: str, reason: str | None) -> None:
        if state in ("up", "down"):
            self._session(peer, state, reason)
        if self.service is None:
            return
        from evpnd.mqtt import codec

        if state == "up" and peer not in self._peers_up:
            self._peers_up.add(peer)
            asn = next((p.remote_asn for p in self._cfg().bgp.peers if p.address == peer), None)
            self.publish(codec.peer_up(peer, asn=asn))
        elif state == "down" and peer in self._peers_up:
            self._peers_up.discard(peer)
            self.publish(codec.peer_down(peer, reason=reason))

    def speaker_attached(self, states: Mapping[str, str]) -> None:
        """ExaBGP's relay attached (`states`: each peer's session state, as a previous daemon
        left them; empty for a new ExaBGP): from now on every configured peer's state is
        known, so each one not known yet gets its retained topic."""
        from ipaddress import ip_address

        self._attached = True
        known = {ip_address(p): s for p, s in states.items()}
        for peer in self._cfg().bgp.peers:
            if peer.address not in self._peer_states:
                up = known.get(peer.address) == "up"
                self._session(peer.address, "up" if up else "down",
                              None if up else "not established", adopted=up)

    def peers_adopted(self, up: Iterable[str]) -> None:
        """Sessions a previous daemon handed over: already up, no event."""
        from ipaddress import ip_address

        for text in up:
            peer = ip_address(text)
            self._peers_up.add(peer)
            if self._peer_states.get(peer, PeerSession("down", 0.0)).state != "up":
                self._session(peer, "up", None, adopted=True)

    def speaker_restarted(self, restarts: int, reason: str) -> None:
        for peer in [p for p, s in self._peer_states.items() if s.state == "up"]:
            self._session(peer, "down", reason)
        if self.service is None:
            self._peers_up.clear()
            return
        from evpnd.mqtt import codec

        for peer in sorted(self._peers_up, key=str):
            self.publish(codec.peer_down(peer, reason=reason))
        self._peers_up.clear()
        self.publish(codec.exabgp_restarted(restarts=restarts, reason=reason))

    # ------------------------------------------------------------ peer states (retained)

    def peer_sessions(self) -> dict[IPAddress, PeerSession]:
        """The state each peer's retained topic says."""
        return dict(self._peer_states)

    def _session(self, peer: IPAddress, state: str, reason: str | None, *,
                 adopted: bool = False) -> None:
        current = self._peer_states.get(peer)
        if current is not None and current.state == state:
            return  # the same state again (a repeated down): `since` stays the change's
        self._peer_states[peer] = PeerSession(state, time.time(), reason, adopted)
        self._retain_peer(peer)

    def _retain_peer(self, peer: IPAddress) -> None:
        session = self._peer_states[peer]
        if self.service is None:
            return
        from datetime import UTC, datetime

        cfg_peer = next((p for p in self._cfg().bgp.peers if p.address == peer), None)
        self.service.retain_peer_state(
            peer, session.state, datetime.fromtimestamp(session.since, UTC),
            asn=None if cfg_peer is None else cfg_peer.remote_asn,
            description=None if cfg_peer is None else cfg_peer.description,
            reason=session.reason, adopted=session.adopted,
        )  # fmt: skip

    def _reconfigure_peers(self, old: Config, new: Config) -> None:
        """A peer that left the config loses its retained topic; a new one is down until
        its session comes up (the daemon has started it by now)."""
        before = {p.address for p in old.bgp.peers}
        after = {p.address for p in new.bgp.peers}
        for peer in before - after:
            if self._peer_states.pop(peer, None) is not None and self.service is not None:
                self.service.clear_peer_state(peer)
        if self._attached:  # else the attach to come says each peer's state
            for peer in sorted(after - before, key=str):
                if peer not in self._peer_states:
                    self._session(peer, "down", "not established")

    def local_mac(self, vni: int, mac: str, *, learned: bool, port: str | None = None,
                  sticky: bool = False, seq: int | None = None) -> None:
        self._dirty.add(vni)
        if self.service is None:
            return
        from evpnd.mqtt import codec

        if learned:
            self.publish(codec.local_mac_learned(vni, mac, port=port, sticky=sticky, seq=seq))
        else:
            self.publish(codec.local_mac_removed(vni, mac, port=port))

    def error(self, error: str, detail: str, **context: Any) -> None:
        if self.service is None:
            return
        from evpnd.mqtt import codec

        self.publish(codec.error(error, detail, **context))

    def rib_changes(self, changes: RibChanges) -> None:
        """Remote MACs installed, removed or moved, derived from one RIB step."""
        self._dirty.update(_vnis(changes))
        if self.service is None:
            return
        from evpnd.mqtt import codec

        lost_locally = {(a.vni, a.mac) for a in changes.local_withdraw if a.ip is None}
        for path in changes.macs_installed:
            ref = (path.vni, path.mac)
            was = self._remote.get(ref)
            before = None if was is None else was[0]
            self._remote[ref] = (path.vtep, path.peer)
            if before is None and ref in lost_locally:
                self.publish(codec.remote_mac_moved(path.vni, path.mac, vtep=path.vtep,
                                                    previous_vtep="local", seq=path.seq,
                                                    peer=path.peer))  # fmt: skip
            elif before is None:
                self.publish(codec.remote_mac_installed(
                    path.vni, path.mac, vtep=path.vtep, peer=path.peer, seq=path.seq,
                    sticky=path.sticky,
                ))  # fmt: skip
            elif before != path.vtep:
                self.publish(codec.remote_mac_moved(path.vni, path.mac, vtep=path.vtep,
                                                    previous_vtep=before, seq=path.seq,
                                                    peer=path.peer))  # fmt: skip
            # same VTEP: the route was replaced (sequence, flags); the MAC did not move
        for vni, mac in changes.macs_removed:
            vtep, peer = self._remote.pop((vni, mac), (None, None))
            self.publish(codec.remote_mac_removed(vni, mac, vtep=vtep, peer=peer))
        for conflict in changes.conflicts:
            self.publish(codec.error(
                "mac_conflict", f"MAC {conflict.mac} in VNI {conflict.vni}: {conflict.reason}",
                vni=conflict.vni, mac=conflict.mac, vteps=[str(v) for v in conflict.vteps],
            ))  # fmt: skip
        policy = self._rib.dad_policy
        for dup in changes.duplicates:
            freeze = None if dup.frozen_until is None or dup.frozen_until == PERMANENT \
                else dup.frozen_until - dup.detected_at
            self.publish(codec.mac_duplicate(
                dup.vni, dup.mac, moves=dup.moves, window=0 if policy is None else policy.window,
                vtep=dup.vtep, frozen=dup.frozen_until is not None, freeze=freeze,
            ))  # fmt: skip
        for dup, reason in changes.duplicates_cleared:
            self.publish(codec.mac_duplicate_cleared(dup.vni, dup.mac, reason=reason))

    def route_limit(self, event: RouteLimitEvent, action: str) -> None:
        """A peer's level against its route limit changed (`action`: what the daemon does)."""
        if self.service is None:
            return
        from evpnd.mqtt import codec

        self.publish(codec.route_limit(
            event.peer, level=event.level, routes=event.routes,
            max_routes=event.limit.max_routes, warning_at=event.limit.warning_at, action=action,
        ))  # fmt: skip

    # ------------------------------------------------------------ summaries

    def summary(self, vni: int) -> dict[str, Any]:
        return self.summaries([vni])[vni]

    def summaries(self, vnis: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The summaries of these VNIs from one pass over the RIB's tables (no sorting):
        the cost does not grow with the number of VNIs asked for."""
        rib = self._rib
        counts = rib.vni_counts()
        registered: dict[int, int] = {}
        for vni, _mac in self._registered:
            registered[vni] = registered.get(vni, 0) + 1
        vteps = rib.vteps()
        none: dict[str, int] = {}
        out: dict[int, dict[str, Any]] = {}
        for vni in vnis:
            sizes = counts.get(vni, none)
            out[vni] = {
                "local_macs": sizes.get("local_macs", 0),
                "advertised_macs": sizes.get("advertised_macs", 0),
                "registered_endpoints": registered.get(vni, 0),
                "remote_macs": sizes.get("remote_macs", 0),
                "remote_neighbors": sizes.get("remote_neighbors", 0),
                "vteps": [str(v) for v in vteps.get(vni, ())],
            }
        return out

    async def _summary_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            self.flush_summaries()
            spent = loop.time() - started
            await asyncio.sleep(max(SUMMARY_INTERVAL, spent / SUMMARY_SHARE))

    def flush_summaries(self) -> None:
        service = self.service
        if service is None:
            return
        configured = {v.vni for v in self._cfg().vnis}
        dirty, self._dirty = self._dirty, set()
        wanted = sorted(dirty & configured)
        if not wanted:
            return
        for vni, summary in self.summaries(wanted).items():
            if summary != self._summaries.get(vni):
                self._summaries[vni] = summary
                service.retain_summary(vni, summary)


def _vnis(changes: RibChanges) -> set[int]:
    refs: Iterable[tuple[int, object]] = (
        *((p.vni, p.mac) for p in changes.macs_installed),
        *changes.macs_removed,
        *changes.vteps_added,
        *changes.vteps_removed,
        *((n.vni, n.ip) for n in changes.neighs_installed),
        *changes.neighs_removed,
        *((a.vni, a.mac) for a in changes.local_advertise),
        *((a.vni, a.mac) for a in changes.local_withdraw),
    )
    return {vni for vni, _ in refs}
