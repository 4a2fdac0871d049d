"""The fabric view: the pure view over a real RIB (tests/unit/control_data.py), its SVG
picture, its pages on the metrics server (fetched over HTTP), and `show fabric --svg`."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest

from evpnd import config
from evpnd.control import render, views
from evpnd.control.server import ControlServer
from evpnd.control.snapshot import Snapshot, take_snapshot
from evpnd.derived import vni_devices
from evpnd.desired import desired_state
from evpnd.metrics.collector import build_registry
from evpnd.metrics.server import MetricsServer
from evpnd.model import ENCAP_VXLAN, MacIpKey, MacIpRoute
from evpnd.rib import MacConflict, Rib
from evpnd.web import fabric_svg, page
from evpnd.web.routes import FabricPages
from tests.unit.control_data import FRR, NOW, RR2, STATIC, VTEP4, build
from tests.unit.test_control_server import fake_daemon, run_cli
from tests.unit.test_metrics_server import get

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def snap() -> Snapshot:
    return build()


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def text_of(element: ET.Element) -> str:
    return " ".join("".join(e.itertext()) for e in element.iter(f"{SVG}text"))


def withdraw_vtep4_mac(rib: Rib) -> None:
    """VTEP4's MAC and MAC+IP routes (control_data.build) go."""
    for ip in (None, ip_address("192.168.100.41")):
        rib.withdraw(FRR, MacIpKey("10.99.0.4:100", 0, "02:00:00:00:04:01", ip))


# ---------------------------------------------------------------- the view


def test_fabric_view_counts_macs_per_vtep_and_vni(snap: Snapshot) -> None:
    data = views.fabric(snap)
    assert json.loads(json.dumps(data)) == data
    assert data["host"] == {"router_id": "10.99.0.1", "asn": 65000, "vtep": "10.99.0.1"}
    assert data["time"] == NOW and data["converged"] is True
    vnis = {v["vni"]: v for v in data["vnis"]}
    assert vnis[100] == {"vni": 100, "local_macs": 2, "remote_macs": 3, "flood": "evpn",
                         "vteps": 2, "fdb_pending": 1}  # fmt: skip
    assert vnis[200]["flood"] == "static" and vnis[200]["fdb_pending"] == 0
    vteps = {t["vtep"]: t for t in data["vteps"]}
    assert list(vteps) == [str(FRR), str(VTEP4), str(STATIC)]
    assert vteps[str(FRR)]["vnis"] == [{"vni": 100, "macs": 2, "flood": True}]
    assert vteps[str(VTEP4)]["vnis"] == [{"vni": 100, "macs": 1, "flood": True}]
    assert vteps[str(VTEP4)]["peers"] == [str(FRR)]
    assert vteps[str(STATIC)]["vnis"] == [{"vni": 200, "macs": 0, "flood": True}]
    # The per-VNI counts add up to what `show vteps` says per VTEP.
    for row in views.vteps(snap)["vteps"]:
        assert sum(v["macs"] for v in vteps[row["vtep"]]["vnis"]) == row["macs"]
    peers = {p["address"]: p for p in data["peers"]}
    assert peers[str(FRR)] == {"address": str(FRR), "description": "frr1", "remote_asn": 65000,
                               "state": "established", "route_limit": None}  # fmt: skip
    assert peers[str(RR2)]["state"] == "down" and peers[str(RR2)]["description"] == "rr2"
    assert data["conflicts"] == [] and data["duplicates"] == []
    assert views.show(snap, "fabric") == {"schema_version": views.SCHEMA_VERSION, **data}


def test_fabric_view_follows_a_withdrawal() -> None:
    snap = build(installed_all=True)
    before = {t["vtep"]: t for t in views.fabric(snap)["vteps"]}
    assert before[str(VTEP4)]["macs"] == 1
    withdraw_vtep4_mac(snap.rib)
    # The daemon turns the RIB change into wanted kernel entries (desired.py); the view
    # draws the tunnels those use.
    snap = replace(snap, desired=desired_state(snap.rib, vni_devices(snap.cfg)))
    after = {t["vtep"]: t for t in views.fabric(snap)["vteps"]}
    assert after[str(VTEP4)]["vnis"] == [{"vni": 100, "macs": 0, "flood": True}]
    assert after[str(VTEP4)]["macs"] == 0


def test_fabric_text_table(snap: Snapshot) -> None:
    text = render.render("fabric", json.loads(json.dumps(views.fabric(snap))))
    lines = text.splitlines()
    assert lines[0] == ("Fabric seen from VTEP 10.99.0.1 (router-id 10.99.0.1, AS 65000), "
                        "converged")  # fmt: skip
    assert lines[1] == "Peers: 10.99.0.2 established, 10.99.0.3 down"
    assert next(x for x in lines if x.startswith("10.99.0.4")).split() == [
        "10.99.0.4", "100:1", "10.99.0.2"]  # fmt: skip
    assert "Number of remote VTEPs: 3" in text


