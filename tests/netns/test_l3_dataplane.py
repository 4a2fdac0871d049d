"""Routes into the L3VNI against a real kernel: written, dumped, owned, repaired, never an
admin's. The same shape FRR 8.4.4 installs (DESIGN.md section 8): a route `via VTEP dev
br5000 onlink`, a neighbour VTEP -> router MAC on br5000, the router MAC on vxlan5000."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import pytest
from pyroute2 import IPRoute

from evpnd import netns
from evpnd.dataplane.dump import dump
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import ForwardingState, NeighEntry, RemoteMac, RouteEntry
from evpnd.dataplane.tracker import writes_between

pytestmark = pytest.mark.netns

BR, VX = "br5000", "vxlan5000"
VTEP = IPv4Address("198.51.100.2")
MAPPED = IPv6Address("::ffff:198.51.100.2")
RMAC = "02:00:00:00:50:02"
NET = ip_network("10.50.0.0/24")
HOST = ip_network("10.100.0.21/32")
NET6 = ip_network("2001:db8:50::/64")
TIMEOUT = 10.0


def make_l3vni(ns: str) -> None:
    """br5000 with vxlan5000 on it, and an underlay address on a bridge (no dummy links here)."""
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname="u0", kind="bridge")
        u0 = ipr.link_lookup(ifname="u0")[0]
        ipr.addr("add", index=u0, address="192.0.2.1", prefixlen=24)
        ipr.link("set", index=u0, state="up")
        ipr.link("add", ifname=BR, kind="bridge")
        ipr.link("add", ifname=VX, kind="vxlan", vxlan_id=5000, vxlan_local="192.0.2.1",
                 vxlan_port=4789, vxlan_learning=0)  # fmt: skip
        br = ipr.link_lookup(ifname=BR)[0]
        vx = ipr.link_lookup(ifname=VX)[0]
        ipr.link("set", index=vx, master=br)
        ipr.link("set", index=vx, state="up")
        ipr.link("set", index=br, state="up")


@pytest.fixture
def l3ns(ns: str) -> str:
    make_l3vni(ns)
    return ns


def desired() -> ForwardingState:
    state = ForwardingState()
    state.add_mac(RemoteMac(VX, RMAC, VTEP))
    state.add_neigh(NeighEntry(BR, VTEP, RMAC))
    state.add_neigh(NeighEntry(BR, MAPPED, RMAC))
    for prefix in (NET, HOST):
        state.add_route(RouteEntry(prefix, BR, VTEP))
    state.add_route(RouteEntry(NET6, BR, MAPPED))
    return state


def sh(ns: str, cmd: str) -> str:
    return netns.run(ns, cmd.split()).stdout


def routes(ns: str, family: str = "-4") -> dict[str, dict[str, Any]]:
    out = json.loads(sh(ns, f"ip -j {family} route show table main") or "[]")
    return {r["dst"]: r for r in out}


async def wait_for(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_routes_as_frr_installs_them_then_nothing_on_a_restart(l3ns: str) -> None:
    want = desired()
    async with Reconciler(l3ns, want, monitor=False) as first:
        assert first.stats.writes == want.count() == 6
        assert first.stats.errors == 0
    v4 = routes(l3ns)
    for prefix in ("10.50.0.0/24", "10.100.0.21"):
        route = v4[prefix]
        assert (route["gateway"], route["dev"], route["protocol"], route["metric"]) == \
            (str(VTEP), BR, "238", 20)  # fmt: skip
        assert "onlink" in route["flags"]
    v6 = routes(l3ns, "-6")["2001:db8:50::/64"]
    assert (ip_address(v6["gateway"]), v6["dev"]) == (MAPPED, BR)
    neighs = json.loads(sh(l3ns, f"ip -j neigh show dev {BR}") or "[]")
    neighs += json.loads(sh(l3ns, f"ip -j -6 neigh show dev {BR}") or "[]")
    assert {(ip_address(n["dst"]), n["lladdr"]) for n in neighs} == {(VTEP, RMAC), (MAPPED, RMAC)}
    fdb = json.loads(sh(l3ns, f"bridge -j fdb show dev {VX}") or "[]")
    assert any(e["mac"] == RMAC and e.get("dst") == str(VTEP) for e in fdb)
    # The dump finds all of it as ours: a restart writes nothing.
    assert dump(l3ns).owned.routes == want.routes
    async with Reconciler(l3ns, want, monitor=False) as again:
        assert again.stats.writes == 0
    async with Reconciler(l3ns, ForwardingState(), monitor=False) as gone:
        assert gone.stats.writes == 6
    assert dump(l3ns).owned.count() == 0
    assert "10.50.0.0/24" not in routes(l3ns)


async def test_deleted_routes_come_back_and_a_link_down_up_restores_them(l3ns: str) -> None:
    async with Reconciler(l3ns, desired()) as rec:
        sh(l3ns, "ip route del 10.50.0.0/24")
        sh(l3ns, "ip -6 route del 2001:db8:50::/64")
        await wait_for(lambda: rec.stats.repairs >= 2)
        await wait_for(lambda: "10.50.0.0/24" in routes(l3ns))
        await wait_for(lambda: "2001:db8:50::/64" in routes(l3ns, "-6"))
        # Down: the kernel drops the IPv4 routes without a word; up: they are written again.
        sh(l3ns, f"ip link set {BR} down")
        await wait_for(lambda: "10.50.0.0/24" not in routes(l3ns))
        sh(l3ns, f"ip link set {BR} up")
        await wait_for(lambda: {"10.50.0.0/24", "10.100.0.21"} <= routes(l3ns).keys())
        await wait_for(lambda: writes_between(rec.desired, dump(l3ns).owned).count() == 0)


async def test_an_admins_routes_are_never_touched(l3ns: str) -> None:
    # Same prefix, another metric: lives beside ours and stays when ours goes.
    sh(l3ns, f"ip route add 10.50.0.0/24 via {VTEP} dev {BR} onlink metric 5")
    # Same prefix and metric (the key of ours): ours is never written over it.
    sh(l3ns, f"ip route add 10.100.0.21/32 via {VTEP} dev {BR} onlink metric 20 proto static")
    async with Reconciler(l3ns, desired()) as rec:
        assert rec.conflicts == 1
        assert routes(l3ns)["10.100.0.21"]["protocol"] == "static"
        # The admin takes one of ours over with a replace: it is theirs now.
        sh(l3ns, f"ip route replace 2001:db8:50::/64 via {MAPPED} dev {BR} onlink metric 20 "
                 "proto static")  # fmt: skip
        await wait_for(lambda: rec.stats.takeovers == 1)
        # The admin deletes the clashing route: ours takes the key.
        sh(l3ns, "ip route del 10.100.0.21/32 metric 20")
        await wait_for(lambda: routes(l3ns).get("10.100.0.21", {}).get("protocol") == "238")
        await rec.set_desired(ForwardingState())
    v4 = json.loads(sh(l3ns, "ip -j route show 10.50.0.0/24") or "[]")
    assert [(r["metric"], r.get("protocol")) for r in v4] == [(5, None)]
    assert routes(l3ns, "-6")["2001:db8:50::/64"]["protocol"] == "static"
    assert dump(l3ns).owned.count() == 0
