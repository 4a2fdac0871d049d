"""Prometheus metrics: the exposition text follows the daemon's real objects.

The source is built from the objects the daemon holds (a Rib fed by the
Decoder with the ExaBGP samples captured from FRR, a Speaker that was never
started, a Reconciler without sockets, a LocalLearner without sockets), and
every check reads `generate_latest()` output back through prometheus_client's
own parser.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from pydantic import ValidationError

import evpnd
from evpnd import config
from evpnd.daemon import DaemonStats
from evpnd.dataplane.events import LocalMacAdded, LocalMacRemoved, WatchedVni
from evpnd.dataplane.learner import LocalLearner
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.tracker import writes_between
from evpnd.dataplane.writer import EntryError, WriteResult
from evpnd.derived import vni_devices
from evpnd.desired import desired_state
from evpnd.metrics.collector import EvpndCollector, build_registry, entries_per_vni, event_label
from evpnd.metrics.looplag import LoopLagMonitor
from evpnd.metrics.settings import MetricsConfig
from evpnd.model import ENCAP_VXLAN, IPAddress, MacIpKey, MacIpRoute
from evpnd.rib import Rib, VniPolicy
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import PeerState, RouteUpdate
from evpnd.speaker.speaker import Speaker
from tests.conftest import SAMPLES, require

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLE = REPO / "config" / "evpnd.example.yaml"
PEER = "10.99.0.2"
MAC = "02:00:00:00:01:11"
CONFIG = """
router_id: 10.99.0.1
asn: 65000
vtep: {address: 10.99.0.1, device: eth0}
bgp:
  peers:
    - {address: 10.99.0.2, remote_asn: 65000}
    - {address: 10.99.0.3, remote_asn: 65000}
vnis:
  - {vni: 100}
  - {vni: 200}
"""


@dataclass
class Session:
    state: str = "idle"
    established_count: int = 0
    drops: int = 0


class Sessions:
    """The part of evpnd.control.peers.PeerTracker the collector reads (see source.py);
    test_the_real_peer_tracker_fits checks the real one against the same scrape."""

    def __init__(self) -> None:
        self._peers: dict[IPAddress, Session] = {}

    def observe(self, message: object) -> None:
        if not isinstance(message, PeerState):
            return
        rec = self._peers.setdefault(message.peer, Session())
        if message.state == "up" and rec.state != "established":
            rec.state, rec.established_count = "established", rec.established_count + 1
        elif message.state == "down":
            rec.drops += rec.state == "established"
            rec.state = "down"
        elif message.state == "connected":
            rec.state = "connected"

    def records(self) -> dict[IPAddress, Session]:
        return dict(self._peers)


class Source:
    """The daemon's metrics-relevant objects, wired like evpnd.daemon.Daemon wires them."""

    def __init__(self) -> None:
        self.cfg = config.parse(CONFIG)
        self.stats = DaemonStats()
        self.peer_tracker = Sessions()
        self.decoder = Decoder()
        policies = [VniPolicy(v.vni, frozenset(self.cfg.import_targets(v))) for v in self.cfg.vnis]
        self.rib = Rib(self.cfg.vtep.address, policies)
        self.devices = vni_devices(self.cfg)
        # Never started: no ExaBGP, no socket; announce() only records the routes.
        self.speaker = Speaker(self.cfg, state_dir=Path("/tmp/evpnd-metrics-unit"))
        self.reconciler = Reconciler(None, desired_state(self.rib, self.devices), monitor=False)
        self.learner = LocalLearner([WatchedVni(100, "br100", "vxlan100")])
        self.loop_lag = LoopLagMonitor()

    def feed(self, *names: str) -> None:
        """Decode ExaBGP samples and apply them as the daemon's _on_message does."""
        require(SAMPLES.is_dir(), f"{SAMPLES} is missing")
        for name in names:
            for message in self.decoder.decode((SAMPLES / f"json_{name}.json").read_text()):
                self.peer_tracker.observe(message)
                if isinstance(message, RouteUpdate):
                    self.stats.updates += 1
                    self.rib.apply_update(message.peer, message.announced, message.withdrawn)
                elif isinstance(message, PeerState) and message.state == "down":
                    self.stats.peer_downs += 1
                    self.rib.peer_down(message.peer)

    async def program(self) -> WriteResult:
        """New desired state, and a kernel that accepted every write."""
        await self.reconciler.set_desired(desired_state(self.rib, self.devices))
        changes = writes_between(self.reconciler.desired, self.reconciler.installed)
        result = WriteResult()
        for op, entries in (
            ("mac_del", changes.macs_del),
            ("flood_del", changes.floods_del),
            ("neigh_del", changes.neighs_del),
            ("mac_put", changes.macs_put),
            ("flood_add", changes.floods_add),
            ("neigh_put", changes.neighs_put),
        ):
            if entries:
                result.writes[op] += len(entries)
        self.reconciler._record(changes, result)  # what _write() does after the writer returns
        return result


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def registry(source: Source) -> CollectorRegistry:
    return build_registry(source, process=False)


