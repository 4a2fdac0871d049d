"""evpn-gobgp end to end: two evpnd hosts around a GoBGP route reflector.

The lab (containerlab/evpn-gobgp.clab.yml) runs the host's gobgpd for the
`jauderho/gobgp:v3.10.0` image on rr (API on 127.0.0.1:50051 inside rr's
namespace) and the real `evpnd run` on host1 and host2. Checked here: the
endpoints ping each other across the hosts, each host's kernel FDB sends the
other's MAC to the other VTEP, and GoBGP holds and reflects both hosts'
Type-2 and Type-3 routes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import REPO
from tests.netns import fabric
from tests.netns.fabric import Fabric, T, running_lab

pytestmark = pytest.mark.netns

GOBGP_LAB = REPO / "containerlab" / "evpn-gobgp.clab.yml"
LAB = "evpn-gobgp"
CONVERGE_TIMEOUT = 60.0
ESTABLISHED = 6  # gobgp's api.PeerState.SessionState
FABRIC = Fabric(LAB)
run = FABRIC.run
fdb = FABRIC.fdb
ping = FABRIC.ping

VTEPS = {"host1": "10.0.1.2", "host2": "10.0.2.2"}
# endpoint -> (address, MAC, host)
ENDPOINTS = {
    "h1e1": ("10.100.0.11", "02:00:00:00:01:01", "host1"),
    "h2e1": ("10.100.0.21", "02:00:00:00:02:01", "host2"),
}
FLOOD = "00:00:00:00:00:00"




def gobgp_json(*args: str) -> Any:
    """`gobgp -j ...` against rr's gobgpd (its API is 127.0.0.1:50051 inside rr)."""
    out = run("rr", ["gobgp", "-u", "127.0.0.1", "-p", "50051", "-j", *args])
    try:
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else None
    except json.JSONDecodeError:
        return None








def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20) -> T:
    return fabric.wait_for(what, probe, timeout, explain=diagnostics)


def diagnostics() -> str:
    parts = [
        FABRIC.log_tail(node, name)
        for node, name in (("rr", "gobgpd.log"), ("host1", "evpnd.log"), ("host2", "evpnd.log"))
    ]
    parts.append("--- rr: gobgp neighbor\n" + run("rr", ["gobgp", "neighbor"]).stdout)
    return "\n".join(parts)


def sessions() -> dict[str, int]:
    peers = gobgp_json("neighbor") or []
    return {p["state"]["neighbor_address"]: p["state"].get("session_state", 0) for p in peers}


def evpn_rib(*where: str) -> dict[str, list[dict[str, Any]]]:
    """rr's EVPN routes (global RIB, or e.g. `neighbor X adj-out`), keyed by gobgp's prefix."""
    return gobgp_json(*where, "-a", "evpn") or {}


def rib_holding(wanted: set[str], *where: str) -> Callable[[], dict[str, Any] | None]:
    """A probe: the EVPN table `where` once it holds every key in `wanted`."""

    def probe() -> dict[str, Any] | None:
        table = evpn_rib(*where)
        return table if wanted <= set(table) else None

    return probe


def route_keys(host: str) -> tuple[str, str]:
    """gobgp's keys for host's Type-3 and its endpoint's Type-2 route."""
    vtep = VTEPS[host]
    mac = next(m for _, m, h in ENDPOINTS.values() if h == host)
    return (
        f"[type:multicast][rd:{vtep}:100][etag:0][ip:{vtep}]",
        f"[type:macadv][rd:{vtep}:100][etag:0][mac:{mac}][ip:<nil>]",
    )


def converged() -> bool:
    if sessions() != {vtep: ESTABLISHED for vtep in VTEPS.values()}:
        return False
    # Type-3 reflected both ways: each host floods VNI 100 to the other.
    return all(
        any(e["mac"] == FLOOD and e.get("dst") == VTEPS[other] for e in fdb(host))
        for host, other in (("host1", "host2"), ("host2", "host1"))
    )


@pytest.fixture(scope="module")
def gobgp_lab() -> Iterator[None]:
    needs = (("gobgpd", "gobgpd"), ("gobgp", "gobgpd"), ("ping", "iputils-ping"),
             ("bridge", "iproute2"))
    with running_lab(GOBGP_LAB, needs=needs) as up:
        report = up.render()
        assert "jauderho/gobgp:v3.10.0 -> host gobgpd -f " in report
        assert "--api-hosts 127.0.0.1:50051" in report
        wait_for("both sessions on GoBGP and Type-3 flood entries on both hosts", converged,
                 timeout=CONVERGE_TIMEOUT)  # fmt: skip
        yield


