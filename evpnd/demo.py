"""`make demo`: the evpn-rr fabric, its EVPN routes and pings across the overlay.

Brings `containerlab/evpn-rr.clab.yml` up in network namespaces (an FRR route
reflector, three hosts running evpnd, endpoints on VNI 100 and 200), waits
until every host has installed the others' MACs, shows the routes as FRR,
as evpnd (`evpnd show`) and as the kernel see them, pings between endpoints
on different hosts, shows the ARP suppression entries evpnd installed from
MAC+IP routes, and takes the lab down again (`--keep` leaves it up and prints how to tear it down).
"""

from __future__ import annotations

import json
import sys
import time

from evpnd import lab
from evpnd.demo_lab import DemoLab, section

DEMO = DemoLab("evpn-rr")
LAB = DEMO.name
node, evpnd_show = DEMO.node, DEMO.evpnd_show

# (endpoint node, address, host) per VNI, as the topology file defines them.
ENDPOINTS = {
    100: [("h1e1", "10.100.0.11", "host1"), ("h1e2", "10.100.0.12", "host1"),
          ("h2e1", "10.100.0.21", "host2"), ("h2e2", "10.100.0.22", "host2"),
          ("h3e1", "10.100.0.31", "host3"), ("h3e2", "10.100.0.32", "host3")],
    200: [("h1e3", "10.200.0.13", "host1"), ("h2e3", "10.200.0.23", "host2")],
}
HOSTS_OF_VNI = {100: ["host1", "host2", "host3"], 200: ["host1", "host2"]}


def remote_macs(host: str, vni: int) -> set[str]:
    out = lab.run_in_node(host, ["bridge", "-j", "fdb", "show", "dev", f"vxlan{vni}"], lab=LAB)
    entries = json.loads(out.stdout or "[]")
    return {e["mac"] for e in entries if "extern_learn" in e.get("flags", [])
            and e["mac"] != "00:00:00:00:00:00"}


def expected_remote(host: str, vni: int) -> int:
    return sum(1 for _, _, h in ENDPOINTS[vni] if h != host)


def wait_converged(timeout: float = 90) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if all(
            len(remote_macs(host, vni)) >= expected_remote(host, vni)
            for vni, hosts in HOSTS_OF_VNI.items()
            for host in hosts
        ):
            return time.monotonic() - start
        time.sleep(0.5)
    raise TimeoutError(f"the fabric did not converge within {timeout:g}s")


def bridge_address(host: str, vni: int) -> str:
    """The host's address on its VNI bridge (the topology's exec lines)."""
    return f"10.{vni}.0.25{host[-1]}"


def evpnd_neighbours(host: str, vni: int) -> dict[str, str]:
    """IP -> MAC of the ARP suppression entries evpnd installed on the host's bridge."""
    out = lab.run_in_node(host, ["ip", "-j", "neigh", "show", "dev", f"br{vni}"], lab=LAB)
    return {e["dst"]: e["lladdr"] for e in json.loads(out.stdout or "[]")
            if "extern_learn" in e and e.get("protocol") == "238"}


def wait_macip(host: str, vni: int, timeout: float = 30) -> bool:
    """Endpoints talk to their host's bridge (its neighbour table learns their IPs, evpnd
    advertises MAC+IP routes) until `host` holds every remote endpoint of the VNI."""
    remote = {ip for _, ip, h in ENDPOINTS[vni] if h != host}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for endpoint, _, ep_host in ENDPOINTS[vni]:
            lab.run_in_node(endpoint, ["ping", "-c", "1", "-W", "1",
                                       bridge_address(ep_host, vni)], lab=LAB)
        if remote <= set(evpnd_neighbours(host, vni)):
            return True
        time.sleep(0.5)
    return False


def pings() -> tuple[int, int]:
    ok = total = 0
    for vni, endpoints in ENDPOINTS.items():
        for src, _, src_host in endpoints:
            for _, dst_ip, dst_host in endpoints:
                if src_host == dst_host:
                    continue
                total += 1
                result = lab.run_in_node(
                    src, ["ping", "-c", "2", "-i", "0.2", "-W", "1", dst_ip], lab=LAB
                )
                good = result.returncode == 0
                ok += good
                print(f"  VNI {vni}: {src:5} ({src_host}) -> {dst_ip:12} ({dst_host}): "
                      f"{'ok' if good else 'FAILED'}")
    return ok, total


def steps() -> tuple[int, int]:
    section("waiting for every host to install the other hosts' MACs")
    print(f"  converged in {wait_converged():.1f}s")

    section("FRR route reflector: show bgp l2vpn evpn")
    print(node("rr", "vtysh", "-c", "show bgp l2vpn evpn"))
    section("FRR route reflector: show bgp l2vpn evpn summary")
    print(node("rr", "vtysh", "-c", "show bgp l2vpn evpn summary"))

    for view in (["peers"], ["vni"], ["routes"], ["mac", "--vni", "100"]):
        section(f"host1: evpnd's own view (evpnd show {' '.join(view)})")
        print(evpnd_show("host1", *view))

    for host in ("host1", "host2", "host3"):
        section(f"{host}: what evpnd programmed (bridge fdb show dev vxlan100)")
        print(node(host, "bridge", "fdb", "show", "dev", "vxlan100"))
    section("host1: VNI 200 (only host1 and host2 carry it)")
    print(node("host1", "bridge", "fdb", "show", "dev", "vxlan200"))

    section("pings between endpoints on different hosts")
    ok, total = pings()
    print(f"\n  {ok}/{total} cross-host pings succeeded")

    section("MAC+IP: endpoints ping their host's bridge (10.100.0.25N); host1's "
            "ARP suppression entries (ip neigh show dev br100)")
    if not wait_macip("host1", 100):
        print("  host1 did not install every remote MAC+IP within 30s")
        ok = 0
    print(node("host1", "ip", "neigh", "show", "dev", "br100"))
    print("  (extern_learn ... proto 238: written by evpnd from MAC+IP routes; host1's\n"
          "   bridge answers ARP for these endpoints itself, neigh_suppress on vxlan100)")
    return ok, total


def main(argv: list[str] | None = None) -> int:
    return DEMO.run(argv, __doc__.splitlines()[0], steps)


if __name__ == "__main__":
    sys.exit(main())
