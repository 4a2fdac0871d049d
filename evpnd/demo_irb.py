"""`make demo-irb`: routing between segments on the evpn-irb fabric, with FRR.

Brings `containerlab/evpn-irb.clab.yml` up in network namespaces (an FRR route
reflector; host1 and host2 running evpnd with VNIs 100 and 200, anycast
gateways and the L3VNI 5000; vtep3, an FRR VTEP with VNI 300 and the same
L3VNI; border, an FRR node announcing 198.51.100.0/24 as a Type-5 route),
lets every endpoint speak once, waits until the hosts route to each other,
shows the L3VNI (`evpnd show vni`), the routes evpnd installed (`evpnd show
ip routes`, `ip route`), FRR's view, and pings across VNIs (the TTL drops by
two: routed on both hosts), to FRR's VTEP and out through the border. Takes
the lab down again (`--keep` leaves it up and prints how to take it down).
"""

from __future__ import annotations

import re
import sys
import time

from evpnd import lab
from evpnd.demo_lab import DemoLab, section

DEMO = DemoLab("evpn-irb")
LAB = DEMO.name
node, evpnd_show = DEMO.node, DEMO.evpnd_show
# endpoint -> (address, VNI, host), as the topology file defines them
ENDPOINTS = {
    "h1e1": ("10.100.0.11", 100, "host1"),
    "h1e2": ("10.200.0.12", 200, "host1"),
    "h2e1": ("10.100.0.21", 100, "host2"),
    "h2e2": ("10.200.0.22", 200, "host2"),
    "h3e1": ("10.30.0.31", 300, "vtep3"),
}
GATEWAY = {100: "10.100.0.1", 200: "10.200.0.1", 300: "10.30.0.1"}
OUTSIDE = "198.51.100.1"
PINGS = [("h1e1", "h2e2"), ("h2e2", "h1e1"), ("h1e2", "h2e1"), ("h1e1", "h3e1"),
         ("h3e1", "h2e2"), ("h1e1", OUTSIDE), ("h2e2", OUTSIDE), ("h3e1", OUTSIDE)]  # fmt: skip


def host_routes(host: str) -> set[str]:
    out = node(host, "ip", "route", "show", "proto", "238")
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_routed(timeout: float = 90) -> float:
    """Until each host routes to the other host's endpoints, FRR's and the outside."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for endpoint, (_, vni, _) in ENDPOINTS.items():  # each endpoint speaks once
            lab.run_in_node(endpoint, ["ping", "-c", "1", "-W", "1", GATEWAY[vni]], lab=LAB)
        wanted = {"host1": {"10.100.0.21", "10.200.0.22"}, "host2": {"10.100.0.11", "10.200.0.12"}}
        if all(wanted[h] | {"10.30.0.31", "198.51.100.0/24"} <= host_routes(h) for h in wanted):
            return time.monotonic() - start
        time.sleep(0.5)
    raise TimeoutError(f"the hosts did not route to each other within {timeout:.0f}s")


def pings() -> tuple[int, int]:
    ok = 0
    for src, dst in PINGS:
        address = ENDPOINTS[dst][0] if dst in ENDPOINTS else dst
        result = lab.run_in_node(src, ["ping", "-c", "2", "-i", "0.2", "-W", "1", address],
                                 lab=LAB)  # fmt: skip
        ttl = sorted(set(re.findall(r"ttl=(\d+)", result.stdout)))
        good = result.returncode == 0
        ok += good
        where = ENDPOINTS[src]
        target = f"{address} ({ENDPOINTS[dst][2]}, VNI {ENDPOINTS[dst][1]})" \
            if dst in ENDPOINTS else f"{address} (outside, via border)"
        print(f"  {src} ({where[2]}, VNI {where[1]}) -> {target}: "
              f"{'ok' if good else 'FAILED'}, ttl {'/'.join(ttl) or '-'}")
    return ok, len(PINGS)


def steps() -> tuple[int, int]:
    section("every endpoint speaks once; waiting until the hosts route to each other")
    print(f"  routed after {wait_routed():.1f}s")

    section("host1: the L3VNI and the gateways (evpnd show vni)")
    print(evpnd_show("host1", "vni"))
    section("host1: the routes evpnd installed (evpnd show ip routes)")
    print(evpnd_show("host1", "ip", "routes"))
    section("host1: the kernel (ip route; ip neigh show dev br5000; "
            "bridge fdb show dev vxlan5000)")
    print(node("host1", "ip", "route"))
    print(node("host1", "ip", "neigh", "show", "dev", "br5000"))
    print(node("host1", "bridge", "fdb", "show", "dev", "vxlan5000"))
    section("vtep3 (FRR): evpnd's host routes and Type-5 subnets (ip route)")
    print(node("vtep3", "ip", "route"))
    section("route reflector: Type-5 routes (show bgp l2vpn evpn route type prefix)")
    print(node("rr", "vtysh", "-c", "show bgp l2vpn evpn route type prefix"))

    section("routed pings: between VNIs, to and from FRR's VTEP, to the outside")
    ok, total = pings()
    print(f"\n  {ok}/{total} routed pings succeeded (ttl 62: routed by two hosts)")
    return ok, total


def main(argv: list[str] | None = None) -> int:
    return DEMO.run(argv, __doc__.splitlines()[0], steps)


if __name__ == "__main__":
    sys.exit(main())
