"""`show routes` and `show vteps` for what real fabrics send: multihoming routes, a
non-zero ESI, routes a VNI refuses (RFC 8365), a VTEP whose next hops were rewritten."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from evpnd.control import render, views
from evpnd.control.snapshot import Snapshot
from evpnd.model import (
    ENCAP_VXLAN,
    EadKey,
    EadRoute,
    EsKey,
    EsRoute,
    ImetKey,
    ImetRoute,
    MacIpKey,
    MacIpRoute,
)
from tests.unit.control_data import FRR, build

ESI = "00:11:22:33:44:55:66:77:88:99"
MH = IPv4Address("10.99.0.5")  # a multihoming VTEP behind FRR
TOR = IPv4Address("10.99.0.9")  # a transit router that rewrote next hops
FAR = IPv4Address("10.99.0.6")  # the VTEP behind it


def fabric_snapshot() -> Snapshot:
    snap = build()
    rib = snap.rib
    rt = ("65000:100",)
    rib.apply_update(FRR, [
        EadRoute(EadKey("10.99.0.5:100", ESI, 0xFFFFFFFF), MH, 0, rt, ENCAP_VXLAN),
        EsRoute(EsKey("10.99.0.5:1", ESI, MH), MH, (), ENCAP_VXLAN),
        MacIpRoute(MacIpKey("10.99.0.5:100", 0, "02:00:00:00:05:01"), MH, 100, esi=ESI,
                   route_targets=rt, encapsulation=ENCAP_VXLAN),
        # label 200 under VNI 100's target: refused (RFC 8365 5.1.3)
        MacIpRoute(MacIpKey("10.99.0.5:100", 0, "02:00:00:00:05:02"), MH, 200,
                   route_targets=rt, encapsulation=ENCAP_VXLAN),
        # a VTEP whose Type-2 next hop a transit router rewrote, its Type-3 tunnel not
        ImetRoute(ImetKey("10.99.0.6:100", 0, FAR), TOR, 100, FAR, route_targets=rt,
                  encapsulation=ENCAP_VXLAN),
        MacIpRoute(MacIpKey("10.99.0.6:100", 0, "02:00:00:00:06:01"), TOR, 100,
                   route_targets=rt, encapsulation=ENCAP_VXLAN),
    ], [])  # fmt: skip
    return replace(snap, rib=rib)


def test_show_routes_has_multihoming_routes_esis_and_refusals() -> None:
    snap = fabric_snapshot()
    data = views.routes(snap)
    rows = {r["prefix"]: r for r in data["routes"] if r["peer"] == str(FRR)}
    ead = rows[f"[1]:[{ESI}]:[4294967295]"]
    es = rows[f"[4]:[{ESI}]:[32]:[{MH}]"]
    assert (ead["type"], ead["esi"], ead["multihoming"], ead["imported_vnis"]) == (
        1, ESI, True, [])
    assert (es["type"], es["originator"], es["multihoming"]) == (4, str(MH), True)
    multihomed = rows["[2]:[0]:[48]:[02:00:00:00:05:01]"]
    assert multihomed["esi"] == ESI and multihomed["imported_vnis"] == [100]
    refused = rows["[2]:[0]:[48]:[02:00:00:00:05:02]"]
    assert (refused["refused"], refused["imported_vnis"], refused["vni"]) == (
        "label-mismatch", [], 200)
    assert data["by_type"]["1"] == 1 and data["by_type"]["4"] == 1
    assert [r["prefix"] for r in views.routes(snap, type=4)["routes"]] == [es["prefix"]]

    text = render.render("routes", data)
    # the route's line, whatever the columns around its prefix
    lines = {word: line for line in text.splitlines() for word in line.split()
             if word.startswith("[")}  # fmt: skip
    assert f"ESI:{ESI}" in lines["[2]:[0]:[48]:[02:00:00:00:05:01]"]
    assert "(refused: label-mismatch)" in lines["[2]:[0]:[48]:[02:00:00:00:05:02]"]
    assert "(multihoming: held, not acted on)" in lines[ead["prefix"]]
    assert "EVPN type-4 prefix: [4]:[ESI]:[IPlen]:[OrigIP]" in text

    status = views.status(snap)["rib"]
    assert status["routes_by_type"]["1"] == 1


def test_show_vteps_names_a_vtep_whose_next_hops_were_rewritten() -> None:
    snap = fabric_snapshot()
    data = views.vteps(snap)
    assert data["nexthop_mismatches"] == [
        {"peer": str(FRR), "rd": "10.99.0.6:100", "tunnel": str(FAR), "nexthops": [str(TOR)]}
    ]
    rows = {t["vtep"]: t for t in data["vteps"]}
    assert rows[str(FAR)]["nexthop_mismatch"] is True  # its flood entry
    assert rows[str(TOR)]["nexthop_mismatch"] is True  # where its MACs point
    assert rows[str(MH)]["nexthop_mismatch"] is False
    text = render.render("vteps", data)
    assert "Type-2 next hops that differ from the Type-3 tunnel" in text
    assert text.splitlines()[-1].split() == [str(FRR), "10.99.0.6:100", str(FAR), str(TOR)]


def test_metrics_count_refusals_esis_and_mismatches() -> None:
    from evpnd.metrics.collector import build_registry
    from tests.unit.test_metrics import Source, scrape, value

    source = Source()
    registry = build_registry(source, process=False)
    before = scrape(registry)
    assert value(before, "evpnd_bgp_routes_import_refused_total", reason="label-mismatch") == 0
    assert value(before, "evpnd_vtep_nexthop_mismatches") == 0
    source.rib = fabric_snapshot().rib
    after = scrape(build_registry(source, process=False))
    assert value(after, "evpnd_bgp_routes_import_refused_total", reason="label-mismatch") == 1
    assert value(after, "evpnd_bgp_routes_import_refused_total", reason="ethernet-tag") == 0
    assert value(after, "evpnd_bgp_routes_esi") == 1
    assert value(after, "evpnd_vtep_nexthop_mismatches") == 1
    assert value(after, "evpnd_bgp_routes", type="1") == 1
    assert value(after, "evpnd_bgp_routes", type="4") == 1
