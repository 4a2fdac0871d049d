"""Docker networks on a BGP EVPN fabric: `evpnd run` with docker.enabled and a real dockerd.

The layout (containerlab/evpn-docker.clab.yml realized in network namespaces by
`evpnd lab up`): an FRR route reflector `rr`; `host1`, a Docker host: evpnd
(no VNI in its config file) and a private dockerd started by this module in
host1's namespace; `host2`, an evpnd host with VNI 3000 in its config file and
an endpoint `h2e1` (10.30.0.21) on br3000. dockerd finds host1's driver through
/etc/docker/plugins/evpnlab.spec (written here, removed after).

The Docker network floods by EVPN (no multicast group, learning off): BUM
traffic reaches host2 only through the Type-3 routes, and host2 knows the
containers only from their Type-2 routes. Tests run in order on one lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evpnd.docker.driver import gateway_mac, host_if
from evpnd.docker.server import write_spec
from evpnd.lab import program, topology
from evpnd.lab import state as labstate
from tests.conftest import REPO
from tests.docker.conftest import SPEC_DIR, Dockerd, import_image, launch_dockerd
from tests.netns.fabric import FRR_LAB_NEEDS, Fabric, T, running_lab
from tests.netns.fabric import wait_for as poll

pytestmark = [pytest.mark.docker, pytest.mark.netns]

LAB = "evpn-docker"
LAB_FILE = REPO / "containerlab" / f"{LAB}.clab.yml"
FABRIC = Fabric(LAB)
PLUGIN = "evpnlab"
HOST1_DIR = Path(f"/run/evpnd/{LAB}-host1")  # host1's state_dir, as in its evpnd.yaml
SOCKET = HOST1_DIR / "plugins" / f"{PLUGIN}.sock"
DOCKER_STATE = HOST1_DIR / "docker"
DOCKERD_SOCKET = HOST1_DIR / "dockerd.sock"  # host1's docker.dockerd_socket
VTEP1, VTEP2 = "10.0.1.2", "10.0.2.2"
VNI = 3000
NET = "ov"
SUBNET, IP_RANGE, GATEWAY = "10.30.0.0/24", "10.30.0.128/25", "10.30.0.1"
H2E1 = ("10.30.0.21", "02:00:00:00:02:01")
FLOOD = "00:00:00:00:00:00"
WAIT = 30.0


# ---------------------------------------------------------------------------
# helpers


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    return poll(what, probe, timeout, interval=0.1, explain=explain)


def explain() -> str:
    return "\n".join([FABRIC.log_tail("host1", lines=15), FABRIC.log_tail("host2", lines=8)])


def run(node: str, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = FABRIC.run(node, argv, timeout=60)
    if check:
        assert done.returncode == 0, (node, argv, done.stdout, done.stderr)
    return done


def fdb(node: str) -> dict[str, list[str]]:
    """MAC -> VTEPs of the entries with a destination on vxlan3000."""
    table: dict[str, list[str]] = {}
    for entry in FABRIC.fdb(node, f"vxlan{VNI}"):
        if "dst" in entry:
            table.setdefault(entry["mac"], []).append(entry["dst"])
    return table


def neighbours(node: str) -> dict[str, str]:
    """IP -> MAC of br3000's neighbour table (the ARP suppression entries)."""
    out = run(node, ["ip", "-j", "neigh", "show", "dev", f"br{VNI}"], check=False)
    if out.returncode != 0 or not out.stdout.strip():
        return {}
    return {n["dst"]: n.get("lladdr", "") for n in json.loads(out.stdout)}


def links(node: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link
            for link in json.loads(run(node, ["ip", "-j", "link", "show"]).stdout)}


def rx_packets(node: str, name: str) -> int:
    return int(run(node, ["cat", f"/sys/class/net/{name}/statistics/rx_packets"]).stdout)


def endpoint(dockerd: Dockerd, container: str) -> dict[str, Any]:
    """The container's endpoint on NET: EndpointID, IPAddress, MacAddress..."""
    return dockerd.inspect(container)[0]["NetworkSettings"]["Networks"][NET]


