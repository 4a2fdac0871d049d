"""An IPv6 underlay end to end, and a dual-stack overlay with ND suppression: evpn-v6.

containerlab/evpn-v6.clab.yml in network namespaces: three evpnd hosts whose
VTEPs, BGP sessions and next hops are IPv6, around a GoBGP route reflector
(FRR 8.4.4 refuses an IPv6 PMSI tunnel: see the lab file). The endpoints of
VNI 100 and the hosts' bridges have IPv4 and IPv6 addresses, so each host
originates MAC+IPv4 and MAC+IPv6 routes and installs the others' as
neighbours its bridge answers for (ARP and ND suppression).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv6Address
from typing import Any

import pytest

from evpnd.dataplane.netlink.wire import RTPROT_EVPND
from tests.conftest import REPO, require_program
from tests.netns.fabric import FRR_LAB_NEEDS, Fabric, T, running_lab
from tests.netns.fabric import wait_for as poll
from tests.netns.frames import FrameCapture

pytestmark = pytest.mark.netns

LAB_FILE = REPO / "containerlab" / "evpn-v6.clab.yml"
LAB = "evpn-v6"
FABRIC = Fabric(LAB)
FLOOD = "00:00:00:00:00:00"
CONFIG = "/etc/evpnd/evpnd.yaml"
HOSTS = ("host1", "host2", "host3")
VTEP = {h: f"fd00:0:{h[-1]}::2" for h in HOSTS}
RR = {h: f"fd00:0:{h[-1]}::1" for h in HOSTS}  # the route reflector as each host sees it
# endpoint -> (host, IPv4, IPv6, MAC), all in VNI 100
ENDPOINTS = {
    f"h{h}e{n}": (f"host{h}", f"10.100.0.{h}{n}", f"fd10:100::{h}{n}", f"02:00:00:00:0{h}:0{n}")
    for h, n in ((1, 1), (1, 2), (2, 1), (3, 1))
}
NEEDS = (*((p, pkg) for p, pkg in FRR_LAB_NEEDS if pkg != "frr"), ("gobgpd", "gobgpd"),
         ("gobgp", "gobgpd"))  # fmt: skip
CONVERGE = 60.0
ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
NEIGHBOR_SOLICITATION = 135


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    return poll(what, probe, timeout, interval=0.2,
                explain=lambda: "\n".join(FABRIC.log_tail(h, lines=15) for h in HOSTS))


def run(node: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return FABRIC.run(node, argv, timeout)


def show(host: str, view: str) -> dict[str, Any]:
    return FABRIC.show(host, view, CONFIG)


def fdb(host: str) -> list[dict[str, Any]]:
    return [e for e in FABRIC.fdb(host, "vxlan100") if "dst" in e]


def remote_macs(host: str) -> dict[str, str]:
    return {e["mac"]: e["dst"] for e in fdb(host) if e["mac"] != FLOOD}


def floods(host: str) -> list[str]:
    return sorted(e["dst"] for e in fdb(host) if e["mac"] == FLOOD)


def evpnd_neighbours(host: str) -> dict[str, str]:
    out = run(host, ["ip", "-j", "neigh", "show", "dev", "br100"]).stdout
    return {e["dst"]: e["lladdr"] for e in json.loads(out or "[]")
            if "extern_learn" in e and e.get("protocol") == str(RTPROT_EVPND)}  # fmt: skip


def expected_remote(host: str) -> dict[str, str]:
    return {mac: VTEP[h] for h, _, _, mac in ENDPOINTS.values() if h != host}


def expected_floods(host: str) -> list[str]:
    return sorted(VTEP[h] for h in HOSTS if h != host)


def expected_neighbours(host: str) -> dict[str, str]:
    return {ip: mac for h, v4, v6, mac in ENDPOINTS.values() if h != host for ip in (v4, v6)}


def converged() -> bool:
    return all(remote_macs(h) == expected_remote(h) and floods(h) == expected_floods(h)
               and evpnd_neighbours(h) == expected_neighbours(h) for h in HOSTS)  # fmt: skip


def talk() -> None:
    """Every endpoint talks to its host's bridge over IPv4 and IPv6: the SVI learns both."""

    def one(ep: str) -> None:
        host = ENDPOINTS[ep][0]
        run(ep, ["ping", "-c", "1", "-W", "1", f"10.100.0.25{host[-1]}"])
        run(ep, ["ping", "-6", "-c", "1", "-W", "1", f"fd10:100::25{host[-1]}"])

    with ThreadPoolExecutor(len(ENDPOINTS)) as pool:
        list(pool.map(one, ENDPOINTS))


