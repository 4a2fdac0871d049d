"""Hosts peering eBGP with their top-of-rack switches: the evpn-tor lab end to end.

containerlab/evpn-tor.clab.yml in network namespaces: two FRR ToRs (AS 65100,
route servers with next hops unchanged), three evpnd hosts each in its own
private 4-byte ASN and one FRR VTEP (AS 65004), every one of them with an
uplink and an eBGP session to each ToR, its VTEP on lo and a default route
through both ToRs. The hosts import `*:<VNI>` (`auto` with import_any_asn),
since every host exports its own ASN.

Read-only checks first; then tor1 is lost (its daemons killed, its links down)
and brought back while endpoints ping: the other ToR carries every route and
every packet, no kernel entry is removed, and tor1's return changes nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from evpnd.dataplane.netlink.wire import RTPROT_EVPND
from evpnd.lab import realize, topology
from tests.conftest import REPO
from tests.netns.fabric import Fabric, T, running_lab
from tests.netns.fabric import wait_for as poll
from tests.netns.frr_node import FrrOutage

pytestmark = pytest.mark.netns

LAB_FILE = REPO / "containerlab" / "evpn-tor.clab.yml"
LAB = "evpn-tor"
FABRIC = Fabric(LAB)
FLOOD = "00:00:00:00:00:00"
CONFIG = "/etc/evpnd/evpnd.yaml"  # the bind target: `lab exec` hands evpnd the host's file

HOSTS = ("host1", "host2", "host3")  # evpnd
NODES = (*HOSTS, "vtep4")  # and the FRR VTEP
ASN = {"host1": 4200000001, "host2": 4200000002, "host3": 4200000003, "vtep4": 65004}
VTEP = {node: f"10.0.0.{i}" for i, node in enumerate(NODES, 1)}
VNIS = {"host1": (100, 200), "host2": (100, 200), "host3": (100,), "vtep4": (100,)}
TORS = {"tor1": 1, "tor2": 2}
# endpoint -> (node, VNI, IP, MAC)
ENDPOINTS = {
    "h1e1": ("host1", 100, "10.100.0.11", "02:00:00:00:01:01"),
    "h1e2": ("host1", 200, "10.200.0.12", "02:00:00:00:01:02"),
    "h2e1": ("host2", 100, "10.100.0.21", "02:00:00:00:02:01"),
    "h2e2": ("host2", 200, "10.200.0.22", "02:00:00:00:02:02"),
    "h3e1": ("host3", 100, "10.100.0.31", "02:00:00:00:03:01"),
    "v4e1": ("vtep4", 100, "10.100.0.41", "02:00:00:00:04:01"),
}
CONVERGE = 60.0
PINGS = 250  # 25 s at 10/s
LOSS_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    return poll(what, probe, timeout, interval=0.2, explain=diagnostics)


def diagnostics() -> str:
    return "\n".join([FABRIC.log_tail(h, lines=15) for h in HOSTS]
                     + [FABRIC.log_tail(t, "bgpd.log", lines=10) for t in TORS])  # fmt: skip


def run(node: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return FABRIC.run(node, argv, timeout)


def show(host: str, view: str) -> dict[str, Any]:
    return FABRIC.show(host, view, CONFIG)


def tor_summary(tor: str) -> dict[str, dict[str, Any]]:
    out = run(tor, ["vtysh", "-c", "show bgp l2vpn evpn summary json"]).stdout
    try:
        return json.loads(out).get("peers", {}) if out.strip() else {}
    except json.JSONDecodeError:
        return {}


def remote_macs(node: str, vni: int) -> dict[str, str]:
    return {e["mac"]: e["dst"] for e in FABRIC.fdb(node, f"vxlan{vni}")
            if "dst" in e and e["mac"] != FLOOD}  # fmt: skip


def floods(node: str, vni: int) -> list[str]:
    return sorted(e["dst"] for e in FABRIC.fdb(node, f"vxlan{vni}")
                  if "dst" in e and e["mac"] == FLOOD)  # fmt: skip


def expected_remote(node: str, vni: int) -> dict[str, str]:
    return {mac: VTEP[n] for n, v, _, mac in ENDPOINTS.values() if v == vni and n != node}


def expected_floods(node: str, vni: int) -> list[str]:
    return sorted(VTEP[n] for n in NODES if n != node and vni in VNIS[n])


def evpnd_neighbours(host: str, vni: int) -> dict[str, str]:
    out = run(host, ["ip", "-j", "neigh", "show", "dev", f"br{vni}"]).stdout
    return {e["dst"]: e["lladdr"] for e in json.loads(out or "[]")
            if "extern_learn" in e and e.get("protocol") == str(RTPROT_EVPND)}  # fmt: skip


def expected_neighbours(host: str, vni: int) -> dict[str, str]:
    # MAC+IP routes come from the evpnd hosts' bridges (their SVIs); vtep4 has none.
    return {ip: mac for n, v, ip, mac in ENDPOINTS.values()
            if v == vni and n != host and n in HOSTS}  # fmt: skip


def converged() -> bool:
    return all(
        remote_macs(n, v) == expected_remote(n, v) and floods(n, v) == expected_floods(n, v)
        for n in NODES for v in VNIS[n]
    ) and all(evpnd_neighbours(h, v) == expected_neighbours(h, v)
              for h in HOSTS for v in VNIS[h])  # fmt: skip


def talk() -> None:
    """Each endpoint speaks: to its host's bridge (an SVI learns IP -> MAC), else to anyone."""

    def one(ep: str) -> None:
        node, vni, _, _ = ENDPOINTS[ep]
        target = f"10.{vni}.0.25{node[-1]}" if node in HOSTS else f"10.{vni}.0.254"
        run(ep, ["ping", "-c", "1", "-W", "1", target])

    with ThreadPoolExecutor(len(ENDPOINTS)) as pool:
        list(pool.map(one, ENDPOINTS))


