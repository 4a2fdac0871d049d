"""The link planner's part of routing between segments: the L3VNI's devices, the gateway
MAC and addresses on a VNI's bridge, IP forwarding."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_interface

from evpnd.config import Config, parse
from evpnd.dataplane import linkplan
from evpnd.dataplane.linkplan import (
    AddAddress,
    AddressInfo,
    CreateBridge,
    CreateVxlan,
    DelAddress,
    DeleteLink,
    Forwarding,
    LinkInfo,
    SetBrport,
    SetForwarding,
    SetLink,
    desired_vxlan,
    owner_alias,
)
from evpnd.l3.settings import anycast_mac

HEAD = """
router_id: 192.0.2.11
asn: 65000
vtep: {address: 192.0.2.11, device: eth0}
"""
IRB = HEAD + """
vnis:
  - vni: 100
    gateway: {addresses: [10.100.0.1/24, "2001:db8:100::1/64"]}
  - vni: 200
    gateway: {addresses: [10.200.0.1/24], mac: "02:00:00:00:02:00"}
l3vni: {vni: 5000, router_mac: "02:00:00:00:50:fe"}
"""
ETH0 = LinkInfo(name="eth0", index=2, kind=None, mtu=1500, up=True)
FWD_OFF = Forwarding({4: False, 6: False})


def realized(cfg: Config) -> dict[str, LinkInfo]:
    """What applying `cfg` leaves: every device, MAC and gateway address in place."""
    out = {"eth0": ETH0}
    index = 10
    for vni in linkplan.device_vnis(cfg):
        gateway = vni.gateway
        l3 = cfg.l3vni
        if l3 is not None and vni.vni == l3.vni:
            mac = l3.router_mac
        else:
            mac = None if gateway is None else gateway.mac_for(vni.vni)
        addresses = tuple(AddressInfo(a, 238) for a in gateway.addresses) if gateway else ()
        out[vni.bridge_name] = LinkInfo(vni.bridge_name, index, "bridge", 1450, True,
                                        address=mac, alias=owner_alias(vni.vni),
                                        addresses=addresses)  # fmt: skip
        out[vni.vxlan_name] = LinkInfo(
            vni.vxlan_name, index + 1, "vxlan", 1450, True, txqlen=1000,
            alias=owner_alias(vni.vni), master=vni.bridge_name, addrgenmode=1,
            vxlan=desired_vxlan(cfg, vni),
            brport=linkplan.desired_brport(vni),
        )  # fmt: skip
        index += 2
    return out


def owned(links: dict[str, LinkInfo]) -> set[str]:
    return {name for name, link in links.items() if link.alias}


def test_a_fresh_host_gets_the_l3vni_gateways_and_forwarding() -> None:
    cfg = parse(IRB)
    plan = linkplan.plan(cfg, {"eth0": ETH0}, set(), host=FWD_OFF)
    assert not plan.problems
    bridges = {a.device: a for a in plan.actions if isinstance(a, CreateBridge)}
    assert bridges["br100"].address == anycast_mac(100) == "02:ed:00:00:64:01"
    assert bridges["br200"].address == "02:00:00:00:02:00"
    assert bridges["br5000"].address == "02:00:00:00:50:fe"
    (l3vxlan,) = (a for a in plan.actions if isinstance(a, CreateVxlan) and a.vni == 5000)
    assert l3vxlan.device == "vxlan5000" and l3vxlan.spec.attrs.port == 4789
    assert not l3vxlan.spec.attrs.learning
    # No ARP suppression on the L3VNI's port: there is nothing to suppress.
    (brport,) = (a for a in plan.actions if isinstance(a, SetBrport) and a.vni == 5000)
    assert not brport.neigh_suppress and not brport.learning
    adds = [(a.device, str(a.interface)) for a in plan.actions if isinstance(a, AddAddress)]
    assert adds == [("br100", "10.100.0.1/24"), ("br100", "2001:db8:100::1/64"),
                    ("br200", "10.200.0.1/24")]  # fmt: skip
    assert "nodad" in str(next(a for a in plan.actions if isinstance(a, AddAddress)
                               and a.interface.version == 6))  # fmt: skip
    forwarding = [(a.family, a.on) for a in plan.actions if isinstance(a, SetForwarding)]
    assert forwarding == [(4, True), (6, True)]


def test_an_applied_host_plans_nothing() -> None:
    cfg = parse(IRB)
    current = realized(cfg)
    plan = linkplan.plan(cfg, current, owned(current), host=Forwarding({4: True, 6: True}))
    assert plan.actions == [] and plan.problems == []


def test_without_host_no_addresses_and_no_forwarding() -> None:
    """The Docker driver plans one VNI's devices: addresses and forwarding are the daemon's."""
    cfg = parse(IRB)
    current = realized(cfg)
    bare = {n: replace(link, addresses=()) for n, link in current.items()}
    plan = linkplan.plan(cfg, bare, owned(current))
    assert plan.actions == []


def test_removing_the_l3vni_and_a_gateway_removes_only_what_evpnd_made() -> None:
    cfg = parse(IRB)
    current = realized(cfg)
    admin = AddressInfo(ip_interface("10.100.0.254/24"), 0)
    current["br100"] = replace(current["br100"], addresses=(*current["br100"].addresses, admin))
    layer2 = parse(HEAD + """