def evpnd_pids() -> list[int]:
    from evpnd import netns

    found = []
    for pid in netns.pids_in(topology.load(LAB_FILE).netns_name("host1")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "evpnd run" in cmdline and stat != "Z":
                found.append(pid)
    return found


def show_vni() -> list[dict[str, Any]]:
    import sys

    config = REPO / "containerlab" / "configs" / LAB / "host1" / "evpnd.yaml"
    argv = ["ip", "netns", "exec", topology.load(LAB_FILE).netns_name("host1"), sys.executable,
            "-m", "evpnd", "show", "vni", "-c", str(config), "--json"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    return data["vnis"] if isinstance(data, dict) else data


# ---------------------------------------------------------------------------
# the lab, host1's dockerd and the image: one of each for the module


@pytest.fixture(scope="module")
def lab() -> Iterator[Dockerd]:
    shutil.rmtree(DOCKER_STATE, ignore_errors=True)  # a previous run's networks
    needs = (*FRR_LAB_NEEDS, ("dockerd", "docker.io"), ("busybox", "busybox-static"))
    spec = None
    try:
        with running_lab(LAB_FILE, needs):
            spec = write_spec(SPEC_DIR, PLUGIN, SOCKET)
            ns1 = topology.load(LAB_FILE).netns_name("host1")
            with launch_dockerd(ns1, api_socket=DOCKERD_SOCKET) as dockerd:
                try:
                    yield dockerd
                finally:
                    print(explain())  # shown when a test failed
                    # Through the driver while evpnd still runs: it removes what it made.
                    with contextlib.suppress(Exception):
                        ids = dockerd.run("ps", "-aq", check=False).stdout.split()
                        if ids:
                            dockerd.run("rm", "-f", *ids, check=False)
                        dockerd.run("network", "rm", NET, check=False)
    finally:
        if spec is not None:
            spec.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                SPEC_DIR.rmdir()  # only when empty
        shutil.rmtree(DOCKER_STATE, ignore_errors=True)


@pytest.fixture(scope="module")
def image(lab: Dockerd) -> str:
    return import_image(lab)


def create_network(dockerd: Dockerd) -> None:
    dockerd.run("network", "create", "-d", PLUGIN, "--subnet", SUBNET, "--ip-range", IP_RANGE,
                "--gateway", GATEWAY, "-o", f"VxlanId={VNI}", "-o", "gateway=local", NET)


# ---------------------------------------------------------------------------


def test_container_is_advertised_before_it_sends_and_reaches_host2(
    lab: Dockerd, image: str
) -> None:
    dockerd = lab
    create_network(dockerd)
    # The network is a VNI of host1: Type-3 both ways (EVPN flooding, no group).
    wait_for("host2's flood entry towards host1", lambda: VTEP1 in fdb("host2").get(FLOOD, []))
    wait_for("host1's flood entry towards host2", lambda: VTEP2 in fdb("host1").get(FLOOD, []))
    vxlan = links("host1")[f"vxlan{VNI}"]
    assert vxlan["master"] == f"br{VNI}"
    details = json.loads(run("host1", ["ip", "-d", "-j", "link", "show", f"vxlan{VNI}"]).stdout)
    info = details[0]["linkinfo"]["info_data"]
    assert not info.get("learning") and "group" not in info, info
    # gateway=local: the gateway MAC+IP reaches host2 (default-gateway route, static).
    gw = gateway_mac(VNI)
    wait_for("the gateway MAC in host2's FDB", lambda: fdb("host2").get(gw) == [VTEP1])
    wait_for("the gateway IP in host2's neighbour table",
             lambda: neighbours("host2").get(GATEWAY) == gw)

    # The container sleeps first: it sends nothing until we ping from it.
    started = time.monotonic()
    dockerd.run("run", "-d", "--name", "c1", "--network", NET, image, "sleep", "3600")
    returned = time.monotonic() - started
    ep = endpoint(dockerd, "c1")
    mac, ip, port = ep["MacAddress"], ep["IPAddress"], host_if(ep["EndpointID"])
    wait_for("c1's MAC in host2's FDB", lambda: fdb("host2").get(mac) == [VTEP1])
    wait_for("c1's IP in host2's neighbour table", lambda: neighbours("host2").get(ip) == mac)
    seen = time.monotonic() - started
    assert rx_packets("host1", port) == 0, "c1 sent traffic before host2 knew it"
    print(f"\nc1 ({mac}, {ip}): `docker run` returned after {returned:.2f}s; its MAC and "
          f"IP in host2's FDB/neighbour table {seen:.2f}s after `docker run` started, "
          "before c1 sent a packet")

    # Across the overlay and back, both directions; and host2 reaches the gateway.
    ping = dockerd.run("exec", "c1", "ping", "-c", "3", "-W", "2", H2E1[0], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert run("h2e1", ["ping", "-c", "3", "-W", "2", ip], check=False).returncode == 0
    assert run("h2e1", ["ping", "-c", "2", "-W", "2", GATEWAY], check=False).returncode == 0
    # h2e1's MAC came by BGP (host2 learned it from h2e1's traffic): no flooding needed.
    assert fdb("host1").get(H2E1[1]) == [VTEP2]
    # The bridge learning c1's MAC now (its pings) changed nothing remotely: no flap.
    assert fdb("host2").get(mac) == [VTEP1]
    log = (labstate.lab_dir(LAB) / "host1" / "evpnd.log").read_text()
    assert log.count('"local mac (docker)"') == 1, "c1 advertised more than once"

    # `evpnd show vni` lists the Docker VNI like a configured one.
    assert VNI in [v["vni"] for v in show_vni()]


def test_restart_hand_over_keeps_the_container_connected_and_recovers(
    lab: Dockerd, image: str
) -> None:
    dockerd = lab
    ep = endpoint(dockerd, "c1")
    port = host_if(ep["EndpointID"])
    before = {n: links("host1")[n]["ifindex"] for n in (f"br{VNI}", f"vxlan{VNI}", port)}
    (old,) = evpnd_pids()
    count = 150  # 15 s at 10/s
    pinger = subprocess.Popen(
        [dockerd.client, "-H", dockerd.host, "exec", "c1", "ping", "-i", "0.1", "-W", "1",
         "-c", str(count), H2E1[0]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(1)
        stopped_at = time.monotonic()
        os.kill(old, signal.SIGTERM)
        wait_for("host1's evpnd to exit after SIGTERM", lambda: old not in evpnd_pids())
        stopped = time.monotonic() - stopped_at
        config = REPO / "containerlab" / "configs" / LAB / "host1" / "evpnd.yaml"
        program.start_evpnd(topology.load(LAB_FILE).netns_name("host1"), config,
                            labstate.lab_dir(LAB) / "host1")
        out, _ = pinger.communicate(timeout=count * 0.1 + 30)
    finally:
        if pinger.poll() is None:
            pinger.kill()
            pinger.wait()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(old, os.WNOHANG)
    summary = next((line for line in out.splitlines() if "packets transmitted" in line), out)
    print(f"\nhost1's evpnd restarted (exited {stopped:.1f}s after SIGTERM) under c1 -> h2e1 "
          f"ping: {summary}")
    assert f"{count} packets transmitted, {count} packets received" in summary, out

    # The kernel was not touched, the driver recovered the network and the endpoint.
    assert {n: links("host1")[n]["ifindex"] for n in before} == before
    log = (labstate.lab_dir(LAB) / "host1" / "evpnd.log").read_text().splitlines()
    serving = [json.loads(line) for line in log if '"docker network driver serving"' in line]
    assert serving and serving[-1]["networks"] == 1 and serving[-1]["endpoints"] == 1, serving
    assert VNI in [v["vni"] for v in show_vni()]
    # The next Docker call works: a second container, advertised and reachable.
    dockerd.run("run", "-d", "--name", "c2", "--network", NET, image, "sleep", "3600")
    ep2 = endpoint(dockerd, "c2")
    wait_for("c2's MAC in host2's FDB", lambda: fdb("host2").get(ep2["MacAddress"]) == [VTEP1])
    ping = dockerd.run("exec", "c2", "ping", "-c", "2", "-W", "2", H2E1[0], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # c1 is still advertised once the new evpnd has pruned what it does not want.
    wait_for("host1's new evpnd to converge",
             lambda: "converged" in (labstate.lab_dir(LAB) / "host1" / "evpnd.log").read_text()
             .split('"docker network driver serving"')[-1], timeout=90)
    time.sleep(1)
    assert fdb("host2").get(ep["MacAddress"]) == [VTEP1]
    assert neighbours("host2").get(ep["IPAddress"]) == ep["MacAddress"]


def test_network_rm_cleans_everything(lab: Dockerd) -> None:
    dockerd = lab
    macs = [endpoint(dockerd, c)["MacAddress"] for c in ("c1", "c2")]
    ips = [endpoint(dockerd, c)["IPAddress"] for c in ("c1", "c2")]
    dockerd.run("rm", "-f", "c1", "c2")
    wait_for("the containers' MACs to leave host2's FDB",
             lambda: not set(macs) & set(fdb("host2")))
    assert not set(ips) & set(neighbours("host2"))
    dockerd.run("network", "rm", NET)
    names = set(links("host1"))
    assert not {f"br{VNI}", f"vxlan{VNI}"} & names, names
    assert not [n for n in names if n.startswith(("evh", "evc"))], names
    # host2: nothing towards host1 is left (gateway withdrawn, Type-3 withdrawn).
    wait_for("host2's entries towards host1 to go",
             lambda: not [m for m, vteps in fdb("host2").items() if VTEP1 in vteps])
    assert GATEWAY not in neighbours("host2")
    assert VNI not in [v["vni"] for v in show_vni()]
    state = json.loads((DOCKER_STATE / f"docker-{PLUGIN}.json").read_text())
    assert state["networks"] == [] and state["endpoints"] == []
    # The route reflector holds no route of host1 in VNI 3000 any more.
    rr = json.loads(run("rr", ["vtysh", "-c", "show bgp l2vpn evpn json"]).stdout or "{}")
    host1_rds = [rd for rd in rr if isinstance(rr[rd], dict) and rd.startswith(f"{VTEP1}:")]
    assert host1_rds == [], host1_rds

