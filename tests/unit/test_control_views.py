"""`show` views over a real RIB fed with the captured FRR routes (tests/unit/control_data.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from evpnd.control import views
from evpnd.control.peers import PeerTracker
from evpnd.control.snapshot import Snapshot
from evpnd.control.views import ViewError
from evpnd.model import ENCAP_VXLAN, MacIpKey, MacIpRoute
from evpnd.speaker.messages import PeerState
from tests.unit.control_data import FRR, NOW, RR2, STATIC, T0, VTEP4, build

OWN = "10.99.0.1"


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return build()


@pytest.mark.parametrize("what", sorted(views.VIEWS))
def test_every_view_is_plain_json(snap: Snapshot, what: str) -> None:
    data = views.show(snap, what)
    assert json.loads(json.dumps(data)) == data  # no IP objects, tuples or sets left


def test_peers(snap: Snapshot) -> None:
    data = views.peers(snap)
    assert (data["router_id"], data["asn"], data["vtep"]) == (OWN, 65000, OWN)
    assert data["established"] == 1
    frr, rr2 = data["peers"]
    assert frr["address"] == str(FRR) and frr["description"] == "frr1"
    assert frr["state"] == "established"
    assert frr["uptime"] == NOW - (T0 + 11)
    assert frr["routes_received"] == len(snap.rib.routes(FRR)) == 9
    assert frr["routes_sent"] == len(snap.out_routes) == 5
    assert frr["updates_received"] == 6 and frr["end_of_rib"] is True
    assert frr["last_error"] is None
    assert rr2["state"] == "down" and rr2["uptime"] is None
    assert rr2["state_for"] == NOW - (T0 + 200)
    assert (rr2["routes_received"], rr2["routes_sent"], rr2["drops"]) == (0, 0, 1)
    assert rr2["last_notification"]["text"] == "Cease/Administrative Shutdown"
    assert rr2["last_error"] == ("notification received (Cease/Administrative Shutdown): "
                                 'Shutdown Communication: "maintenance-window"')


def test_peer_without_a_notification_shows_the_down_reason_and_unconfigured_peers(
    snap: Snapshot,
) -> None:
    tracker = PeerTracker()
    tracker.observe(PeerState(FRR, "up"), now=T0)
    tracker.observe(PeerState(FRR, "down", "hold timer expired"), now=T0 + 5)
    stray = IPv4Address("10.99.0.9")
    tracker.observe(PeerState(stray, "connected"), now=T0)
    data = views.peers(replace(snap, peers=tracker.records()))
    rows = {p["address"]: p for p in data["peers"]}
    assert rows[str(FRR)]["last_error"] == "hold timer expired"
    assert rows[str(RR2)]["state"] == "idle"  # configured, never heard of
    assert rows[str(stray)]["configured"] is False and rows[str(stray)]["remote_asn"] is None


def test_vni(snap: Snapshot) -> None:
    v100, v200 = views.vni(snap)["vnis"]
    assert (v100["vni"], v100["bridge"], v100["vxlan_device"], v100["mtu"]) == (
        100, "br100", "vxlan100", 1450)
    assert (v100["local_macs"], v100["local_ips"], v100["remote_macs"],
            v100["remote_neighbors"]) == (2, 1, 3, 4)
    assert v100["vteps"] == [str(FRR), str(VTEP4)]
    assert v100["rd"] == "10.99.0.1:100" and v100["import_rts"] == ["*:100"]
    assert (v200["flood"], v200["vteps"], v200["arp_suppression"]) == (
        "static", [str(STATIC)], False)
    assert views.vni(snap, vni=200)["vnis"] == [v200]
    with pytest.raises(ViewError, match="VNI 300 is not configured"):
        views.vni(snap, vni=300)


def test_vni_mtu_of_a_missing_device_is_none(snap: Snapshot) -> None:
    data = views.vni(replace(snap, mtus={}), vni=100)["vnis"][0]
    assert (data["mtu"], data["mtu_config"]) == (None, "auto")


def test_mac(snap: Snapshot) -> None:
    v100 = views.mac(snap, vni=100)["vnis"][0]
    assert (v100["count"], v100["local"], v100["remote"]) == (5, 2, 3)
    macs = {m["mac"]: m for m in v100["macs"]}
    moved = macs["02:00:00:00:01:11"]  # FRR's mobility sequence 4 replaced the seq-0 route
    assert (moved["type"], moved["vtep"], moved["peer"], moved["seq"]) == (
        "remote", str(FRR), str(FRR), 4)
    assert moved["ips"] == ["192.168.100.11", "2001:db8:100::11"]
    assert macs["02:00:00:00:02:fe"]["default_gateway"] is True
    assert macs["02:00:00:00:04:01"]["installed"] is False  # the write is still in flight
    assert macs["02:00:00:00:04:01"]["peer"] == str(FRR)  # reflected by FRR
    web = macs["02:00:00:00:0a:01"]
    assert (web["type"], web["port"], web["seq"], web["sticky"], web["advertised"]) == (
        "local", "veth-web1", 0, False, True)
    assert web["ips"] == ["192.168.100.21"]
    assert macs["02:00:00:00:0a:02"]["sticky"] is True
    assert [v["vni"] for v in views.mac(snap)["vnis"]] == [100, 200]


def test_mac_moved_away_shows_both_and_counts_it_once() -> None:
    fresh = build()
    rib = fresh.rib
    mac = "02:00:00:00:0a:01"  # local, seq 0; now a remote VTEP claims it with seq 1
    rib.announce(FRR, MacIpRoute(MacIpKey("10.99.0.4:100", 0, mac), VTEP4, 100,
                                 route_targets=("65000:100",), mobility_seq=1,
                                 encapsulation=ENCAP_VXLAN))
    v100 = views.mac(fresh, vni=100)["vnis"][0]
    rows = [m for m in v100["macs"] if m["mac"] == mac]
    assert [(m["type"], m["advertised"]) for m in rows] == [("local", False), ("remote", None)]
    assert v100["count"] == 5


def test_neighbors(snap: Snapshot) -> None:
    v100, v200 = views.neighbors(snap)["vnis"]
    assert [n["ip"] for n in v100["neighbors"]] == [
        "192.168.100.2", "192.168.100.11", "192.168.100.21", "192.168.100.41",
        "2001:db8:100::11"]
    local = v100["neighbors"][2]
    assert (local["type"], local["mac"], local["vtep"]) == ("local", "02:00:00:00:0a:01", None)
    remote = v100["neighbors"][3]
    assert (remote["type"], remote["vtep"], remote["peer"], remote["installed"]) == (
        "remote", str(VTEP4), str(FRR), True)
    assert v100["count"] == 5 and v200["count"] == 0


def test_routes(snap: Snapshot) -> None:
    data = views.routes(snap)
    assert data["count"] == 14 and data["by_type"] == {"2": 10, "3": 3, "5": 1}
    out = [r for r in data["routes"] if r["direction"] == "out"]
    assert len(out) == 5 and all(r["nexthop"] == OWN and r["peer"] is None for r in out)
    assert data["routes"][:len(out)] == out  # ours first
    sticky = next(r for r in out if r.get("mac") == "02:00:00:00:0a:02")
    assert (sticky["sticky"], sticky["route_targets"], sticky["rd"]) == (
        True, ["65000:100"], "10.99.0.1:100")
    type5 = next(r for r in data["routes"] if r["type"] == 5)
    assert (type5["ip_prefix"], type5["imported_vnis"], type5["vni"]) == (
        "10.99.0.0/24", [], 5000)
    two = next(r for r in data["routes"] if r.get("ip") == "2001:db8:100::11")
    assert two["prefix"] == "[2]:[0]:[48]:[02:00:00:00:01:11]:[128]:[2001:db8:100::11]"
    assert (two["l3vni"], two["router_mac"]) == (5000, "02:00:00:00:50:fe")
    imet = views.routes(snap, type=3, direction="in")["routes"]
    assert [(r["originator"], r["tunnel_type"]) for r in imet] == [
        (str(FRR), "ingress-replication"), (str(VTEP4), "ingress-replication")]
    assert imet[0]["prefix"] == "[3]:[0]:[32]:[10.99.0.2]"
    only200 = views.routes(snap, vni=200)["routes"]
    assert [(r["direction"], r["mac"]) for r in only200] == [("out", "02:00:00:00:0b:01")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"type": 6}, "route type must be one of 1, 2, 3, 4, 5"),
        ({"direction": "sideways"}, "direction must be 'in' or 'out'"),
        ({"vni": 7}, "VNI 7 is not configured"),
    ],
)
def test_routes_bad_arguments(snap: Snapshot, args: dict, message: str) -> None:
    with pytest.raises(ViewError, match=message):
        views.show(snap, "routes", args)


def test_vteps(snap: Snapshot) -> None:
    rows = {t["vtep"]: t for t in views.vteps(snap)["vteps"]}
    assert list(rows) == [str(FRR), str(VTEP4), str(STATIC)]
    assert rows[str(FRR)]["flood_vnis"] == [{"vni": 100, "source": "evpn"}]
    assert (rows[str(FRR)]["macs"], rows[str(FRR)]["neighbors"]) == (2, 3)
    assert rows[str(VTEP4)]["peers"] == [str(FRR)]
    assert rows[str(STATIC)]["flood_vnis"] == [{"vni": 200, "source": "static"}]
    assert all(t["flood_installed"] for t in rows.values())
    assert [t["vtep"] for t in views.vteps(snap, vni=200)["vteps"]] == [str(STATIC)]


def test_status(snap: Snapshot) -> None:
    data = views.status(snap)
    assert (data["version"], data["pid"], data["uptime"]) == ("0.1.0", 4200, NOW - T0)
    assert data["speaker"]["pid"] == 4242 and data["speaker"]["restarts"] == 0
    assert data["peers"] == {"configured": 2, "established": 1}
    assert data["rib"]["routes"] == 9 and data["rib"]["routes_out"] == 5
    assert data["rib"]["not_imported"] == 1
    assert data["dataplane"]["desired"] == {"macs": 3, "floods": 3, "neighbors": 4}
    assert data["dataplane"]["installed"]["macs"] == 2
    assert data["dataplane"]["writes"] == 9
    assert data["converged"] is True


def test_show_checks_names_and_argument_types(snap: Snapshot) -> None:
    with pytest.raises(ViewError, match="unknown view 'bgp'"):
        views.show(snap, "bgp")
    with pytest.raises(ViewError, match="takes no argument 'vni'"):
        views.show(snap, "peers", {"vni": 100})
    with pytest.raises(ViewError, match="must be an integer"):
        views.show(snap, "mac", {"vni": "100"})
    with pytest.raises(ViewError, match="must be an integer"):
        views.show(snap, "mac", {"vni": True})
    assert views.show(snap, "mac", {"vni": None}) == {"schema_version": views.SCHEMA_VERSION,
                                                      **views.mac(snap)}
