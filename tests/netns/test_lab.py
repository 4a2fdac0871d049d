"""The lab engine against a real kernel and real FRR: up, exec, down.

Only FRR and endpoint nodes are brought up here; evpnd nodes need `evpnd run`
and are covered by the fabric tests.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from pyroute2 import IPRoute

from evpnd import netns
from evpnd.lab import links, program, realize, topology
from evpnd.lab import state as labstate
from evpnd.lab.topology import LabError
from tests.conftest import REPO, require_program, require_root
from tests.netns.fabric import alive

pytestmark = pytest.mark.netns

FRR_ONLY = REPO / "containerlab" / "frr-only.clab.yml"
T = TypeVar("T")


@pytest.fixture
def frr_host() -> None:
    require_root()
    for daemon in ("zebra", "staticd", "bgpd", "vtysh"):
        require_program(daemon, "frr")
    require_program("ping", "iputils-ping")


def lab_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The stand-alone CLI in a separate process, as a user (or `down` from elsewhere) runs it."""
    return subprocess.run(
        [sys.executable, "-m", "evpnd.lab", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def root_interfaces() -> set[str]:
    with IPRoute() as ipr:
        return {str(link.get("ifname")) for link in ipr.get_links()}


def lab_namespaces(lab: str) -> list[str]:
    return [name for name in os.listdir("/run/netns") if name.startswith(f"clab-{lab}-")]


def frr_processes_of(lab: str) -> list[int]:
    """Processes whose command line names one of the lab's FRR pathspaces."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(f"clab-{lab}-".encode()) for arg in argv):
            found.append(int(entry))
    return found


@pytest.fixture
def scratch_lab(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Write a topology for a uniquely named lab; whatever it leaves is taken down."""
    made: list[Path] = []

    def write(body: str) -> Path:
        path = tmp_path / f"lab{len(made)}.clab.yml"
        path.write_text(f"name: evt-lab-{secrets.token_hex(3)}\n{body}")
        made.append(path)
        return path

    try:
        yield write
    finally:
        for path in made:
            realize.down(path)


# ---------------------------------------------------------------------------


def test_frr_only_fabric_up_exec_ping_down(frr_host: None) -> None:
    topo = topology.load(FRR_ONLY)
    assert labstate.load(topo.name) is None, "frr-only is already up: `evpnd lab down` it"
    root_before = root_interfaces()
    report = realize.up(FRR_ONLY)
    try:
        text = report.render()
        assert "rr" in text and "quay.io/frrouting/frr:8.4.4 -> host FRR 8.4.4" in text
        assert "alpine:3 -> namespace only" in text

        # One namespace per node, each link a veth pair with the exact names, its
        # peer in the other node's namespace, and nothing in the root namespace.
        assert sorted(lab_namespaces(topo.name)) == sorted(topo.netns_name(n) for n in topo.nodes)
        for link in topo.links:
            for end, other in ((link.a, link.b), (link.b, link.a)):
                shown = netns.run(
                    topo.netns_name(end.node), ["ip", "-o", "link", "show", end.interface]
                ).stdout
                assert f"link-netns {topo.netns_name(other.node)}" in shown
        link_names = {end.interface for link in topo.links for end in (link.a, link.b)}
        assert not (root_interfaces() - root_before) & link_names

        with pytest.raises(LabError, match="already up"):
            realize.up(FRR_ONLY)

        def sessions_up() -> bool:
            out = lab_cli("exec", "--lab", topo.name, "rr", "--", "vtysh", "-c",
                          "show bgp l2vpn evpn summary json")  # fmt: skip
            if out.returncode != 0 or not out.stdout.strip():
                return False
            peers = json.loads(out.stdout).get("peers", {})
            return {p.get("state") for p in peers.values()} == {"Established"} and len(peers) == 2

        wait_for("both EVPN sessions on rr to be Established", sessions_up)

        def routes(node: str, kind: str) -> str:
            cmd = f"show bgp l2vpn evpn route type {kind}"
            return realize.run_in_node(node, ["vtysh", "-c", cmd], lab=topo.name).stdout

        wait_for("vtep1 to get vtep2's Type-3",
                 lambda: "[3]:[0]:[32]:[10.0.2.2]" in routes("vtep1", "multicast"))  # fmt: skip
        wait_for("vtep2 to get vtep1's Type-3",
                 lambda: "[3]:[0]:[32]:[10.0.1.2]" in routes("vtep2", "multicast"))  # fmt: skip

        def ping() -> bool:
            argv = ["ping", "-c", "3", "-W", "1", "10.100.0.21"]
            return realize.run_in_node("ep1", argv, lab=topo.name).returncode == 0

        wait_for("ep1 (on vtep1) to ping ep2 (on vtep2) across VXLAN", ping, timeout=40)

        wait_for("vtep1 to learn ep2's MAC as a Type-2",
                 lambda: "02:00:00:00:02:01" in routes("vtep1", "macip"))  # fmt: skip
        wait_for("vtep2 to learn ep1's MAC as a Type-2",
                 lambda: "02:00:00:00:01:01" in routes("vtep2", "macip"))  # fmt: skip
        fdb_show = ["bridge", "fdb", "show", "dev", "vxlan100"]
        fdb = realize.run_in_node("vtep1", fdb_show, lab=topo.name).stdout
        assert "02:00:00:00:02:01 dst 10.0.2.2" in fdb

        st = labstate.load(topo.name)
        assert st is not None and st.status == "up"
        pids = [pid for node in st.nodes.values() for pid in node.pids]
        assert len(pids) == 9  # zebra, staticd, bgpd on rr, vtep1, vtep2

        down = lab_cli("down", str(FRR_ONLY))
        assert down.returncode == 0, down.stderr
        assert "removed 5 namespaces" in down.stdout
    finally:
        realize.down(FRR_ONLY)

    assert lab_namespaces(topo.name) == []
    assert [pid for pid in pids if alive(pid)] == []
    assert frr_processes_of(topo.name) == []
    assert not labstate.lab_dir(topo.name).exists()
    again = lab_cli("down", str(FRR_ONLY))
    assert again.returncode == 0 and "not up" in again.stdout


def test_failed_up_removes_everything_it_made(scratch_lab: Callable[[str], Path]) -> None:
    require_root()
    path = scratch_lab(
        "topology:\n"
        "  nodes:\n"
        "    a: {kind: linux, image: alpine:3}\n"
        "    b:\n"
        "      kind: linux\n"
        "      image: alpine:3\n"
        "      exec: ['ip link set eth1 up', 'false']\n"
        "  links:\n"
        '    - endpoints: ["a:eth1", "b:eth1"]\n'
    )
    lab = topology.load(path).name
    with pytest.raises(LabError) as caught:
        realize.up(path)
    message = caught.value.render()
    assert "node 'b': exec line 2 ('false') failed (exit 1)" in message
    assert "everything `up` had made was removed" in message
    assert lab_namespaces(lab) == []
    assert labstate.load(lab) is None


def test_bridge_node_link_options_env_and_exec(scratch_lab: Callable[[str], Path]) -> None:
    require_root()
    require_program("ping", "iputils-ping")
    path = scratch_lab(
        "topology:\n"
        "  defaults:\n"
        "    kind: linux\n"
        "    image: busybox\n"
        "  nodes:\n"
        "    sw: {kind: bridge}\n"
        "    a:\n"
        "      image: alpine:3\n"
        "      env: {LABVAR: hello}\n"
        # $$ is containerlab's escape for a literal $; the env reaches exec lines.
        "      exec: ['sh -c \"test $$LABVAR = hello\"']\n"
        "    b: {}\n"
        "  links:\n"
        "    - type: veth\n"
        "      mtu: 1400\n"
        "      endpoints:\n"
        "        - {node: a, interface: eth1, mac: '02:00:00:00:aa:01', ipv4: 10.77.0.1/24}\n"
        "        - {node: sw, interface: p1}\n"
        '    - endpoints: ["b:eth1", "sw:p2"]\n'
        '      ipv4: ["10.77.0.2/24", ""]\n'
    )
    topo = topology.load(path)
    report = realize.up(path)
    assert "bridge sw inside the namespace" in report.render()
    sw = topo.netns_name("sw")
    assert {"sw", "p1", "p2"} <= set(links.interfaces(sw))
    assert "master sw" in netns.run(sw, ["ip", "-o", "link", "show", "p1"]).stdout
    shown = netns.run(topo.netns_name("a"), ["ip", "-o", "link", "show", "eth1"]).stdout
    assert "02:00:00:00:aa:01" in shown and "mtu 1400" in shown
    ping = realize.run_in_node("a", ["ping", "-c", "1", "-W", "2", "10.77.0.2"], lab=topo.name)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    down = realize.down(path)
    assert down.was_up and len(down.namespaces) == 3
    assert lab_namespaces(topo.name) == []


# A stand-in for `evpnd run` (written elsewhere): it does the one thing the lab's
# start-up order depends on -- create the config's bridges, late -- and idles.
FAKE_EVPND = """
import subprocess, sys, time
from evpnd import config
cfg = config.load(sys.argv[1])
time.sleep(3)  # later than the node's exec lines start: they must wait for it
for vni in cfg.vnis:
    subprocess.run(["ip", "link", "add", vni.bridge_name, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", vni.bridge_name, "up"], check=True)
time.sleep(3600)
"""


def fake_evpnd_command(config: Path, python: str = sys.executable) -> list[str]:
    return [python, "-c", FAKE_EVPND, str(config)]


@pytest.mark.parametrize("lab_file", ["evpn-rr.clab.yml", "evpn-mixed.clab.yml"])
def test_evpn_lab_realizes_with_a_stand_in_for_evpnd(
    frr_host: None, monkeypatch: pytest.MonkeyPatch, lab_file: str
) -> None:
    """Everything of the EVPN labs but evpnd itself: names, underlay routing through
    rr, endpoint addressing, and ports attached to bridges evpnd creates late."""
    monkeypatch.setattr(program, "evpnd_command", fake_evpnd_command)
    path = REPO / "containerlab" / lab_file
    topo = topology.load(path)
    assert labstate.load(topo.name) is None, f"{topo.name} is already up"

    def run(node: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return realize.run_in_node(node, argv, lab=topo.name)

    try:
        report = realize.up(path)
        assert "evpnd:latest -> " in report.render()
        assert sorted(lab_namespaces(topo.name)) == sorted(topo.netns_name(n) for n in topo.nodes)
        vteps = {n: f"10.0.{n[-1]}.2" for n in topo.nodes if n[:-1] in ("host", "vtep")}
        for name in vteps:
            bridges = {"eth2": "br100", "eth3": "br100"}
            if name in ("host1", "host2"):
                bridges["eth4"] = "br200"
            for port, bridge in bridges.items():
                shown = run(name, ["ip", "-o", "link", "show", port]).stdout
                assert f"master {bridge} " in shown and "state UP" in shown, (name, shown)
        # The underlay: every VTEP reaches every other through rr.
        first, *others = vteps
        for other in others:
            ping = run(first, ["ping", "-c", "1", "-W", "2", vteps[other]])
            assert ping.returncode == 0, f"{first} -> {other}: {ping.stdout}"
        shown = run("h1e1", ["ip", "-o", "addr", "show", "eth1"]).stdout
        assert "10.100.0.11/24" in shown
        assert "02:00:00:00:01:01" in run("h1e1", ["ip", "link"]).stdout
        if "vtep3" in topo.nodes:

            def vtep3_up() -> bool:
                out = run("rr", ["vtysh", "-c", "show bgp l2vpn evpn summary json"]).stdout
                peers = json.loads(out or "{}").get("peers", {})
                return peers.get("10.0.3.2", {}).get("state") == "Established"

            wait_for("rr's session with the FRR VTEP vtep3", vtep3_up)
    finally:
        realize.down(path)
    assert lab_namespaces(topo.name) == []
