"""The evpn-rr fabric end to end: three `evpnd run` hosts around an FRR route reflector.

One lab for the whole module (containerlab/evpn-rr.clab.yml realized in network
namespaces). Tests are ordered: read-only checks first, then a MAC move that
restores itself, then the destructive ones (ExaBGP killed, a host stopped, a
host restarted), each of which waits for the fabric to converge again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from evpnd import netns
from evpnd.lab import program, realize, topology
from evpnd.lab import state as labstate
from tests.conftest import REPO
from tests.netns.evpn_rr import ENDPOINTS, FABRIC, HOSTS, LAB, LAB_FILE, VNIS, VTEP
from tests.netns.fabric import T, alive, running_lab
from tests.netns.fabric import wait_for as poll

pytestmark = pytest.mark.netns

FLOOD = "00:00:00:00:00:00"
CONVERGE = 60.0


# ---------------------------------------------------------------------------
# helpers


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    return poll(what, probe, timeout, interval=0.2)


def run(node: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return FABRIC.run(node, argv, timeout)


def fdb(host: str, vni: int) -> list[dict]:
    return [e for e in FABRIC.fdb(host, f"vxlan{vni}") if "dst" in e]


def remote_macs(host: str, vni: int) -> dict[str, str]:
    """MAC -> VTEP of the unicast entries evpnd installed on the VXLAN device."""
    return {e["mac"]: e["dst"] for e in fdb(host, vni) if e["mac"] != FLOOD}


def floods(host: str, vni: int) -> list[str]:
    return sorted(e["dst"] for e in fdb(host, vni) if e["mac"] == FLOOD)


def expected_remote(host: str, vni: int) -> dict[str, str]:
    return {mac: VTEP[h] for h, v, _, mac in ENDPOINTS.values() if v == vni and h != host}


def expected_floods(host: str, vni: int) -> list[str]:
    return sorted(VTEP[h] for h in HOSTS if h != host and vni in VNIS[h])


def fabric_converged() -> bool:
    return all(
        remote_macs(h, vni) == expected_remote(h, vni) and floods(h, vni) == expected_floods(h, vni)
        for h in HOSTS for vni in VNIS[h]
    )  # fmt: skip


def ping(src: str, dst_ip: str, count: int = 2) -> bool:
    return FABRIC.ping(src, dst_ip, count).returncode == 0


def nudge_endpoints() -> None:
    """Make every endpoint send a frame so its host's bridge (re)learns its MAC."""

    def arp(ep: str) -> None:  # an ARP request for an unused address of its subnet
        run(ep, ["ping", "-c", "1", "-W", "1", ENDPOINTS[ep][2].rsplit(".", 1)[0] + ".254"])

    with ThreadPoolExecutor(len(ENDPOINTS)) as pool:
        list(pool.map(arp, ENDPOINTS))


def wait_converged(what: str, timeout: float = CONVERGE) -> float:
    """Seconds until every host's FDB is complete; endpoints are nudged while waiting."""
    start = time.monotonic()
    deadline = start + timeout
    while not fabric_converged():
        if time.monotonic() >= deadline:
            state = {h: {v: (remote_macs(h, v), floods(h, v)) for v in VNIS[h]} for h in HOSTS}
            pytest.fail(f"fabric not converged after {timeout:.0f}s ({what}): {state}",
                        pytrace=False)  # fmt: skip
        nudge_endpoints()
        time.sleep(0.3)
    return time.monotonic() - start


def rr_evpn() -> dict:
    out = run("rr", ["vtysh", "-c", "show bgp l2vpn evpn json"])
    return json.loads(out.stdout or "{}")


def rr_peer(address: str) -> dict:
    """The route reflector's view of one session (`show bgp l2vpn evpn summary json`)."""
    out = run("rr", ["vtysh", "-c", "show bgp l2vpn evpn summary json"])
    return json.loads(out.stdout or "{}").get("peers", {}).get(address, {})


def rr_routes() -> dict[str, dict[str, dict]]:
    """RD -> prefix -> best path, from FRR's `show bgp l2vpn evpn json`."""
    table: dict[str, dict[str, dict]] = {}
    for rd, prefixes in rr_evpn().items():
        if not isinstance(prefixes, dict):
            continue
        for prefix, body in prefixes.items():
            if isinstance(body, dict) and "paths" in body:
                best = next((p for p in body["paths"] if p.get("bestpath")), body["paths"][0])
                table.setdefault(rd, {})[prefix] = best
    return table


