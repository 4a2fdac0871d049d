"""Operating evpnd on a running fabric: `evpnd show`, Prometheus metrics, MQTT.

One lab for the whole module: containerlab/evpn-ops.clab.yml realized in
network namespaces (FRR route reflector rr, evpnd hosts host1 and host2 with
one endpoint each on VNI 100, and an MQTT broker node running the host's
mosquitto through the lab's image map). Both hosts run with the control
socket, metrics on 0.0.0.0:9595 and MQTT (prefix evpnd/hostN) enabled.

The CLI runs inside a host's namespace exactly as an operator would
(`ip netns exec` + `python -m evpnd show ... -c <the host's config>`); metrics
are scraped from rr over the underlay, like a Prometheus on the fabric; MQTT
is watched and fed by a test client (tests/netns/mqtt_tool.py, aiomqtt) in the
broker's namespace. Tests are ordered: read-only first, the hand-over last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from evpnd.lab import mosquitto, program, topology
from evpnd.lab import state as labstate
from tests.conftest import REPO, require_program
from tests.netns.cdp import Browser
from tests.netns.fabric import FRR_LAB_NEEDS, Fabric, T, alive, running_lab
from tests.netns.fabric import wait_for as poll
from tests.unit import test_contrib as contrib

pytestmark = pytest.mark.netns

LAB_FILE = REPO / "containerlab" / "evpn-ops.clab.yml"
LAB = "evpn-ops"
FABRIC = Fabric(LAB)
HOSTS = ("host1", "host2")
VTEP = {"host1": "10.0.1.2", "host2": "10.0.2.2"}
RR_SIDE = {"host1": "10.0.1.1", "host2": "10.0.2.1"}  # the peer each host sees
ENDPOINT = {"host1": ("h1e1", "10.100.0.11", "02:00:00:00:01:01"),
            "host2": ("h2e1", "10.100.0.21", "02:00:00:00:02:01")}  # fmt: skip
BRIDGE_IP = {"host1": "10.100.0.251", "host2": "10.100.0.252"}
BROKER = "127.0.0.1"  # the MQTT client runs in the broker's own namespace
CONVERGE = 60.0


def config(host: str) -> Path:
    return REPO / "containerlab" / "configs" / LAB / host / "evpnd.yaml"


def ns(node: str) -> str:
    return f"clab-{LAB}-{node}"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    return poll(what, probe, timeout, interval=0.3)


# ---------------------------------------------------------------------------
# the CLI, metrics and MQTT as an operator would use them


def show(host: str, view: str, *args: str, as_json: bool = True,
         check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = ["ip", "netns", "exec", ns(host), sys.executable, "-m", "evpnd", "show", view,
            "-c", str(config(host)), *args, *(["--json"] if as_json else [])]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check:
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result


def show_json(host: str, view: str, *args: str) -> Any:
    return json.loads(show(host, view, *args).stdout)


def scrape_text(host: str) -> str:
    """The host's /metrics as Prometheus text, fetched from rr over the underlay."""
    url = f"http://{VTEP[host]}:9595/metrics"
    code = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(" \
           "sys.argv[1], timeout=10).read().decode())"  # fmt: skip
    out = subprocess.run(["ip", "netns", "exec", ns("rr"), sys.executable, "-c", code, url],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0, f"scraping {url} failed: {out.stderr[-500:]}"
    return out.stdout


def scrape(host: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The host's /metrics: (name, labels) -> value."""
    samples = {}
    for family in text_string_to_metric_families(scrape_text(host)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}"
    return samples[key]


class MqttTap:
    """A subscriber in the broker's namespace; collects every message it gets."""

    def __init__(self, *topics: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", ns("broker"), sys.executable, "-m", "tests.netns.mqtt_tool",
             "sub", BROKER, *topics],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(15):
            self.close()
            pytest.fail(f"the test MQTT subscriber did not get ready: {self.messages}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                item = {"raw": line.rstrip()}
            if item.get("ready"):
                self._ready.set()
                continue
            if isinstance(item.get("payload"), str) and item["payload"].startswith("{"):
                item["data"] = json.loads(item["payload"])
            with self._lock:
                self.messages.append(item)

    def events(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m["data"] for m in self.messages if m.get("topic") == topic and "data" in m]

    def wait_event(self, topic: str, what: str, match: Callable[[dict], bool] = lambda e: True,
                   timeout: float = 20) -> dict[str, Any]:  # fmt: skip
        return wait_for(f"{what} on {topic}",
                        lambda: next((e for e in self.events(topic) if match(e)), None),
                        timeout)  # fmt: skip

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)


@contextlib.contextmanager
def tap(*topics: str) -> Iterator[MqttTap]:
    t = MqttTap(*topics)
    try:
        yield t
    finally:
        t.close()


def mqtt_publish(topic: str, payload: str | None, retain: bool = True) -> None:
    argv = ["ip", "netns", "exec", ns("broker"), sys.executable, "-m", "tests.netns.mqtt_tool",
            "pub", BROKER, topic, *([payload] if payload is not None else []),
            *(["--retain"] if retain else [])]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------
# kernel state


def remote_macs(host: str) -> dict[str, str]:
    """MAC -> VTEP of the unicast entries on the host's vxlan100."""
    return {e["mac"]: e["dst"] for e in FABRIC.fdb(host, "vxlan100")
            if "dst" in e and e["mac"] != "00:00:00:00:00:00"}  # fmt: skip


def neighbours(host: str) -> dict[str, str]:
    out = FABRIC.run(host, ["ip", "-j", "neigh", "show", "dev", "br100"])
    entries = json.loads(out.stdout or "[]")
    return {e["dst"]: e.get("lladdr") for e in entries if "extern_learn" in e}


def converged() -> bool:
    other = {"host1": "host2", "host2": "host1"}
    for host in HOSTS:
        _, ip, mac = ENDPOINT[other[host]]
        if remote_macs(host).get(mac) != VTEP[other[host]]:
            return False
        if neighbours(host).get(ip) != mac:
            return False
    return True


def nudge() -> None:
    """Endpoints talk to their host's bridge: the bridges (re)learn MAC and MAC+IP."""
    for host in HOSTS:
        endpoint, _, _ = ENDPOINT[host]
        FABRIC.ping(endpoint, BRIDGE_IP[host], count=1)


def wait_converged(what: str) -> None:
    deadline = time.monotonic() + CONVERGE
    while not converged():
        if time.monotonic() >= deadline:
            state = {h: (remote_macs(h), neighbours(h)) for h in HOSTS}
            pytest.fail(f"evpn-ops not converged after {CONVERGE:.0f}s ({what}): {state}\n"
                        + "\n".join(FABRIC.log_tail(h) for h in HOSTS), pytrace=False)
        nudge()
        time.sleep(0.5)


def procs(host: str, marker: str) -> list[int]:
    return FABRIC.procs(host, marker)


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fabric() -> Iterator[None]:
    with running_lab(LAB_FILE, (*FRR_LAB_NEEDS, ("mosquitto", "mosquitto"))):
        wait_converged("after lab up")
        wait_for("both hosts connected to the MQTT broker", lambda: all(
            show_json(h, "status")["mqtt"]["state"] == "connected" for h in HOSTS))  # fmt: skip
        yield


def test_show_commands_tell_the_real_state_in_json(fabric: None) -> None:
    mac1, mac2 = ENDPOINT["host1"][2], ENDPOINT["host2"][2]
    # show mac: h1e1 is remote behind host1's VTEP, learned through rr; h2e1 is local on eth2
    data = show_json("host2", "mac", "--vni", "100")
    (vni,) = data["vnis"]
    assert (vni["vni"], vni["bridge"], vni["vxlan_device"]) == (100, "br100", "vxlan100")
    macs = {m["mac"]: m for m in vni["macs"]}
    remote = macs[mac1]
    assert (remote["type"], remote["vtep"], remote["peer"]) == ("remote", VTEP["host1"],
                                                                RR_SIDE["host2"])
    assert remote["installed"] is True and remote["ips"] == [ENDPOINT["host1"][1]]
    local = macs[mac2]
    assert (local["type"], local["port"], local["vtep"]) == ("local", "eth2", None)

    # show peers: the route reflector, established, with routes both ways
    (peer,) = show_json("host2", "peers")["peers"]
    assert peer["address"] == RR_SIDE["host2"] and peer["state"] == "established"
    assert peer["remote_asn"] == 65000 and peer["description"] == "route reflector rr"
    assert peer["routes_received"] >= 3 and peer["uptime"] > 0  # Type-3 + Type-2 + MAC+IP

    # show vni: devices, live MTU, counts, the remote VTEP
    (row,) = show_json("host2", "vni")["vnis"]
    assert (row["vni"], row["bridge"], row["vxlan_device"]) == (100, "br100", "vxlan100")
    assert row["vteps"] == [VTEP["host1"]] and row["flood"] == "evpn"
    assert row["local_macs"] == 1 and row["remote_macs"] == 1 and isinstance(row["mtu"], int)

    # show neighbors: h1e1's binding, installed for ARP suppression
    (nvni,) = show_json("host2", "neighbors", "--vni", "100")["vnis"]
    binding = {n["ip"]: n for n in nvni["neighbors"]}[ENDPOINT["host1"][1]]
    assert (binding["type"], binding["mac"], binding["vtep"]) == ("remote", mac1, VTEP["host1"])
    assert binding["installed"] is True

    # show routes: host1's Type-3 received, our own Type-3 announced
    received = show_json("host2", "routes", "--type", "3", "--direction", "in")["routes"]
    assert [(r["nexthop"], r["vni"], r["peer"]) for r in received] == [
        (VTEP["host1"], 100, RR_SIDE["host2"])]
    announced = show_json("host2", "routes", "--direction", "out")["routes"]
    assert {r["type"] for r in announced} == {2, 3}
    assert all(r["nexthop"] == VTEP["host2"] for r in announced)

    # show vteps: host1's VTEP floods VNI 100, its MAC and binding are behind it
    (vtep,) = show_json("host2", "vteps")["vteps"]
    assert vtep["vtep"] == VTEP["host1"] and vtep["macs"] == 1 and vtep["flood_installed"]

    # show status: ExaBGP's pid is the launcher running in host2's namespace
    status = show_json("host2", "status")
    assert [status["speaker"]["pid"]] == procs("host2", "evpnd.speaker.launcher")
    assert status["speaker"]["connected"] is True and status["converged"] is True
    assert status["pid"] == procs("host2", "evpnd run")[0]
    assert status["peers"] == {"configured": 1, "established": 1}
    assert status["mqtt"]["state"] == "connected"
    assert status["mqtt"]["broker"] == "mqtt://10.0.9.2:1883"
    # The routes came the raw way (bgp.receive: raw, the default): frames of
    # undecoded UPDATEs, decoded by evpnd (with `json` there would be none).
    decoder = status["decoder"]
    assert decoder["frames"] >= 1 and decoder["announced"] >= 3, decoder
    assert decoder["errors"] == {}, decoder


def test_show_commands_print_frr_like_tables(fabric: None) -> None:
    peers = show("host2", "peers", as_json=False).stdout
    assert "BGP router identifier 10.0.2.2, local AS number 65000, VTEP 10.0.2.2" in peers
    assert "Neighbor" in peers and "State/PfxRcd" in peers
    assert "Total number of neighbors 1, established 1" in peers
    line = next(x for x in peers.splitlines() if x.startswith(RR_SIDE["host2"]))
    assert "route reflector rr" in line

    mac = show("host2", "mac", "--vni", "100", as_json=False).stdout
    assert "Number of MACs (local and remote) known for this VNI: 2" in mac
    row = next(x for x in mac.splitlines() if x.startswith(ENDPOINT["host1"][2])).split()
    assert row[1] == "remote" and VTEP["host1"] in row
    assert "Number of VNIs: 1" in show("host2", "vni", as_json=False).stdout
    assert "Number of remote VTEPs: 1" in show("host2", "vteps", as_json=False).stdout
    routes = show("host2", "routes", as_json=False).stdout
    # FRR's status codes (*> valid and best), then the prefix, next hop and direction.
    rows = {r[1]: r for r in (x.split() for x in routes.splitlines()) if r[:1] == ["*>"]}
    assert rows[f"[3]:[0]:[32]:[{VTEP['host1']}]"][2:4] == [VTEP["host1"], "in"]
    assert rows[f"[3]:[0]:[32]:[{VTEP['host2']}]"][2:4] == [VTEP["host2"], "out"]
    assert "Displayed" in routes.splitlines()[-1]
    neigh = show("host2", "neighbors", as_json=False).stdout
    assert ENDPOINT["host1"][1] in neigh and "ARP/ND suppression on" in neigh
    status = show("host2", "status", as_json=False).stdout
    (speaker,) = procs("host2", "evpnd.speaker.launcher")
    # (the key column is as wide as the section's longest counter name)
    assert "\nExaBGP:\n" in status and re.search(rf"^  pid +{speaker}$", status, re.M)
    assert "\nMQTT:\n" in status and "mqtt://10.0.9.2:1883" in status


def test_show_says_clearly_when_it_cannot_answer(fabric: None) -> None:
    unknown = show("host2", "mac", "--vni", "999", check=False)
    assert unknown.returncode == 1 and "VNI 999 is not configured" in unknown.stderr
    argv = ["ip", "netns", "exec", ns("host2"), sys.executable, "-m", "evpnd", "show", "peers",
            "--socket", "/run/evpnd/evpn-ops-nowhere/control.sock"]  # fmt: skip
    missing = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2, missing
    assert "evpnd is not running (no control socket at" in missing.stderr
    assert "Traceback" not in missing.stderr
    socket_path = Path("/run/evpnd/evpn-ops-host2/control.sock")
    assert (socket_path.stat().st_mode & 0o777) == 0o600


def test_reload_over_the_control_socket_keeps_everything_running(fabric: None) -> None:
    code = ("import sys; from evpnd.control import client; "
            "print(client.reload(sys.argv[1]))")  # fmt: skip
    argv = ["ip", "netns", "exec", ns("host2"), sys.executable, "-c", code,
            "/run/evpnd/evpn-ops-host2/control.sock"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0 and "'reloaded': True" in out.stdout, out
    status = show_json("host2", "status")
    assert status["peers"]["established"] == 1 and status["mqtt"]["state"] == "connected"
    assert metric(scrape("host2"), "evpnd_bgp_session_up", peer=RR_SIDE["host2"]) == 1
    assert remote_macs("host2").get(ENDPOINT["host1"][2]) == VTEP["host1"]


def test_metrics_follow_the_routes(fabric: None) -> None:
    mac = "02:00:00:00:01:99"  # a new endpoint MAC behind host1's eth2
    before1, before2 = scrape("host1"), scrape("host2")
    assert metric(before2, "evpnd_bgp_session_up", peer=RR_SIDE["host2"]) == 1
    assert metric(before2, "evpnd_exabgp_connected") == 1
    assert metric(before2, "evpnd_mqtt_connected") == 1
    assert metric(before2, "evpnd_fdb_entries_installed", vni="100") == 1
    assert metric(before2, "evpnd_flood_entries_installed", vni="100") == 1

    def received(samples: dict, action: str) -> float:
        return metric(samples, "evpnd_bgp_routes_received_total", type="2", action=action)

    add = FABRIC.run("host1", ["bridge", "fdb", "add", mac, "dev", "eth2", "master", "dynamic"])
    assert add.returncode == 0, add.stderr
    try:
        wait_for("host2 to install the new MAC", lambda: remote_macs("host2").get(mac))
        after2 = wait_for("host2's metrics to count the new route", lambda: (
            s if received(s := scrape("host2"), "announce") > received(before2, "announce")
            and metric(s, "evpnd_fdb_entries_installed", vni="100") == 2 else None))
        remote = "evpnd_rib_remote_macs"
        assert metric(after2, remote) == metric(before2, remote) + 1
        assert metric(after2, "evpnd_bgp_updates_received_total") > metric(
            before2, "evpnd_bgp_updates_received_total")
        writes = ("evpnd_reconcile_writes_total", {"op": "mac_put"})
        assert metric(after2, writes[0], **writes[1]) > metric(before2, writes[0], **writes[1])
        after1 = scrape("host1")
        assert metric(after1, "evpnd_local_macs") == metric(before1, "evpnd_local_macs") + 1
        assert metric(after1, "evpnd_local_events_total", event="mac_added") > metric(
            before1, "evpnd_local_events_total", event="mac_added")
        assert metric(after1, "evpnd_bgp_routes_advertised", type="2") > metric(
            before1, "evpnd_bgp_routes_advertised", type="2")
    finally:
        FABRIC.run("host1", ["bridge", "fdb", "del", mac, "dev", "eth2", "master"])
    wait_for("host2 to remove the MAC again", lambda: mac not in remote_macs("host2"))
    gone = wait_for("host2's metrics to count the withdrawal", lambda: (
        s if received(s := scrape("host2"), "withdraw") > received(before2, "withdraw") else None))
    assert metric(gone, "evpnd_fdb_entries_installed", vni="100") == 1
    print(f"\nhost2 routes received type-2: announce {received(before2, 'announce'):.0f} -> "
          f"{received(after2, 'announce'):.0f}, withdraw {received(before2, 'withdraw'):.0f} -> "
          f"{received(gone, 'withdraw'):.0f}; loop lag max "
          f"{metric(gone, 'evpnd_event_loop_lag_max_seconds') * 1000:.1f} ms")


def test_promtool_accepts_the_real_metrics_and_contrib_uses_only_real_ones(
    fabric: None, tmp_path: Path
) -> None:
    """`promtool check metrics` on a lab host's real /metrics; every metric the alert
    rules and the Grafana dashboard name is in it (contrib/, tests/unit/test_contrib.py)."""
    promtool = require_program("promtool", "prometheus")
    text = scrape_text("host2")
    (tmp_path / "host2.metrics").write_text(text)
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    exposed = contrib.exposed_names(text)
    assert contrib.unknown_metrics(contrib.rule_exprs(), exposed) == {}
    assert contrib.unknown_metrics(contrib.dashboard_exprs(), exposed) == {}
    # The split gauges: desired and installed agree on a converged host.
    samples = scrape("host2")
    assert metric(samples, "evpnd_fdb_entries_desired", vni="100") == metric(
        samples, "evpnd_fdb_entries_installed", vni="100") >= 1  # fmt: skip


def test_mqtt_events_when_a_remote_endpoint_appears_and_goes(fabric: None) -> None:
    mac = "02:00:00:00:01:77"
    with tap("evpnd/+/events/#", "evpnd/+/summary/#", "evpnd/+/status") as sub:
        # retained state is there for a subscriber that comes late
        status = sub.wait_event("evpnd/host2/status", "host2's retained status")
        assert status["state"] == "online" and status["client_id"] == "evpnd-ops-host2"
        # (the retained one may be up to a second behind: at most one summary a second)
        summary = sub.wait_event("evpnd/host2/summary/100", "host2's summary of VNI 100",
                                 lambda e: e["remote_macs"] == 1)  # fmt: skip
        assert summary["vteps"] == [VTEP["host1"]] and summary["local_macs"] == 1

        add = FABRIC.run("host1", ["bridge", "fdb", "add", mac, "dev", "eth2", "master",
                                   "dynamic"])  # fmt: skip
        assert add.returncode == 0, add.stderr
        try:
            learned = sub.wait_event("evpnd/host1/events/local_mac_learned", "host1's event",
                                     lambda e: e["mac"] == mac)  # fmt: skip
            assert (learned["vni"], learned["port"], learned["source"]) == (100, "eth2", "kernel")
            installed = sub.wait_event("evpnd/host2/events/remote_mac_installed",
                                       "host2's event", lambda e: e["mac"] == mac)  # fmt: skip
            assert installed["vni"] == 100 and installed["vtep"] == VTEP["host1"]
            assert installed["peer"] == RR_SIDE["host2"] and installed["seq"] == 0
            assert installed["time"].endswith("Z")
            newer = sub.wait_event("evpnd/host2/summary/100", "host2's summary with 2 MACs",
                                   lambda e: e["remote_macs"] == 2)  # fmt: skip
            assert newer["local_macs"] == 1
        finally:
            FABRIC.run("host1", ["bridge", "fdb", "del", mac, "dev", "eth2", "master"])
        removed = sub.wait_event("evpnd/host2/events/remote_mac_removed", "host2's event",
                                 lambda e: e["mac"] == mac)  # fmt: skip
        assert removed["vtep"] == VTEP["host1"] and removed["vni"] == 100
        sub.wait_event("evpnd/host1/events/local_mac_removed", "host1's event",
                       lambda e: e["mac"] == mac and e["source"] == "kernel")  # fmt: skip


def test_endpoint_registered_over_mqtt_on_host1_is_installed_on_host2(fabric: None) -> None:
    mac = "02:00:00:00:0a:01"
    topic = f"evpnd/host1/endpoints/100/{mac}"
    with tap("evpnd/+/events/#") as sub:
        mqtt_publish(topic, json.dumps({"mac": mac, "ip": "10.100.0.201"}))
        try:
            wait_for("host2's FDB to send the registered MAC to host1's VTEP",
                     lambda: remote_macs("host2").get(mac) == VTEP["host1"])  # fmt: skip
            wait_for("host2's neighbour entry for the registered IP",
                     lambda: neighbours("host2").get("10.100.0.201") == mac)  # fmt: skip
            event = sub.wait_event("evpnd/host1/events/endpoint_registered", "host1's event")
            assert (event["mac"], event["ip"], event["sticky"]) == (mac, "10.100.0.201", False)
            learned = sub.wait_event("evpnd/host1/events/local_mac_learned", "host1's event",
                                     lambda e: e["mac"] == mac)  # fmt: skip
            assert learned["source"] == "mqtt" and learned["port"] is None
            local = {m["mac"]: m for m in show_json("host1", "mac")["vnis"][0]["macs"]}[mac]
            assert local["type"] == "local" and local["ips"] == ["10.100.0.201"]
            assert show_json("host1", "status")["mqtt"]["advertised_endpoints"] == 1

            # A second registration replaces the first: the old MAC+IP route goes.
            mqtt_publish(topic, json.dumps({"mac": mac, "ip": "10.100.0.202"}))
            wait_for("host2 to move the binding to the new IP", lambda: (
                (n := neighbours("host2")).get("10.100.0.202") == mac
                and "10.100.0.201" not in n))  # fmt: skip
            assert remote_macs("host2").get(mac) == VTEP["host1"]

            # An invalid registration changes nothing and is answered on events/error.
            bad = "evpnd/host1/endpoints/100/02:00:00:00:0a:02"
            mqtt_publish(bad, json.dumps({"mac": "02:00:00:00:0a:03"}), retain=False)
            error = sub.wait_event("evpnd/host1/events/error", "host1's error event")
            assert error["error"] == "invalid_registration" and error["reason"] == "mac-mismatch"
            assert "02:00:00:00:0a:02" not in remote_macs("host2")
            assert metric(scrape("host1"), "evpnd_mqtt_invalid_messages_total") == 1
        finally:
            mqtt_publish(topic, None)  # clear the retained registration
        wait_for("host2 to remove the MAC once the registration is cleared",
                 lambda: mac not in remote_macs("host2"))  # fmt: skip
        wait_for("host2 to remove the neighbour entry",
                 lambda: "10.100.0.202" not in neighbours("host2"))  # fmt: skip
        gone = sub.wait_event("evpnd/host1/events/endpoint_unregistered", "host1's event")
        assert gone["reason"] == "cleared"
        sub.wait_event("evpnd/host2/events/remote_mac_removed", "host2's event",
                       lambda e: e["mac"] == mac)  # fmt: skip
    assert show_json("host1", "status")["mqtt"]["advertised_endpoints"] == 0


def test_broker_outage_is_visible_and_forwarding_goes_on(fabric: None) -> None:
    """The broker dies: both hosts say so in `show status` and metrics, traffic keeps
    crossing the overlay, and they reconnect on their own when it is back."""
    (broker,) = procs("broker", "mosquitto")  # started by `lab up`, i.e. by this test
    reconnects = metric(scrape("host1"), "evpnd_mqtt_reconnects_total")
    os.kill(broker, signal.SIGTERM)
    wait_for("the broker to exit", lambda: not alive(broker), timeout=10)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(broker, os.WNOHANG)
    try:
        wait_for("both hosts to report the broker lost", lambda: all(
            show_json(h, "status")["mqtt"]["state"] != "connected" for h in HOSTS))  # fmt: skip
        status = show_json("host1", "status")["mqtt"]
        assert status["last_error"], status
        assert metric(scrape("host1"), "evpnd_mqtt_connected") == 0
        # Forwarding does not depend on the broker.
        (src, _, _), (_, dst_ip, _) = ENDPOINT["host1"], ENDPOINT["host2"]
        assert FABRIC.ping(src, dst_ip, count=3).returncode == 0
    finally:
        mosquitto.start(ns("broker"), REPO / "containerlab" / "configs" / LAB / "broker"
                        / "mosquitto.conf", labstate.lab_dir(LAB) / "broker")  # fmt: skip
    wait_for("both hosts to reconnect to the broker", lambda: all(
        show_json(h, "status")["mqtt"]["state"] == "connected" for h in HOSTS), timeout=60)
    assert metric(scrape("host1"), "evpnd_mqtt_reconnects_total") > reconnects


def test_restart_hands_over_the_socket_metrics_and_registrations(fabric: None) -> None:
    """SIGTERM and a new evpnd on host1: the control socket, the metrics port and the
    MQTT client are the new daemon's, and a registered endpoint never leaves host2's FDB."""
    mac = "02:00:00:00:0a:05"
    topic = f"evpnd/host1/endpoints/100/{mac}"
    mqtt_publish(topic, json.dumps({"mac": mac}))
    try:
        wait_for("host2 to install the registered MAC",
                 lambda: remote_macs("host2").get(mac) == VTEP["host1"])  # fmt: skip
        (old,) = procs("host1", "evpnd run")
        (speaker,) = procs("host1", "evpnd.speaker.launcher")
        samples: list[bool] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                samples.append(remote_macs("host2").get(mac) == VTEP["host1"])
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            os.kill(old, signal.SIGTERM)
            wait_for("host1's evpnd to exit after SIGTERM", lambda: not alive(old), timeout=15)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(old, os.WNOHANG)  # `lab up` in this process started it
            new = program.start_evpnd(topology.load(LAB_FILE).netns_name("host1"),
                                      config("host1"), labstate.lab_dir(LAB) / "host1")
            status = wait_for("the new evpnd to answer on the control socket and reconnect to "
                              "MQTT", lambda: (s if (s := _status_or_none("host1"))
                                               and s["pid"] == new
                                               and s["mqtt"]["state"] == "connected"
                                               and s["mqtt"]["advertised_endpoints"] == 1
                                               else None))  # fmt: skip
            assert status["speaker"]["pid"] == speaker  # the same ExaBGP, adopted
            wait_for("the new evpnd's metrics endpoint",
                     lambda: metric(scrape("host1"), "evpnd_mqtt_endpoints") == 1)  # fmt: skip
            time.sleep(2)  # past the new daemon's prune of what it does not want
        finally:
            stop.set()
            watcher.join(5)
        assert samples and all(samples), (
            f"host2 lost the registered MAC in {samples.count(False)} of {len(samples)} samples")
        assert remote_macs("host2").get(mac) == VTEP["host1"]
        print(f"\nhost1 hand-over: registered MAC present in all {len(samples)} samples of "
              f"host2's FDB")
    finally:
        mqtt_publish(topic, None)
    wait_for("host2 to remove the MAC once cleared", lambda: mac not in remote_macs("host2"))


def _status_or_none(host: str) -> dict | None:
    result = show(host, "status", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


# ---------------------------------------------------------------------------
# the fabric view in a real browser (last: it stops host1's evpnd for good)

# What the page shows, read from the rendered DOM (the SVG the page swapped in).
FABRIC_DOM = """(() => {
  const svg = document.querySelector('#fabric svg');
  if (!svg) { return null; }
  const all = (root, css) => Array.from(root.querySelectorAll(css));
  return {
    updates: Number(document.body.dataset.updates),
    status: document.getElementById('status').dataset.state,
    vteps: all(svg, 'g.vtep').map(g => ({
      vtep: g.dataset.vtep, macs: Number(g.dataset.macs),
      vnis: all(g, 'text.vtep-vni').map(t => [t.dataset.vni, Number(t.dataset.macs),
                                              t.textContent])})),
    vnis: all(svg, 'g.vni').map(g => ({
      vni: g.dataset.vni, local: Number(g.dataset.localMacs),
      remote: Number(g.dataset.remoteMacs),
      label: g.querySelector('.vni-label').textContent})),
    peers: all(svg, 'g.peer').map(g => [g.dataset.peer, g.dataset.state]),
    noVteps: svg.querySelector('.no-vteps') !== null,
  };
})()"""


def test_fabric_view_in_a_browser_follows_routes_and_a_stopped_host(
    fabric: None, tmp_path: Path
) -> None:
    """host2's /fabric in headless Chromium (in rr's namespace, like an operator's browser
    on the fabric): host1's VTEP with its MACs per VNI; a new MAC behind host1 shows up
    live; host1's evpnd stopped (SIGINT: routes withdrawn, ExaBGP stopped), its VTEP goes."""
    require_program("chromium", "chromium")
    url = f"http://{VTEP['host2']}:9595/fabric"
    mac = "02:00:00:00:01:98"
    shots = []

    def dom(browser: Browser, what: str, check: Callable[[dict], bool]) -> dict:
        last: list[dict | None] = [None]

        def probe() -> dict | None:
            last[0] = browser.evaluate(FABRIC_DOM)
            return last[0] if last[0] and check(last[0]) else None

        return poll(what, probe, timeout=30, interval=0.3,
                    explain=lambda: f"the page shows {last[0]}")  # fmt: skip

    with Browser.start(ns("rr"), tmp_path / "chromium") as browser:
        browser.open(url)
        seen = dom(browser, "the page to show host1's VTEP", lambda d: d["updates"] > 0 and [
            v["vtep"] for v in d["vteps"]] == [VTEP["host1"]])  # fmt: skip
        assert seen["status"] == "live"
        (vtep,) = seen["vteps"]
        assert vtep["macs"] == 1 and vtep["vnis"] == [["100", 1, "VNI 100: 1 MAC"]]
        (vni,) = seen["vnis"]
        assert (vni["vni"], vni["label"], vni["local"], vni["remote"]) == ("100", "VNI 100", 1, 1)
        assert seen["peers"] == [[RR_SIDE["host2"], "established"]]
        shots.append(browser.screenshot(tmp_path / "fabric-1-converged.png"))

        add = FABRIC.run("host1", ["bridge", "fdb", "add", mac, "dev", "eth2", "master",
                                   "dynamic"])  # fmt: skip
        assert add.returncode == 0, add.stderr
        try:
            seen = dom(browser, "the new MAC behind host1 on the page",
                       lambda d: [v["macs"] for v in d["vteps"]] == [2])  # fmt: skip
            assert seen["vteps"][0]["vnis"] == [["100", 2, "VNI 100: 2 MACs"]]
            assert seen["vnis"][0]["remote"] == 2
            shots.append(browser.screenshot(tmp_path / "fabric-2-new-mac.png"))
        finally:
            FABRIC.run("host1", ["bridge", "fdb", "del", mac, "dev", "eth2", "master"])
        dom(browser, "the MAC gone again", lambda d: [v["macs"] for v in d["vteps"]] == [1])

        # The same picture as a file, from the CLI in host2's namespace.
        svg = tmp_path / "fabric.svg"
        show("host2", "fabric", "--svg", str(svg), as_json=False)
        assert f'data-vtep="{VTEP["host1"]}"' in svg.read_text()

        (daemon,) = procs("host1", "evpnd run")
        os.kill(daemon, signal.SIGINT)  # a full stop: routes withdrawn, ExaBGP stopped
        wait_for("host1's evpnd to exit after SIGINT", lambda: not alive(daemon), timeout=20)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(daemon, os.WNOHANG)  # `lab up` in this process started it
        seen = dom(browser, "host1's VTEP to leave the page",
                   lambda d: d["vteps"] == [] and d["noVteps"])  # fmt: skip
        assert seen["vnis"][0]["remote"] == 0 and seen["status"] == "live"
        shots.append(browser.screenshot(tmp_path / "fabric-3-host1-stopped.png"))
    for shot in shots:
        assert shot.stat().st_size > 5000
        print(f"\nfabric view screenshot: {shot}")