def wait_converged(what: str, timeout: float = CONVERGE) -> None:
    deadline = time.monotonic() + timeout
    while not converged():
        if time.monotonic() >= deadline:
            state = {n: {v: (remote_macs(n, v), floods(n, v)) for v in VNIS[n]} for n in NODES}
            pytest.fail(f"fabric not converged after {timeout:.0f}s ({what}): {state}\n"
                        + diagnostics(), pytrace=False)  # fmt: skip
        talk()
        time.sleep(0.3)


def ping(src: str, address: str, count: int = 2) -> bool:
    return FABRIC.ping(src, address, count).returncode == 0


def same_vni_pairs() -> list[tuple[str, str]]:
    return [(src, ip) for src, (n, vni, _, _) in ENDPOINTS.items()
            for dst, (n2, vni2, ip, _) in ENDPOINTS.items() if vni == vni2 and n != n2]  # fmt: skip


def all_pairs_ping() -> list[tuple[str, str]]:
    """The (source, address) pairs that failed."""
    pairs = same_vni_pairs()
    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(pairs, pool.map(lambda p: ping(*p), pairs), strict=True))
    return [p for p, ok in results.items() if not ok]


@pytest.fixture(scope="module")
def fabric() -> Iterator[None]:
    with running_lab(LAB_FILE):
        wait_for("both ToRs to establish their four sessions", lambda: all(
            len(peers := tor_summary(t)) == 4
            and {p.get("state") for p in peers.values()} == {"Established"} for t in TORS),
            timeout=90)  # fmt: skip
        wait_converged("after lab up")
        yield


def test_sessions_are_ebgp_with_four_byte_asns(fabric: None) -> None:
    for tor, t in TORS.items():
        peers = tor_summary(tor)
        assert {address: p["remoteAs"] for address, p in peers.items()} == {
            f"10.{t}.{i}.2": ASN[n] for i, n in enumerate(NODES, 1)}, peers
    for host in HOSTS:
        data = show(host, "peers")
        assert data["asn"] == ASN[host]
        assert {(p["address"], p["remote_asn"], p["state"]) for p in data["peers"]} == {
            (f"10.{t}.{host[-1]}.1", 65100, "established") for t in TORS.values()}


