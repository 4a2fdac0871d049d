"""evpn-irb end to end: routing between segments through the L3VNI, evpnd and FRR 8.4.4.

The lab (containerlab/evpn-irb.clab.yml): an FRR route reflector; host1 and host2 run
`evpnd run` with VNIs 100 and 200, anycast gateways 10.100.0.1 / 10.200.0.1 and the
L3VNI 5000; vtep3 is an FRR VTEP with VNI 300 and the L3VNI 5000 in its default VRF;
border is an FRR node announcing the outside prefix 198.51.100.0/24 (the namespace
inet) as a Type-5 route. Checked, in order (the module shares one lab; the last
tests change it):

* each side installs the other's routes as FRR does: a route `via VTEP dev br5000
  onlink`, a neighbour VTEP -> router MAC on br5000, the router MAC on vxlan5000;
* a ping between VNIs is routed symmetrically: the TTL drops by two, and a capture
  on the underlay sees the packets in VNI 5000 between the two VTEPs' router MACs;
  the same to and from the FRR VTEP, and out to the border's prefix;
* each endpoint's ARP for its gateway is answered by its own host (it never crosses
  the underlay);
* an endpoint that moves to another host is reached by routing again within the
  hold time;
* an evpnd restart loses no ping of a routed flow and writes nothing;
* the L3VNI taken out of a host's config removes only what evpnd made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
import yaml

from evpnd.l3.settings import anycast_mac
from evpnd.lab import program, realize, topology
from evpnd.lab import state as labstate
from tests.conftest import REPO
from tests.netns import fabric
from tests.netns.fabric import Fabric, T, alive, running_lab
from tests.netns.vxlan_capture import Capture, VxlanPacket

pytestmark = pytest.mark.netns

LAB_FILE = REPO / "containerlab" / "evpn-irb.clab.yml"
LAB = "evpn-irb"
FABRIC = Fabric(LAB)
CONVERGE = 60.0
HOLD_TIME = 9.0  # the hosts' bgp hold_time: a moved endpoint is reached again within it

VTEP = {"host1": "10.0.1.2", "host2": "10.0.2.2", "vtep3": "10.0.3.2", "border": "10.0.4.2"}
FRR_RMAC = {"vtep3": "02:00:00:00:03:50", "border": "02:00:00:00:04:50"}  # their br5000
GATEWAY = {100: "10.100.0.1", 200: "10.200.0.1", 300: "10.30.0.1"}
# endpoint -> (address, VNI, the VTEP node it hangs off)
ENDPOINTS = {
    "h1e1": ("10.100.0.11", 100, "host1"),
    "h1e2": ("10.200.0.12", 200, "host1"),
    "h2e1": ("10.100.0.21", 100, "host2"),
    "h2e2": ("10.200.0.22", 200, "host2"),
    "h3e1": ("10.30.0.31", 300, "vtep3"),
}
EVPND_ENDPOINTS = [e for e, (_, _, node) in ENDPOINTS.items() if node.startswith("host")]
MOVER = ("mv", "10.100.0.50", "02:00:00:00:05:00")
# IPv6: two of the endpoints carry an address too, the gateways one per VNI
V6 = {"h1e1": "2001:db8:100::11", "h2e2": "2001:db8:200::22"}
V6_GATEWAY = {100: "2001:db8:100::1", 200: "2001:db8:200::1"}
OUTSIDE = "198.51.100.1"


# ---------------------------------------------------------------------------
# helpers


def run(node: str, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return FABRIC.run(node, argv, timeout)


def ns(node: str) -> str:
    return f"clab-{LAB}-{node}"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    return fabric.wait_for(what, probe, timeout, interval=0.3, explain=diagnostics)


def diagnostics() -> str:
    parts = [FABRIC.log_tail(node) for node in ("host1", "host2")]
    for node in ("host1", "host2"):
        parts.append(f"--- {node}: ip route\n" + run(node, ["ip", "route"]).stdout)
    parts.append("--- vtep3: ip route\n" + run("vtep3", ["ip", "route"]).stdout)
    return "\n".join(parts)


def ping(src: str, address: str, count: int = 2) -> subprocess.CompletedProcess[str]:
    return FABRIC.ping(src, address, count)


def ttls(result: subprocess.CompletedProcess[str]) -> set[int]:
    return {int(t) for t in re.findall(r"ttl=(\d+)", result.stdout)}


def routes(node: str) -> dict[str, dict[str, Any]]:
    """The main table's IPv4 routes by destination (`ip -j route`)."""
    out = run(node, ["ip", "-j", "route", "show", "table", "main"]).stdout
    return {r["dst"]: r for r in json.loads(out or "[]")}


