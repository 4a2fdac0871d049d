"""evpn-dhcp end to end: DHCP and NAT for the overlay (docs/dhcp-nat.md).

The lab (containerlab/evpn-dhcp.clab.yml): host1 is the gateway of VNI 100
(10.100.0.1 on br100, dnsmasq there, nftables masquerading out of its uplink
to `outside`); the client is an endpoint on host2. Checked here: the client's
DHCP DISCOVER crosses the overlay and it gets a lease from host1 (the address,
the default route, the MTU, host1's lease file naming the client's MAC); it
reaches `outside`, which has no route back to the overlay, so only the
masquerade can carry the answers (the rule's counter moves); and `outside`
cannot open a connection into the overlay. Everything runs in the lab's
namespaces; dnsmasq serves DHCP only (no DNS, nothing forwarded anywhere).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.netns import fabric
from tests.netns.fabric import FRR_LAB_NEEDS, Fabric, T, running_lab

pytestmark = pytest.mark.netns

LAB_FILE = REPO / "containerlab" / "evpn-dhcp.clab.yml"
LAB = "evpn-dhcp"
FABRIC = Fabric(LAB)
run = FABRIC.run
CLIENT_MAC = "02:00:00:00:02:01"
GATEWAY = "10.100.0.1"
OUTSIDE = "203.0.113.1"
UPLINK = "203.0.113.2"
FLOOD = "00:00:00:00:00:00"
# dnsmasq's files (host1's dnsmasq.conf names them; /run is shared by the lab's nodes).
DNSMASQ_FILES = [Path(f"/run/evpn-dhcp-host1.{name}")
                 for name in ("leases", "dnsmasq.pid", "dnsmasq.log")]  # fmt: skip
NEEDS = (*FRR_LAB_NEEDS, ("dnsmasq", "dnsmasq-base"), ("nft", "nftables"),
         ("busybox", "busybox-static"))


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    return fabric.wait_for(what, probe, timeout, explain=diagnostics)


def diagnostics() -> str:
    parts = [FABRIC.log_tail(node) for node in ("host1", "host2")]
    try:
        parts.append("--- dnsmasq log\n" + DNSMASQ_FILES[2].read_text()[-2000:])
    except OSError:
        parts.append("--- dnsmasq log: none")
    parts.append("--- host2 fdb vxlan100\n" + run("host2", ["bridge", "fdb", "show", "dev",
                                                            "vxlan100"]).stdout)
    return "\n".join(parts)


def remove_dnsmasq_files() -> None:
    for path in DNSMASQ_FILES:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def dhcp_lab() -> Iterator[None]:
    remove_dnsmasq_files()  # an interrupted run's leases would hand out the old address
    try:
        with running_lab(LAB_FILE, needs=NEEDS):
            # Each host floods VNI 100 to the other (Type-3 reflected by rr): a broadcast
            # such as a DHCP DISCOVER from host2's client reaches host1's br100.
            for host, other in (("host1", "10.0.2.2"), ("host2", "10.0.1.2")):
                wait_for(f"{host}'s flood entry to {other}", lambda h=host, o=other: any(
                    e["mac"] == FLOOD and e.get("dst") == o for e in FABRIC.fdb(h)))
            yield
    finally:
        remove_dnsmasq_files()


def counter(rule: str) -> int:
    """The packet counter of host1's nft rule whose text contains `rule`."""
    table = run("host1", ["nft", "list", "table", "ip", "evpn_nat"]).stdout
    line = next(line for line in table.splitlines() if rule in line)
    found = re.search(r"counter packets (\d+)", line)
    assert found, line
    return int(found.group(1))


def test_a_client_on_another_host_gets_a_lease_and_reaches_outside_through_nat(
    dhcp_lab: None,
) -> None:
    # The client starts without an address; its DISCOVER is a broadcast on host2's br100.
    assert "inet " not in run("client", ["ip", "-4", "addr", "show", "dev", "eth1"]).stdout
    dhcp = run("client", ["busybox", "udhcpc", "-i", "eth1", "-n", "-q", "-O", "mtu",
                          "-t", "10", "-T", "1", "-s", "/lab/udhcpc.script"], timeout=60)
    assert dhcp.returncode == 0, dhcp.stderr + diagnostics()
    lease = re.search(r"lease of (10\.100\.0\.\d+) obtained from 10\.100\.0\.1", dhcp.stderr)
    assert lease, dhcp.stderr
    address = lease.group(1)
    assert 100 <= int(address.rsplit(".", 1)[1]) <= 199  # dnsmasq's range
    shown = run("client", ["ip", "-4", "addr", "show", "dev", "eth1"]).stdout
    assert f"inet {address}/24" in shown and "mtu 1500" in shown
    assert run("client", ["ip", "route", "show", "default"]).stdout.startswith(
        f"default via {GATEWAY} dev eth1")
    # host1 handed it out: its lease file names the client on host2.
    leases = DNSMASQ_FILES[0].read_text().split("\n")
    assert any(f" {CLIENT_MAC} {address} " in f" {line} " for line in leases), leases
    # host1 learned the client's MAC from host2's EVPN route, not by flooding.
    assert any(e["mac"] == CLIENT_MAC and e.get("dst") == "10.0.2.2"
               for e in FABRIC.fdb("host1")), FABRIC.fdb("host1")

    # outside has no route to 10.100.0.0/24: the answers only come back masqueraded.
    assert "10.100.0." not in run("outside", ["ip", "route"]).stdout
    masqueraded = counter("masquerade")
    ping = FABRIC.ping("client", OUTSIDE, count=3)
    assert ping.returncode == 0, ping.stdout + ping.stderr + diagnostics()
    assert counter("masquerade") > masqueraded
    assert counter('iifname "br100" oifname "eth2"') >= 3


def test_outside_cannot_reach_into_the_overlay(dhcp_lab: None) -> None:
    dhcp = run("client", ["busybox", "udhcpc", "-i", "eth1", "-n", "-q", "-t", "10", "-T", "1",
                          "-s", "/lab/udhcpc.script"], timeout=60)
    assert dhcp.returncode == 0, dhcp.stderr
    address = re.search(r"lease of (\S+) obtained", dhcp.stderr).group(1)  # type: ignore[union-attr]
    # Even with a route to the overlay through host1, a new connection from the uplink
    # side is dropped by host1's forward chain.
    assert run("outside", ["ip", "route", "replace", "10.100.0.0/24", "via", UPLINK]
               ).returncode == 0
    try:
        dropped = counter('iifname "eth2" counter')
        assert FABRIC.ping("outside", address, count=2).returncode != 0
        assert counter('iifname "eth2" counter') > dropped
    finally:
        run("outside", ["ip", "route", "del", "10.100.0.0/24"])
