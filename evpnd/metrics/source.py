"""What the metrics collector reads from the daemon, and nothing more.

`MetricsSource` is structural: `evpnd.daemon.Daemon` satisfies it by having
these attributes (the sub-protocols list the members read from each). Every
value is read at scrape time, on the event loop (see server.py), so no
counter is duplicated and nothing is instrumented outside the objects that
own the facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from evpnd.config import Config
from evpnd.dataplane.learner import LearnerCounters
from evpnd.dataplane.reconciler import ReconcilerStats
from evpnd.dataplane.state import ForwardingState
from evpnd.desired import VniDevices
from evpnd.model import IPAddress, RouteKey
from evpnd.rib import RibCounts, RibStats, RouteLimit
from evpnd.speaker.decode import DecodeStats
from evpnd.speaker.speaker import SpeakerCounters


class DaemonStatsView(Protocol):
    """`evpnd.daemon.DaemonStats`."""

    @property
    def started(self) -> float: ...  # time.time() at start

    @property
    def converged_at(self) -> float | None: ...

    @property
    def updates(self) -> int: ...  # RouteUpdate messages handled

    @property
    def speaker_restarts(self) -> int: ...  # ExaBGP lost and restarted, or restarted by reload


class PeerRecordView(Protocol):
    """`evpnd.control.peers.PeerRecord`."""

    @property
    def state(self) -> str: ...  # "idle" | "connected" | "established" | "down"

    @property
    def established_count(self) -> int: ...  # times the session came up

    @property
    def drops(self) -> int: ...  # times an established session went down


class PeerTrackerView(Protocol):
    """`evpnd.control.peers.PeerTracker`: one record per peer seen since start."""

    def records(self) -> Mapping[IPAddress, PeerRecordView]: ...


class DecoderView(Protocol):
    """`evpnd.speaker.decode.Decoder`."""

    @property
    def stats(self) -> DecodeStats: ...


class RibView(Protocol):
    """`evpnd.rib.Rib`."""

    @property
    def stats(self) -> RibStats: ...

    def counts(self) -> RibCounts: ...

    def route_limit(self, peer: IPAddress) -> tuple[RouteLimit | None, str]: ...


class SpeakerView(Protocol):
    """`evpnd.speaker.speaker.Speaker` (and the daemon's `NoSpeaker`)."""

    @property
    def counters(self) -> SpeakerCounters: ...

    @property
    def connected(self) -> bool: ...

    def announced(self) -> Mapping[RouteKey, str]: ...


class ReconcilerView(Protocol):
    """`evpnd.dataplane.reconciler.Reconciler`."""

    @property
    def stats(self) -> ReconcilerStats: ...

    @property
    def desired(self) -> ForwardingState: ...

    @property
    def installed(self) -> ForwardingState: ...

    @property
    def conflicts(self) -> int: ...

    @property
    def holding(self) -> bool: ...


class LearnerView(Protocol):
    """`evpnd.dataplane.learner.LocalLearner`."""

    @property
    def counters(self) -> LearnerCounters: ...


class LoopLagView(Protocol):
    """`evpnd.metrics.looplag.LoopLagMonitor`."""

    @property
    def last(self) -> float: ...

    @property
    def max(self) -> float: ...

    @property
    def count(self) -> int: ...

    @property
    def sum(self) -> float: ...

    def histogram(self) -> list[tuple[float, int]]: ...


class MetricsSource(Protocol):
    """The daemon as the collector sees it."""

    @property
    def cfg(self) -> Config: ...  # only bgp.peers: configured peers get a series from the start

    @property
    def stats(self) -> DaemonStatsView: ...

    @property
    def peer_tracker(self) -> PeerTrackerView: ...

    @property
    def decoder(self) -> DecoderView: ...

    @property
    def rib(self) -> RibView: ...

    @property
    def speaker(self) -> SpeakerView: ...

    @property
    def reconciler(self) -> ReconcilerView: ...

    @property
    def learner(self) -> LearnerView: ...

    @property
    def devices(self) -> Mapping[int, VniDevices]: ...  # VNI -> its bridge and vxlan device

    @property
    def loop_lag(self) -> LoopLagView: ...

    # Optional, read with getattr: `mqtt.status()` -> the MQTT connection's
    # state and counters as a dict, or None without an `mqtt:` section
    # (evpnd.services.MqttBridge); `graceful.status(peer)` (evpnd.graceful.
    # GracefulHelper); `held_down`, peer -> when its route-limit hold-down ends.