def test_every_route_arrives_from_both_tors_with_its_next_hop_unchanged(fabric: None) -> None:
    routes = show("host1", "routes")["routes"]
    received = [r for r in routes if r["direction"] == "in"]
    by_prefix: dict[tuple[str, str], set[str]] = {}
    for r in received:
        by_prefix.setdefault((r["rd"], r["prefix"]), set()).add(r["peer"])
        origin = next(n for n, vtep in VTEP.items() if r["rd"].startswith(f"{vtep}:"))
        # next hop unchanged across the eBGP hop: the originating VTEP, not the ToR
        assert r["nexthop"] == VTEP[origin], r
        # each host exports its own ASN (the low 16 bits); imported through *:<VNI>
        assert r["route_targets"] == [f"{ASN[origin] & 0xFFFF}:{r['vni']}"], r
        assert r["imported_vnis"] == [r["vni"]], r
    assert by_prefix and all(peers == {"10.1.1.1", "10.2.1.1"} for peers in by_prefix.values())
    # host2's, host3's and vtep4's Type-3 routes and their MACs
    assert {p[1] for p in by_prefix if p[1].startswith("[3]")} == {
        f"[3]:[0]:[32]:[{VTEP[n]}]" for n in ("host2", "host3", "vtep4")}
    assert show("host1", "vteps")["nexthop_mismatches"] == []


def test_every_endpoint_reaches_every_other_of_its_vni(fabric: None) -> None:
    assert len(same_vni_pairs()) == 12 + 2  # VNI 100: 4 endpoints x 3; VNI 200: 2
    assert all_pairs_ping() == []
    # and not across VNIs: h1e2 (VNI 200) given an address in VNI 100's subnet
    run("h1e2", ["ip", "addr", "add", "10.100.0.99/24", "dev", "eth1"])
    try:
        assert not ping("h1e2", "10.100.0.21", count=3)
    finally:
        run("h1e2", ["ip", "addr", "del", "10.100.0.99/24", "dev", "eth1"])


def test_kernel_state_on_every_vtep(fabric: None) -> None:
    for node in NODES:
        for vni in VNIS[node]:
            entries = [e for e in FABRIC.fdb(node, f"vxlan{vni}") if "dst" in e]
            unicast = [e for e in entries if e["mac"] != FLOOD]
            assert {e["mac"]: e["dst"] for e in unicast} == expected_remote(node, vni), node
            assert sorted(e["dst"] for e in entries if e["mac"] == FLOOD) == expected_floods(
                node, vni), node
            if node in HOSTS:  # evpnd's own marks on every entry
                assert all("extern_learn" in e["flags"] for e in entries), entries
    for host in HOSTS:
        for vni in VNIS[host]:
            assert evpnd_neighbours(host, vni) == expected_neighbours(host, vni), (host, vni)


def vtysh(node: str, *commands: str) -> None:
    out = run(node, ["vtysh", *(w for c in commands for w in ("-c", c))])
    assert out.returncode == 0, out.stdout + out.stderr


def mismatches(host: str) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(m["peer"], m["rd"], m["tunnel"], tuple(m["nexthops"]))
            for m in show(host, "vteps")["nexthop_mismatches"]}  # fmt: skip


def test_a_tor_that_rewrites_next_hops_is_reported(fabric: None) -> None:
    """tor2 turns to next-hop-self: its Type-2 routes point at tor2 while their
    Type-3 PMSI tunnels still name the VTEPs. Every host reports it (log, show
    vteps); tor1's paths keep the FDB right. Undone, the reports clear."""
    af = ("configure terminal", "router bgp 65100", "address-family l2vpn evpn")
    vtysh("tor2", *af, "no neighbor HOSTS attribute-unchanged next-hop",
          "neighbor HOSTS next-hop-self")  # fmt: skip
    vtysh("tor2", "clear bgp l2vpn evpn * soft out")
    try:
        expected = {("10.2.1.1", f"{VTEP[n]}:{v}", VTEP[n], ("10.2.1.1",))
                    for n in ("host2", "host3") for v in VNIS[n]}  # fmt: skip
        found = wait_for("host1 to report tor2's rewritten next hops",
                         lambda: (m := mismatches("host1")) >= expected and m)  # fmt: skip
        # vtep4 (FRR) has its own RD numbering: one more, from tor2 too
        assert {(m[0], m[2]) for m in found - expected} == {("10.2.1.1", VTEP["vtep4"])}
        log = FABRIC.log_tail("host1", lines=400)
        assert "vtep next hops differ from its type-3 tunnel" in log
        # The best path per MAC is tor1's (the lower next hop): the FDB is unchanged.
        for vni in VNIS["host1"]:
            assert remote_macs("host1", vni) == expected_remote("host1", vni)
    finally:
        vtysh("tor2", *af, "no neighbor HOSTS next-hop-self",
              "neighbor HOSTS attribute-unchanged next-hop")  # fmt: skip
        vtysh("tor2", "clear bgp l2vpn evpn * soft out")
    for host in HOSTS:
        wait_for(f"{host}'s reports to clear", lambda h=host: not mismatches(h))
    assert "vtep next hops agree with its type-3 tunnel again" in FABRIC.log_tail(
        "host1", lines=400)