def procs(host: str, marker: str) -> list[int]:
    return FABRIC.procs(host, marker)


def evpnd_pids(host: str) -> list[int]:
    return procs(host, "evpnd run")


def launcher_pids(host: str) -> list[int]:
    return procs(host, "evpnd.speaker.launcher")


def start_evpnd(host: str) -> int:
    """Start the host's evpnd as `lab up` does (same command, same log)."""
    topo = topology.load(LAB_FILE)
    config = REPO / "containerlab" / "configs" / LAB / host / "evpnd.yaml"
    return program.start_evpnd(topo.netns_name(host), config, labstate.lab_dir(LAB) / host)


def _reap(pid: int) -> None:
    """Collect a lab process this test process started (`lab up` runs in it)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fabric() -> Iterator[None]:
    with running_lab(LAB_FILE):
        wait_converged("after lab up")
        yield


def test_endpoints_reach_their_vni_and_only_their_vni(fabric: None) -> None:
    pairs = [
        (src, ip)
        for src, (h, vni, _, _) in ENDPOINTS.items()
        for dst, (h2, vni2, ip, _) in ENDPOINTS.items()
        if vni == vni2 and h != h2
    ]
    assert len(pairs) == 24 + 2  # VNI 100: 6 endpoints x 4 remote; VNI 200: h1e3 <-> h2e3
    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(pairs, pool.map(lambda p: ping(*p), pairs), strict=True))
    assert [p for p, ok in results.items() if not ok] == []

    # VNI 200's h1e3 with an address in VNI 100's subnet: if the VNIs leaked, its
    # ARP would reach h2e1 (same host pair, same underlay) and the ping succeed.
    run("h1e3", ["ip", "addr", "add", "10.100.0.99/24", "dev", "eth1"])
    try:
        assert not ping("h1e3", "10.100.0.21", count=3)
        neigh = run("h1e3", ["ip", "neigh", "show", "10.100.0.21"]).stdout
        assert "lladdr" not in neigh, neigh  # the ARP went unanswered
        assert ping("h1e3", "10.200.0.23")  # the endpoint itself works
    finally:
        run("h1e3", ["ip", "addr", "del", "10.100.0.99/24", "dev", "eth1"])
    vni100_macs = {mac for _, v, _, mac in ENDPOINTS.values() if v == 100}
    for host in ("host1", "host2"):
        assert not vni100_macs & set(remote_macs(host, 200)), host
        assert not {m for _, v, _, m in ENDPOINTS.values() if v == 200} & set(
            remote_macs(host, 100)
        ), host


def test_each_host_fdb_has_every_remote_mac_and_one_flood_entry_per_vtep(fabric: None) -> None:
    for host in HOSTS:
        for vni in VNIS[host]:
            entries = fdb(host, vni)
            unicast = {e["mac"]: e for e in entries if e["mac"] != FLOOD}
            assert {m: e["dst"] for m, e in unicast.items()} == expected_remote(host, vni), (
                host, vni, entries,
            )  # fmt: skip
            assert all("extern_learn" in e["flags"] for e in unicast.values()), entries
            flood = [e for e in entries if e["mac"] == FLOOD]
            # exactly one per other VTEP of the VNI: no duplicates, none missing
            assert sorted(e["dst"] for e in flood) == expected_floods(host, vni), (host, vni)
            assert all("extern_learn" in e["flags"] for e in flood), flood
    assert run("host3", ["ip", "link", "show", "vxlan200"]).returncode != 0


def test_route_reflector_holds_every_type2_and_type3(fabric: None) -> None:
    table = wait_for("rr to hold every route", lambda: rr_routes() if all(
        f"{VTEP[h]}:{v}" in rr_routes() for h in HOSTS for v in VNIS[h]) else None)  # fmt: skip
    for _, (host, vni, _, mac) in ENDPOINTS.items():
        routes = table[f"{VTEP[host]}:{vni}"]
        path = routes.get(f"[2]:[0]:[48]:[{mac}]")
        assert path is not None, (mac, sorted(routes))
        assert path["routeType"] == 2 and path["nexthops"][0]["ip"] == VTEP[host]
        assert f"RT:65000:{vni}" in path["extendedCommunity"]["string"]
    for host in HOSTS:
        for vni in VNIS[host]:
            path = table[f"{VTEP[host]}:{vni}"].get(f"[3]:[0]:[32]:[{VTEP[host]}]")
            assert path is not None and path["routeType"] == 3, (host, vni)
            assert f"RT:65000:{vni}" in path["extendedCommunity"]["string"]
    assert "10.0.3.2:200" not in table


def _mm_seq(rd: str, mac: str) -> int | None:
    """The MAC mobility sequence number rr shows for a Type-2 (0 without MM)."""
    path = rr_routes().get(rd, {}).get(f"[2]:[0]:[48]:[{mac}]")
    if path is None:
        return None
    for word in path.get("extendedCommunity", {}).get("string", "").split():
        if word.startswith("MM:"):
            return int(word[3:].split(",")[0])
    return 0


def test_mac_move_from_host3_to_host1(fabric: None) -> None:
    mac = ENDPOINTS["h3e2"][3]
    assert remote_macs("host2", 100).get(mac) == VTEP["host3"]
    assert _mm_seq("10.0.3.2:100", mac) == 0
    try:
        # The "VM" with h3e2's MAC now lives behind host1's eth3 (h1e2's port).
        run("h1e2", ["ip", "link", "set", "eth1", "address", mac])
        wait_for("h1e2 (now with h3e2's MAC) to reach h2e1", lambda: ping("h1e2", "10.100.0.21"))
        wait_for("host2's FDB to point the moved MAC at host1",
                 lambda: remote_macs("host2", 100).get(mac) == VTEP["host1"])  # fmt: skip
        seq = wait_for("host1's route for the MAC with a higher mobility sequence",
                       lambda: _mm_seq("10.0.1.2:100", mac))  # fmt: skip
        assert seq >= 1
        # host3 lost the move: it withdraws its own route
        wait_for("host3 to withdraw its route for the moved MAC",
                 lambda: _mm_seq("10.0.3.2:100", mac) is None)  # fmt: skip
        assert remote_macs("host3", 100).get(mac) == VTEP["host1"]
        assert ping("h2e1", "10.100.0.12")
    finally:
        # Move it back: h1e2 gets its own MAC, host1 forgets the moved one, h3e2 talks.
        run("h1e2", ["ip", "link", "set", "eth1", "address", ENDPOINTS["h1e2"][3]])
        run("host1", ["bridge", "fdb", "del", mac, "dev", "eth3", "master"])
        wait_for("h3e2 to reach h2e1 again", lambda: ping("h3e2", "10.100.0.21"))
    wait_for("host2's FDB to point the MAC back at host3",
             lambda: remote_macs("host2", 100).get(mac) == VTEP["host3"])  # fmt: skip
    # host1 withdrew (its bridge forgot the MAC) and host3, whose bridge still has
    # it on h3e2's port, announces it again: a withdrawal, not a move, so its
    # sequence number may start over.
    wait_for("host3's route for the MAC again",
             lambda: _mm_seq("10.0.3.2:100", mac) is not None)  # fmt: skip
    assert _mm_seq("10.0.1.2:100", mac) is None
    wait_converged("after moving the MAC back")


def test_killed_exabgp_is_restarted_and_the_fabric_converges(fabric: None) -> None:
    (old,) = launcher_pids("host2")
    daemon = evpnd_pids("host2")
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = wait_for("a new ExaBGP launcher on host2",
                   lambda: [p for p in launcher_pids("host2") if p != old])  # fmt: skip
    restarted = time.monotonic() - t0
    assert evpnd_pids("host2") == daemon  # the daemon itself kept running
    assert len(new) == 1
    converged = wait_converged("after ExaBGP on host2 was killed")
    assert ping("h1e1", "10.100.0.21") and ping("h2e3", "10.200.0.13")
    print(f"\nExaBGP restart: new launcher after {restarted:.1f}s, "
          f"fabric converged {restarted + converged:.1f}s after the kill")  # fmt: skip


def test_stopped_host_disappears_from_every_fdb_then_rejoins(fabric: None) -> None:
    daemons, launchers = evpnd_pids("host3"), launcher_pids("host3")
    assert len(daemons) == 1 and len(launchers) == 1
    t0 = time.monotonic()
    for pid in (*daemons, *launchers):
        os.kill(pid, signal.SIGKILL)
    gone = VTEP["host3"]

    def no_trace() -> bool:
        return all(gone not in remote_macs(h, 100).values() and gone not in floods(h, 100)
                   for h in ("host1", "host2"))  # fmt: skip

    wait_for("host1 and host2 to drop every entry towards 10.0.3.2", no_trace, timeout=20)
    removed = time.monotonic() - t0
    assert ping("h1e1", "10.100.0.21")  # the rest of the fabric is unaffected

    t1 = time.monotonic()
    for pid in (*daemons, *launchers):
        _reap(pid)  # the daemon is a child of this process (`lab up` started it)
    pid = start_evpnd("host3")
    rejoined = wait_converged("after host3's evpnd was restarted")
    assert evpnd_pids("host3") == [pid] and len(launcher_pids("host3")) == 1
    assert ping("h3e1", "10.100.0.11")
    print(f"\nhost3 stop: entries towards it gone after {removed:.1f}s; "
          f"after restart the fabric converged in {rejoined:.1f}s "
          f"({time.monotonic() - t1:.1f}s incl. checks)")  # fmt: skip


def test_frozen_host_is_dropped_when_the_hold_timer_expires(fabric: None) -> None:
    """A host that stops answering (no TCP reset) is removed by BGP's hold timer (9 s)."""
    frozen = netns.pids_in(topology.load(LAB_FILE).netns_name("host3"))
    assert frozen, "nothing runs in host3's namespace"
    gone = VTEP["host3"]

    def no_trace() -> bool:
        return all(gone not in remote_macs(h, 100).values() and gone not in floods(h, 100)
                   for h in ("host1", "host2"))  # fmt: skip

    t0 = time.monotonic()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert not no_trace(), "entries towards host3 vanished before its session failed"
        wait_for("the hold timer to remove host3 from host1 and host2", no_trace, timeout=25)
        removed = time.monotonic() - t0
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    rejoined = wait_converged("after host3 was thawed")
    assert ping("h3e1", "10.100.0.11")
    print(f"\nhost3 frozen: entries towards it removed after {removed:.1f}s "
          f"(hold time 9 s); thawed, the fabric converged in {rejoined:.1f}s")