def evpnd_routes(node: str) -> dict[str, dict[str, Any]]:
    return {d: r for d, r in routes(node).items() if r.get("protocol") == "238"}


def neighbours(node: str, device: str) -> dict[str, dict[str, Any]]:
    out = run(node, ["ip", "-j", "neigh", "show", "dev", device]).stdout
    return {n["dst"]: n for n in json.loads(out or "[]")}


def fdb(node: str, device: str) -> list[dict[str, Any]]:
    return FABRIC.fdb(node, device)


def link(node: str, device: str) -> dict[str, Any]:
    out = run(node, ["ip", "-j", "link", "show", "dev", device]).stdout
    found = json.loads(out or "[]")
    return found[0] if found else {}


def router_mac(node: str) -> str:
    return str(link(node, "br5000")["address"])


def vtysh_json(node: str, command: str) -> Any:
    out = run(node, ["vtysh", "-c", f"{command} json"]).stdout
    try:
        return json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        return {}


def nudge() -> None:
    """Every endpoint speaks once (its gateway's ARP and a ping): its host learns its MAC
    and address and announces them. A silent endpoint is only reachable through its own
    host's subnet route, which no other host has (README "Routing between segments")."""
    for endpoint, (_, vni, _) in ENDPOINTS.items():
        run(endpoint, ["ping", "-c", "1", "-W", "1", GATEWAY[vni]])
    run(MOVER[0], ["ping", "-c", "1", "-W", "1", GATEWAY[100]])


def converged() -> bool:
    summary = vtysh_json("rr", "show bgp l2vpn evpn summary").get("peers", {})
    if len(summary) != 4 or {p.get("state") for p in summary.values()} != {"Established"}:
        return False
    for host in ("host1", "host2"):
        have = evpnd_routes(host)
        other = "host2" if host == "host1" else "host1"
        wanted = {"10.30.0.0/24", OUTSIDE.rsplit(".", 1)[0] + ".0/24", "10.30.0.31"}
        wanted |= {a for e, (a, _, n) in ENDPOINTS.items() if n == other}
        if not wanted <= set(have):
            return False
    return all(a in routes("vtep3") for e, (a, _, n) in ENDPOINTS.items() if n != "vtep3")


def converge(what: str) -> None:
    deadline = time.monotonic() + CONVERGE
    while not converged():
        if time.monotonic() > deadline:
            pytest.fail(f"evpn-irb not converged after {CONVERGE:.0f}s ({what})\n"
                        + diagnostics(), pytrace=False)  # fmt: skip
        nudge()
        time.sleep(0.5)


def evpnd_pids(host: str) -> list[int]:
    return FABRIC.procs(host, "evpnd run")


def start_evpnd(host: str, config: Path | None = None) -> int:
    """Start the host's evpnd as `lab up` does (same log), with its own or another config."""
    topo = topology.load(LAB_FILE)
    config = config or REPO / "containerlab" / "configs" / LAB / host / "evpnd.yaml"
    return program.start_evpnd(topo.netns_name(host), config, labstate.lab_dir(LAB) / host)


def stop_evpnd(host: str) -> None:
    (pid,) = evpnd_pids(host)
    os.kill(pid, signal.SIGTERM)
    wait_for(f"{host}'s evpnd to exit after SIGTERM", lambda: not alive(pid), timeout=15)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # `lab up` ran in this process: collect it


def log_events(host: str) -> list[dict[str, Any]]:
    log = labstate.lab_dir(LAB) / host / "evpnd.log"
    events = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events


