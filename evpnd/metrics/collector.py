"""Every evpnd metric, built at scrape time from the daemon's live objects.

The collector owns no counter: it reads the ones kept by the objects that own
the facts (RIB, decoder, speaker, reconciler, learner, daemon stats; see
source.py) and turns them into Prometheus metric families. Nothing is
instrumented elsewhere, and a scrape costs one pass over the RIB and the
dataplane tables.

`collect()` reads mutable daemon state without locks: call it on the event
loop thread only (server.py does). A section that fails is logged, skipped
and counted in `evpnd_metrics_collect_errors_total`; the rest of the scrape
is still served.
"""

from __future__ import annotations

import platform
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata

import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

import evpnd
from evpnd.dataplane.state import ForwardingState
from evpnd.desired import VniDevices
from evpnd.metrics import l3 as l3metrics
from evpnd.metrics.source import MetricsSource
from evpnd.rib import RibCounts

log = structlog.get_logger(__name__)

ROUTE_TYPES = (1, 2, 3, 4, 5)
REFUSALS = ("label-mismatch", "ethernet-tag")  # evpnd.rib REFUSED_*
ROUTE_ACTIONS = ("announce", "withdraw")
MAC_MOVES = ("remote-to-local", "local-to-remote", "remote-to-remote")
LIMIT_LEVELS = ("ok", "warning", "exceeded")  # evpnd.rib LIMIT_*
LIMIT_EVENTS = ("warning", "exceeded")
WRITE_OPS = ("mac_put", "mac_del", "flood_add", "flood_del", "neigh_put", "neigh_del",
             "route_put", "route_del")
LOCAL_EVENTS = ("mac_added", "mac_removed", "ip_learned", "ip_removed", "resynced")
UNKNOWN_VNI = "unknown"
ESTABLISHED = "established"  # evpnd.control.peers.ESTABLISHED


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO = {
    "version": evpnd.__version__,
    "exabgp_version": _version("exabgp"),
    "python_version": platform.python_version(),
}