def writes(host: str) -> int:
    return int(show(host, "status")["dataplane"]["writes"])


def test_one_tor_lost_and_back_removes_nothing_and_flaps_nothing(fabric: None) -> None:
    """tor1 dies (daemons killed, links down): every route is still held through tor2,
    no FDB entry is removed or rewritten, the endpoints keep reaching each other.
    tor1 returns: its sessions come back and nothing in the kernel changes."""
    outage = FrrOutage(FABRIC, topology.load(LAB_FILE), "tor1")
    before = {h: {v: (remote_macs(h, v), floods(h, v)) for v in VNIS[h]} for h in HOSTS}
    writes_before = {h: writes(h) for h in HOSTS}
    monitors = {h: subprocess.Popen(realize.node_command(h, ["bridge", "monitor", "fdb"],
                                                         lab=LAB).argv,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for h in HOSTS}  # fmt: skip
    flows = {(src, ip): subprocess.Popen(
        realize.node_command(src, ["ping", "-i", "0.1", "-W", "1", "-c", str(PINGS), ip],
                             lab=LAB).argv,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for src, ip in (("h1e1", "10.100.0.21"), ("h3e1", "10.100.0.11"),
                        ("h2e2", "10.200.0.12"), ("v4e1", "10.100.0.31"))}  # fmt: skip
    try:
        time.sleep(2)
        outage.kill(links_down=True)
        t0 = time.monotonic()
        for host in HOSTS:
            wait_for(f"{host} to see its tor1 session down", lambda h=host: {
                p["address"]: p["state"] for p in show(h, "peers")["peers"]
            }[f"10.1.{h[-1]}.1"] != "established")  # fmt: skip
        # tor1's routes are gone from every host's RIB; tor2's copies carry on.
        for host in HOSTS:
            peers = {p["address"]: p["routes_received"] for p in show(host, "peers")["peers"]}
            assert peers[f"10.1.{host[-1]}.1"] == 0 and peers[f"10.2.{host[-1]}.1"] > 0, peers
        during = {h: {v: (remote_macs(h, v), floods(h, v)) for v in VNIS[h]} for h in HOSTS}
        assert during == before
        assert all_pairs_ping() == []
        down_for = time.monotonic() - t0
        # tor1 comes back: links, routes, daemons; its sessions and routes return.
        outage.restore()
        wait_for("tor1's four sessions", lambda: len(peers := tor_summary("tor1")) == 4 and {
            p.get("state") for p in peers.values()} == {"Established"}, timeout=90)  # fmt: skip
        for host in HOSTS:
            wait_for(f"{host} to hold tor1's routes again", lambda h=host: {
                p["address"]: p["routes_received"] for p in show(h, "peers")["peers"]
            }[f"10.1.{h[-1]}.1"] > 0, timeout=60)  # fmt: skip
        time.sleep(2)  # whatever tor1's return would write, it would have by now
        results = {pair: p.communicate(timeout=PINGS * 0.1 + 30)[0] for pair, p in flows.items()}
    finally:
        for process in [*flows.values(), *monitors.values()]:
            if process.poll() is None:
                process.kill()
    events = {h: m.communicate(timeout=10)[0].splitlines() for h, m in monitors.items()}
    after = {h: {v: (remote_macs(h, v), floods(h, v)) for v in VNIS[h]} for h in HOSTS}
    assert after == before
    # No FDB entry was removed, added or rewritten on any evpnd host, loss or return.
    assert events == {h: [] for h in HOSTS}, events
    assert {h: writes(h) for h in HOSTS} == writes_before
    lost = {}
    for pair, out in results.items():
        match = LOSS_RE.search(out)
        assert match, out
        lost[pair] = int(match[1]) - int(match[2])
    print(f"\ntor1 down {down_for:.1f}s then back; pings lost of {PINGS} at 10/s: "
          + ", ".join(f"{s}->{ip} {n}" for (s, ip), n in lost.items()))
    assert all_pairs_ping() == []
    # The uplink that lost its carrier left the default route at once (the hosts'
    # ignore_routes_with_linkdown), so no packet between evpnd hosts was lost.
    assert [n for (src, _), n in lost.items() if src != "v4e1" and n] == [], lost