def routed_through_l3vni(packets: list[VxlanPacket], src: str, dst: str) -> list[VxlanPacket]:
    return [p for p in packets if p.vni == 5000 and p.src == src and p.dst == dst]


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def irb() -> Iterator[None]:
    with running_lab(LAB_FILE) as report:
        assert "evpnd:latest -> " in report.render()
        converge("after lab up")
        yield


def test_hosts_install_frr_type5_routes_as_frr_installs_them(irb: None) -> None:
    """FRR's shape (DESIGN.md section 8): route via VTEP dev br5000 onlink, a neighbour
    VTEP -> router MAC on br5000, the router MAC's FDB entry on vxlan5000."""
    for host in ("host1", "host2"):
        have = evpnd_routes(host)
        for node, prefix in (("vtep3", "10.30.0.0/24"), ("border", "198.51.100.0/24")):
            route = have[prefix]
            assert (route["gateway"], route["dev"], route["metric"]) == (VTEP[node], "br5000", 20)
            assert "onlink" in route["flags"], route
            neigh = neighbours(host, "br5000")[VTEP[node]]
            assert neigh["lladdr"] == FRR_RMAC[node]
            assert "extern_learn" in neigh and neigh.get("protocol") == "238", neigh
            entry = [e for e in fdb(host, "vxlan5000") if e["mac"] == FRR_RMAC[node]]
            assert [e.get("dst") for e in entry if "dst" in e] == [VTEP[node]], entry
        # The other host's gateway subnets are ours too: never routed into the L3VNI.
        assert "10.100.0.0/24" not in have and "10.200.0.0/24" not in have
        assert routes(host)["10.100.0.0/24"]["dev"] == "br100"


def test_frr_installs_evpnd_host_routes_and_type5_subnets(irb: None) -> None:
    """FRR takes evpnd's MAC+IP routes (labels 100/200 and 5000, Rmac) as host routes and
    its Type-5 gateway subnets from both hosts (ECMP)."""
    for node in ("vtep3", "border"):
        table = routes(node)
        for endpoint in EVPND_ENDPOINTS:
            address, _, host = ENDPOINTS[endpoint]
            route = table[address]
            assert (route["gateway"], route["dev"], route["protocol"]) == \
                (VTEP[host], "br5000", "bgp")  # fmt: skip
        subnet = table["10.100.0.0/24"]
        assert {h["gateway"] for h in subnet.get("nexthops", [])} == {VTEP["host1"], VTEP["host2"]}
        neigh = neighbours(node, "br5000")
        assert neigh[VTEP["host1"]]["lladdr"] == router_mac("host1")
    # What FRR's BGP says about one of them: the L3VNI and host1's router MAC.
    evpn = vtysh_json("vtep3", "show bgp l2vpn evpn route type macip")
    rd = evpn.get(f"{VTEP['host1']}:100", {})
    prefix = next(p for p in rd if "10.100.0.11" in p)
    path = rd[prefix]["paths"][0][0]
    communities = path["extendedCommunity"]["string"]
    assert "RT:65000:5000" in communities and f"Rmac:{router_mac('host1')}" in communities


@pytest.mark.parametrize(
    ("src", "dst"),
    [("h1e1", "h2e2"), ("h2e2", "h1e1"), ("h1e2", "h2e1"), ("h2e1", "h1e2")],
)  # fmt: skip
def test_a_ping_between_vnis_is_routed_symmetrically(irb: None, src: str, dst: str) -> None:
    address = ENDPOINTS[dst][0]
    source, src_host = ENDPOINTS[src][0], ENDPOINTS[src][2]
    dst_host = ENDPOINTS[dst][2]
    with Capture(ns(src_host), "eth1") as capture:
        result = ping(src, address, count=3)
    assert result.returncode == 0, result.stdout + result.stderr
    # Routed twice (the source host, then the destination host): 64 -> 62 both ways.
    assert ttls(result) == {62}, result.stdout
    out = routed_through_l3vni(capture.packets, source, address)
    back = routed_through_l3vni(capture.packets, address, source)
    assert len(out) >= 3 and len(back) >= 3, capture.packets
    for packet in out:
        assert (packet.outer_src, packet.outer_dst) == (VTEP[src_host], VTEP[dst_host])
        assert packet.inner_dst_mac == router_mac(dst_host)  # symmetric: the remote router
        assert packet.inner_src_mac == router_mac(src_host)
        assert packet.ttl == 63  # decremented once, by the source host
    # Nothing of it crossed in an L2 VNI.
    assert not [p for p in capture.packets if p.vni in (100, 200) and p.dst == address]