def event_label(class_name: str) -> str:
    """LocalMacAdded -> mac_added, Resynced -> resynced."""
    name = class_name.removeprefix("Local")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _counter(
    name: str, doc: str, labels: Iterable[str], values: Mapping[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _gauge(
    name: str, doc: str, labels: Iterable[str], values: Mapping[tuple[str, ...], float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def entries_per_vni(
    state: ForwardingState, devices: Mapping[int, VniDevices],
    skip: Iterable[str] = (),
) -> dict[str, dict[str, int]]:
    """{"mac"|"flood"|"neigh": {vni label: entries}}, every configured VNI present;
    the devices in `skip` (the L3VNI's: evpnd/metrics/l3.py counts them) left out."""
    left_out = set(skip)
    vni_of: dict[str, str] = {}
    for vni, dev in devices.items():
        vni_of[dev.vxlan_device] = vni_of[dev.bridge] = str(vni)
    out: dict[str, dict[str, int]] = {}
    for kind, names in (
        ("mac", (device for device, _ in state.macs)),
        ("flood", (f.device for f in state.floods)),
        ("neigh", (device for device, _ in state.neighs)),
    ):
        per = dict.fromkeys((str(v) for v in devices), 0)
        for device, n in Counter(names).items():
            if device in left_out:
                continue
            label = vni_of.get(device, UNKNOWN_VNI)
            per[label] = per.get(label, 0) + n
        out[kind] = per
    return out


class EvpndCollector(Collector):
    """A prometheus_client collector over a `MetricsSource` (the daemon)."""

    def __init__(self, source: MetricsSource, *, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.errors = 0
        self._clock = clock
        self._counts: RibCounts | None = None

    def _rib_counts(self) -> RibCounts:
        # One pass over the RIB per scrape, shared by the sections that need it.
        if self._counts is None:
            self._counts = self.source.rib.counts()
        return self._counts

    def collect(self) -> Iterator[Metric]:
        sections: tuple[Callable[[], Iterable[Metric]], ...] = (
            self._daemon,
            self._bgp,
            self._speaker,
            self._decoder,
            self._evpn,
            self._local,
            self._dataplane,
            self._l3,
            self._loop,
            self._mqtt,
            self._docker,
        )
        self._counts = None
        for section in sections:
            try:
                families = list(section())
            except Exception:
                self.errors += 1
                log.exception("metrics section failed", section=section.__name__.strip("_"))
                continue
            yield from families
        self._counts = None
        yield CounterMetricFamily(
            "evpnd_metrics_collect_errors_total",
            "Scrape sections that failed and were left out (the log says why).",
            value=self.errors,
        )

    # -- sections -------------------------------------------------------------

    def _daemon(self) -> Iterator[Metric]:
        stats = self.source.stats
        yield InfoMetricFamily("evpnd_build", "evpnd build and runtime versions.", BUILD_INFO)
        yield GaugeMetricFamily(
            "evpnd_start_time_seconds", "When evpnd started (Unix time).", stats.started
        )
        yield GaugeMetricFamily(
            "evpnd_uptime_seconds",
            "Seconds since evpnd started.",
            max(0.0, self._clock() - stats.started),
        )
        yield GaugeMetricFamily(
            "evpnd_converged",
            "1 once every peer sent its full table (End-of-RIB) or the start-up timeout "
            "passed; stale kernel entries are released then.",
            0 if stats.converged_at is None else 1,
        )

    def _bgp(self) -> Iterator[Metric]:
        src = self.source
        counts = self._rib_counts()
        records = {str(peer): rec for peer, rec in src.peer_tracker.records().items()}
        peers = sorted({str(p.address) for p in src.cfg.bgp.peers} | set(records))
        up: dict[tuple[str, ...], float] = {}
        ups: dict[tuple[str, ...], float] = {}
        drops: dict[tuple[str, ...], float] = {}
        for peer in peers:
            rec = records.get(peer)
            up[(peer,)] = int(rec is not None and rec.state == ESTABLISHED)
            ups[(peer,)] = 0 if rec is None else rec.established_count
            drops[(peer,)] = 0 if rec is None else rec.drops
        yield _gauge(
            "evpnd_bgp_session_up",
            "1 while the BGP session with the peer is established, else 0.",
            ["peer"],
            up,
        )
        yield GaugeMetricFamily(
            "evpnd_bgp_sessions_up", "Established BGP sessions.", sum(up.values())
        )
        yield _counter(
            "evpnd_bgp_session_established_total",
            "Times the BGP session with the peer came up.",
            ["peer"],
            ups,
        )
        yield _counter(
            "evpnd_bgp_session_drops_total",
            "Times an established BGP session with the peer went down.",
            ["peer"],
            drops,
        )
        yield CounterMetricFamily(
            "evpnd_bgp_updates_received_total",
            "EVPN UPDATE messages received.",
            src.stats.updates,
        )
        received = {(str(t), a): 0 for t in ROUTE_TYPES for a in ROUTE_ACTIONS}
        rib_stats = src.rib.stats
        for action, by_type in (
            ("announce", rib_stats.announced),
            ("withdraw", rib_stats.withdrawn),
        ):
            for rtype, n in by_type.items():
                received[(str(rtype), action)] = n
        yield _counter(
            "evpnd_bgp_routes_received_total",
            "EVPN routes received from peers, by route type and announce/withdraw.",
            ["type", "action"],
            received,
        )
        held = {(str(t),): 0 for t in ROUTE_TYPES}
        held.update({(str(t),): n for t, n in counts.routes_by_type.items()})
        yield _gauge(
            "evpnd_bgp_routes", "EVPN routes held in the RIB, by route type.", ["type"], held
        )
        per_peer = {(peer,): 0 for peer in peers}
        per_peer.update({(peer,): n for peer, n in counts.routes_by_peer.items()})
        yield _gauge(
            "evpnd_bgp_peer_routes", "EVPN routes held in the RIB, by peer.", ["peer"], per_peer
        )
        yield GaugeMetricFamily(
            "evpnd_bgp_routes_stale",
            "Routes kept stale (a peer's graceful restart, an ExaBGP restart), not re-sent yet.",
            counts.stale,
        )
        yield GaugeMetricFamily(
            "evpnd_bgp_routes_not_imported",
            "Routes held whose route targets match no local VNI.",
            counts.not_imported,
        )
        yield CounterMetricFamily(
            "evpnd_bgp_own_routes_ignored_total",
            "Received routes whose next hop is our own VTEP (our routes reflected back).",
            counts.own_routes_ignored,
        )
        refused = dict.fromkeys(((r,) for r in REFUSALS), 0)
        refused.update({(r,): n for r, n in rib_stats.refused.items()})
        yield _counter(
            "evpnd_bgp_routes_import_refused_total",
            "Received routes a VNI their route targets match refused (RFC 8365): the label "
            "names another VNI, or a non-zero Ethernet tag.",
            ["reason"],
            refused,
        )
        yield GaugeMetricFamily(
            "evpnd_bgp_routes_esi",
            "Type-2 routes held with a non-zero ESI (multihomed hosts; installed single-homed).",
            counts.esi_routes,
        )
        yield GaugeMetricFamily(
            "evpnd_vtep_nexthop_mismatches",
            "VTEPs (per peer and RD) whose Type-2 next hops differ from their Type-3 PMSI "
            "tunnel: a transit router rewrote next hops.",
            counts.nexthop_mismatches,
        )
        yield from self._protection(peers)

    def _protection(self, peers: list[str]) -> Iterator[Metric]:
        """Route limits and graceful restart, per peer."""
        src = self.source
        rib_stats = src.rib.stats
        by_address = {str(p.address): p.address for p in src.cfg.bgp.peers}
        limits: dict[tuple[str, ...], float] = {}
        levels: dict[tuple[str, ...], float] = {}
        for peer in peers:
            address = by_address.get(peer)
            if address is None:
                continue
            limit, level = src.rib.route_limit(address)
            if limit is None:
                continue
            limits[(peer,)] = limit.max_routes
            for name in LIMIT_LEVELS:
                levels[(peer, name)] = int(name == level)
        yield _gauge(
            "evpnd_bgp_peer_route_limit",
            "The most routes held from the peer (max_routes); peers without a limit are absent.",
            ["peer"],
            limits,
        )
        yield _gauge(
            "evpnd_bgp_peer_route_limit_level",
            "1 for the peer's level against its route limit: ok, warning (at max_routes_warning "
            "percent), exceeded (routes refused).",
            ["peer", "level"],
            levels,
        )
        refused = dict.fromkeys(limits, 0)
        refused.update({(str(p),): n for p, n in rib_stats.routes_refused.items()})
        yield _counter(
            "evpnd_bgp_routes_refused_total",
            "Routes not installed because the peer was at its route limit.",
            ["peer"],
            refused,
        )
        events = {(peer, level): 0 for (peer,) in limits for level in LIMIT_EVENTS}
        for p, by_level in rib_stats.limit_events.items():
            for level, n in by_level.items():
                events[(str(p), level)] = n
        yield _counter(
            "evpnd_bgp_route_limit_events_total",
            "Times the peer reached its route limit's warning level or exceeded the limit.",
            ["peer", "level"],
            events,
        )
        held = getattr(src, "held_down", None) or {}
        yield _gauge(
            "evpnd_bgp_peer_held_down",
            "1 while the peer is left out of ExaBGP after a route-limit teardown.",
            ["peer"],
            {(peer,): int(by_address.get(peer) in held) for (peer,) in limits},
        )
        graceful = getattr(src, "graceful", None)
        restarts = {(peer,): 0 for peer in peers}
        if graceful is not None:
            for peer in peers:
                address = by_address.get(peer)
                if address is not None:
                    restarts[(peer,)] = graceful.status(address).restarts
        yield _counter(
            "evpnd_bgp_graceful_restarts_total",
            "Sessions lost with the peer's routes kept, stale (graceful restart helper).",
            ["peer"],
            restarts,
        )
        yield CounterMetricFamily(
            "evpnd_bgp_stale_routes_swept_total",
            "Stale routes removed because the peer did not send them again (End-of-RIB, "
            "EoRR or the wait ran out).",
            rib_stats.stale_swept,
        )

    def _speaker(self) -> Iterator[Metric]:
        speaker = self.source.speaker
        counters = speaker.counters
        advertised = {(str(t),): 0 for t in ROUTE_TYPES}
        for rtype, n in Counter(key.route_type for key in speaker.announced()).items():
            advertised[(str(rtype),)] = n
        yield _gauge(
            "evpnd_bgp_routes_advertised",
            "Local EVPN routes we advertise, by route type.",
            ["type"],
            advertised,
        )
        yield _counter(
            "evpnd_bgp_routes_sent_total",
            "Routes in announce/withdraw commands ExaBGP accepted (resets when the "
            "speaker is replaced on a config reload).",
            ["action"],
            {("announce",): counters.announced, ("withdraw",): counters.withdrawn},
        )
        yield _counter(
            "evpnd_exabgp_command_acks_total",
            "Command lines ExaBGP answered, by answer (done or error).",
            ["result"],
            {("done",): counters.acks, ("error",): counters.errors},
        )
        yield GaugeMetricFamily(
            "evpnd_exabgp_connected",
            "1 while ExaBGP runs and its API relay is attached.",
            int(speaker.connected),
        )
        yield CounterMetricFamily(
            "evpnd_exabgp_restarts_total",
            "ExaBGP restarts (the process was lost, or a reload changed BGP settings).",
            self.source.stats.speaker_restarts,
        )
        yield CounterMetricFamily(
            "evpnd_exabgp_receive_overflows_total",
            "Times evpnd fell bgp.receive_buffer behind ExaBGP: the relay dropped received "
            "UPDATEs and the peers were asked for a route refresh.",
            counters.receive_overflows,
        )
        yield CounterMetricFamily(
            "evpnd_exabgp_update_lines_dropped_total",
            "Lines of received UPDATEs the relay dropped (a raw frame line holds many).",
            counters.update_lines_dropped,
        )
        yield CounterMetricFamily(
            "evpnd_exabgp_route_retries_total",
            "Routes of command lines ExaBGP rejected, put back for another try.",
            counters.retries,
        )
        yield CounterMetricFamily(
            "evpnd_exabgp_routes_given_up_total",
            "Routes ExaBGP rejected alone at every try: not announced until they change.",
            counters.routes_refused,
        )

    def _decoder(self) -> Iterator[Metric]:
        stats = self.source.decoder.stats
        yield CounterMetricFamily(
            "evpnd_exabgp_lines_received_total", "Lines of ExaBGP output decoded.", stats.lines
        )
        yield CounterMetricFamily(
            "evpnd_exabgp_raw_frames_received_total",
            "Of those lines, frames of raw EVPN UPDATEs (bgp.receive: raw); the rest were JSON.",
            stats.frames,
        )
        yield _counter(
            "evpnd_decode_errors_total",
            "ExaBGP input dropped as malformed, by reason.",
            ["reason"],
            {(reason,): n for reason, n in stats.errors.items()},
        )
        yield _counter(
            "evpnd_decode_ignored_total",
            "ExaBGP input that is valid but not acted on (other families, route types), by reason.",
            ["reason"],
            {(reason,): n for reason, n in stats.ignored.items()},
        )

    def _evpn(self) -> Iterator[Metric]:
        rib = self.source.rib
        counts = self._rib_counts()
        yield GaugeMetricFamily(
            "evpnd_rib_remote_macs", "Remote MACs with a best path (all VNIs).", counts.remote_macs
        )
        yield GaugeMetricFamily(
            "evpnd_rib_remote_neighbors",
            "Remote IP-to-MAC bindings (all VNIs).",
            counts.remote_neighs,
        )
        yield GaugeMetricFamily(
            "evpnd_rib_flood_vteps",
            "Remote VTEPs in flood lists, summed over VNIs.",
            counts.vteps,
        )
        yield GaugeMetricFamily(
            "evpnd_local_macs", "MACs learned on local bridge ports.", counts.local_macs
        )
        yield GaugeMetricFamily(
            "evpnd_local_macs_advertised",
            "Local MACs we advertise (the others lost to a remote route).",
            counts.advertised_macs,
        )
        yield GaugeMetricFamily(
            "evpnd_mac_conflicts",
            "MACs in a sticky conflict (reported in the log).",
            counts.conflicts,
        )
        yield GaugeMetricFamily(
            "evpnd_mac_duplicates",
            "MACs flagged by duplicate-address detection (RFC 7432 15.1), frozen or not.",
            counts.duplicates,
        )
        yield GaugeMetricFamily(
            "evpnd_mac_duplicates_frozen",
            "Of those, MACs frozen: not advertised, no move accepted (dad.freeze).",
            counts.frozen,
        )
        yield CounterMetricFamily(
            "evpnd_mac_duplicates_detected_total",
            "MACs detected as duplicates: dad.max_moves moves within dad.window seconds.",
            rib.stats.duplicates_detected,
        )
        moves = dict.fromkeys(((m,) for m in MAC_MOVES), 0)
        moves.update({(d,): n for d, n in rib.stats.mac_moves.items()})
        yield _counter(
            "evpnd_mac_moves_total",
            "MAC moves (a higher mobility sequence number at another location), by direction.",
            ["direction"],
            moves,
        )

    def _local(self) -> Iterator[Metric]:
        counters = self.source.learner.counters
        events = dict.fromkeys(((e,) for e in LOCAL_EVENTS), 0)
        for name, n in counters.by_event.items():
            events[(event_label(name),)] = n
        yield _counter(
            "evpnd_local_events_total",
            "Local endpoint events from the kernel bridge and neighbour tables.",
            ["event"],
            events,
        )
        yield CounterMetricFamily(
            "evpnd_local_netlink_messages_total",
            "Netlink messages read by local learning.",
            counters.messages,
        )
        yield _counter(
            "evpnd_local_netlink_errors_total",
            "Local learning netlink trouble: unparsable messages, receive-buffer overruns.",
            ["kind"],
            {("parse",): counters.parse_errors, ("overrun",): counters.overruns},
        )
        yield CounterMetricFamily(
            "evpnd_local_resyncs_total",
            "Full re-reads of the local bridge and neighbour tables.",
            counters.resyncs,
        )
        yield CounterMetricFamily(
            "evpnd_local_queue_full_total",
            "Times local events were not taken fast enough: reading paused at the queue bound.",
            counters.queue_full,
        )
        repair = getattr(self.source, "device_repair", None)
        yield CounterMetricFamily(
            "evpnd_device_repairs_total",
            "Times VNI devices someone else deleted were recreated (without a reload).",
            0 if repair is None else repair.counters.repairs,
        )

    def _l3(self) -> Iterator[Metric]:
        # Routing between segments (evpnd/metrics/l3.py).
        yield from l3metrics.collect(self.source)

    def _dataplane(self) -> Iterator[Metric]:
        src = self.source
        rec = src.reconciler
        stats = rec.stats
        # Desired and installed are separate families, not one with a `state`
        # label: a sum over all labels of one family must mean something.
        l3 = l3metrics.l3_devices(src) or ()
        for state, table, meaning in (
            ("desired", entries_per_vni(rec.desired, src.devices, l3), "what the routes ask for"),
            ("installed", entries_per_vni(rec.installed, src.devices, l3),
             "what the kernel holds"),
        ):
            for kind, name, doc in (
                ("mac", "evpnd_fdb_entries", "Remote MACs in vxlan FDBs"),
                ("flood", "evpnd_flood_entries", "Flood-list (head-end replication) entries"),
                ("neigh", "evpnd_neighbor_entries", "ARP/ND suppression neighbour entries"),
            ):
                yield _gauge(
                    f"{name}_{state}",
                    f"{doc} owned by evpnd, {meaning}, by VNI.",
                    ["vni"],
                    {(vni,): n for vni, n in table[kind].items()},
                )
        writes = dict.fromkeys(((op,) for op in WRITE_OPS), 0)
        writes.update({(op,): n for op, n in stats.writes_by_op.items()})
        yield _counter(
            "evpnd_reconcile_writes_total",
            "Successful kernel writes by the reconciler, by operation.",
            ["op"],
            writes,
        )
        yield _counter(
            "evpnd_netlink_errors_total",
            "Entries the kernel refused, by operation and errno.",
            ["op", "errno"],
            {tuple(kind.split(":", 1)): n for kind, n in stats.errors_by_kind.items()},
        )
        yield CounterMetricFamily(
            "evpnd_reconcile_repairs_total",
            "Owned entries re-added after something else deleted them.",
            stats.repairs,
        )
        yield CounterMetricFamily(
            "evpnd_reconcile_resyncs_total",
            "Full kernel dumps and diffs (start-up, lost netlink events).",
            stats.resyncs,
        )
        yield CounterMetricFamily(
            "evpnd_reconcile_overruns_total",
            "Times the kernel's notifications overflowed the monitor's receive buffer "
            "(events lost; a resync follows).",
            stats.overruns,
        )
        yield CounterMetricFamily(
            "evpnd_reconcile_takeovers_total",
            "Owned entries an administrator overwrote (then left alone).",
            stats.takeovers,
        )
        yield GaugeMetricFamily(
            "evpnd_dataplane_conflicts",
            "Desired entries whose key an administrator's static entry holds.",
            rec.conflicts,
        )
        yield GaugeMetricFamily(
            "evpnd_dataplane_holding",
            "1 while start-up keeps stale kernel entries until BGP has converged.",
            int(rec.holding),
        )

    def _loop(self) -> Iterator[Metric]:
        lag = self.source.loop_lag
        yield GaugeMetricFamily(
            "evpnd_event_loop_lag_last_seconds",
            "The latest event-loop lag measurement: how late a timer fired.",
            lag.last,
        )
        yield GaugeMetricFamily(
            "evpnd_event_loop_lag_max_seconds",
            "The largest event-loop lag since start.",
            lag.max,
        )
        buckets = [
            ("+Inf" if bound == float("inf") else repr(bound), n) for bound, n in lag.histogram()
        ]
        yield HistogramMetricFamily(
            "evpnd_event_loop_lag_seconds",
            "Event-loop lag measurements: how late a timer fired.",
            buckets=buckets,
            sum_value=lag.sum,
        )

    def _mqtt(self) -> Iterator[Metric]:
        """Only with an `mqtt:` section (the source's optional `mqtt`, see source.py)."""
        bridge = getattr(self.source, "mqtt", None)
        status = None if bridge is None else bridge.status()
        if status is None:
            return
        yield GaugeMetricFamily(
            "evpnd_mqtt_connected", "1 while connected to the MQTT broker.",
            int(bool(status["connected"])),
        )  # fmt: skip
        states = dict.fromkeys(((s,) for s in MQTT_STATES), 0)
        states[(status["state"],)] = 1
        yield _gauge(
            "evpnd_mqtt_state", "The MQTT connection state (1 for the current one).",
            ["state"], states,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "evpnd_mqtt_queued_events", "Events waiting to be sent to the broker.",
            status["queued"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "evpnd_mqtt_endpoints",
            "Endpoints registered over MQTT and advertised.",
            status.get("advertised_endpoints", status["endpoints"]),
        )
        counters = status["counters"]
        for name, doc in MQTT_COUNTERS:
            yield CounterMetricFamily(f"evpnd_mqtt_{name}_total", doc, counters.get(name, 0))

    def _docker(self) -> Iterator[Metric]:
        """Only with `docker.enabled` (the daemon's `docker.status()`, evpnd/docker/glue.py)."""
        glue = getattr(self.source, "docker", None)
        status = None if glue is None else glue.status()
        if status is None:
            return
        yield GaugeMetricFamily("evpnd_docker_networks", "Docker networks served (one VNI each).",
                                status["networks"])
        yield GaugeMetricFamily("evpnd_docker_endpoints", "Docker endpoints (containers' "
                                "interfaces) the driver holds.", status["endpoints"])
        yield GaugeMetricFamily("evpnd_docker_endpoints_max", "docker.max_endpoints: "
                                "CreateEndpoint past it is refused.", status["max_endpoints"])
        yield GaugeMetricFamily("evpnd_docker_endpoints_per_network_max",
                                "docker.max_endpoints_per_network.",
                                status["max_endpoints_per_network"])
        counters = status["counters"]
        yield _counter(
            "evpnd_docker_refused_total",
            "Docker driver refusals: endpoints past a cap, requests with an invalid address "
            "or MAC, addresses or MACs another VTEP advertises.", ["reason"],
            {("endpoint-cap",): counters["endpoints_refused_cap"],
             ("invalid",): counters["requests_refused_invalid"],
             ("collision",): counters["refused_collision"]},
        )  # fmt: skip
        yield CounterMetricFamily(
            "evpnd_docker_records_skipped_total",
            "Saved Docker networks and endpoints left out at start: they no longer validate.",
            counters["records_skipped"],
        )
        yield GaugeMetricFamily(
            "evpnd_docker_address_collisions",
            "Running containers whose address or MAC another VTEP advertises too.",
            len(status["collisions"]),
        )
        yield CounterMetricFamily(
            "evpnd_docker_collisions_detected_total",
            "Collisions that appeared on a running container (another VTEP began to "
            "advertise its address or MAC).", counters["collisions_detected"],
        )
        yield GaugeMetricFamily("evpnd_docker_ipam_addresses",
                                "Addresses the IPAM driver has handed out (gateways included).",
                                status["ipam_addresses"])


MQTT_STATES = ("connecting", "connected", "disconnected", "stopped")
MQTT_COUNTERS = (
    ("connects", "Connections made to the MQTT broker."),
    ("reconnects", "Connections made after the first one."),
    ("connect_failures", "Connection attempts that failed (refused, unreachable, TLS)."),
    ("published", "Messages the broker took (events, summaries, status)."),
    ("dropped", "Events not sent: broker down, queue full, or lost at a disconnect."),
    ("overflowed", "Of those, the oldest queued events, dropped for newer ones (queue_size)."),
    ("refused_endpoints", "New endpoints refused past mqtt.max_endpoints."),
    ("invalid_messages", "Endpoint registrations refused as invalid."),
    ("registrations", "Endpoint registrations received."),
    ("unregistrations", "Endpoint unregistrations received (cleared, deleted, gone)."),
    ("resyncs", "Full re-reads of the retained registrations after a connect."),
)


def build_registry(source: MetricsSource, *, process: bool = True) -> CollectorRegistry:
    """A registry of its own (never the global one) with evpnd's collector.

    With `process`, also prometheus_client's process (CPU, memory, file
    descriptors), platform and garbage-collector metrics.
    """
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    registry.register(EvpndCollector(source))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
