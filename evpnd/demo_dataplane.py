"""evpnd programs two VNIs in a throwaway namespace and shows the kernel's view.

`python -m evpnd.demo_dataplane`: the dataplane alone, without BGP.

Stands in for the fabric demo until the BGP layer drives it: the remote
routes that BGP would deliver are fed to the same reconciler the daemon uses.
Everything happens inside one namespace created here and removed at the end.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from ipaddress import ip_address

from evpnd import config, log, netns
from evpnd.dataplane import links
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac

DEMO_CONFIG = """
router_id: 192.0.2.11
asn: 65000
vtep: {address: 192.0.2.11, device: eth0}
vnis:
  - vni: 100                 # EVPN: flood list and MACs come from BGP routes
    arp_suppression: true
  - vni: 200                 # no BGP: a static unicast flood list
    flood: static
    flood_peers: [192.0.2.21, 192.0.2.22]
    arp_suppression: false
    vxlan: {ttl: 64, ageing: 600}
"""

# What BGP would deliver for VNI 100: two remote hosts, three endpoints.
REMOTE_VTEPS = ["192.0.2.21", "192.0.2.22"]
REMOTE_ENDPOINTS = [
    ("02:00:00:00:21:01", "10.100.0.21", "192.0.2.21"),
    ("02:00:00:00:21:02", "10.100.0.22", "192.0.2.21"),
    ("02:00:00:00:22:01", "10.100.0.31", "192.0.2.22"),
]


def show(ns: str, title: str, cmd: list[str]) -> None:
    print(f"\n$ {' '.join(cmd)}    # {title}")
    out = netns.run(ns, cmd, check=False)
    print((out.stdout + out.stderr).rstrip())


def desired(cfg: config.Config) -> ForwardingState:
    state = ForwardingState()
    vni100 = cfg.vni(100)
    for vtep in REMOTE_VTEPS:
        state.add_flood(FloodEntry(vni100.vxlan_name, ip_address(vtep)))
    for mac, ip, vtep in REMOTE_ENDPOINTS:
        state.add_mac(RemoteMac(vni100.vxlan_name, mac, ip_address(vtep)))
        state.add_neigh(NeighEntry(vni100.bridge_name, ip_address(ip), mac))
    for peer in cfg.vni(200).flood_peers:
        state.add_flood(FloodEntry(cfg.vni(200).vxlan_name, peer))
    return state


async def demo(ns: str) -> int:
    cfg = config.parse(DEMO_CONFIG, "demo.yaml")
    # The underlay: a veth end named eth0 carrying the VTEP address.
    netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink"])
    netns.run(ns, ["ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"])
    for dev in ("eth0", "uplink"):
        netns.run(ns, ["ip", "link", "set", dev, "up"])

    plan = await links.plan_for(cfg, netns=ns, state_dir=None)
    print("== evpnd plan (what the config asks of the kernel)")
    print("\n".join(plan.lines()))
    result = await links.apply(plan, netns=ns)
    if not result.ok:
        print("\n".join(result.lines()), file=sys.stderr)
        return 1
    again = await links.plan_for(cfg, netns=ns, state_dir=None)
    print(f"\n== second plan: {len(again.actions)} change(s) (idempotent)")

    want = desired(cfg)
    async with Reconciler(ns, want) as reconciler:
        print(f"== programmed {reconciler.stats.writes} entries "
              f"({len(want.macs)} remote MACs, {len(want.floods)} flood, "
              f"{len(want.neighs)} neighbours)")
        repeat = await reconciler.resync()
        print(f"== reconciling the same state again: {repeat.total} writes")

    show(ns, "VNI 200's vxlan device", ["ip", "-d", "link", "show", "vxlan200"])
    show(ns, "VNI 100: remote MACs (extern_learn) and flood list",
         ["bridge", "fdb", "show", "dev", "vxlan100"])
    show(ns, "VNI 200: static unicast flood list", ["bridge", "fdb", "show", "dev", "vxlan200"])
    show(ns, "ARP suppression entries on br100", ["ip", "neigh", "show", "dev", "br100"])
    show(ns, "bridge port flags", ["bridge", "-d", "link", "show", "dev", "vxlan100"])
    return 0


def main() -> int:
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        print("the demo needs root (it creates a network namespace)", file=sys.stderr)
        return 1
    log.configure("warning")
    with netns.temporary("evpnd-demo") as ns:
        print(f"== namespace {ns} (removed at the end)")
        return asyncio.run(demo(ns))


if __name__ == "__main__":
    sys.exit(main())