# --------------------------------------------------------------- routes arrive


async def test_values_follow_routes_received_from_frr(
    source: Source, registry: CollectorRegistry
) -> None:
    before = scrape(registry)
    assert value(before, "evpnd_bgp_routes_received_total", type="2", action="announce") == 0
    assert value(before, "evpnd_bgp_routes", type="2") == 0
    assert value(before, "evpnd_bgp_session_up", peer=PEER) == 0
    assert value(before, "evpnd_bgp_sessions_up") == 0
    assert value(before, "evpnd_fdb_entries_installed", vni="100") == 0
    assert value(before, "evpnd_flood_entries_desired", vni="100") == 0

    source.feed(
        "state_up",
        "type2_mac_only",
        "type2_mac_ipv4_single_label",
        "type2_mac_ip_v4_v6_two_labels_rmac_L3VNI",
        "type2_default_gateway_from_frr",
        "type3_imet_pmsi",
        "type5_ip_prefix",
    )
    routes = scrape(registry)
    assert value(routes, "evpnd_bgp_session_up", peer=PEER) == 1
    assert value(routes, "evpnd_bgp_session_up", peer="10.99.0.3") == 0
    assert value(routes, "evpnd_bgp_sessions_up") == 1
    assert value(routes, "evpnd_bgp_updates_received_total") == 6
    received = source.decoder.stats.announced
    by_type = Counter(r.key.route_type for _, r in source.rib.routes())
    assert value(routes, "evpnd_bgp_routes_received_total", type="3", action="announce") == 1
    assert value(routes, "evpnd_bgp_routes_received_total", type="5", action="announce") == 1
    assert (
        sum(
            value(routes, "evpnd_bgp_routes_received_total", type=t, action="announce")
            for t in ("2", "3", "5")
        )
        == received
    )
    for rtype in (2, 3, 5):
        assert value(routes, "evpnd_bgp_routes", type=str(rtype)) == by_type[rtype]
    assert value(routes, "evpnd_bgp_peer_routes", peer=PEER) == sum(by_type.values())
    # The Type-5 route's RT (65000:5000) matches no VNI of this host.
    assert value(routes, "evpnd_bgp_routes_not_imported") == 1
    assert value(routes, "evpnd_rib_remote_macs") == 2
    assert value(routes, "evpnd_rib_flood_vteps") == 1
    # Not in the kernel yet: desired moves, installed does not.
    await source.reconciler.set_desired(desired_state(source.rib, source.devices))
    pending = scrape(registry)
    assert value(pending, "evpnd_fdb_entries_desired", vni="100") == 2
    assert value(pending, "evpnd_fdb_entries_installed", vni="100") == 0

    result = await source.program()
    programmed = scrape(registry)
    desired = source.reconciler.desired
    assert value(programmed, "evpnd_fdb_entries_installed", vni="100") == 2
    assert value(programmed, "evpnd_flood_entries_installed", vni="100") == 1
    assert value(programmed, "evpnd_neighbor_entries_installed", vni="100") == len(
        desired.neighs
    )
    assert value(programmed, "evpnd_fdb_entries_installed", vni="200") == 0
    assert value(programmed, "evpnd_reconcile_writes_total", op="mac_put") == 2
    assert value(programmed, "evpnd_reconcile_writes_total", op="flood_add") == 1
    assert (
        sum(v for (name, _), v in programmed.items() if name == "evpnd_reconcile_writes_total")
        == result.total
    )

    # Withdrawals: counted by type, and the RIB gauges go down.
    source.feed("withdraw_type2_mac_ipv4", "withdraw_type3_and_type5")
    withdrawn = scrape(registry)
    assert value(withdrawn, "evpnd_bgp_routes_received_total", type="2", action="withdraw") == 1
    assert value(withdrawn, "evpnd_bgp_routes_received_total", type="3", action="withdraw") == 1
    assert value(withdrawn, "evpnd_bgp_routes_received_total", type="5", action="withdraw") == 1
    assert value(withdrawn, "evpnd_bgp_routes", type="3") == 0
    assert value(withdrawn, "evpnd_bgp_routes", type="2") == by_type[2] - 1

    # The session goes down: ExaBGP sends no withdrawals, the daemon flushes the peer.
    source.feed("state_down_notification_received")
    down = scrape(registry)
    assert value(down, "evpnd_bgp_session_up", peer=PEER) == 0
    assert value(down, "evpnd_bgp_session_drops_total", peer=PEER) == 1
    assert value(down, "evpnd_bgp_session_established_total", peer=PEER) == 1
    assert value(down, "evpnd_bgp_session_drops_total", peer="10.99.0.3") == 0
    assert value(down, "evpnd_bgp_peer_routes", peer=PEER) == 0


