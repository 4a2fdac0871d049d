"""MAC+IP routes and ARP suppression on the evpn-rr fabric, end to end.

The hosts' bridges carry an address of their VNI's subnet (the topology's exec
lines: 10.100.0.25N on br100, 10.200.0.25N on br200), so an endpoint that talks
to its host's bridge leaves an IP -> MAC binding in the bridge's neighbour
table. evpnd advertises it as a MAC+IP Type-2 route; every other host of the
VNI installs it as a neighbour entry on its bridge (extern_learn, proto 238),
and with `neigh_suppress on` on the vxlan port the bridge answers ARP for the
remote endpoint itself: the request never crosses the tunnel.

One lab for the module (containerlab/evpn-rr.clab.yml in network namespaces).
Read-only checks first, then the ones that remove a binding and restore it.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from evpnd.dataplane.netlink.wire import RTPROT_EVPND
from tests.netns.evpn_rr import ENDPOINTS, FABRIC, HOSTS, LAB, LAB_FILE, VNIS, VTEP
from tests.netns.fabric import FRR_LAB_NEEDS, T, running_lab
from tests.netns.fabric import wait_for as poll
from tests.netns.frames import FrameCapture

pytestmark = pytest.mark.netns

CONVERGE = 60.0
ETH_P_ARP = 0x0806
ARP_REQUEST = 1


def bridge_ip(host: str, vni: int) -> str:
    """The host's address on its VNI bridge (exec lines of the topology)."""
    return f"10.{vni}.0.25{host[-1]}"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    return poll(what, probe, timeout, interval=0.2)


def run(node: str, argv: list[str], timeout: float = 30) -> Any:
    return FABRIC.run(node, argv, timeout)


def ping(src: str, dst_ip: str, count: int = 2) -> bool:
    return FABRIC.ping(src, dst_ip, count).returncode == 0


def neighbours(host: str, vni: int) -> dict[str, dict[str, Any]]:
    """IP -> `ip -j neigh` entry on the host's bridge of the VNI."""
    out = run(host, ["ip", "-j", "neigh", "show", "dev", f"br{vni}"])
    return {e["dst"]: e for e in json.loads(out.stdout or "[]") if "lladdr" in e}


def evpnd_neighbours(host: str, vni: int) -> dict[str, str]:
    """IP -> MAC of the entries evpnd owns: extern_learn, NOARP, proto 238."""
    return {
        ip: e["lladdr"]
        for ip, e in neighbours(host, vni).items()
        if "extern_learn" in e and e.get("protocol") == str(RTPROT_EVPND)
        and "NOARP" in e.get("state", [])
    }  # fmt: skip


def expected_neighbours(host: str, vni: int) -> dict[str, str]:
    return {ip: mac for h, v, ip, mac in ENDPOINTS.values() if v == vni and h != host}


def all_installed() -> bool:
    return all(evpnd_neighbours(h, v) == expected_neighbours(h, v) for h in HOSTS for v in VNIS[h])


def talk_to_bridges() -> None:
    """Every endpoint pings its own host's bridge: the SVI learns its IP -> MAC."""

    def one(ep: str) -> None:
        host, vni, _, _ = ENDPOINTS[ep]
        run(ep, ["ping", "-c", "1", "-W", "1", bridge_ip(host, vni)])

    with ThreadPoolExecutor(len(ENDPOINTS)) as pool:
        list(pool.map(one, ENDPOINTS))


def wait_installed(what: str, timeout: float = CONVERGE) -> float:
    """Seconds until every host holds every remote MAC+IP; endpoints keep talking meanwhile."""
    start = time.monotonic()
    while not all_installed():
        if time.monotonic() - start >= timeout:
            state = {h: {v: evpnd_neighbours(h, v) for v in VNIS[h]} for h in HOSTS}
            pytest.fail(f"MAC+IP neighbours not installed after {timeout:.0f}s ({what}): "
                        f"{state}\n{FABRIC.log_tail('host1')}", pytrace=False)  # fmt: skip
        talk_to_bridges()
        time.sleep(0.3)
    return time.monotonic() - start