def test_restart_keeps_entries_and_sessions_and_loses_no_ping(fabric: None) -> None:
    """SIGTERM hands ExaBGP over: the next evpnd adopts it, nobody sees host1 leave."""
    (old,) = evpnd_pids("host1")
    (speaker,) = launcher_pids("host1")
    baseline = {v: (remote_macs("host1", v), floods("host1", v)) for v in VNIS["host1"]}
    rr_before = rr_peer(VTEP["host1"])
    host1_counts: list[int] = []
    host2_towards_host1: list[tuple[float, int]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def watch() -> None:
        while not stop.is_set():
            host1_counts.append(sum(len(fdb("host1", v)) for v in VNIS["host1"]))
            towards = [e for e in fdb("host2", 100) if e["dst"] == VTEP["host1"]]
            host2_towards_host1.append((time.monotonic() - t0, len(towards)))
            time.sleep(0.1)

    count = 200  # 20 s at 10/s
    pinger = subprocess.Popen(
        realize.node_command("h2e1", ["ping", "-i", "0.1", "-W", "1", "-c", str(count),
                                      "10.100.0.11"], lab=LAB).argv,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    new = None
    try:
        time.sleep(1)
        os.kill(old, signal.SIGTERM)
        wait_for("host1's evpnd to exit after SIGTERM", lambda: not alive(old), timeout=15)
        stopped = time.monotonic() - t0
        time.sleep(1)  # a second with no evpnd at all on host1
        new = start_evpnd("host1")
        out, _ = pinger.communicate(timeout=count * 0.1 + 15)
    finally:
        if pinger.poll() is None:
            pinger.kill()
        stop.set()
        watcher.join(5)
    _reap(old)
    converged = wait_converged("after host1's evpnd was restarted")
    assert new is not None and evpnd_pids("host1") == [new]
    # The same ExaBGP, the same BGP session: the route reflector never saw host1 go.
    assert launcher_pids("host1") == [speaker]
    rr_after = rr_peer(VTEP["host1"])
    assert rr_after["connectionsDropped"] == rr_before["connectionsDropped"], rr_after
    log = labstate.lab_dir(LAB) / "host1" / "evpnd.log"
    assert "took over the running exabgp" in log.read_text()

    # Host1's own kernel entries stayed through stop and start, and host2 kept
    # its entry towards host1 the whole time.
    expected = sum(len(fdb_) + len(fl) for fdb_, fl in baseline.values())
    assert host1_counts and min(host1_counts) == expected, (expected, sorted(set(host1_counts)))
    assert {v: (remote_macs("host1", v), floods("host1", v)) for v in VNIS["host1"]} == baseline
    missing = [t for t, n in host2_towards_host1 if n == 0]
    assert not missing, f"host2 lost its entries towards host1 at {missing[0]:.1f}s"

    summary = next((line for line in out.splitlines() if "packets transmitted" in line), out)
    print(f"\nhost1 restart (SIGTERM at 1.0s, exited at {stopped:.1f}s, new evpnd 1 s later): "
          f"ping h2e1->h1e1: {summary}; re-converged {converged:.1f}s after the ping run; "
          f"{len(host1_counts)} samples of host1's FDB, all {expected} entries")  # fmt: skip
    assert f"{count} packets transmitted, {count} received" in summary, summary


def test_a_crashed_daemons_successor_adopts_exabgp_and_withdraws_what_went_away(
    fabric: None,
) -> None:
    """SIGKILL leaves no hand-over, yet ExaBGP waits and the next evpnd knows what it sent."""
    (old,) = evpnd_pids("host1")
    (speaker,) = launcher_pids("host1")
    gone_mac = ENDPOINTS["h1e2"][3]
    time.sleep(3)  # the announced-routes record trails the announcements by 2 s
    os.kill(old, signal.SIGKILL)
    wait_for("host1's evpnd to die", lambda: not alive(old), timeout=10)
    _reap(old)
    # While no evpnd runs, h1e2 leaves: its MAC goes from host1's bridge.
    run("host1", ["ip", "link", "set", "eth3", "down"])
    run("host1", ["bridge", "fdb", "del", gone_mac, "dev", "eth3", "master"])
    assert VTEP["host1"] == remote_macs("host2", 100)[gone_mac]  # nobody withdrew it yet
    try:
        start_evpnd("host1")
        wait_for("host2 and host3 to drop h1e2's MAC",
                 lambda: all(gone_mac not in remote_macs(h, 100) for h in ("host2", "host3")),
                 timeout=30)  # fmt: skip
        assert launcher_pids("host1") == [speaker]  # adopted, not restarted
        assert ping("h2e1", "10.100.0.11")
        assert remote_macs("host2", 100)[ENDPOINTS["h1e1"][3]] == VTEP["host1"]
    finally:
        run("host1", ["ip", "link", "set", "eth3", "up"])
    wait_converged("after h1e2 came back")


def test_sigint_withdraws_host1_and_the_others_drop_it(fabric: None) -> None:
    """SIGINT is the clean stop: our routes are withdrawn and ExaBGP exits."""
    (old,) = evpnd_pids("host1")
    (speaker,) = launcher_pids("host1")
    gone = VTEP["host1"]

    def no_trace() -> bool:
        return all(gone not in remote_macs(h, 100).values() and gone not in floods(h, 100)
                   for h in ("host2", "host3"))  # fmt: skip

    os.kill(old, signal.SIGINT)
    wait_for("host2 and host3 to drop every entry towards 10.0.1.2", no_trace, timeout=20)
    wait_for("host1's evpnd and ExaBGP to exit",
             lambda: not alive(old) and not alive(speaker), timeout=20)  # fmt: skip
    _reap(old)
    # Documented stop state: host1's own kernel entries stay for the next start.
    assert remote_macs("host1", 100)
    start_evpnd("host1")
    wait_converged("after host1's evpnd was started again")
    assert ping("h2e1", "10.100.0.11")
