"""What `show` reads from the daemon: the `DaemonView` protocol and one `Snapshot` of it.

`take_snapshot()` is the only place that touches the daemon (and the kernel,
for the live MTU of each VNI device); the views are pure functions of the
`Snapshot`. Everything runs on the daemon's event loop between two awaits, so
the snapshot is consistent without copying the RIB.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from evpnd import __version__
from evpnd.config import Config
from evpnd.control.peers import PeerRecord, PeerTracker
from evpnd.dataplane.localtable import LocalSnapshot
from evpnd.dataplane.state import ForwardingState
from evpnd.graceful import PeerGrace
from evpnd.metrics.source import ReconcilerView  # one view of the reconciler for show and metrics
from evpnd.model import IPAddress, Route
from evpnd.originate import mac_route, static_routes
from evpnd.rib import Rib

# --------------------------------------------------------------------------
# What the daemon must offer (evpnd.daemon.Daemon has all of it once it holds
# a `peer_tracker`).


class SpeakerView(Protocol):
    @property
    def pid(self) -> int | None: ...  # the ExaBGP child, None while it is down

    @property
    def connected(self) -> bool: ...  # its relay is attached

    # Speaker also has `counters: SpeakerCounters`; NoSpeaker (no peers) has none.


class LearnerView(Protocol):
    counters: Any  # LearnerCounters (a dataclass of counters)

    def snapshot(self) -> LocalSnapshot: ...


class DecoderView(Protocol):
    stats: Any  # DecodeStats


class DaemonStatsView(Protocol):
    started: float
    converged_at: float | None
    # plus the counters local_events, updates, decode_errors, peer_downs, speaker_restarts


class DaemonView(Protocol):
    """Exactly what `take_snapshot` reads from `evpnd.daemon.Daemon`."""

    cfg: Config
    config_path: Path | None
    rib: Rib
    stats: DaemonStatsView  # DaemonStats
    decoder: DecoderView
    speaker: SpeakerView
    reconciler: ReconcilerView
    learner: LearnerView
    peer_tracker: PeerTracker  # new: fed by the daemon (see evpnd/control/peers.py)
    # Optional: `mqtt.status()` -> a dict, or None without MQTT (evpnd.services.MqttBridge);
    # `graceful` (evpnd.graceful.GracefulHelper) and `held_down` (peer -> monotonic time
    # its route-limit hold-down ends).


# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeakerStatus:
    pid: int | None = None
    connected: bool = False
    counters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeerProtection:
    """A peer's graceful-restart state and route-limit hold-down, for `show peers`."""

    grace: PeerGrace | None = None
    held_down_until: float | None = None  # monotonic


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    """The daemon's state at one moment, as the views need it."""

    cfg: Config
    rib: Rib
    now: float
    started: float
    monotonic: float = 0.0  # time.monotonic() at `now`: the clock of the RIB's and timers' times
    protection: Mapping[IPAddress, PeerProtection] = field(default_factory=dict)
    peers: Mapping[IPAddress, PeerRecord] = field(default_factory=dict)
    local: LocalSnapshot = field(
        default_factory=lambda: LocalSnapshot(MappingProxyType({}), MappingProxyType({}))
    )
    desired: ForwardingState = field(default_factory=ForwardingState)
    installed: ForwardingState = field(default_factory=ForwardingState)
    out_routes: tuple[Route, ...] = ()  # our announced routes (Type-3 per VNI, Type-2 per MAC)
    mtus: Mapping[str, int | None] = field(default_factory=dict)  # live device MTUs
    speaker: SpeakerStatus = field(default_factory=SpeakerStatus)
    version: str = __version__
    pid: int | None = None
    config_path: str | None = None
    converged_at: float | None = None
    holding: bool = False
    dataplane_conflicts: int = 0
    route_conflicts: frozenset[Any] = frozenset()  # wanted routes an admin's route holds
    daemon_counters: Mapping[str, Any] = field(default_factory=dict)
    decoder_counters: Mapping[str, Any] = field(default_factory=dict)
    dataplane_counters: Mapping[str, Any] = field(default_factory=dict)
    learner_counters: Mapping[str, Any] = field(default_factory=dict)
    mqtt: Mapping[str, Any] | None = None  # MqttService status; None without MQTT
    docker: Mapping[str, Any] | None = None  # the network driver's; None when it is off
    # The VNIs of the config file (`cfg` adds the Docker networks'); None: `cfg` is the file.
    file_vnis: frozenset[int] | None = None