vnis:
  - vni: 100
  - vni: 200
    gateway: {addresses: [10.200.0.1/24], mac: "02:00:00:00:02:00"}
""")
    plan = linkplan.plan(layer2, current, owned(current),
                         host=Forwarding({4: True, 6: True}, frozenset({4, 6})))  # fmt: skip
    deleted = [a.device for a in plan.actions if isinstance(a, DeleteLink)]
    assert deleted == ["vxlan5000", "br5000"]
    dels = [(a.device, str(a.interface)) for a in plan.actions if isinstance(a, DelAddress)]
    assert dels == [("br100", "10.100.0.1/24"), ("br100", "2001:db8:100::1/64")]
    # IPv4 is still needed by VNI 200's gateway; IPv6 no longer: switched back off.
    forwarding = [(a.family, a.on) for a in plan.actions if isinstance(a, SetForwarding)]
    assert forwarding == [(6, False)]
    assert not any(isinstance(a, SetLink) for a in plan.actions)  # the MAC stays


def test_forwarding_someone_else_switched_on_is_left_on() -> None:
    cfg = parse(HEAD + "vnis: [{vni: 100}]\n")
    plan = linkplan.plan(cfg, realized(cfg), set(), host=Forwarding({4: True, 6: True}))
    assert not any(isinstance(a, SetForwarding) for a in plan.actions)


def test_a_bridge_with_the_wrong_mac_gets_the_gateway_mac() -> None:
    cfg = parse(IRB)
    current = realized(cfg)
    current["br100"] = replace(current["br100"], address="aa:bb:cc:00:00:01")
    plan = linkplan.plan(cfg, current, owned(current), host=Forwarding({4: True, 6: True}))
    assert [str(a) for a in plan.actions] == [f"set br100 address {anycast_mac(100)}"]


def test_l3vni_devices_named_by_the_config_and_its_mtu() -> None:
    cfg = parse(HEAD + "l3vni: {vni: 4000, bridge: l3br, vxlan_device: l3vx, mtu: 1400}\n")
    plan = linkplan.plan(cfg, {"eth0": ETH0}, set())
    creates = {a.device: a for a in plan.actions if isinstance(a, CreateBridge | CreateVxlan)}
    assert set(creates) == {"l3br", "l3vx"}
    bridge = creates["l3br"]
    assert isinstance(bridge, CreateBridge) and bridge.mtu == 1400 and bridge.address is None