# ---------------------------------------------------------------- the picture


def test_picture_shows_every_vtep_vni_and_peer(snap: Snapshot) -> None:
    data = views.fabric(snap)
    root = parse(fabric_svg.render(data))
    assert root.tag == f"{SVG}svg" and root.get("data-vteps") == "3"
    vteps = {g.get("data-vtep"): g for g in by_class(root, "vtep")}
    assert list(vteps) == [str(FRR), str(VTEP4), str(STATIC)]
    assert [vteps[v].get("data-macs") for v in vteps] == ["2", "1", "0"]
    frr_vnis = [(t.get("data-vni"), t.get("data-macs")) for t in by_class(vteps[str(FRR)],
                                                                          "vtep-vni")]
    assert frr_vnis == [("100", "2")]
    assert "VNI 100: 2 MACs" in text_of(vteps[str(FRR)])
    assert "via 10.99.0.2" in text_of(vteps[str(VTEP4)])
    assert "flood list only" in text_of(vteps[str(STATIC)])  # no MAC: no path names a peer
    host_vnis = {g.get("data-vni"): g for g in by_class(root, "vni")}
    assert list(host_vnis) == ["100", "200"]
    assert host_vnis["100"].get("data-local-macs") == "2"
    assert host_vnis["100"].get("data-fdb-pending") == "1"
    assert "1 FDB pending" in text_of(host_vnis["100"])
    peers = {g.get("data-peer"): g.get("data-state") for g in by_class(root, "peer")}
    assert peers == {str(FRR): "established", str(RR2): "down"}
    # One line per session and per tunnel; a down session is dashed.
    sessions = {p.get("data-peer"): p for p in by_class(root, "session")}
    assert sessions[str(RR2)].get("stroke-dasharray") and not sessions[str(FRR)].get(
        "stroke-dasharray")
    assert {p.get("data-vtep") for p in by_class(root, "tunnel")} == set(vteps)
    summary = text_of(by_class(root, "summary")[0])
    assert "1 of 2 BGP peers established" in summary and "3 remote VTEPs" in summary
    assert "as of 2026-11-22 05:02:03 UTC" in summary
    assert not by_class(root, "problems")


def test_picture_escapes_text_and_marks_conflicts(snap: Snapshot) -> None:
    data = views.fabric(snap)
    data["peers"][0]["description"] = '<script>alert("x")</script> & co'
    data["conflicts"] = [{"vni": 100, "mac": "02:00:00:00:04:01", "reason": "multiple-sticky",
                          "vteps": [str(VTEP4), str(FRR)]}]  # fmt: skip
    svg = fabric_svg.render(data)
    assert "<script" not in svg
    root = parse(svg)  # still well-formed XML
    assert '<script>alert("x")</script> & co'[:20] in text_of(by_class(root, "peer")[0])
    (problems,) = by_class(root, "problems")
    assert problems.get("data-count") == "1"
    assert "MAC 02:00:00:00:04:01 in VNI 100: multiple-sticky" in text_of(problems)
    flagged = {g.get("data-vtep") for g in by_class(root, "vtep")
               if g.get("data-conflict") == "true"}  # fmt: skip
    assert flagged == {str(VTEP4), str(FRR)}


def test_picture_marks_duplicates_and_route_limits(snap: Snapshot) -> None:
    data = views.fabric(snap)
    data["duplicates"] = [{"vni": 100, "mac": "02:00:00:00:0c:01", "moves": 5,
                           "vtep": str(VTEP4), "frozen": True}]  # fmt: skip
    data["peers"][0]["route_limit"] = {"max_routes": 12, "level": "exceeded"}
    data["peers"][1]["route_limit"] = {"max_routes": 100, "level": "ok"}
    root = parse(fabric_svg.render(data))
    peers = {g.get("data-peer"): g for g in by_class(root, "peer")}
    assert peers[str(FRR)].get("data-limit") == "exceeded"
    assert peers[str(RR2)].get("data-limit") == "ok"
    assert "route limit 12: exceeded" in text_of(peers[str(FRR)])
    (problems,) = by_class(root, "problems")
    assert problems.get("data-count") == "2"
    assert ("MAC 02:00:00:00:0c:01 in VNI 100: duplicate (5 moves, last from 10.99.0.4), "
            "frozen") in text_of(problems)  # fmt: skip
    assert f"peer {FRR}: route limit 12 exceeded" in text_of(problems)
    flagged = {g.get("data-vtep") for g in by_class(root, "vtep")
               if g.get("data-conflict") == "true"}  # fmt: skip
    assert flagged == {str(VTEP4)}
    text = render.render("fabric", data)
    assert "Duplicate MACs:" in text and f"{FRR}: exceeded (max 12 routes)" in text