def test_an_ipv6_ping_between_vnis_is_routed_through_the_l3vni(irb: None) -> None:
    """IPv6 over an IPv4 underlay, as FRR does it: /128 host routes via the VTEP's
    IPv4-mapped address (`::ffff:10.0.2.2`), whose neighbour is the router MAC."""
    for endpoint in V6:  # each speaks once (its gateway's ND)
        run(endpoint, ["ping", "-6", "-c", "1", "-W", "1", V6_GATEWAY[ENDPOINTS[endpoint][1]]])
    target = V6["h2e2"]

    def host_route() -> dict[str, Any] | None:
        out = run("host1", ["ip", "-j", "-6", "route", "show", f"{target}/128"]).stdout
        found = [r for r in json.loads(out or "[]") if r.get("protocol") == "238"]
        return found[0] if found else None

    route = wait_for(f"host1's route to {target}", host_route)
    mapped = ip_address(f"::ffff:{VTEP['host2']}")
    assert ip_address(route["gateway"]) == mapped
    assert route["dev"] == "br5000" and "onlink" in route["flags"]
    out = run("host1", ["ip", "-j", "-6", "neigh", "show", "dev", "br5000"]).stdout
    lladdrs = {ip_address(n["dst"]): n["lladdr"] for n in json.loads(out or "[]")}
    assert lladdrs[mapped] == router_mac("host2")
    with Capture(ns("host1"), "eth1") as capture:
        result = run("h1e1", ["ping", "-6", "-c", "3", "-W", "1", "-i", "0.2", target])
    assert result.returncode == 0, result.stdout + result.stderr
    assert ttls(result) == {62}, result.stdout  # the hop limit: routed by both hosts
    routed = [p for p in capture.packets if p.vni == 5000 and p.ethertype == 0x86DD]
    assert len(routed) >= 6, capture.packets  # three each way, in the L3VNI
    assert {p.inner_dst_mac for p in routed} == {router_mac("host1"), router_mac("host2")}


