"""The only route reflector restarts: graceful restart keeps the fabric forwarding.

On the evpn-mixed lab (containerlab/evpn-mixed.clab.yml: FRR route reflector
rr with `bgp graceful-restart` and `preserve-fw-state`, evpnd on host1 and
host2, the FRR VTEP vtep3) rr's bgpd is killed with SIGKILL and started again
while endpoints ping across hosts at 10/s. evpnd, as graceful-restart helper,
keeps rr's routes installed (stale) through the outage: no ping lost between
the evpnd hosts, no remote FDB entry removed on them. One endpoint (h2e3)
goes away while rr is down, so host2 never sends its MAC again: host1 removes
it once rr is back and has sent its End-of-RIB. The FRR VTEP's lost pings are
printed beside evpnd's for comparison (not asserted on: FRR is the reference,
not the subject).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evpnd.lab import realize
from evpnd.lab import state as labstate
from tests.conftest import REPO
from tests.netns import fabric
from tests.netns.fabric import Fabric, cmdline, running_lab

pytestmark = pytest.mark.netns

MIXED = REPO / "containerlab" / "evpn-mixed.clab.yml"
LAB = "evpn-mixed"
FABRIC = Fabric(LAB)
run = FABRIC.run

VTEPS = {"host1": "10.0.1.2", "host2": "10.0.2.2", "vtep3": "10.0.3.2"}
RR = "10.0.1.1"  # as host1 sees it
# (source endpoint, destination address, what the pair crosses)
EVPND_PINGS = [("h1e1", "10.100.0.21", "host1 -> host2"), ("h2e2", "10.100.0.12", "host2 -> host1")]
FRR_PING = ("h3e1", "10.100.0.11", "vtep3 (FRR) -> host1")
GONE = ("h2e3", "02:00:00:00:02:03")  # leaves while rr is down: VNI 200 on host2
PINGS = 300  # 30 s at 10/s
LOST_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ns(node: str) -> str:
    return f"clab-{LAB}-{node}"


def show_peers(host: str) -> dict[str, Any]:
    socket = Path("/run/evpnd") / f"{LAB}-{host}" / "control.sock"
    out = subprocess.run(
        ["ip", "netns", "exec", ns(host), sys.executable, "-m", "evpnd", "show", "peers",
         "--json", "--socket", str(socket)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def rr_peers_established() -> bool:
    out = run("rr", ["vtysh", "-c", "show bgp l2vpn evpn summary json"]).stdout
    try:
        peers = json.loads(out).get("peers", {}) if out.strip() else {}
    except json.JSONDecodeError:
        return False
    return len(peers) == 3 and {p.get("state") for p in peers.values()} == {"Established"}


def remote_macs(host: str, vni: int) -> set[str]:
    return {e["mac"] for e in FABRIC.fdb(host, f"vxlan{vni}")
            if e.get("dst") and e["mac"] != "00:00:00:00:00:00"}  # fmt: skip


def bridge_macs(host: str, bridge: str) -> set[str]:
    out = run(host, ["bridge", "-j", "fdb", "show", "br", bridge]).stdout
    return {e["mac"] for e in json.loads(out or "[]")}


def wait_for(what: str, probe: Any, timeout: float = 60) -> Any:
    return fabric.wait_for(what, probe, timeout, explain=diagnostics)


def diagnostics() -> str:
    parts = [FABRIC.log_tail(node, lines=20) for node in ("host1", "host2")]
    parts.append(FABRIC.log_tail("rr", "bgpd.log", lines=20))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def mixed_lab() -> Iterator[None]:
    with running_lab(MIXED):
        wait_for("rr's three sessions", rr_peers_established)
        yield


def ping_ok(src: str, address: str) -> bool:
    return FABRIC.ping(src, address).returncode == 0


def bgpd_pid() -> int:
    pid_file = labstate.lab_dir(LAB) / "rr" / "bgpd.pid"
    pid = int(pid_file.read_text().strip())
    assert pid in FABRIC.procs("rr", "bgpd"), "rr's bgpd pid file names no bgpd of the lab"
    return pid


def pinger(src: str, address: str) -> subprocess.Popen[str]:
    argv = realize.node_command(src, ["ping", "-i", "0.1", "-W", "1", "-c", str(PINGS),
                                      address], lab=LAB).argv  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def lost(output: str) -> int:
    match = LOST_RE.search(output)
    assert match, output
    return int(match[1]) - int(match[2])


def test_route_reflector_restart_loses_no_ping_between_evpnd_hosts(mixed_lab: None) -> None:
    # Every endpoint has spoken, so every host has learned (and advertised) its MACs.
    for src, address, _ in [*EVPND_PINGS, FRR_PING, ("h1e3", "10.200.0.23", "")]:
        wait_for(f"{src} to reach {address}", lambda s=src, a=address: ping_ok(s, a), 30)
    gone_src, gone_mac = GONE
    wait_for("host1 to install h2e3's MAC", lambda: gone_mac in remote_macs("host1", 200))
    # evpnd learned rr's graceful-restart capability from its OPEN.
    for host in ("host1", "host2"):
        [peer] = show_peers(host)["peers"]
        capability = peer["graceful_restart"]["capability"]
        assert capability == {"restart_time": 120, "restarting": capability["restarting"],
                              "evpn_forwarding_preserved": True}, peer  # fmt: skip
    before = {h: {v: remote_macs(h, v) for v in (100, 200)} for h in ("host1", "host2")}
    monitors = {h: subprocess.Popen(realize.node_command(h, ["bridge", "monitor", "fdb"],
                                                         lab=LAB).argv,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for h in ("host1", "host2")}  # fmt: skip
    pings = {label: pinger(src, address) for src, address, label in [*EVPND_PINGS, FRR_PING]}
    old = bgpd_pid()
    argv = cmdline(old).split()
    try:
        time.sleep(3)
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        # While rr is down, h2e3 leaves: host2 withdraws its MAC, which cannot reach rr.
        run(gone_src, ["ip", "link", "set", "eth1", "down"])
        wait_for("host2 to forget h2e3", lambda: gone_mac not in bridge_macs("host2", "br200"),
                 20)  # fmt: skip
        time.sleep(max(0.0, 5 - (time.monotonic() - killed)))
        # Nothing removed meanwhile: rr's routes are kept, stale.
        during = {h: {v: remote_macs(h, v) for v in (100, 200)} for h in ("host1", "host2")}
        assert during == before
        stale = show_peers("host1")["peers"][0]["graceful_restart"]
        assert stale["state"] == "restarting" and stale["stale_routes"] > 0, stale
        started = subprocess.run(["ip", "netns", "exec", ns("rr"), *argv], capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
        assert started.returncode == 0, started.stderr
        outage = time.monotonic() - killed
        wait_for("rr's sessions back", rr_peers_established, 90)
        wait_for("host1 to sweep h2e3's stale MAC (rr's End-of-RIB)",
                 lambda: gone_mac not in remote_macs("host1", 200), 90)  # fmt: skip
        swept = time.monotonic() - killed
        results = {label: p.communicate(timeout=PINGS * 0.1 + 30)[0]
                   for label, p in pings.items()}  # fmt: skip
    finally:
        for process in [*pings.values(), *monitors.values()]:
            if process.poll() is None:
                process.kill()
    deleted = {h: [line for line in m.communicate(timeout=10)[0].splitlines()
                   if line.startswith("Deleted")] for h, m in monitors.items()}  # fmt: skip
    after = {h: {v: remote_macs(h, v) for v in (100, 200)} for h in ("host1", "host2")}
    expected = {h: {v: macs - {gone_mac} for v, macs in vnis.items()}
                for h, vnis in before.items()}  # fmt: skip
    assert after == expected
    # The only FDB entry removed on an evpnd host: the MAC that did not come back.
    assert [line for line in deleted["host1"] if gone_mac not in line] == [], deleted["host1"]
    assert [line for line in deleted["host2"]
            if "extern_learn" in line and gone_mac not in line] == [], deleted["host2"]
    figures = {label: lost(out) for label, out in results.items()}
    print(f"\nrr's bgpd killed (SIGKILL) and restarted after {outage:.1f}s; h2e3's stale MAC "
          f"swept {swept:.1f}s after the kill; pings lost of {PINGS} at 10/s: "
          + ", ".join(f"{label} {n}" for label, n in figures.items()))
    for _, _, label in EVPND_PINGS:
        assert figures[label] == 0, results[label]
