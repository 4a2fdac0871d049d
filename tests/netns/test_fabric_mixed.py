"""evpn-mixed end to end: evpnd hosts and an FRR VTEP (vtep3) in one fabric.

The lab (containerlab/evpn-mixed.clab.yml) runs the real `evpnd run` on host1
and host2 and host FRR 8.4.4 on rr (route reflector) and vtep3. Checked here:
endpoints behind evpnd and behind FRR reach each other on VNI 100 both ways,
FRR installs evpnd's Type-2 routes as remote MACs on the right VTEPs, and
evpnd installs FRR's MACs and its Type-3 flood entry in the kernel.
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

MIXED = REPO / "containerlab" / "evpn-mixed.clab.yml"
LAB = "evpn-mixed"
CONVERGE_TIMEOUT = 60.0
FABRIC = Fabric(LAB)
run = FABRIC.run
fdb = FABRIC.fdb
ping = FABRIC.ping

VTEPS = {"host1": "10.0.1.2", "host2": "10.0.2.2", "vtep3": "10.0.3.2"}
# VNI 100 endpoints: node -> (address, MAC, the VTEP node it hangs off)
ENDPOINTS = {
    "h1e1": ("10.100.0.11", "02:00:00:00:01:01", "host1"),
    "h1e2": ("10.100.0.12", "02:00:00:00:01:02", "host1"),
    "h2e1": ("10.100.0.21", "02:00:00:00:02:01", "host2"),
    "h2e2": ("10.100.0.22", "02:00:00:00:02:02", "host2"),
    "h3e1": ("10.100.0.31", "02:00:00:00:03:01", "vtep3"),
    "h3e2": ("10.100.0.32", "02:00:00:00:03:02", "vtep3"),
}
EVPND_ENDPOINTS = [e for e, (_, _, vtep) in ENDPOINTS.items() if vtep != "vtep3"]
FRR_ENDPOINTS = [e for e, (_, _, vtep) in ENDPOINTS.items() if vtep == "vtep3"]
FLOOD = "00:00:00:00:00:00"




def vtysh_json(node: str, command: str) -> Any:
    out = run(node, ["vtysh", "-c", f"{command} json"]).stdout
    try:
        return json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        return {}




def fdb_entry(node: str, mac: str, dst: str) -> dict[str, Any] | None:
    return next((e for e in fdb(node) if e["mac"] == mac and e.get("dst") == dst), None)






def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20) -> T:
    return fabric.wait_for(what, probe, timeout, explain=diagnostics)


def diagnostics() -> str:
    parts = [FABRIC.log_tail(node) for node in ("host1", "host2")]
    summary = run("rr", ["vtysh", "-c", "show bgp l2vpn evpn summary"]).stdout
    parts.append(f"--- rr: show bgp l2vpn evpn summary\n{summary}")
    return "\n".join(parts)


def converged() -> bool:
    peers = vtysh_json("rr", "show bgp l2vpn evpn summary").get("peers", {})
    if len(peers) != 3 or {p.get("state") for p in peers.values()} != {"Established"}:
        return False
    # Type-3 both ways between evpnd and FRR: kernel flood entries on each side.
    return all(fdb_entry(h, FLOOD, VTEPS["vtep3"]) for h in ("host1", "host2")) and all(
        fdb_entry("vtep3", FLOOD, VTEPS[h]) for h in ("host1", "host2")
    )


@pytest.fixture(scope="module")
def mixed_lab() -> Iterator[None]:
    with running_lab(MIXED) as report:
        assert "evpnd:latest -> " in report.render()
        wait_for("BGP sessions on rr and Type-3 flood entries evpnd <-> FRR", converged,
                 timeout=CONVERGE_TIMEOUT)  # fmt: skip
        yield


@pytest.fixture(scope="module")
def traffic(mixed_lab: None) -> None:
    """Every VNI 100 endpoint has sent a frame, so each VTEP has learned its MAC."""
    for endpoint in ENDPOINTS:
        target = "10.100.0.31" if endpoint != "h3e1" else "10.100.0.11"
        wait_for(f"{endpoint} to reach {target}",
                 lambda e=endpoint, t=target: ping(e, t).returncode == 0)  # fmt: skip


@pytest.mark.parametrize(
    ("src", "dst"),
    [("h1e1", "h3e1"), ("h3e1", "h1e1"), ("h2e2", "h3e2"), ("h3e2", "h2e2"),
     ("h1e2", "h3e2"), ("h3e1", "h2e1")],
)  # fmt: skip
def test_evpnd_and_frr_endpoints_ping_both_ways(mixed_lab: None, src: str, dst: str) -> None:
    address = ENDPOINTS[dst][0]
    # Bounded retries: the very first frames may race the MAC routes' install.
    wait_for(f"{src} to ping {dst} ({address}) on VNI 100",
             lambda: ping(src, address).returncode == 0, timeout=15)  # fmt: skip
    result = ping(src, address)
    assert result.returncode == 0, result.stdout + result.stderr


def test_frr_vtep_has_evpnd_macs_as_remote_on_their_vteps(traffic: None) -> None:
    def remote_macs() -> dict[str, Any] | None:
        macs = vtysh_json("vtep3", "show evpn mac vni 100").get("macs", {})
        wanted = all(macs.get(ENDPOINTS[e][1], {}).get("type") == "remote" for e in EVPND_ENDPOINTS)
        return macs if wanted else None

    macs = wait_for("vtep3's zebra to install evpnd's MACs as remote", remote_macs)
    for endpoint in EVPND_ENDPOINTS:
        _, mac, vtep = ENDPOINTS[endpoint]
        assert macs[mac]["type"] == "remote", (mac, macs[mac])
        assert macs[mac]["remoteVtep"] == VTEPS[vtep], (mac, macs[mac])
    for endpoint in FRR_ENDPOINTS:
        assert macs[ENDPOINTS[endpoint][1]]["type"] == "local"
    # ... and in the kernel: vtep3's vxlan100 sends them to the right VTEP.
    for endpoint in EVPND_ENDPOINTS:
        _, mac, vtep = ENDPOINTS[endpoint]
        entry = fdb_entry("vtep3", mac, VTEPS[vtep])
        assert entry is not None and "extern_learn" in entry["flags"], (mac, fdb("vtep3"))


def test_frr_bgp_has_evpnd_type2_and_type3_routes(traffic: None) -> None:
    def macip_routes() -> dict[str, Any] | None:
        table = vtysh_json("vtep3", "show bgp l2vpn evpn route type macip")
        rds = {f"{VTEPS[h]}:100" for h in ("host1", "host2")}
        return table if rds <= set(table) else None

    table = wait_for("vtep3's bgpd to hold evpnd's Type-2 routes", macip_routes)
    for endpoint in EVPND_ENDPOINTS:
        _, mac, vtep = ENDPOINTS[endpoint]
        rd = table[f"{VTEPS[vtep]}:100"]
        prefix = f"[2]:[0]:[48]:[{mac}]"
        assert prefix in rd, (prefix, sorted(rd))
        paths = [path for group in rd[prefix]["paths"] for path in group]
        assert any(path.get("valid") for path in paths)
        nexthops = {nh["ip"] for path in paths for nh in path["nexthops"]}
        assert nexthops == {VTEPS[vtep]}
        communities = " ".join(path["extendedCommunity"]["string"] for path in paths)
        assert "RT:65000:100" in communities and "ET:8" in communities

    imet = vtysh_json("vtep3", "show bgp l2vpn evpn route type multicast")
    for host in ("host1", "host2"):
        rd = imet.get(f"{VTEPS[host]}:100", {})
        assert f"[3]:[0]:[32]:[{VTEPS[host]}]" in rd, (host, sorted(imet))


def test_evpnd_hosts_install_frr_macs_and_flood_entry(traffic: None) -> None:
    vtep3 = VTEPS["vtep3"]
    for host in ("host1", "host2"):

        def installed(host: str = host) -> list[dict[str, Any]] | None:
            entries = fdb(host)
            macs = {e["mac"] for e in entries if e.get("dst") == vtep3}
            wanted = {ENDPOINTS[e][1] for e in FRR_ENDPOINTS}
            return entries if wanted <= macs else None

        entries = wait_for(f"{host} to install vtep3's endpoint MACs", installed)
        for endpoint in FRR_ENDPOINTS:
            mac = ENDPOINTS[endpoint][1]
            entry = next(e for e in entries if e["mac"] == mac and e.get("dst") == vtep3)
            assert "extern_learn" in entry["flags"], entry
        flood = [e for e in entries if e["mac"] == FLOOD and e.get("dst") == vtep3]
        assert len(flood) == 1 and "extern_learn" in flood[0]["flags"], entries
        # The other evpnd host too, so VNI 100 floods reach every VTEP.
        other = VTEPS["host2" if host == "host1" else "host1"]
        assert any(e["mac"] == FLOOD and e.get("dst") == other for e in entries), entries
        # Nothing points at the host's own VTEP.
        assert not any(e.get("dst") == VTEPS[host] for e in entries), entries
