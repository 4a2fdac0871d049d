"""Human tables from the views' JSON (after the JSON round trip the socket makes)."""

from __future__ import annotations

import json

import pytest

from evpnd.control import render, views
from evpnd.control.render import duration, table
from tests.unit.control_data import build


@pytest.fixture(scope="module")
def data() -> dict[str, dict]:
    snap = build()
    return {what: json.loads(json.dumps(views.show(snap, what))) for what in views.VIEWS}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "never"), (-3, "00:00:00"), (59, "00:00:59"), (3723, "01:02:03"),
     (86400 + 7380, "1d02h03m"), (15 * 86400 + 4 * 3600, "02w1d04h")],
)
def test_duration_like_frr(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_table_aligns_columns_and_marks_missing_values() -> None:
    lines = table(("A", "Long header", "C"), [("x", None, True), ("yyyy", 12, "")])
    assert lines == [
        "A     Long header  C",
        "x     -            yes",
        "yyyy  12",
    ]


def test_every_line_has_no_trailing_blanks(data: dict[str, dict]) -> None:
    for what, value in data.items():
        for line in render.render(what, value).splitlines():
            assert line == line.rstrip(), (what, line)


def test_peers_table(data: dict[str, dict]) -> None:
    text = render.render("peers", data["peers"])
    lines = text.splitlines()
    assert lines[0] == "BGP router identifier 10.99.0.1, local AS number 65000, VTEP 10.99.0.1"
    header = lines[3].split()
    assert header[:4] == ["Neighbor", "AS", "Up/Down", "State/PfxRcd"]
    assert lines[4].split() == ["10.99.0.2", "65000", "01:01:52", "9", "5", "6", "frr1"]
    assert lines[5].split() == ["10.99.0.3", "65000", "00:58:43", "Down", "0", "0", "rr2"]
    # Columns line up: every row's address column has the header's width.
    assert lines[4].index("65000") == lines[3].index("AS")
    assert "Total number of neighbors 2, established 1" in text
    assert ('10.99.0.3: notification received (Cease/Administrative Shutdown): '
            'Shutdown Communication: "maintenance-window"') in text


def test_vni_table(data: dict[str, dict]) -> None:
    lines = render.render("vni", data["vni"]).splitlines()
    assert lines[0].split()[:4] == ["VNI", "Bridge", "VxLAN", "IF"]
    assert lines[1].split() == ["100", "br100", "vxlan100", "1450", "evpn", "2", "3", "5",
                                "10.99.0.2", "10.99.0.4"]
    assert lines[2].split() == ["200", "br200", "vxlan200", "1450", "static", "1", "0", "0",
                                "10.99.0.7"]
    assert lines[-1] == "Number of VNIs: 2"


def test_mac_table_counts_and_flags(data: dict[str, dict]) -> None:
    text = render.render("mac", data["mac"])
    assert "Number of MACs (local and remote) known for this VNI: 5" in text
    assert "Number of MACs (local and remote) known for this VNI: 1" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith("02:")}
    assert rows["02:00:00:00:01:11"][:6] == ["02:00:00:00:01:11", "remote", "10.99.0.2", "4",
                                             "10.99.0.2", "192.168.100.11"]
    assert rows["02:00:00:00:02:fe"][2] == "G"
    assert rows["02:00:00:00:04:01"][2] == "N"
    assert rows["02:00:00:00:0a:02"][:4] == ["02:00:00:00:0a:02", "local", "S", "veth-db1"]


def test_neighbors_table(data: dict[str, dict]) -> None:
    text = render.render("neighbors", data["neighbors"])
    assert "VNI 100 (bridge br100, ARP/ND suppression on)" in text
    assert "Number of ARPs (local and remote) known for this VNI: 5" in text
    assert any(line.split() == ["192.168.100.21", "local", "02:00:00:00:0a:01", "-", "-", "-"]
               for line in text.splitlines())


def test_routes_table_groups_by_rd(data: dict[str, dict]) -> None:
    text = render.render("routes", data["routes"])
    lines = text.splitlines()
    rd = lines.index("Route Distinguisher: 10.99.0.4:100")
    # FRR's status codes (*> valid and best), the direction in its own column.
    assert lines[rd + 1].split()[:6] == ["*>", "[2]:[0]:[48]:[02:00:00:00:04:01]", "10.99.0.4",
                                         "in", "100", "10.99.0.2"]
    assert "RT:65000:100 ET:8 MM:1" in lines[rd + 1]
    # A route no VNI imports is not valid: no status code.
    assert any(line.startswith("   [5]:[0]:[24]:[10.99.0.0]") and "(not imported)" in line
               for line in lines)  # fmt: skip
    assert any(line.startswith("*> [3]:[0]:[32]:[10.99.0.1]") and " out " in line
               for line in lines)  # fmt: skip
    assert lines[-1] == "Displayed 14 routes (5 out, 9 in); type-2: 10, type-3: 3, type-5: 1"


def test_vteps_and_status(data: dict[str, dict]) -> None:
    vteps = render.render("vteps", data["vteps"]).splitlines()
    assert vteps[3].split() == ["10.99.0.7", "200(static)", "0", "0", "-", "yes"]
    assert vteps[-1] == "Number of remote VTEPs: 3"
    status = render.render("status", data["status"])
    assert status.splitlines()[0] == "evpnd 0.1.0, pid 4200, up 01:02:03"
    assert "Converged: yes, 00:00:13 after start" in status
    assert "  by type             type-2 6, type-3 2, type-5 1" in status


def test_empty_views_render() -> None:
    assert render.render("mac", {"vnis": []}) == "No VNIs configured"
    assert render.render("vteps", {"vteps": []}).splitlines()[-1] == "Number of remote VTEPs: 0"
    routes = {"router_id": "1.1.1.1", "asn": 1, "count": 0, "by_type": {}, "routes": []}
    assert render.render("routes", routes).splitlines()[-1] == "Displayed 0 routes (0 out, 0 in)"
