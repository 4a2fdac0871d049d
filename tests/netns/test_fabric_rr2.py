"""Two route reflectors: the evpn-rr2 lab end to end.

containerlab/evpn-rr2.clab.yml in network namespaces: the evpn-rr hosts and
endpoints, with two FRR route reflectors (rr1, rr2, graceful restart with a
20 s restart time and the F bit) off the data path. Every route reaches each
host twice, once through each reflector.

In order: one reflector lost (0 pings lost, no FDB event at all, its return
changes nothing); both lost with graceful restart (every entry kept, stale,
past the hold time, until the restart time ends); both frozen without
graceful restart (every entry removed once the hold timer expires).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from evpnd.lab import realize, topology
from tests.conftest import REPO
from tests.netns.fabric import Fabric, T, running_lab
from tests.netns.fabric import wait_for as poll
from tests.netns.frr_node import FrrOutage

pytestmark = pytest.mark.netns

LAB_FILE = REPO / "containerlab" / "evpn-rr2.clab.yml"
LAB = "evpn-rr2"
FABRIC = Fabric(LAB)
FLOOD = "00:00:00:00:00:00"
CONFIG = "/etc/evpnd/evpnd.yaml"
HOSTS = ("host1", "host2", "host3")
VTEP = {h: f"10.0.0.1{h[-1]}" for h in HOSTS}
VNIS = {"host1": (100, 200), "host2": (100, 200), "host3": (100,)}
RRS = {"rr1": "10.0.0.1", "rr2": "10.0.0.2"}
HOLD_TIME = 9  # the hosts' configs
RESTART_TIME = 20  # the reflectors' `bgp graceful-restart restart-time`
# endpoint -> (host, VNI, IP, MAC), as in evpn-rr
ENDPOINTS = {
    f"h{h}e{n}": (f"host{h}", 200 if n == 3 else 100,
                  f"10.{200 if n == 3 else 100}.0.{h}{n}", f"02:00:00:00:0{h}:0{n}")
    for h in (1, 2, 3) for n in (1, 2, 3) if not (h == 3 and n == 3)
}  # fmt: skip
CONVERGE = 60.0
PINGS = 300  # 30 s at 10/s
LOSS_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    return poll(what, probe, timeout, interval=0.2, explain=diagnostics)


def diagnostics() -> str:
    return "\n".join([FABRIC.log_tail(h, lines=15) for h in HOSTS]
                     + [FABRIC.log_tail(r, "bgpd.log", lines=10) for r in RRS])  # fmt: skip


def run(node: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return FABRIC.run(node, argv, timeout)


def show(host: str, view: str) -> dict[str, Any]:
    return FABRIC.show(host, view, CONFIG)


def sessions(host: str) -> dict[str, dict[str, Any]]:
    return {p["address"]: p for p in show(host, "peers")["peers"]}


def rr_established(rr: str) -> bool:
    out = run(rr, ["vtysh", "-c", "show bgp l2vpn evpn summary json"]).stdout
    try:
        peers = json.loads(out).get("peers", {}) if out.strip() else {}
    except json.JSONDecodeError:
        return False
    return len(peers) == 3 and {p.get("state") for p in peers.values()} == {"Established"}


def remote_macs(host: str, vni: int) -> dict[str, str]:
    return {e["mac"]: e["dst"] for e in FABRIC.fdb(host, f"vxlan{vni}")
            if "dst" in e and e["mac"] != FLOOD}  # fmt: skip


def floods(host: str, vni: int) -> list[str]:
    return sorted(e["dst"] for e in FABRIC.fdb(host, f"vxlan{vni}")
                  if "dst" in e and e["mac"] == FLOOD)  # fmt: skip


def tables() -> dict[str, dict[int, tuple[dict[str, str], list[str]]]]:
    return {h: {v: (remote_macs(h, v), floods(h, v)) for v in VNIS[h]} for h in HOSTS}


def expected() -> dict[str, dict[int, tuple[dict[str, str], list[str]]]]:
    return {h: {v: ({mac: VTEP[h2] for h2, v2, _, mac in ENDPOINTS.values()
                     if v2 == v and h2 != h},
                    sorted(VTEP[h2] for h2 in HOSTS if h2 != h and v in VNIS[h2]))
                for v in VNIS[h]} for h in HOSTS}  # fmt: skip


def nothing_remote() -> bool:
    return all(remote_macs(h, v) == {} and floods(h, v) == [] for h in HOSTS for v in VNIS[h])


def talk() -> None:
    def one(ep: str) -> None:
        host, vni, _, _ = ENDPOINTS[ep]
        run(ep, ["ping", "-c", "1", "-W", "1", f"10.{vni}.0.25{host[-1]}"])

    with ThreadPoolExecutor(len(ENDPOINTS)) as pool:
        list(pool.map(one, ENDPOINTS))


def wait_converged(what: str, timeout: float = CONVERGE) -> None:
    deadline = time.monotonic() + timeout
    while tables() != expected():
        if time.monotonic() >= deadline:
            pytest.fail(f"fabric not converged after {timeout:.0f}s ({what}): {tables()}\n"
                        + diagnostics(), pytrace=False)  # fmt: skip
        talk()
        time.sleep(0.3)


def wait_both_reflectors(what: str) -> None:
    for rr in RRS:
        wait_for(f"{rr}'s three sessions ({what})", lambda r=rr: rr_established(r), 90)
    for host in HOSTS:
        wait_for(f"{host} to hold both reflectors' routes ({what})", lambda h=host: all(
            p["state"] == "established" and p["routes_received"] > 0
            for p in sessions(h).values()), 60)  # fmt: skip


def ping_ok(src: str, address: str) -> bool:
    return FABRIC.ping(src, address).returncode == 0


def all_pairs_ping() -> list[tuple[str, str]]:
    pairs = [(src, ip) for src, (h, vni, _, _) in ENDPOINTS.items()
             for (h2, vni2, ip, _) in ENDPOINTS.values() if vni == vni2 and h != h2]  # fmt: skip
    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(pairs, pool.map(lambda p: ping_ok(*p), pairs), strict=True))
    return [p for p, ok in results.items() if not ok]


class Watch:
    """Ping flows between hosts at 10/s and `bridge monitor fdb` on every host."""

    FLOWS = (("h1e1", "10.100.0.21"), ("h2e2", "10.100.0.32"), ("h3e1", "10.100.0.12"),
             ("h2e3", "10.200.0.13"))  # fmt: skip

    def __init__(self) -> None:
        def start(node: str, argv: list[str]) -> subprocess.Popen[str]:
            return subprocess.Popen(realize.node_command(node, argv, lab=LAB).argv,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        self.monitors = {h: start(h, ["bridge", "monitor", "fdb"]) for h in HOSTS}
        self.flows = {(src, ip): start(src, ["ping", "-i", "0.1", "-W", "1", "-c", str(PINGS),
                                             ip]) for src, ip in self.FLOWS}  # fmt: skip

    def finish(self) -> tuple[dict[str, list[str]], dict[tuple[str, str], int]]:
        """(FDB events per host, pings lost per flow) once the flows have ended."""
        lost = {}
        for pair, process in self.flows.items():
            out = process.communicate(timeout=PINGS * 0.1 + 30)[0]
            match = LOSS_RE.search(out)
            assert match, out
            lost[pair] = int(match[1]) - int(match[2])
        return self.events(), lost

    def events(self) -> dict[str, list[str]]:
        """Every FDB event each host's monitor printed (the monitors end here)."""
        for process in self.monitors.values():
            process.kill()
        return {h: m.communicate(timeout=10)[0].splitlines() for h, m in self.monitors.items()}

    def kill(self) -> None:
        for process in [*self.flows.values(), *self.monitors.values()]:
            if process.poll() is None:
                process.kill()