def test_decode_errors_are_counted_by_reason(source: Source, registry: CollectorRegistry) -> None:
    assert not any(name == "evpnd_decode_errors_total" for name, _ in scrape(registry))
    source.decoder.decode("{not json")
    source.decoder.decode('{"exabgp": "5.0.0", "type": "update"}')
    source.feed("negotiated")
    samples = scrape(registry)
    assert value(samples, "evpnd_decode_errors_total", reason="bad-json") == 1
    assert sum(v for (n, _), v in samples.items() if n == "evpnd_decode_errors_total") == 2
    assert value(samples, "evpnd_decode_ignored_total", reason="type-negotiated") == 1
    assert value(samples, "evpnd_exabgp_lines_received_total") == 3


def test_mac_move_and_local_macs(source: Source, registry: CollectorRegistry) -> None:
    source.learner._emit(
        [LocalMacAdded(100, "br100", "veth1", MAC)]
    )  # the learner's own bookkeeping
    source.rib.local_mac_added(100, MAC)  # ... and what the daemon does with the event
    here = scrape(registry)
    assert value(here, "evpnd_local_macs") == 1
    assert value(here, "evpnd_local_macs_advertised") == 1
    assert value(here, "evpnd_local_events_total", event="mac_added") == 1
    assert value(here, "evpnd_mac_moves_total", direction="local-to-remote") == 0
    # FRR's host now claims the MAC with mobility sequence 4: it moved away.
    source.feed("type2_mac_mobility_seq4_from_frr")
    moved = scrape(registry)
    assert value(moved, "evpnd_mac_moves_total", direction="local-to-remote") == 1
    assert value(moved, "evpnd_local_macs_advertised") == 0
    source.learner._emit([LocalMacRemoved(100, "br100", "veth1", MAC)])
    assert value(scrape(registry), "evpnd_local_events_total", event="mac_removed") == 1


