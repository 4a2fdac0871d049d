"""C5: the only route reflector restarts again and again, with graceful restart.

The setup of tests/netns/test_fabric_gr.py (the evpn-mixed lab: FRR route
reflector rr with `bgp graceful-restart` and `preserve-fw-state`, evpnd on
host1 and host2, the FRR VTEP vtep3): each round kills rr's bgpd (SIGKILL),
starts it again 2-5 s later while endpoints ping across the evpnd hosts at
10/s, waits for rr's sessions, and then compares both evpnd hosts' VNI 100
tables with vtep3's (FRR's) view. No ping between the evpnd hosts may be
lost; the FRR VTEP's losses are noted beside (FRR drops the reflector's routes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.chaos import oracle
from tests.chaos.conftest import size
from tests.chaos.tally import Tally
from tests.netns import test_fabric_gr as gr
from tests.netns.fabric import cmdline, running_lab

pytestmark = pytest.mark.netns

ROUNDS = size(1, 10)
SEED = int(os.environ.get("EVPND_CHAOS_SEED", "7"))


@pytest.fixture(scope="module")
def mixed_lab() -> Iterator[None]:
    with running_lab(gr.MIXED):
        gr.wait_for("rr's three sessions", gr.rr_peers_established)
        yield


def vtep3_view() -> oracle.FrrView:
    def vtysh(command: str) -> dict:
        out = gr.run("vtep3", ["vtysh", "-c", command]).stdout
        return json.loads(out) if out.strip() else {}

    return oracle.frr_view(gr.VTEPS["vtep3"], vtysh("show evpn mac vni 100 json"),
                           vtysh("show evpn arp-cache vni 100 json"),
                           vtysh("show bgp l2vpn evpn route type multicast json"), vni=100)


def host_tables(host: str) -> oracle.HostTables:
    fdb = gr.run(host, ["bridge", "-j", "fdb", "show", "dev", "vxlan100"]).stdout
    neigh = gr.run(host, ["ip", "-j", "neigh", "show", "dev", "br100"]).stdout
    return oracle.host_tables(json.loads(fdb or "[]"), json.loads(neigh or "[]"))


def differences() -> dict[str, oracle.Differences]:
    view = vtep3_view()
    return {h: oracle.compare(view, gr.VTEPS[h], host_tables(h)) for h in ("host1", "host2")}


def test_c5_route_reflector_restarts_lose_no_ping(mixed_lab: None, tally: Tally) -> None:
    row = tally.row("C5 route reflector restarts (GR)")
    rng = random.Random(SEED + 5)
    for src, address, _ in [*gr.EVPND_PINGS, gr.FRR_PING]:
        gr.wait_for(f"{src} to reach {address}", lambda s=src, a=address: gr.ping_ok(s, a), 30)
    frr_lost = 0
    for _ in range(ROUNDS):
        down = rng.uniform(2, 5)
        count = int((down + 25) * 10)  # pings at 10/s: the outage and the way back
        pings = {label: pinger(src, address, count)
                 for src, address, label in [*gr.EVPND_PINGS, gr.FRR_PING]}  # fmt: skip
        try:
            time.sleep(2)
            old = gr.bgpd_pid()
            argv = cmdline(old).split()
            os.kill(old, signal.SIGKILL)
            row.faults += 1
            time.sleep(down)
            started = subprocess.run(["ip", "netns", "exec", gr.ns("rr"), *argv],
                                     capture_output=True, text=True, timeout=30)  # fmt: skip
            assert started.returncode == 0, started.stderr
            gr.wait_for("rr's sessions back", gr.rr_peers_established, 90)
            results = {label: p.communicate(timeout=count * 0.1 + 60)[0]
                       for label, p in pings.items()}  # fmt: skip
        finally:
            for process in pings.values():
                if process.poll() is None:
                    process.kill()
        lost = {label: gr.lost(out) for label, out in results.items()}
        row.pings_lost += sum(lost[label] for _, _, label in gr.EVPND_PINGS)
        frr_lost += lost[gr.FRR_PING[2]]
        crashed = [h for h in ("host1", "host2") if not gr.FABRIC.procs(h, "evpnd run")]
        row.crashes += len(crashed)
        assert not crashed, gr.diagnostics()
        found = wait_equal()
        row.stale += sum(len(d.stale) for d in found.values())
        row.missing += sum(len(d.missing) for d in found.values())
        row.rounds += 1
        assert not any(found.values()), {h: str(d) for h, d in found.items()}
        assert all(lost[label] == 0 for _, _, label in gr.EVPND_PINGS), lost
    row.notes["frr_vtep_pings_lost"] = frr_lost


def pinger(src: str, address: str, count: int) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", gr.ns(src), "ping", "-i", "0.1", "-W", "1", "-c",
            str(count), address]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_equal(timeout: float = 60) -> dict[str, oracle.Differences]:
    deadline = time.monotonic() + timeout
    while True:
        found = differences()
        if not any(found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(1)
