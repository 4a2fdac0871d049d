"""The host side of routing between segments against a real kernel: the L3VNI's devices,
anycast gateways (MAC, addresses marked proto 238, IPv6 nodad) and IP forwarding; applied
once, nothing on a second run, and taken away without touching what an admin made.
Checked with iproute2 and /proc, not with the code under test."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from evpnd import netns
from evpnd.config import Config, parse
from evpnd.dataplane import links
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import ForwardingState
from evpnd.l3.settings import anycast_mac

pytestmark = pytest.mark.netns

HEAD = """
router_id: 192.0.2.11
asn: 65000
vtep: {address: 192.0.2.11, device: eth0}
"""
IRB = """
vnis:
  - vni: 100
    gateway: {addresses: [10.100.0.1/24, "2001:db8:100::1/64"]}
  - vni: 200
    gateway: {addresses: [10.200.0.1/24], mac: "02:00:00:00:02:00"}
l3vni: {vni: 5000, router_mac: "02:00:00:00:50:fe"}
"""
LAYER2 = """
vnis:
  - vni: 100
  - vni: 200
"""


def config(body: str, tmp_path: Path) -> Config:
    return parse(HEAD + f"state_dir: {tmp_path / 'state'}\n" + body)


def ip(ns: str, *args: str) -> str:
    return netns.run(ns, ["ip", *args]).stdout


def sysctl(ns: str, name: str) -> str:
    return netns.run(ns, ["sysctl", "-n", name]).stdout.strip()


@pytest.fixture
def host(ns: str) -> str:
    ip(ns, "link", "add", "eth0", "type", "bridge")
    ip(ns, "addr", "add", "192.0.2.11/24", "dev", "eth0")
    ip(ns, "link", "set", "eth0", "up")
    # A new namespace may inherit forwarding from the host's: start from off.
    for name in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        netns.run(ns, ["sysctl", "-w", f"{name}=0"])
    return ns


def links_of(ns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in json.loads(ip(ns, "-d", "-j", "link", "show"))}


def addresses(ns: str, dev: str) -> dict[str, dict[str, Any]]:
    (link,) = json.loads(ip(ns, "-j", "addr", "show", "dev", dev))
    return {f"{a['local']}/{a['prefixlen']}": a for a in link["addr_info"]
            if a.get("scope") == "global"}  # fmt: skip


async def test_irb_devices_gateways_and_forwarding(host: str, tmp_path: Path) -> None:
    cfg = config(IRB, tmp_path)
    assert sysctl(host, "net.ipv4.ip_forward") == "0"
    result = await links.reconcile(cfg, host)
    assert result.ok, result.lines()
    found = links_of(host)
    assert found["br5000"]["address"] == "02:00:00:00:50:fe"
    assert found["vxlan5000"]["master"] == "br5000"
    assert found["vxlan5000"]["linkinfo"]["info_data"]["id"] == 5000
    assert found["vxlan5000"]["ifalias"] == "evpnd:vni=5000"
    assert not found["vxlan5000"]["linkinfo"]["info_slave_data"]["neigh_suppress"]
    assert found["br100"]["address"] == anycast_mac(100)
    assert found["br200"]["address"] == "02:00:00:00:02:00"
    br100 = addresses(host, "br100")
    assert set(br100) == {"10.100.0.1/24", "2001:db8:100::1/64"}
    assert br100["2001:db8:100::1/64"].get("nodad") is True
    assert set(addresses(host, "br200")) == {"10.200.0.1/24"}
    assert sysctl(host, "net.ipv4.ip_forward") == "1"
    assert sysctl(host, "net.ipv6.conf.all.forwarding") == "1"
    record = json.loads((tmp_path / "state" / "forwarding.json").read_text())
    assert record["switched_on"] == [4, 6]
    # The ports changed nothing: the bridges keep the MACs they were given.
    ip(host, "link", "add", "p0", "address", "02:00:00:00:00:01", "type", "veth",
       "peer", "name", "p1")  # fmt: skip
    ip(host, "link", "set", "p0", "master", "br5000")
    assert links_of(host)["br5000"]["address"] == "02:00:00:00:50:fe"

    again = await links.plan_for(cfg, host)
    assert again.actions == [] and again.problems == []


async def test_taking_irb_away_leaves_what_an_admin_made(host: str, tmp_path: Path) -> None:
    assert (await links.reconcile(config(IRB, tmp_path), host)).ok
    ip(host, "addr", "add", "10.100.0.254/24", "dev", "br100")  # an admin's
    ip(host, "link", "add", "admin0", "type", "bridge")
    result = await links.reconcile(config(LAYER2, tmp_path), host)
    assert result.ok, result.lines()
    found = links_of(host)
    assert "br5000" not in found and "vxlan5000" not in found
    assert "admin0" in found and "br100" in found
    assert set(addresses(host, "br100")) == {"10.100.0.254/24"}
    assert addresses(host, "br200") == {}
    assert sysctl(host, "net.ipv4.ip_forward") == "0"
    assert sysctl(host, "net.ipv6.conf.all.forwarding") == "0"
    assert json.loads((tmp_path / "state" / "forwarding.json").read_text())["switched_on"] == []


async def test_forwarding_on_before_evpnd_stays_on(host: str, tmp_path: Path) -> None:
    netns.run(host, ["sysctl", "-w", "net.ipv4.ip_forward=1"])
    assert (await links.reconcile(config(IRB, tmp_path), host)).ok
    assert json.loads((tmp_path / "state" / "forwarding.json").read_text())["switched_on"] == [6]
    assert (await links.reconcile(config(LAYER2, tmp_path), host)).ok
    assert sysctl(host, "net.ipv4.ip_forward") == "1"
    assert sysctl(host, "net.ipv6.conf.all.forwarding") == "0"


async def test_an_l3vni_bridge_without_router_mac_keeps_its_own(host: str, tmp_path: Path) -> None:
    """Its MAC is the router MAC peers send routed packets to: ports must not move it."""
    cfg = config("l3vni: {vni: 5000}\n", tmp_path)
    assert (await links.reconcile(cfg, host)).ok
    mac = await links.bridge_mac("br5000", host)
    assert mac is not None and mac == links_of(host)["br5000"]["address"]
    ip(host, "link", "add", "p0", "address", "00:00:00:00:00:01", "type", "veth",
       "peer", "name", "p1")  # fmt: skip
    ip(host, "link", "set", "p0", "master", "br5000")
    assert links_of(host)["br5000"]["address"] == mac
    assert (await links.plan_for(cfg, host)).actions == []


async def test_a_deleted_gateway_address_and_forwarding_switched_off_come_back(
    host: str, tmp_path: Path
) -> None:
    """The daemon's wiring: the reconciler's events tell DeviceRepair, which reconciles."""
    cfg = config(IRB, tmp_path)
    assert (await links.reconcile(cfg, host)).ok
    repair = links.DeviceRepair(lambda: cfg, netns=host, state_dir=tmp_path / "state",
                                delay=0.05)  # fmt: skip
    async with Reconciler(host, ForwardingState()) as rec:
        rec.on_devices_gone = repair.devices_gone
        rec.on_host_changed = repair.host_changed
        ip(host, "addr", "del", "10.100.0.1/24", "dev", "br100")
        netns.run(host, ["sysctl", "-w", "net.ipv4.ip_forward=0"])
        deadline = asyncio.get_running_loop().time() + 10
        while not ("10.100.0.1/24" in addresses(host, "br100")
                   and sysctl(host, "net.ipv4.ip_forward") == "1"):  # fmt: skip
            assert asyncio.get_running_loop().time() < deadline, "not put back in 10 s"
            await asyncio.sleep(0.05)
        assert repair.counters.repairs >= 1
        # An admin's own address going away is the admin's business.
        ip(host, "addr", "add", "10.100.0.254/24", "dev", "br100")
        runs = repair.counters.repairs
        ip(host, "addr", "del", "10.100.0.254/24", "dev", "br100")
        await asyncio.sleep(0.5)
        assert repair.counters.repairs == runs
    await repair.stop()