def graceful(host: str, address: str) -> dict[str, Any]:
    return sessions(host)[address]["graceful_restart"]


@pytest.fixture(scope="module")
def fabric() -> Iterator[topology.Topology]:
    with running_lab(LAB_FILE):
        wait_both_reflectors("after lab up")
        wait_converged("after lab up")
        yield topology.load(LAB_FILE)


def test_every_route_arrives_through_both_reflectors(fabric: topology.Topology) -> None:
    received = [r for r in show("host1", "routes")["routes"] if r["direction"] == "in"]
    peers: dict[tuple[str, str], set[str]] = {}
    for r in received:
        peers.setdefault((r["rd"], r["prefix"]), set()).add(r["peer"])
    assert peers and set(map(frozenset, peers.values())) == {frozenset(RRS.values())}
    for address in RRS.values():
        cap = graceful("host1", address)["capability"]
        assert (cap["restart_time"], cap["evpn_forwarding_preserved"]) == (RESTART_TIME, True)
    assert all_pairs_ping() == []


def test_one_reflector_lost_loses_no_ping_and_changes_nothing(
    fabric: topology.Topology,
) -> None:
    before = tables()
    writes = {h: show(h, "status")["dataplane"]["writes"] for h in HOSTS}
    outage = FrrOutage(FABRIC, fabric, "rr1")
    watch = Watch()
    try:
        time.sleep(2)
        outage.kill(links_down=True)
        for host in HOSTS:
            wait_for(f"{host} to see rr1 go", lambda h=host: sessions(h)[RRS["rr1"]]["state"]
                     != "established")  # fmt: skip
        time.sleep(HOLD_TIME + 3)
        assert tables() == before
        outage.restore()
        wait_both_reflectors("rr1 back")
        # rr1's End-of-RIB ends its stale period: nothing left stale, nothing swept.
        for host in HOSTS:
            wait_for(f"{host}'s rr1 routes fresh again", lambda h=host: graceful(
                h, RRS["rr1"])["stale_routes"] == 0)  # fmt: skip
        time.sleep(2)
        events, lost = watch.finish()
    finally:
        watch.kill()
    assert tables() == before
    assert events == {h: [] for h in HOSTS}, events
    assert {h: show(h, "status")["dataplane"]["writes"] for h in HOSTS} == writes
    print(f"\nrr1 lost and back; pings lost of {PINGS} at 10/s: {lost}")
    assert set(lost.values()) == {0}, lost