@pytest.mark.parametrize(("src", "dst"), [("h1e1", "h2e1"), ("h2e1", "h1e1")])
def test_endpoints_ping_across_hosts(gobgp_lab: None, src: str, dst: str) -> None:
    address = ENDPOINTS[dst][0]
    wait_for(f"{src} to ping {dst} ({address}) on VNI 100",
             lambda: ping(src, address).returncode == 0, timeout=15)  # fmt: skip
    result = ping(src, address)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("host", "other"), [("host1", "host2"), ("host2", "host1")])
def test_each_host_installs_the_others_mac_and_flood_entry(
    gobgp_lab: None, host: str, other: str
) -> None:
    mac = next(m for _, m, h in ENDPOINTS.values() if h == other)
    # The other endpoint's MAC is learned locally on `other` (and advertised) once it sent.
    for endpoint, (_, _, at) in ENDPOINTS.items():
        if at == other:
            peer = next(a for e, (a, _, h) in ENDPOINTS.items() if h == host)
            ping(endpoint, peer)

    def entry() -> dict[str, Any] | None:
        return next((e for e in fdb(host) if e["mac"] == mac and e.get("dst")), None)

    found = wait_for(f"{host} to install {other}'s MAC {mac}", entry)
    assert found["dst"] == VTEPS[other], found
    assert "extern_learn" in found["flags"], found
    entries = fdb(host)
    flood = [e for e in entries if e["mac"] == FLOOD]
    assert [e.get("dst") for e in flood] == [VTEPS[other]], entries


def test_gobgp_holds_both_hosts_type2_and_type3_routes(gobgp_lab: None) -> None:
    for endpoint, (_, _, host) in ENDPOINTS.items():  # make every MAC known
        ping(endpoint, next(a for a, _, h in ENDPOINTS.values() if h != host))
    wanted = {key for host in VTEPS for key in route_keys(host)}

    rib = wait_for("GoBGP's global RIB to hold both hosts' Type-2 and Type-3 routes",
                   rib_holding(wanted, "global", "rib"))  # fmt: skip
    for host, vtep in VTEPS.items():
        imet, macadv = route_keys(host)
        for key in (imet, macadv):
            (path,) = rib[key]
            assert path["best"] and path["neighbor-ip"] == vtep, (key, path)
            reach = next(a for a in path["attrs"] if a["type"] == 14)  # MP_REACH_NLRI
            assert reach["nexthop"] == vtep and (reach["afi"], reach["safi"]) == (25, 70)
        assert rib[imet][0]["nlri"]["type"] == 3 and rib[macadv][0]["nlri"]["type"] == 2
        assert rib[macadv][0]["nlri"]["value"]["labels"] == [100]  # the VNI
    # The text form names them too (what a user types).
    text = run("rr", ["gobgp", "global", "rib", "-a", "evpn"]).stdout
    for vtep in VTEPS.values():
        assert f"[type:multicast][rd:{vtep}:100]" in text
        assert f"[type:macadv][rd:{vtep}:100]" in text


@pytest.mark.parametrize(("host", "other"), [("host1", "host2"), ("host2", "host1")])
def test_gobgp_reflects_each_hosts_routes_to_the_other(
    gobgp_lab: None, host: str, other: str
) -> None:
    """Route reflection proper: the other host's routes go out to `host` with
    ORIGINATOR_ID = the other host and CLUSTER_LIST = rr's cluster id."""
    wanted = set(route_keys(other))
    sent = wait_for(f"rr's adj-out to {host} to carry {other}'s routes",
                    rib_holding(wanted, "neighbor", VTEPS[host], "adj-out"))  # fmt: skip
    for key in wanted:
        attrs = {a["type"]: a for a in sent[key][0]["attrs"]}
        assert attrs[9]["value"] == VTEPS[other], (key, attrs)  # ORIGINATOR_ID
        assert attrs[10]["value"] == ["10.0.0.1"], (key, attrs)  # CLUSTER_LIST
    # A client's own routes are not sent back to it.
    assert not set(route_keys(host)) & set(sent), sorted(sent)