def test_routes_we_advertise_and_send(source: Source, registry: CollectorRegistry) -> None:
    assert value(scrape(registry), "evpnd_bgp_routes_advertised", type="2") == 0
    route = MacIpRoute(
        key=MacIpKey("10.99.0.1:100", 0, "02:00:00:00:00:01"),
        nexthop=IPv4Address("10.99.0.1"),
        vni=100,
        route_targets=("65000:100",),
        encapsulation=ENCAP_VXLAN,
    )
    source.speaker.announce([route])
    source.speaker.counters.announced += 1  # as when ExaBGP acknowledges the line
    source.speaker.counters.acks += 1
    samples = scrape(registry)
    assert value(samples, "evpnd_bgp_routes_advertised", type="2") == 1
    assert value(samples, "evpnd_bgp_routes_advertised", type="3") == 0
    assert value(samples, "evpnd_bgp_routes_sent_total", action="announce") == 1
    assert value(samples, "evpnd_exabgp_command_acks_total", result="done") == 1
    assert value(samples, "evpnd_exabgp_connected") == 0
    source.stats.speaker_restarts += 1
    assert value(scrape(registry), "evpnd_exabgp_restarts_total") == 1


def test_netlink_errors_by_op_and_errno(source: Source, registry: CollectorRegistry) -> None:
    source.feed("state_up", "type2_mac_only")
    changes = writes_between(desired_state(source.rib, source.devices), source.reconciler.installed)
    mac = changes.macs_put[0]
    refused = WriteResult(errors=[EntryError("mac_put", mac, 19, "unknown device 'vxlan100'")])
    source.reconciler._record(changes, refused)
    samples = scrape(registry)
    assert value(samples, "evpnd_netlink_errors_total", op="mac_put", errno="ENODEV") == 1
    assert value(samples, "evpnd_fdb_entries_installed", vni="100") == 0


def test_loop_lag_and_daemon_info(source: Source) -> None:
    registry = build_registry(source, process=False)
    source.loop_lag.observe(0.003)
    source.loop_lag.observe(0.2)
    samples = scrape(registry)
    assert value(samples, "evpnd_event_loop_lag_last_seconds") == 0.2
    assert value(samples, "evpnd_event_loop_lag_max_seconds") == 0.2
    assert value(samples, "evpnd_event_loop_lag_seconds_count") == 2
    assert value(samples, "evpnd_event_loop_lag_seconds_bucket", le="0.005") == 1
    assert value(samples, "evpnd_event_loop_lag_seconds_bucket", le="+Inf") == 2
    assert value(samples, "evpnd_event_loop_lag_seconds_sum") == pytest.approx(0.203)
    info = [k for k in samples if k[0] == "evpnd_build_info"]
    assert len(info) == 1 and ("version", evpnd.__version__) in info[0][1]
    assert value(samples, "evpnd_start_time_seconds") == source.stats.started
    assert value(samples, "evpnd_converged") == 0
    assert value(samples, "evpnd_dataplane_holding") == 0


def test_every_metric_has_help_and_evpnd_prefix(source: Source) -> None:
    text = generate_latest(build_registry(source, process=False)).decode()
    families = list(text_string_to_metric_families(text))
    assert len(families) > 30
    for family in families:
        assert family.name.startswith("evpnd_"), family.name
        assert family.documentation, family.name
    counters = {f.name for f in families if f.type == "counter"}
    assert all(f"{name}_total" in text for name in counters)