def test_both_reflectors_lost_with_graceful_restart_keep_entries_for_the_restart_time(
    fabric: topology.Topology,
) -> None:
    before = tables()
    outages = [FrrOutage(FABRIC, fabric, rr) for rr in RRS]
    try:
        for outage in outages:
            outage.kill(links_down=False)
        t0 = time.monotonic()
        for host in HOSTS:
            wait_for(f"{host} to keep both reflectors' routes stale", lambda h=host: all(
                graceful(h, a)["state"] == "restarting" and graceful(h, a)["stale_routes"] > 0
                for a in RRS.values()))  # fmt: skip
        # Past the hold time, every entry is still there and traffic still flows.
        time.sleep(max(0.0, HOLD_TIME + 3 - (time.monotonic() - t0)))
        assert tables() == before
        assert ping_ok("h1e1", "10.100.0.21") and ping_ok("h2e3", "10.200.0.13")
        # The restart time ends with no reflector back: the stale routes go.
        wait_for("every host to drop the stale routes", nothing_remote, RESTART_TIME + 20)
        removed = time.monotonic() - t0
    finally:
        for outage in outages:
            outage.restore()
    wait_both_reflectors("both reflectors back")
    wait_converged("both reflectors back")
    print(f"\nboth reflectors lost: entries kept, stale, then removed {removed:.1f}s after "
          f"the loss (restart time {RESTART_TIME} s)")


def vtysh(rr: str, *commands: str) -> None:
    out = run(rr, ["vtysh", *(w for c in commands for w in ("-c", c))])
    assert out.returncode == 0, out.stdout + out.stderr


