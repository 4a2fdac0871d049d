"""Restart evpnd (SIGTERM, start again on the same state_dir) under a running ping.

Measures: the netlink writes the new daemon's reconciliation made (its
`dataplane resynced` log record), the FDB changes a watcher saw on the vxlan
device during the whole restart (an independent count), seconds from the new
start to `converged`, and pings lost between two endpoints across the restart.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from dataclasses import dataclass

from bench.topo import VNI, BenchError, Lab, Watch
from evpnd import netns

PING_INTERVAL = 0.1


@dataclass
class RestartResult:
    writes: int
    fdb_changes: int
    converged_s: float
    pings_sent: int
    pings_lost: int


def wait_ping(lab: Lab, src: str, address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if netns.run(lab.ns(src), ["ping", "-c", "1", "-W", "1", address], check=False,
                     timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    raise BenchError(f"{src} cannot ping {address}")


def _lost(output: str) -> tuple[int, int]:
    """(sent, lost) from ping's replies: gaps in icmp_seq between the first and last reply."""
    seqs = {int(m) for m in re.findall(r"icmp_seq=(\d+) ttl", output)}
    if not seqs:
        return 0, -1
    span = max(seqs) - min(seqs) + 1
    return span, span - len(seqs)


def _wait_record(lab: Lab, node: str, log_name: str, prefix: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in lab.log_records(node, log_name):
            if str(record.get("event", "")).startswith(prefix):
                return record
        time.sleep(0.1)
    raise BenchError(f"evpnd on {node} logged no `{prefix}` within {timeout:.0f}s")


def restart(lab: Lab, node: str, proc: subprocess.Popen[bytes], watch: Watch,
            ping_from: str, ping_to: str, timeout: float = 300) -> RestartResult:
    """SIGTERM evpnd on `node`, start it again; `proc` is the running daemon."""
    wait_ping(lab, ping_from, ping_to)
    watch.send("changes")
    before = int(watch.wait("changes", 10)[1])
    ping = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns(ping_from), "ping", "-i", str(PING_INTERVAL), "-W", "2",
         ping_to], stdout=subprocess.PIPE, text=True)
    lab.procs.append(ping)
    try:
        time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        started = time.monotonic()
        lab.evpnd(node, log_name="evpnd-restarted.log", wait=False)
        resynced = _wait_record(lab, node, "evpnd-restarted.log", "dataplane resynced", timeout)
        _wait_record(lab, node, "evpnd-restarted.log", "converged", timeout)
        converged = time.monotonic() - started
        time.sleep(2)  # pings after convergence count too
    finally:
        ping.send_signal(signal.SIGINT)
        out, _ = ping.communicate(timeout=10)
    watch.send("changes")
    after = int(watch.wait("changes", 10)[1])
    sent, lost = _lost(out)
    if lab.sh(node, "ip", "link", "show", f"vxlan{VNI}") == "":
        raise BenchError("vxlan device gone after the restart")
    return RestartResult(int(resynced.get("writes", -1)), after - before, converged, sent, lost)