def macip_routes() -> dict[str, dict[str, dict]]:
    """RD -> MAC+IP prefix -> best path, from FRR's `show bgp l2vpn evpn route type macip`."""
    out = run("rr", ["vtysh", "-c", "show bgp l2vpn evpn route type macip json"])
    table: dict[str, dict[str, dict]] = {}
    for rd, prefixes in json.loads(out.stdout or "{}").items():
        if not isinstance(prefixes, dict):
            continue
        for prefix, body in prefixes.items():
            if not (isinstance(body, dict) and body.get("paths")):
                continue
            # FRR nests the paths of this command one level deeper than `show bgp l2vpn evpn`.
            paths = [p for group in body["paths"] for p in (group if isinstance(group, list)
                                                              else [group])]  # fmt: skip
            best = next((p for p in paths if p.get("bestpath")), paths[0])
            if "ip" in best:
                table.setdefault(rd, {})[prefix] = best
    return table


def macip_key(ip: str, mac: str) -> str:
    return f"[2]:[0]:[48]:[{mac}]:[32]:[{ip}]"


class ArpCapture(FrameCapture):
    """ARP frames arriving at an endpoint's eth1."""

    def __init__(self, node: str) -> None:
        super().__init__(f"clab-{LAB}-{node}", ETH_P_ARP)

    def requests(self, linger: float = 1.0) -> list[tuple[str, str]]:
        """(sender IP, target IP) of every ARP request received so far (and for `linger` s)."""
        return [
            (socket.inet_ntoa(frame[28:32]), socket.inet_ntoa(frame[38:42]))
            for frame in self.incoming(linger)
            if len(frame) >= 42 and struct.unpack("!H", frame[20:22])[0] == ARP_REQUEST
        ]


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fabric() -> Iterator[float]:
    with running_lab(LAB_FILE, needs=(*FRR_LAB_NEEDS, ("ip", "iproute2"))):
        yield wait_installed("after lab up")