@pytest.fixture(scope="module")
def fabric() -> Iterator[None]:
    with running_lab(LAB_FILE, needs=NEEDS):
        deadline = time.monotonic() + CONVERGE
        while not converged():
            if time.monotonic() >= deadline:
                state = {h: (remote_macs(h), floods(h), evpnd_neighbours(h)) for h in HOSTS}
                pytest.fail(f"evpn-v6 not converged after {CONVERGE:.0f}s: {state}",
                            pytrace=False)  # fmt: skip
            talk()
            time.sleep(0.3)
        yield


def test_bgp_sessions_vteps_and_next_hops_are_ipv6(fabric: None) -> None:
    for host in HOSTS:
        (peer,) = show(host, "peers")["peers"]
        assert (peer["address"], peer["state"]) == (RR[host], "established")
        routes = show(host, "routes")["routes"]
        received = [r for r in routes if r["direction"] == "in"]
        assert received and all(IPv6Address(r["nexthop"]) for r in received)
        # Type-3 with an IPv6 originator and PMSI tunnel: ours and the others'
        imets = {(r["direction"], r["originator"], r["tunnel"], r["nexthop"])
                 for r in routes if r["type"] == 3}  # fmt: skip
        assert imets == {("out", VTEP[host], VTEP[host], VTEP[host])} | {
            ("in", VTEP[h], VTEP[h], VTEP[h]) for h in HOSTS if h != host}
    link = json.loads(run("host1", ["ip", "-d", "-j", "link", "show", "vxlan100"]).stdout)[0]
    assert link["linkinfo"]["info_data"]["local6"] == VTEP["host1"]
    assert link["mtu"] == 9500 - 70  # the underlay MTU less VXLAN over IPv6
    # The route reflector (GoBGP) holds each Type-3 with its IPv6 PMSI tunnel.
    rib = run("rr", ["gobgp", "global", "rib", "-a", "evpn"]).stdout
    for host in HOSTS:
        assert f"[type:multicast][rd:10.0.{host[-1]}.2:100][etag:0][ip:{VTEP[host]}]" in rib
        assert f"tunnel-id: {VTEP[host]}" in rib


def test_fdb_entries_point_at_ipv6_vteps(fabric: None) -> None:
    for host in HOSTS:
        entries = fdb(host)
        assert remote_macs(host) == expected_remote(host)
        assert floods(host) == expected_floods(host)  # one flood entry per IPv6 VTEP
        assert all("extern_learn" in e["flags"] for e in entries), entries


def test_endpoints_reach_each_other_over_ipv4_and_ipv6(fabric: None) -> None:
    pairs = [(src, dst) for src, (h, *_) in ENDPOINTS.items()
             for dst, (h2, *_) in ENDPOINTS.items() if h != h2]  # fmt: skip

    def both(pair: tuple[str, str]) -> bool:
        src, dst = pair
        _, v4, v6, _ = ENDPOINTS[dst]
        return (FABRIC.ping(src, v4).returncode == 0
                and run(src, ["ping", "-6", "-c", "2", "-W", "1", "-i", "0.2", v6]).returncode
                == 0)  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        failed = [p for p, ok in zip(pairs, pool.map(both, pairs), strict=True) if not ok]
    assert len(pairs) == 10 and failed == []


