"""`show vni` (its L3VNI part) and `show ip routes`, from a real RIB fed FRR's routes."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, ip_network

from evpnd import cli, config
from evpnd.control import render, views
from evpnd.control.snapshot import Snapshot, out_routes
from evpnd.dataplane.state import ForwardingState, RouteEntry
from evpnd.derived import l3_devices, l3_policy, vni_devices, vni_policies
from evpnd.desired import desired_state
from evpnd.model import ENCAP_VXLAN, PrefixKey, PrefixRoute
from evpnd.rib import Rib
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import RouteUpdate
from tests.conftest import SAMPLES, require

CONFIG = """
router_id: 10.99.0.1
asn: 65000
vtep: {address: 10.99.0.1, device: eth0}
vnis:
  - vni: 100
    gateway: {addresses: [192.168.100.1/24]}
l3vni: {vni: 5000, router_mac: "02:00:00:00:01:fe", advertise: [connected, 203.0.113.0/24]}
"""
FRR = IPv4Address("10.99.0.2")
NET50 = ip_network("10.50.0.0/24")


def snapshot() -> Snapshot:
    require(SAMPLES.is_dir(), f"{SAMPLES} is missing")
    cfg = config.parse(CONFIG)
    rib = Rib(cfg.vtep.address, vni_policies(cfg))
    rib.set_l3_policy(l3_policy(cfg))
    for name in ("type2_mac_ip_v4_v6_two_labels_rmac_L3VNI", "type5_ip_prefix"):
        (update,) = Decoder().decode((SAMPLES / f"json_{name}.json").read_text())
        assert isinstance(update, RouteUpdate)
        rib.apply_update(update.peer, update.announced, update.withdrawn)
    rib.announce(FRR, PrefixRoute(PrefixKey("10.99.0.2:1", 0, NET50), FRR, 5000,
                                  route_targets=("65000:5000",),
                                  router_mac="02:00:00:00:50:fe",
                                  encapsulation=ENCAP_VXLAN))  # fmt: skip
    desired = desired_state(rib, vni_devices(cfg), l3_devices(cfg))
    installed = ForwardingState(routes=dict(desired.routes))
    host32 = ip_network("192.168.100.11/32")
    del installed.routes[host32]  # not written yet
    stale = ip_network("10.60.0.0/24")  # a previous run's, no route asks for it now
    installed.routes[stale] = RouteEntry(stale, "br5000", FRR)
    return Snapshot(cfg=cfg, rib=rib, now=0.0, started=0.0, desired=desired,
                    installed=installed, route_conflicts=frozenset({NET50}))  # fmt: skip


def test_show_vni_names_the_l3vni_its_router_mac_and_what_it_routes() -> None:
    data = views.show(snapshot(), "vni")
    l3 = data["l3vni"]
    assert (l3["vni"], l3["bridge"], l3["vxlan_device"], l3["router_mac"]) == \
        (5000, "br5000", "vxlan5000", "02:00:00:00:01:fe")  # fmt: skip
    assert l3["rd"] == "10.99.0.1:5000"
    assert l3["advertised"] == ["203.0.113.0/24", "192.168.100.0/24"]
    assert l3["nexthops"] == [{"vtep": "10.99.0.2", "router_mac": "02:00:00:00:50:fe",
                               "families": [4, 6]}]  # fmt: skip
    # FRR's Type-5 of its own underlay subnet holds its VTEP: refused, and counted.
    assert l3["refused"] == {"loop": 1}
    assert l3["routes"] == 3  # the /32, the /128 and 10.50.0.0/24
    (row,) = data["vnis"]
    assert row["gateway"] == {"addresses": ["192.168.100.1/24"], "mac": "02:ed:00:00:64:01"}
    text = render.render("vni", data)
    assert "L3VNI 5000: bridge br5000, vxlan vxlan5000, router MAC 02:00:00:00:01:fe" in text
    assert "10.99.0.2      02:00:00:00:50:fe" in text
    assert "Received L3 routes not installed: loop 1" in text


def test_show_ip_routes_lists_each_route_with_its_origin_and_state() -> None:
    data = views.show(snapshot(), "ip")
    rows = {r["prefix"]: r for r in data["routes"]}
    assert rows["10.50.0.0/24"]["state"] == "admin"
    assert rows["10.50.0.0/24"]["origin"] == "type-5 prefix"
    assert rows["192.168.100.11/32"]["state"] == "pending"
    assert rows["192.168.100.11/32"]["origin"] == "type-2 host"
    assert rows["2001:db8:100::11/128"]["via"] == "::ffff:a63:2"
    assert rows["2001:db8:100::11/128"]["state"] == "installed"
    assert rows["10.60.0.0/24"]["state"] == "stale" and rows["10.60.0.0/24"]["origin"] is None
    assert data["by_state"] == {"admin": 1, "pending": 1, "installed": 1, "stale": 1}
    text = render.render("ip", data)
    assert text.splitlines()[0].startswith("Routes evpnd installed")
    assert "192.168.100.11/32" in text and "type-2 host" in text
    assert text.splitlines()[-1] == \
        "Number of routes: 4 (1 admin, 1 installed, 1 pending, 1 stale)"  # fmt: skip


def test_without_an_l3vni_there_is_nothing_to_show() -> None:
    snap = snapshot()
    cfg = snap.cfg.model_copy(update={"l3vni": None})
    empty = replace(snap, cfg=cfg, desired=ForwardingState(), installed=ForwardingState())
    assert views.show(empty, "vni")["l3vni"] is None
    data = views.show(empty, "ip")
    assert (data["l3vni"], data["count"], data["routes"]) == (None, 0, [])
    assert render.render("ip", data) == "No L3VNI configured: evpnd installs no routes."


def test_show_routes_type_5_lists_ours_and_theirs() -> None:
    snap = snapshot()
    snap = replace(snap, out_routes=tuple(out_routes(snap.cfg, snap.rib)))
    data = views.show(snap, "routes", {"type": 5})
    rows = {(r["direction"], r["prefix"]): r for r in data["routes"]}
    ours = rows[("out", "[5]:[0]:[24]:[203.0.113.0]")]
    assert (ours["rd"], ours["vni"], ours["router_mac"]) == \
        ("10.99.0.1:5000", 5000, "02:00:00:00:01:fe")  # fmt: skip
    assert ("out", "[5]:[0]:[24]:[192.168.100.0]") in rows  # connected: the gateway subnet
    theirs = rows[("in", "[5]:[0]:[24]:[10.50.0.0]")]
    assert theirs["imported_vnis"] == [5000]
    assert rows[("in", "[5]:[0]:[24]:[10.99.0.0]")]["imported_vnis"] == []  # the loop


def test_the_cli_takes_show_ip_routes() -> None:
    args = cli.build_parser().parse_args(["show", "ip", "routes", "--json"])
    assert (args.view, args.table, args.json) == ("ip", "routes", True)
    assert cli.build_parser().parse_args(["show", "ip"]).table == "routes"