def test_picture_of_an_empty_and_of_a_huge_fabric(snap: Snapshot) -> None:
    data = views.fabric(snap)
    empty = {**data, "peers": [], "vteps": [], "vnis": [], "conflicts": []}
    root = parse(fabric_svg.render(empty))
    assert "no BGP peers configured" in text_of(root) and by_class(root, "no-vteps")
    many = [{"vtep": f"10.1.{i // 250}.{i % 250}", "peers": [str(FRR)], "macs": 1,
             "neighbors": 0, "flood_installed": True,
             "vnis": [{"vni": 100, "macs": 1, "flood": True}]}
            for i in range(fabric_svg.MAX_VTEPS + 7)]  # fmt: skip
    root = parse(fabric_svg.render({**data, "vteps": many}))
    assert len(by_class(root, "vtep")) == fabric_svg.MAX_VTEPS
    assert "and 7 more VTEPs" in text_of(by_class(root, "vteps-hidden")[0])
    assert root.get("data-vteps") == str(fabric_svg.MAX_VTEPS + 7)
    assert int(root.get("height") or 0) > fabric_svg.MAX_VTEPS * 60


def test_rib_conflicts_reach_the_picture() -> None:
    snap = build()
    conflict = MacConflict(100, "02:00:00:00:0a:02", "local-vs-remote-sticky",
                           (IPv4Address("10.99.0.4"),))  # fmt: skip

    class Rib(type(snap.rib)):  # type: ignore[misc]
        def conflicts(self) -> list[MacConflict]:
            return [conflict]

    rib = snap.rib
    rib.__class__ = Rib
    data = views.fabric(replace(snap, rib=rib))
    assert data["conflicts"] == [{"vni": 100, "mac": "02:00:00:00:0a:02",
                                  "reason": "local-vs-remote-sticky", "vteps": ["10.99.0.4"]}]
    assert by_class(parse(fabric_svg.render(data)), "problem")


# ---------------------------------------------------------------- the pages


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_pages_served_next_to_the_metrics() -> None:
    daemon = fake_daemon()
    clock = Clock()
    pages = FabricPages(lambda: views.fabric(take_snapshot(daemon, mtu_of=lambda _: 1450)),
                        clock=clock)  # fmt: skip
    registry = build_registry(daemon, process=False)
    async with MetricsServer(registry, "127.0.0.1", 0, pages=pages) as server:
        base = server.base_url
        status, headers, body = await get(base + "/fabric")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert body.decode() == page.HTML
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        status, headers, body = await get(base + "/fabric.js")
        assert status == 200 and b'fetch("fabric.svg"' in body
        status, headers, body = await get(base + "/fabric.svg")
        assert status == 200 and headers["Content-Type"].startswith("image/svg+xml")
        assert headers["Cache-Control"] == "no-store"
        vteps = [g.get("data-vtep") for g in by_class(parse(body.decode()), "vtep")]
        assert vteps == [str(FRR), str(VTEP4), str(STATIC)]
        status, _, body = await get(base + "/fabric.json")
        data = json.loads(body)
        assert status == 200 and [t["vtep"] for t in data["vteps"]] == vteps
        assert pages.computed == 1  # one view for the three requests within max_age

        # A withdrawal shows once the cached view is older than max_age.
        withdraw_vtep4_mac(daemon.rib)
        await daemon.reconciler.set_desired(desired_state(daemon.rib, vni_devices(daemon.cfg)))
        clock.now += 1.0
        _, _, body = await get(base + "/fabric.svg")
        macs = {g.get("data-vtep"): g.get("data-macs")
                for g in by_class(parse(body.decode()), "vtep")}  # fmt: skip
        assert macs[str(VTEP4)] == "0" and pages.computed == 2
        _, _, index = await get(base + "/")
        assert b'href="/fabric"' in index


async def test_pages_are_absent_unless_asked_for_and_a_failing_view_is_a_500() -> None:
    daemon = fake_daemon()
    async with MetricsServer(build_registry(daemon, process=False), "127.0.0.1", 0) as server:
        assert (await get(server.base_url + "/fabric.svg"))[0] == 404
        assert b"/fabric" not in (await get(server.base_url + "/"))[2]

    def broken() -> dict:
        raise RuntimeError("boom")

    pages = FabricPages(broken)
    async with MetricsServer(build_registry(daemon, process=False), "127.0.0.1", 0,
                             pages=pages) as server:  # fmt: skip
        assert (await get(server.base_url + "/fabric.svg"))[0] == 500
        assert (await get(server.base_url + "/fabric.json"))[0] == 500
        assert (await get(server.url))[0] == 200