async def test_desired_and_installed_are_separate_metrics_that_sum(source: Source) -> None:
    """Summing a family over all its labels must mean something: no `state` label that
    mixes what the routes ask for with what the kernel holds."""
    source.feed("state_up", "type2_mac_only", "type2_mac_ipv4_single_label", "type3_imet_pmsi")
    await source.reconciler.set_desired(desired_state(source.rib, source.devices))
    text = generate_latest(build_registry(source, process=False)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for kind in ("fdb", "flood", "neighbor"):
        assert f"evpnd_{kind}_entries" not in families
        for state in ("desired", "installed"):
            family = families[f"evpnd_{kind}_entries_{state}"]
            assert family.type == "gauge"
            assert all(set(s.labels) == {"vni"} for s in family.samples), family.samples
    desired = families["evpnd_fdb_entries_desired"].samples
    assert sum(s.value for s in desired) == len(source.reconciler.desired.macs) > 0
    assert sum(s.value for s in families["evpnd_fdb_entries_installed"].samples) == 0
    with_state = [f.name for f in families.values()
                  if any("state" in s.labels for s in f.samples) and f.name != "evpnd_mqtt_state"]
    assert with_state == []


def test_the_docs_list_every_metric(source: Source) -> None:
    """docs/metrics.md's table names every family, the MQTT and Docker ones included."""
    from types import SimpleNamespace

    from evpnd.docker.driver import DriverCounters
    from evpnd.mqtt.client import MqttService
    from evpnd.mqtt.settings import MqttConfig

    # An MQTT service never started, and the Docker part of `show status` as DockerGlue
    # builds it around the driver's real counters: their metric families appear.
    mqtt = MqttService(MqttConfig(host="broker.example"))
    source.mqtt = SimpleNamespace(status=lambda: mqtt.status().as_dict())
    source.docker = SimpleNamespace(status=lambda: {
        "networks": 0, "endpoints": 0, "max_endpoints": 16384, "max_endpoints_per_network": 4096,
        "counters": DriverCounters().as_dict(), "collisions": [], "ipam_addresses": 0,
    })
    docs = (REPO / "docs" / "metrics.md").read_text()
    rows = "\n".join(line for line in docs.splitlines() if line.startswith("| `"))
    text = generate_latest(build_registry(source, process=False)).decode()
    families = list(text_string_to_metric_families(text))
    names = {family.name for family in families}
    assert "evpnd_mqtt_connected" in names and "evpnd_docker_networks" in names
    for family in families:
        shown = family.name + ("_total" if family.type == "counter" else "")
        shown = shown + "_info" if family.type == "info" else shown
        assert f"`{shown}`" in rows, f"{shown} missing from the table in docs/metrics.md"


def test_process_metrics_are_optional(source: Source) -> None:
    text = generate_latest(build_registry(source)).decode()
    assert "process_cpu_seconds_total" in text or "python_info" in text
    assert "python_info" not in generate_latest(build_registry(source, process=False)).decode()


def test_a_failing_section_is_left_out_and_counted(source: Source) -> None:
    class Broken(Rib):
        def counts(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    source.rib = Broken(source.cfg.vtep.address)
    collector = EvpndCollector(source)
    registry = CollectorRegistry()
    registry.register(collector)
    samples = scrape(registry)
    assert value(samples, "evpnd_metrics_collect_errors_total") == 2  # bgp and evpn sections
    assert value(samples, "evpnd_fdb_entries_installed", vni="100") == 0
    assert not any(name == "evpnd_bgp_sessions_up" for name, _ in samples)


# --------------------------------------------------------------------- helpers


def test_entries_per_vni_counts_unknown_devices_apart(source: Source) -> None:
    source.feed("state_up", "type2_mac_ipv4_single_label", "type3_imet_pmsi")
    state = desired_state(source.rib, source.devices)
    counts = entries_per_vni(state, {200: source.devices[200]})  # VNI 100 unknown here
    assert counts["mac"] == {"200": 0, "unknown": 1}
    assert counts["flood"]["unknown"] == 1


def test_event_labels() -> None:
    assert event_label("LocalMacAdded") == "mac_added"
    assert event_label("LocalIpRemoved") == "ip_removed"
    assert event_label("Resynced") == "resynced"


# -------------------------------------------------------------------- settings


def test_metrics_settings_defaults() -> None:
    cfg = MetricsConfig()
    assert cfg.enabled is False
    assert str(cfg.address) == "127.0.0.1"
    assert cfg.port == 9595
    assert (cfg.tls, cfg.basic_auth, cfg.fabric_view) == (None, None, False)  # plain HTTP, open
    assert (
        MetricsConfig.model_validate({"enabled": True, "address": "::", "port": 9100}).port == 9100
    )
    full = MetricsConfig.model_validate({
        "enabled": True, "fabric_view": True,
        "tls": {"cert": "/etc/evpnd/metrics.pem", "key": "/etc/evpnd/metrics.key"},
        "basic_auth": {"user": "prometheus", "password": "pw"},
    })  # fmt: skip
    assert full.tls is not None and str(full.tls.key) == "/etc/evpnd/metrics.key"
    assert full.basic_auth is not None and full.basic_auth.password.get_secret_value() == "pw"
    assert "pw" not in repr(full)


@pytest.mark.parametrize(
    ("data", "field_name", "message"),
    [
        ({"port": 0}, "port", "1..65535"),
        ({"port": 70000}, "port", "1..65535"),
        ({"address": "10.0.0.300"}, "address", "IPv"),
        ({"lag_interval": 0}, "lag_interval", "0.01 and 60"),
        ({"enabled": "maybe"}, "enabled", "bool"),
        ({"listen": "0.0.0.0"}, "listen", "Extra inputs are not permitted"),
        ({"tls": {"cert": "/etc/evpnd/m.pem"}}, "tls", "Field required"),
        ({"tls": {"cert": "/a", "key": "/b", "ca": "/c"}}, "tls", "Extra inputs"),
        ({"basic_auth": {"password": "x"}}, "basic_auth", "Field required"),
        ({"basic_auth": {"user": "a:b", "password": "x"}}, "basic_auth", "must not contain ':'"),
        ({"basic_auth": {"user": "a", "password": 1234}}, "basic_auth", "must be a string"),
        ({"basic_auth": {"user": "a", "password": ""}}, "basic_auth", "1..1024 characters"),
        ({"fabric_view": "sometimes"}, "fabric_view", "bool"),
    ],
)
def test_metrics_settings_errors_name_the_field(
    data: dict[str, object], field_name: str, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        MetricsConfig.model_validate(data)
    errors = info.value.errors()
    assert errors[0]["loc"][0] == field_name  # pydantic may add a union-branch marker
    assert any(message in e["msg"] for e in errors), errors


def test_metrics_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        MetricsConfig().port = 1  # type: ignore[misc]


def example_metrics_block() -> str:
    """The `metrics:` block of the example config."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("metrics:")
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line)
    return "\n".join(block)


def test_example_config_documents_every_metrics_field() -> None:
    block = example_metrics_block()
    for name in MetricsConfig.model_fields:
        assert re.search(rf"^  {name}:", block, re.M), f"metrics.{name} undocumented"
    data = yaml.safe_load(block)["metrics"]
    # The example shows the defaults.
    assert MetricsConfig.model_validate(data) == MetricsConfig()


def test_example_config_loads_with_its_metrics_section() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.metrics == MetricsConfig()
    assert config.parse(CONFIG).metrics == MetricsConfig()  # the section is optional


# ------------------------------------------------------------ the real daemon


@pytest.mark.parametrize("peers", [True, False], ids=["speaker", "no-speaker"])
def test_the_daemon_is_a_metrics_source(peers: bool) -> None:
    from evpnd.daemon import Daemon

    text = CONFIG if peers else CONFIG[: CONFIG.index("bgp:")] + "vnis: [{vni: 100}]\n"
    daemon = Daemon(config.parse(text))  # constructed, not run: no sockets, no processes
    samples = scrape(build_registry(daemon, process=False))
    assert value(samples, "evpnd_metrics_collect_errors_total") == 0
    assert value(samples, "evpnd_fdb_entries_desired", vni="100") == 0
    if peers:
        assert value(samples, "evpnd_bgp_session_up", peer=PEER) == 0


def test_the_real_peer_tracker_fits() -> None:
    peers = pytest.importorskip("evpnd.control.peers")
    source = Source()
    source.peer_tracker = peers.PeerTracker()
    registry = build_registry(source, process=False)
    assert value(scrape(registry), "evpnd_bgp_session_up", peer=PEER) == 0
    source.feed("state_up", "type2_mac_only")
    samples = scrape(registry)
    assert value(samples, "evpnd_bgp_session_up", peer=PEER) == 1
    assert value(samples, "evpnd_bgp_session_established_total", peer=PEER) == 1
    assert value(samples, "evpnd_metrics_collect_errors_total") == 0
    source.feed("state_down_notification_received")
    assert value(scrape(registry), "evpnd_bgp_session_drops_total", peer=PEER) == 1