@pytest.mark.parametrize(("src", "dst"), [("h1e1", "h3e1"), ("h3e1", "h2e2"), ("h3e1", "h1e2")])
def test_routed_pings_to_and_from_the_frr_vtep(irb: None, src: str, dst: str) -> None:
    address, source = ENDPOINTS[dst][0], ENDPOINTS[src][0]
    with Capture(ns("vtep3"), "eth1") as capture:
        result = ping(src, address, count=3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ttls(result) == {62}, result.stdout
    host = ENDPOINTS[dst if src == "h3e1" else src][2]
    towards_frr = routed_through_l3vni(capture.packets, *((source, address) if src != "h3e1"
                                                           else (address, source)))  # fmt: skip
    assert towards_frr and {(p.outer_src, p.inner_dst_mac) for p in towards_frr} == {
        (VTEP[host], FRR_RMAC["vtep3"])}, capture.packets
    from_frr = routed_through_l3vni(capture.packets, *((address, source) if src != "h3e1"
                                                        else (source, address)))  # fmt: skip
    assert from_frr and {p.inner_dst_mac for p in from_frr} == {router_mac(host)}


@pytest.mark.parametrize("endpoint", ["h1e1", "h2e2", "h3e1"])
def test_endpoints_reach_the_outside_through_the_border(irb: None, endpoint: str) -> None:
    host = ENDPOINTS[endpoint][2]
    with Capture(ns(host), "eth1") as capture:
        result = ping(endpoint, OUTSIDE, count=3)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ttls(result) == {62}, result.stdout  # routed by the host, then the border
    out = routed_through_l3vni(capture.packets, ENDPOINTS[endpoint][0], OUTSIDE)
    assert out and {(p.outer_dst, p.inner_dst_mac) for p in out} == {
        (VTEP["border"], FRR_RMAC["border"])}


@pytest.mark.parametrize("endpoint", EVPND_ENDPOINTS)
def test_each_endpoints_arp_for_its_gateway_is_answered_by_its_own_host(
    irb: None, endpoint: str
) -> None:
    _, vni, host = ENDPOINTS[endpoint]
    gateway = GATEWAY[vni]
    run(endpoint, ["ip", "neigh", "flush", "dev", "eth1"])
    with Capture(ns(host), "eth1") as capture:
        result = ping(endpoint, gateway, count=1)
    assert result.returncode == 0, result.stdout
    # The gateway's MAC is the anycast MAC, the same on every host...
    found = neighbours(endpoint, "eth1").get(gateway)
    assert found is not None and found["lladdr"] == anycast_mac(vni), found
    assert link(host, f"br{vni}")["address"] == anycast_mac(vni)
    # ... and the ARP never left the host: its own host answered it.
    arps = [p for p in capture.packets if p.arp_op is not None and p.dst == gateway]
    assert arps == [], arps


def test_an_endpoint_that_moves_keeps_being_reachable_by_routing(irb: None) -> None:
    """The endpoint moves to host2 and says one packet, with no ARP of its own (its
    gateway's anycast MAC is the same on every host), then falls silent. host2 learns
    its MAC from that packet and, as FRR's zebra does, probes the addresses host1's
    routes bound to the MAC: the answer makes host2 advertise the MAC+IP, and host1 and
    the FRR VTEP route the address to host2 without the endpoint speaking again."""
    name, address, mac = MOVER
    for src in ("h2e2", "h3e1"):
        assert ping(src, address).returncode == 0, src
    assert routes("vtep3")[address]["gateway"] == VTEP["host1"]
    # The move: host1's port goes down, the same MAC and address come up behind host2.
    run(name, ["ip", "link", "set", "eth1", "down"])
    run(name, ["ip", "addr", "flush", "dev", "eth1"])
    run(name, ["ip", "link", "set", "eth2", "up"])
    run(name, ["ip", "addr", "add", f"{address}/24", "dev", "eth2"])
    run(name, ["ip", "route", "replace", "default", "via", GATEWAY[100]])
    run(name, ["ip", "neigh", "replace", GATEWAY[100], "lladdr", anycast_mac(100), "dev", "eth2",
               "nud", "permanent"])  # fmt: skip
    moved = time.monotonic()
    # One packet: host2's bridge learns the MAC on its port (the MAC moved in).
    run(name, ["ping", "-c", "1", "-W", "1", GATEWAY[100]])
    wait_for(f"host1 and vtep3 to route {address} to host2", lambda: (
        evpnd_routes("host1").get(address, {}).get("gateway") == VTEP["host2"]
        and routes("vtep3").get(address, {}).get("gateway") == VTEP["host2"]),
        timeout=HOLD_TIME)  # fmt: skip
    learnt = time.monotonic() - moved
    probes = FABRIC.show("host2", "status")["dataplane"]["writes_by_op"].get("neigh_probe", 0)
    assert probes >= 1, probes
    assert neighbours("host2", "br100")[address]["lladdr"] == mac
    for src in ("h1e2", "h3e1"):  # routed, from host1's VNI 200 and from the FRR VTEP
        wait_for(f"{src} to reach {address} again after the move",
                 lambda s=src: ping(s, address, count=1).returncode == 0,
                 timeout=max(1.0, HOLD_TIME - (time.monotonic() - moved)))  # fmt: skip
    took = time.monotonic() - moved
    assert ttls(ping("h1e2", address)) == {62}  # host1 -> L3VNI -> host2
    print(f"\nmoved endpoint's address learnt by host2's probe {learnt:.1f}s and reached "
          f"again by routing {took:.1f}s after the move (hold time {HOLD_TIME:.0f}s)")


def test_a_restart_loses_no_ping_of_a_routed_flow_and_writes_nothing(irb: None) -> None:
    before = evpnd_routes("host1")
    count = 150  # 15 s at 10/s
    pinger = subprocess.Popen(
        realize.node_command("h2e2", ["ping", "-i", "0.1", "-W", "1", "-c", str(count),
                                      ENDPOINTS["h1e1"][0]], lab=LAB).argv,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        stop_evpnd("host1")
        assert evpnd_routes("host1") == before  # the routes stay while no evpnd runs
        time.sleep(1)
        start_evpnd("host1")
        out, _ = pinger.communicate(timeout=count * 0.1 + 20)
    finally:
        if pinger.poll() is None:
            pinger.kill()
    summary = next((line for line in out.splitlines() if "packets transmitted" in line), out)
    assert f"{count} packets transmitted, {count} received" in summary, summary
    wait_for("host1's evpnd to converge after the restart",
             lambda: any(e.get("event") == "stale entries removed" for e in last_run("host1")),
             timeout=CONVERGE)  # fmt: skip
    run_events = last_run("host1")
    resync = next(e for e in run_events if e.get("event") == "dataplane resynced")
    removed = next(e for e in run_events if e.get("event") == "stale entries removed")
    assert resync["writes"] == 0 and removed["writes"] == 0, (resync, removed)
    assert resync["owned"] >= len(before)
    assert evpnd_routes("host1") == before
    print(f"\nhost1 restarted under a routed ping h2e2 -> h1e1: {summary}; "
          f"{resync['owned']} owned entries found, 0 written")


def last_run(host: str) -> list[dict[str, Any]]:
    """The log events of the host's latest `evpnd run` (after the last one stopped)."""
    events = log_events(host)
    stops = [i for i, e in enumerate(events) if str(e.get("event", "")).startswith("evpnd stopped")]
    return events[stops[-1] + 1 :] if stops else events


def test_removing_the_l3vni_removes_only_what_evpnd_made(irb: None, tmp_path: Path) -> None:
    host = "host2"
    # An admin's things, beside evpnd's: a route, an address on br100, a neighbour.
    run(host, ["ip", "route", "add", "192.0.2.0/24", "via", "10.0.2.1", "dev", "eth1",
               "proto", "static"])  # fmt: skip
    run(host, ["ip", "addr", "add", "10.100.0.254/24", "dev", "br100"])
    run(host, ["ip", "neigh", "add", "10.100.0.99", "lladdr", "02:aa:00:00:00:99", "dev",
               "br100", "nud", "permanent"])  # fmt: skip
    assert evpnd_routes(host) and link(host, "br5000")
    source = REPO / "containerlab" / "configs" / LAB / host / "evpnd.yaml"
    config = yaml.safe_load(source.read_text())
    del config["l3vni"]
    layer2 = tmp_path / "evpnd.yaml"
    layer2.write_text(yaml.safe_dump(config))
    stop_evpnd(host)
    start_evpnd(host, layer2)
    wait_for("host2 without its L3VNI devices and routes",
             lambda: not link(host, "br5000") and not evpnd_routes(host), timeout=CONVERGE)
    assert not link(host, "vxlan5000")
    # What was not evpnd's is all there.
    assert routes(host)["192.0.2.0/24"]["protocol"] == "static"
    addresses = run(host, ["ip", "-br", "addr", "show", "dev", "br100"]).stdout
    assert "10.100.0.254/24" in addresses and "10.100.0.1/24" in addresses  # gateway kept
    assert neighbours(host, "br100")["10.100.0.99"]["lladdr"] == "02:aa:00:00:00:99"
    assert run(host, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    # The fabric heard: FRR routes host2's endpoints no more; its own still routes locally.
    wait_for("vtep3 to drop host2's host routes",
             lambda: ENDPOINTS["h2e2"][0] not in routes("vtep3"), timeout=30)
    assert ping("h2e2", ENDPOINTS["h2e1"][0]).returncode == 0
    assert ping("h1e1", ENDPOINTS["h2e1"][0]).returncode == 0  # VNI 100, bridged