def take_snapshot(
    daemon: DaemonView,
    *,
    now: float | None = None,
    mtu_of: Callable[[str], int | None] | None = None,
) -> Snapshot:
    cfg = daemon.cfg
    read_mtu = mtu_of or device_mtu
    devices = {name for v in cfg.vnis for name in (v.bridge_name, v.vxlan_name)}
    stats = _counters(daemon.stats)
    speaker = daemon.speaker
    recon = daemon.reconciler
    return Snapshot(
        cfg=cfg,
        rib=daemon.rib,
        now=time.time() if now is None else now,
        started=daemon.stats.started,
        monotonic=time.monotonic(),
        protection=_protection(daemon),
        peers=daemon.peer_tracker.records(),
        local=daemon.learner.snapshot(),
        desired=recon.desired,
        installed=recon.installed,
        out_routes=tuple(out_routes(cfg, daemon.rib)),
        mtus={name: read_mtu(name) for name in sorted(devices)},
        speaker=SpeakerStatus(
            speaker.pid, bool(speaker.connected), _counters(getattr(speaker, "counters", None))
        ),
        pid=os.getpid(),
        config_path=None if daemon.config_path is None else str(daemon.config_path),
        converged_at=daemon.stats.converged_at,
        holding=bool(recon.holding),
        dataplane_conflicts=recon.conflicts,
        route_conflicts=getattr(recon, "route_conflicts", frozenset()),
        daemon_counters={k: v for k, v in stats.items() if k not in ("started", "converged_at")},
        decoder_counters=_counters(daemon.decoder.stats),
        dataplane_counters=_counters(recon.stats),
        learner_counters=_counters(daemon.learner.counters),
        mqtt=_mqtt_status(daemon),
        docker=_docker_status(daemon),
        file_vnis=_file_vnis(daemon),
    )


def _file_vnis(daemon: object) -> frozenset[int] | None:
    file_cfg = getattr(daemon, "file_cfg", None)
    return None if file_cfg is None else frozenset(v.vni for v in file_cfg.vnis)


def _protection(daemon: DaemonView) -> dict[IPAddress, PeerProtection]:
    graceful = getattr(daemon, "graceful", None)
    held: Mapping[IPAddress, float] = getattr(daemon, "held_down", None) or {}
    peers = {p.address for p in daemon.cfg.bgp.peers} | set(held)
    return {
        peer: PeerProtection(None if graceful is None else graceful.status(peer), held.get(peer))
        for peer in peers
    }


def _mqtt_status(daemon: object) -> Mapping[str, Any] | None:
    mqtt = getattr(daemon, "mqtt", None)
    status = None if mqtt is None else mqtt.status()
    return None if status is None else _counters(status)


def _docker_status(daemon: object) -> Mapping[str, Any] | None:
    docker = getattr(daemon, "docker", None)
    status = None if docker is None else docker.status()
    return None if status is None else _counters(status)


def out_routes(cfg: Config, rib: Rib) -> list[Route]:
    """Our routes, built from the config and the RIB as the daemon builds them."""
    routes: list[Route] = static_routes(cfg)  # Type-3s, gateways, Type-5s
    for advert in rib.advertisements():
        try:
            routes.append(mac_route(cfg, advert))
        except KeyError:  # the VNI left the config a moment ago
            continue
    return routes


def _counters(obj: object) -> dict[str, Any]:
    """A dataclass of counters -> plain JSON (nested Counters with tuple keys included)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in fields(obj)}
    if not isinstance(obj, Mapping):
        return {}
    return {str(k): _plain(v) for k, v in obj.items()}


def _plain(value: object) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {_key(k): _plain(v) for k, v in sorted(value.items(), key=lambda i: str(i[0]))}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


def _key(key: object) -> str:
    # Counter keys such as (2, "announce") become "2:announce".
    return ":".join(map(str, key)) if isinstance(key, tuple) else str(key)


_SIOCGIFMTU = 0x8921
_IFREQ = struct.Struct("16si12x")


def device_mtu(name: str) -> int | None:
    """The live MTU of a device in the daemon's network namespace; None if it is missing."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            raw = fcntl.ioctl(sock, _SIOCGIFMTU, _IFREQ.pack(name.encode()[:15], 0))
    except OSError:
        return None
    return int(_IFREQ.unpack(raw)[1])