def test_both_reflectors_frozen_without_graceful_restart_remove_every_entry(
    fabric: topology.Topology,
) -> None:
    """Helper mode only (no address family in the capability): a lost session's routes
    go at once. The reflectors freeze (SIGSTOP, no TCP reset): the hold timer ends the
    sessions, and with them every remote entry."""
    for rr in RRS:  # one at a time: the other one carries the routes meanwhile
        vtysh(rr, "configure terminal", "router bgp 65000",
              "no bgp graceful-restart preserve-fw-state", "no bgp graceful-restart")
        vtysh(rr, "clear bgp *")
        wait_both_reflectors(f"{rr} without graceful restart")
    wait_converged("graceful restart off")
    for host in HOSTS:
        for address in RRS.values():
            assert graceful(host, address)["capability"]["evpn_forwarding_preserved"] is None
    frozen = [pid for rr in RRS for name, pid in FrrOutage(FABRIC, fabric, rr).daemons().items()
              if name == "bgpd"]  # fmt: skip
    t0 = time.monotonic()
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        assert tables() == expected(), "entries went before any session failed"
        wait_for("the hold timer to remove every remote entry", nothing_remote, HOLD_TIME + 15)
        removed = time.monotonic() - t0
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    wait_both_reflectors("thawed")
    wait_converged("thawed")
    print(f"\nboth reflectors frozen without graceful restart: every remote entry removed "
          f"{removed:.1f}s later (hold time {HOLD_TIME} s)")


def test_a_lost_reflector_takes_exactly_what_it_alone_carried(
    fabric: topology.Topology,
) -> None:
    """rr2 shuts its session to host3 down, so host3's routes reach host1 and host2
    through rr1 alone. rr1 freezes (graceful restart is off since the last test):
    host1 and host2 remove host3's entries and keep every other; host3, left with
    no session at all, removes everything remote."""
    vtysh("rr2", "configure terminal", "router bgp 65000",
          f"neighbor {VTEP['host3']} shutdown")  # fmt: skip

    def host3_via(host: str) -> set[str]:
        return {r["peer"] for r in show(host, "routes")["routes"]
                if r["direction"] == "in" and r["rd"].startswith(f"{VTEP['host3']}:")}

    for host in ("host1", "host2"):
        wait_for(f"{host} to hold host3's routes from rr1 alone",
                 lambda h=host: host3_via(h) == {RRS["rr1"]})  # fmt: skip
    before = tables()
    gone = {mac for h, v, _, mac in ENDPOINTS.values() if h == "host3"}
    kept = {h: {v: ({m: d for m, d in macs.items() if m not in gone},
                    [f for f in fl if f != VTEP["host3"]])
                for v, (macs, fl) in vnis.items()}
            for h, vnis in before.items() if h != "host3"}  # fmt: skip
    (rr1_bgpd,) = [pid for name, pid in FrrOutage(FABRIC, fabric, "rr1").daemons().items()
                   if name == "bgpd"]  # fmt: skip
    watch = Watch()
    try:
        os.kill(rr1_bgpd, signal.SIGSTOP)
        wait_for("host1 and host2 to remove what rr1 alone brought", lambda: {
            h: t for h, t in tables().items() if h != "host3"} == kept, HOLD_TIME + 15)
        wait_for("host3 to remove everything remote", lambda: all(
            remote_macs("host3", v) == {} and floods("host3", v) == [] for v in VNIS["host3"]))
        time.sleep(2)
        assert {h: t for h, t in tables().items() if h != "host3"} == kept
        events = watch.events()
    finally:
        os.kill(rr1_bgpd, signal.SIGCONT)
        watch.kill()
        vtysh("rr2", "configure terminal", "router bgp 65000",
              f"no neighbor {VTEP['host3']} shutdown")  # fmt: skip
    # On host1 and host2 the only FDB events: host3's MACs (on the vxlan port and
    # their bridge-side entries) and the flood entry towards host3, all deletions.
    for host in ("host1", "host2"):
        assert events[host] and all(
            line.startswith("Deleted")
            and (VTEP["host3"] in line or any(mac in line for mac in gone))
            for line in events[host]), events[host]  # fmt: skip
    wait_both_reflectors("rr1 thawed, rr2 with host3 again")
    wait_converged("rr1 thawed, rr2 with host3 again")
