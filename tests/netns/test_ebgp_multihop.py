"""eBGP to a route server two hops away: `ebgp_multihop` end to end (evpn-multihop).

containerlab/evpn-multihop.clab.yml in network namespaces: two evpnd hosts in
4-byte ASNs peer eBGP with an FRR route server behind a plain router. evpnd
sends eBGP with TTL 1 unless `ebgp_multihop` says otherwise (ExaBGP alone
would send with the kernel's 64); with `ebgp_multihop: 2` the sessions come
up across the router, and the route server receives our packets with TTL 1.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from evpnd.dataplane.netlink.routesocket import inside_netns
from tests.conftest import REPO
from tests.netns.fabric import Fabric, running_lab, wait_for

pytestmark = pytest.mark.netns

LAB_FILE = REPO / "containerlab" / "evpn-multihop.clab.yml"
LAB = "evpn-multihop"
FABRIC = Fabric(LAB)
HOSTS = {"host1": ("10.1.0.2", 4200000001), "host2": ("10.2.0.2", 4200000002)}
ETH_P_IP = 0x0800
TCP = 6
BGP_PORT = 179
PACKET_OUTGOING = 4


def rs_peers() -> dict[str, dict]:
    out = FABRIC.run("rs", ["vtysh", "-c", "show bgp l2vpn evpn summary json"]).stdout
    try:
        return json.loads(out).get("peers", {}) if out.strip() else {}
    except json.JSONDecodeError:
        return {}


@pytest.fixture(scope="module")
def fabric() -> Iterator[None]:
    with running_lab(LAB_FILE):
        wait_for("the route server's two eBGP sessions", lambda: len(p := rs_peers()) == 2 and {
            s.get("state") for s in p.values()} == {"Established"}, timeout=90)  # fmt: skip
        yield


def bgp_ttls(node: str, source: str, seconds: float = 8.0) -> set[int]:
    """The IP TTLs of the BGP packets from `source` arriving at the node's eth1."""
    with inside_netns(f"clab-{LAB}-{node}"):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    ttls: set[int] = set()
    try:
        sock.bind(("eth1", ETH_P_IP))
        sock.settimeout(0.2)
        packed = socket.inet_aton(source)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                frame, addr = sock.recvfrom(2048)
            except TimeoutError:
                continue
            # Ethernet 14; IPv4: TTL at 22, protocol 23, source 26..30; TCP ports after it.
            if addr[2] == PACKET_OUTGOING or len(frame) < 38 or frame[23] != TCP:
                continue
            header = (frame[14] & 0x0F) * 4
            ports = frame[14 + header : 14 + header + 4]
            if frame[26:30] == packed and BGP_PORT in (int.from_bytes(ports[:2]),
                                                       int.from_bytes(ports[2:])):  # fmt: skip
                ttls.add(frame[22])
    finally:
        sock.close()
    return ttls


def test_sessions_cross_a_router_with_ebgp_multihop(fabric: None) -> None:
    peers = rs_peers()
    assert {a: p["remoteAs"] for a, p in peers.items()} == {a: asn for a, asn in HOSTS.values()}
    for host in HOSTS:
        out = FABRIC.run(host, ["evpnd", "show", "peers", "--json", "-c", "/etc/evpnd/evpnd.yaml"])
        (peer,) = json.loads(out.stdout)["peers"]
        assert (peer["address"], peer["remote_asn"], peer["state"]) == (
            "10.9.0.2", 65100, "established")


def test_our_bgp_packets_leave_with_the_multihop_ttl(fabric: None) -> None:
    # Sent with TTL 2 (ebgp_multihop), one router crossed: 1 left at the route server.
    # ExaBGP's default would arrive with 63, eBGP's TTL 1 would not arrive at all.
    ttls = bgp_ttls("rs", HOSTS["host1"][0])
    assert ttls == {1}, ttls


def test_endpoints_reach_each_other_through_the_route_server(fabric: None) -> None:
    wait_for("h1e1 to reach h2e1", lambda: FABRIC.ping("h1e1", "10.100.0.21").returncode == 0)
    fdb = {e["mac"]: e.get("dst") for e in FABRIC.fdb("host1") if "dst" in e}
    assert fdb.get("02:00:00:00:02:01") == "10.2.0.2"  # next hop unchanged: host2's VTEP