def test_hosts_bridge_and_do_not_route(fabric: float) -> None:
    for host in HOSTS:
        forwarding = run(host, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
        assert forwarding == "0", (host, forwarding)
        for vni in VNIS[host]:
            shown = run(host, ["ip", "-o", "-4", "addr", "show", "dev", f"br{vni}"]).stdout
            assert f"inet {bridge_ip(host, vni)}/24 " in shown, (host, vni, shown)
            vxlan = run(host, ["ip", "-d", "link", "show", f"vxlan{vni}"]).stdout
            assert "neigh_suppress on" in vxlan, (host, vni, vxlan)
    # A VNI 200 endpoint routing through its host's br200 does not reach VNI 100.
    run("h1e3", ["ip", "route", "add", "10.100.0.0/24", "via", bridge_ip("host1", 200)])
    try:
        assert ping("h1e3", bridge_ip("host1", 200))
        assert not ping("h1e3", "10.100.0.11", count=3)
        assert not ping("h1e3", "10.100.0.21", count=3)
    finally:
        run("h1e3", ["ip", "route", "del", "10.100.0.0/24"])


def test_every_host_holds_every_remote_endpoint_as_an_evpnd_neighbour(fabric: float) -> None:
    for host in HOSTS:
        for vni in VNIS[host]:
            table = neighbours(host, vni)
            for ip, mac in expected_neighbours(host, vni).items():
                entry = table.get(ip)
                assert entry is not None, (host, vni, ip, sorted(table))
                assert entry["lladdr"] == mac, (host, ip, entry)
                assert "extern_learn" in entry and entry.get("protocol") == "238", entry
                assert entry.get("state") == ["NOARP"], entry
            # The local endpoints are learnt by the kernel (ARP), not written by evpnd.
            for h, v, ip, mac in ENDPOINTS.values():
                if h == host and v == vni and ip in table:
                    assert "extern_learn" not in table[ip] and table[ip]["lladdr"] == mac
    # No binding leaks into the other VNI.
    assert not set(neighbours("host2", 200)) & {ip for _, v, ip, _ in ENDPOINTS.values()
                                                if v == 100}  # fmt: skip
    # The remote MAC sits in the bridge's own FDB too, behind the vxlan port:
    # the bridge answers ARP only for MACs it places behind a suppressing port.
    out = run("host2", ["bridge", "-j", "fdb", "show", "br", "br100"]).stdout
    bridge_fdb = {e["mac"]: e for e in json.loads(out or "[]") if "dst" not in e}
    entry = bridge_fdb.get(ENDPOINTS["h1e1"][3])
    assert entry is not None and entry["ifname"] == "vxlan100", entry
    assert "extern_learn" in entry["flags"], entry
    print(f"\nMAC+IP neighbours on every host {fabric:.1f}s after lab up")


def test_route_reflector_holds_every_macip_route(fabric: float) -> None:
    def complete() -> dict[str, dict[str, dict]] | None:
        table = macip_routes()
        return table if all(macip_key(ip, mac) in table.get(f"{VTEP[h]}:{v}", {})
                            for h, v, ip, mac in ENDPOINTS.values()) else None  # fmt: skip

    table = wait_for("rr to hold a MAC+IP route per endpoint", complete)
    for host, vni, ip, mac in ENDPOINTS.values():
        path = table[f"{VTEP[host]}:{vni}"][macip_key(ip, mac)]
        assert path["routeType"] == 2 and path["mac"] == mac and path["ip"] == ip, path
        assert path["nexthops"][0]["ip"] == VTEP[host], path
        assert f"RT:65000:{vni}" in path["extendedCommunity"]["string"], path
    # Only endpoints: the hosts' own bridge addresses are not advertised.
    advertised = {p["ip"] for routes in table.values() for p in routes.values()}
    assert advertised == {ip for _, _, ip, _ in ENDPOINTS.values()}, advertised


def test_arp_for_a_remote_endpoint_is_answered_by_the_local_bridge(fabric: float) -> None:
    h1e1_ip, h1e1_mac = ENDPOINTS["h1e1"][2], ENDPOINTS["h1e1"][3]
    assert evpnd_neighbours("host2", 100).get(h1e1_ip) == h1e1_mac
    capture = ArpCapture("h1e1")
    try:
        # Control: a local neighbour's ARP (h1e2, same host) is not suppressed and
        # reaches h1e1, so the capture sees requests when there are any.
        run("h1e2", ["ip", "neigh", "flush", "dev", "eth1"])
        capture.drain()
        assert ping("h1e2", h1e1_ip)
        local = capture.requests()
        assert ("10.100.0.12", h1e1_ip) in local, local

        # h2e1 on host2 asks for h1e1: host2's bridge answers from evpnd's entry.
        run("h2e1", ["ip", "neigh", "flush", "dev", "eth1"])
        assert "lladdr" not in run("h2e1", ["ip", "neigh", "show", h1e1_ip]).stdout
        capture.drain()
        assert ping("h2e1", h1e1_ip)
        learnt = run("h2e1", ["ip", "-j", "neigh", "show", h1e1_ip]).stdout
        assert [e.get("lladdr") for e in json.loads(learnt or "[]")] == [h1e1_mac], learnt
        remote = capture.requests()
        assert [r for r in remote if r[1] == h1e1_ip] == [], remote
    finally:
        capture.close()


def test_a_binding_that_leaves_its_host_leaves_every_other_host(fabric: float) -> None:
    ip, mac = ENDPOINTS["h1e1"][2], ENDPOINTS["h1e1"][3]
    others = [h for h in HOSTS if h != "host1"]
    assert all(evpnd_neighbours(h, 100).get(ip) == mac for h in others)

    # The binding goes away on host1 (its SVI forgets 10.100.0.11); the MAC stays.
    run("host1", ["ip", "neigh", "del", ip, "dev", "br100"])
    wait_for(f"host2 and host3 to remove their neighbour entry for {ip}",
             lambda: all(ip not in neighbours(h, 100) for h in others))  # fmt: skip
    wait_for(
        "rr to lose the MAC+IP route",
        lambda: macip_key(ip, mac) not in macip_routes().get("10.0.1.2:100", {}),
    )
    for h in others:  # the MAC-only route still stands
        assert {"mac": mac, "dst": VTEP["host1"]} in [
            {"mac": e["mac"], "dst": e.get("dst")} for e in FABRIC.fdb(h)
        ], h
    assert ping("h2e1", ip)  # plain EVPN bridging still works

    # The endpoint leaves: its port loses carrier, the bridge forgets the MAC.
    gone_ip, gone_mac = ENDPOINTS["h1e2"][2], ENDPOINTS["h1e2"][3]
    assert all(evpnd_neighbours(h, 100).get(gone_ip) == gone_mac for h in others)
    run("h1e2", ["ip", "link", "set", "eth1", "down"])
    try:
        wait_for(f"host2 and host3 to remove {gone_ip} and {gone_mac}",
                 lambda: all(gone_ip not in neighbours(h, 100)
                             and all(e["mac"] != gone_mac for e in FABRIC.fdb(h))
                             for h in others))  # fmt: skip
    finally:
        run("h1e2", ["ip", "link", "set", "eth1", "up"])
    # Both come back once the endpoints talk to host1's bridge again.
    wait_installed("after h1e1's binding and h1e2 came back")