def test_the_daemon_feeds_the_fabric_view() -> None:
    """The endpoint's view over a real Daemon (constructed, not run)."""
    from evpnd.daemon import Daemon
    from evpnd.services import MetricsEndpoint

    text = """
router_id: 10.99.0.1
asn: 65000
vtep: {address: 10.99.0.1, device: eth0}
bgp: {peers: [{address: 10.99.0.2, remote_asn: 65000}]}
vnis: [{vni: 100}]
metrics: {enabled: true, fabric_view: true}
"""
    daemon = Daemon(config.parse(text))
    data = MetricsEndpoint(daemon)._fabric_pages().data()
    assert data["host"]["vtep"] == "10.99.0.1"
    assert [p["address"] for p in data["peers"]] == ["10.99.0.2"]
    assert [v["vni"] for v in data["vnis"]] == [100] and data["vteps"] == []


# ---------------------------------------------------------------- the CLI


async def test_show_fabric_svg_writes_the_same_picture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = fake_daemon()
    path = tmp_path / "control.sock"
    server = ControlServer(daemon, path)
    await server.start()
    try:
        target = tmp_path / "fabric.svg"
        code = await asyncio.to_thread(run_cli, "show", "fabric", "--svg", str(target),
                                       "--socket", str(path))  # fmt: skip
        assert code == 0 and f"wrote {target}" in capsys.readouterr().out
        root = parse(target.read_text())
        assert [g.get("data-vtep") for g in by_class(root, "vtep")] == [
            str(FRR), str(VTEP4), str(STATIC)]  # fmt: skip
        code = await asyncio.to_thread(run_cli, "show", "fabric", "--socket", str(path))
        assert code == 0 and "Number of remote VTEPs: 3" in capsys.readouterr().out
        code = await asyncio.to_thread(run_cli, "show", "fabric", "--svg", "-",
                                       "--socket", str(path))  # fmt: skip
        out = capsys.readouterr().out
        assert code == 0 and parse(out[out.index("<svg"):]).get("data-vteps") == "3"
        code = await asyncio.to_thread(run_cli, "show", "fabric", "--svg",
                                       str(tmp_path / "no" / "such" / "dir.svg"),
                                       "--socket", str(path))  # fmt: skip
        assert code == 1 and "cannot write" in capsys.readouterr().err
    finally:
        await server.stop()


# ---------------------------------------------------------------- duplicates, limits


def test_duplicates_and_route_limits_are_marked() -> None:
    """A frozen duplicate MAC and peers at their route limits (the state of
    test_control_protection: a MAC moving between this host and VTEP4)."""
    from evpnd.rib import RouteLimit
    from tests.unit.test_control_protection import MAC, snapshot

    snap = snapshot()
    snap.rib.set_route_limits({FRR: RouteLimit(12, 50), RR2: RouteLimit(100)})
    data = views.fabric(snap)
    assert data["duplicates"] == [{"vni": 100, "mac": MAC, "moves": 5, "vtep": str(VTEP4),
                                   "frozen": True}]  # fmt: skip
    limits = {p["address"]: p["route_limit"] for p in data["peers"]}
    assert limits == {str(FRR): {"max_routes": 12, "level": "warning"},
                      str(RR2): {"max_routes": 100, "level": "ok"}}  # fmt: skip
    root = parse(fabric_svg.render(data))
    peers = {g.get("data-peer"): g for g in by_class(root, "peer")}
    assert peers[str(FRR)].get("data-limit") == "warning"
    assert "route limit 12: warning" in text_of(peers[str(FRR)])
    (problems,) = by_class(root, "problems")
    text = text_of(problems)
    assert f"MAC {MAC} in VNI 100: duplicate (5 moves, last from {VTEP4}), frozen" in text
    assert f"peer {FRR}: route limit 12 nearly reached" in text
    assert problems.get("data-count") == "2"
    flagged = {g.get("data-vtep") for g in by_class(root, "vtep")
               if g.get("data-conflict") == "true"}  # fmt: skip
    assert flagged == {str(VTEP4)}
    # Exceeded: refused routes past the limit.
    snap.rib.set_route_limits({FRR: RouteLimit(3)})
    for i in range(3):
        snap.rib.announce(FRR, MacIpRoute(MacIpKey("10.99.0.4:100", 0, f"02:00:00:00:0d:0{i}"),
                                          VTEP4, 100, route_targets=("65000:100",),
                                          encapsulation=ENCAP_VXLAN), now=6000.0)  # fmt: skip
    data = views.fabric(snap)
    frr = next(p for p in data["peers"] if p["address"] == str(FRR))
    assert frr["route_limit"]["level"] == "exceeded"
    assert f"peer {FRR}: route limit 3 exceeded" in text_of(parse(fabric_svg.render(data)))
    text = render.render("fabric", json.loads(json.dumps(data)))
    assert f"{FRR}: exceeded (max 3 routes)" in text and f"MAC {MAC} in VNI 100" in text