def test_mac_ipv6_routes_are_originated_and_installed(fabric: None) -> None:
    ours = {r["prefix"] for r in show("host1", "routes")["routes"] if r["direction"] == "out"}
    for _, (_, v4, v6, mac) in [kv for kv in ENDPOINTS.items() if kv[1][0] == "host1"]:
        assert f"[2]:[0]:[48]:[{mac}]:[128]:[{v6}]" in ours
        assert f"[2]:[0]:[48]:[{mac}]:[32]:[{v4}]" in ours
    for host in HOSTS:
        installed = evpnd_neighbours(host)
        assert installed == expected_neighbours(host)
        assert {ip for ip in installed if ":" in ip} == {
            v6 for h, _, v6, _ in ENDPOINTS.values() if h != host}


def addresses(node: str) -> set[str]:
    """The IPv6 addresses of the node's eth1, link-local included."""
    out = json.loads(run(node, ["ip", "-j", "-6", "addr", "show", "dev", "eth1"]).stdout)
    return {a["local"] for link in out for a in link.get("addr_info", [])}


class NsCapture(FrameCapture):
    """Neighbour solicitations arriving at an endpoint's eth1."""

    def __init__(self, node: str) -> None:
        super().__init__(f"clab-{LAB}-{node}", ETH_P_IPV6)

    def solicited(self, linger: float = 1.0) -> list[tuple[str, str]]:
        """(source, target) of every NS received so far (and for `linger` seconds)."""
        # Ethernet 14, IPv6 40 (next header at 20), ICMPv6 type at 54, NS target at 62.
        return [
            (str(IPv6Address(frame[22:38])), str(IPv6Address(frame[62:78])))
            for frame in self.incoming(linger)
            if len(frame) >= 78 and frame[20] == ICMPV6 and frame[54] == NEIGHBOR_SOLICITATION
        ]


def test_nd_for_a_remote_endpoint_is_answered_by_the_local_bridge(fabric: None) -> None:
    require_program("ip", "iproute2")
    h1e1_v6, h1e1_mac = ENDPOINTS["h1e1"][2], ENDPOINTS["h1e1"][3]
    assert evpnd_neighbours("host2").get(h1e1_v6) == h1e1_mac
    capture = NsCapture("h1e1")
    try:
        # Control: a local neighbour's NS (h1e2, same host) is not suppressed and
        # reaches h1e1, so the capture sees solicitations when there are any.
        run("h1e2", ["ip", "-6", "neigh", "flush", "dev", "eth1"])
        capture.drain()
        assert run("h1e2", ["ping", "-6", "-c", "1", "-W", "1", h1e1_v6]).returncode == 0
        local = capture.solicited()
        assert any(target == h1e1_v6 for _, target in local), local

        # h2e1 on host2 solicits h1e1: host2's bridge answers from evpnd's entry,
        # and the solicitation never crosses the tunnel to host1.
        run("h2e1", ["ip", "-6", "neigh", "flush", "dev", "eth1"])
        assert "lladdr" not in run("h2e1", ["ip", "-6", "neigh", "show", h1e1_v6]).stdout
        capture.drain()
        assert run("h2e1", ["ping", "-6", "-c", "1", "-W", "1", h1e1_v6]).returncode == 0
        learnt = json.loads(run("h2e1", ["ip", "-j", "-6", "neigh", "show", h1e1_v6]).stdout
                            or "[]")  # fmt: skip
        assert [e.get("lladdr") for e in learnt] == [h1e1_mac], learnt
        remote = capture.solicited()
        # (host1's own bridge may probe h1e1 meanwhile, from its link-local address:
        # that is host1 checking its neighbour, not h2e1's solicitation.)
        assert [(s, t) for s, t in remote if t == h1e1_v6 and s in addresses("h2e1")] == [], (
            remote)  # fmt: skip
    finally:
        capture.close()
