"""Two Docker hosts over EVPN: container to container across host1 and host2.

The layout (containerlab/evpn-docker2.clab.yml realized in network namespaces
by `evpnd lab up`): an FRR route reflector `rr`; `host1` and `host2`, each
running `evpnd run` with docker.enabled (no VNI in their config files) and a
private dockerd started by this module in the host's namespace, its API
socket where that host's evpnd reads it (`docker.dockerd_socket`). dockerd
finds each host's driver through a spec file (`evpn-h1`, `evpn-h2`: one
machine's /etc/docker/plugins holds both).

On both hosts the same network: `-d evpn-hN --ipam-driver evpn-hN --subnet
10.40.0.0/24 -o VxlanId=4000 -o gateway=local`, flooded by EVPN (no group,
learning off). Tests run in order on one lab and one dockerd per host.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from evpnd import netns
from evpnd.docker import ipam
from evpnd.docker.driver import host_if
from evpnd.docker.server import write_spec
from evpnd.lab import program, topology
from evpnd.lab import state as labstate
from tests.conftest import REPO
from tests.docker.conftest import SPEC_DIR, Dockerd, import_image, launch_dockerd
from tests.netns.fabric import FRR_LAB_NEEDS, Fabric, T, running_lab
from tests.netns.fabric import wait_for as poll

pytestmark = [pytest.mark.docker, pytest.mark.netns]

LAB = "evpn-docker2"
LAB_FILE = REPO / "containerlab" / f"{LAB}.clab.yml"
FABRIC = Fabric(LAB)
VNI = 4000
NET = "ov"
SUBNET = "10.40.0.0/24"
GATEWAY = "10.40.0.1"  # the evpn IPAM's: the subnet's first host address, on every host
FLOOD = "00:00:00:00:00:00"
WAIT = 30.0


@dataclass
class Host:
    node: str
    plugin: str
    vtep: str
    dockerd: Dockerd | None = None

    @property
    def dir(self) -> Path:
        return Path(f"/run/evpnd/{LAB}-{self.node}")  # its state_dir, as in its evpnd.yaml

    @property
    def config(self) -> Path:
        return REPO / "containerlab" / "configs" / LAB / self.node / "evpnd.yaml"

    @property
    def netns(self) -> str:
        return topology.load(LAB_FILE).netns_name(self.node)

    @property
    def docker(self) -> Dockerd:
        assert self.dockerd is not None
        return self.dockerd

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        done = FABRIC.run(self.node, argv, timeout=60)
        if check:
            assert done.returncode == 0, (self.node, argv, done.stdout, done.stderr)
        return done

    def fdb(self) -> dict[str, list[str]]:
        """MAC -> VTEPs of the entries with a destination on vxlan4000."""
        table: dict[str, list[str]] = {}
        for entry in FABRIC.fdb(self.node, f"vxlan{VNI}"):
            if "dst" in entry:
                table.setdefault(entry["mac"], []).append(entry["dst"])
        return table

    def neighbours(self) -> dict[str, str]:
        """IP -> MAC of br4000's neighbour table."""
        out = self.run(["ip", "-j", "neigh", "show", "dev", f"br{VNI}"], check=False)
        if out.returncode != 0 or not out.stdout.strip():
            return {}
        return {n["dst"]: n.get("lladdr", "") for n in json.loads(out.stdout)}

    def links(self) -> dict[str, dict[str, Any]]:
        return {link["ifname"]: link
                for link in json.loads(self.run(["ip", "-j", "link", "show"]).stdout)}

    def rx_packets(self, name: str) -> int:
        return int(self.run(["cat", f"/sys/class/net/{name}/statistics/rx_packets"]).stdout)

    def status(self) -> dict[str, Any]:
        """`evpnd show status --json` of this host's daemon: its Docker part."""
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "evpnd", "show",
                "status", "-c", str(self.config), "--json"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["docker"]

    def log(self) -> str:
        return (labstate.lab_dir(LAB) / self.node / "evpnd.log").read_text()

    def evpnd_pids(self) -> list[int]:
        found = []
        for pid in netns.pids_in(self.netns):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if b"evpnd run" in cmdline and stat != "Z":
                    found.append(pid)
        return found

    def endpoint(self, container: str) -> dict[str, Any]:
        return self.docker.inspect(container)[0]["NetworkSettings"]["Networks"][NET]

    def create_network(self) -> None:
        self.docker.run("network", "create", "-d", self.plugin, "--ipam-driver", self.plugin,
                        "--subnet", SUBNET, "-o", f"VxlanId={VNI}", "-o", "gateway=local", NET)


HOST1 = Host("host1", "evpn-h1", "10.0.1.2")
HOST2 = Host("host2", "evpn-h2", "10.0.2.2")
HOSTS = (HOST1, HOST2)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT) -> T:
    return poll(what, probe, timeout, interval=0.05, explain=explain)


def explain() -> str:
    return "\n".join(FABRIC.log_tail(h.node, lines=12) for h in HOSTS)


def ping(host: Host, container: str, address: str, count: int = 3) -> None:
    done = host.docker.run("exec", container, "ping", "-c", str(count), "-W", "2", address,
                           check=False)
    assert done.returncode == 0, (host.node, container, address, done.stdout + done.stderr)


# ---------------------------------------------------------------------------
# the lab, one dockerd per host and the image: one of each for the module


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[Host, Host]]:
    for host in HOSTS:
        shutil.rmtree(host.dir / "docker", ignore_errors=True)  # a previous run's networks
    needs = (*FRR_LAB_NEEDS, ("dockerd", "docker.io"), ("busybox", "busybox-static"))
    specs: list[Path] = []
    try:
        with running_lab(LAB_FILE, needs), contextlib.ExitStack() as stack:
            for host in HOSTS:
                specs.append(write_spec(SPEC_DIR, host.plugin,
                                        host.dir / "plugins" / f"{host.plugin}.sock"))
                host.dockerd = stack.enter_context(
                    launch_dockerd(host.netns, api_socket=host.dir / "dockerd.sock"))
            try:
                yield HOST1, HOST2
            finally:
                print(explain())  # shown when a test failed
                # Through the drivers while evpnd still runs: they remove what they made.
                for host in HOSTS:
                    with contextlib.suppress(Exception):
                        ids = host.docker.run("ps", "-aq", check=False).stdout.split()
                        if ids:
                            host.docker.run("rm", "-f", *ids, check=False)
                        host.docker.run("network", "rm", NET, check=False)
    finally:
        for spec in specs:
            spec.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            SPEC_DIR.rmdir()  # only when empty
        for host in HOSTS:
            host.dockerd = None
            shutil.rmtree(host.dir / "docker", ignore_errors=True)


@pytest.fixture(scope="module")
def image(lab: tuple[Host, Host]) -> str:
    names = {import_image(host.docker) for host in lab}
    assert len(names) == 1
    return names.pop()


# ---------------------------------------------------------------------------


def test_the_network_on_both_hosts_floods_by_evpn(lab: tuple[Host, Host]) -> None:
    for host in lab:
        host.create_network()
    # The Type-3s both ways: head-end replication towards the other VTEP.
    wait_for("host2's flood entry towards host1", lambda: HOST1.vtep in HOST2.fdb().get(FLOOD, []))
    wait_for("host1's flood entry towards host2", lambda: HOST2.vtep in HOST1.fdb().get(FLOOD, []))
    for host in lab:
        details = json.loads(host.run(["ip", "-d", "-j", "link", "show", f"vxlan{VNI}"]).stdout)
        info = details[0]["linkinfo"]["info_data"]
        assert not info.get("learning") and "group" not in info, (host.node, info)
        status = host.status()
        assert status["networks"] == 1 and status["ipam_pools"] == 1
        # The state directories were empty at start: each evpnd asked its dockerd (which
        # the tests start after the lab) until it answered.
        wait_for(f"{host.node}'s rebuild from dockerd",
                 lambda: host.status()["rebuild_pending"] is False)  # noqa: B023


def test_containers_are_known_on_the_other_host_before_they_send_and_ping_both_ways(
    lab: tuple[Host, Host], image: str
) -> None:
    seen: dict[str, dict[str, Any]] = {}
    for host, other, name in ((HOST1, HOST2, "a1"), (HOST2, HOST1, "b1")):
        started = time.monotonic()
        host.docker.run("run", "-d", "--name", name, "--network", NET, image, "sleep", "3600")
        returned = time.monotonic() - started
        ep = host.endpoint(name)
        mac, ip, port = ep["MacAddress"], ep["IPAddress"], host_if(ep["EndpointID"])
        wait_for(f"{name}'s MAC in {other.node}'s FDB",
                 lambda: other.fdb().get(mac) == [host.vtep])  # noqa: B023
        wait_for(f"{name}'s IP in {other.node}'s neighbour table",
                 lambda: other.neighbours().get(ip) == mac)  # noqa: B023
        installed = time.monotonic() - started
        assert host.rx_packets(port) == 0, f"{name} sent traffic before {other.node} knew it"
        assert ep["Gateway"] == GATEWAY
        seen[name] = ep
        print(f"\n{name} on {host.node} ({mac}, {ip}): `docker run` returned after "
              f"{returned:.2f}s; its MAC and IP in {other.node}'s FDB and neighbour table "
              f"{installed:.2f}s after `docker run` started, before {name} sent a packet")
    # Addresses from the IPAM: different, in blocks of different hosts.
    a1, b1 = ip_address(seen["a1"]["IPAddress"]), ip_address(seen["b1"]["IPAddress"])
    layout = ipam.blocks(ip_network(SUBNET))
    assert a1 != b1 and layout.of(a1) != layout.of(b1)
    # Across the overlay, both ways; each container reaches its own host's gateway.
    ping(HOST1, "a1", str(b1))
    ping(HOST2, "b1", str(a1))
    ping(HOST1, "a1", GATEWAY, count=1)
    ping(HOST2, "b1", GATEWAY, count=1)
    # The bridges learning the containers from their pings changed nothing remotely.
    assert HOST2.fdb().get(seen["a1"]["MacAddress"]) == [HOST1.vtep]
    assert HOST1.fdb().get(seen["b1"]["MacAddress"]) == [HOST2.vtep]
    assert HOST1.log().count('"local mac (docker)"') == 1, "a1 advertised more than once"


def test_an_address_in_use_on_the_other_host_is_refused_at_container_start(
    lab: tuple[Host, Host], image: str
) -> None:
    a1 = HOST1.endpoint("a1")
    # By hand on host2, the address host1's a1 has: the IPAM refuses it (RequestAddress).
    done = HOST2.docker.run("run", "-d", "--name", "dup", "--network", NET, "--ip",
                            a1["IPAddress"], image, "sleep", "600", check=False)
    HOST2.docker.run("rm", "-f", "dup", check=False)
    assert done.returncode != 0
    assert f"evpnd: {a1['IPAddress']} is in use on VNI {VNI}: {a1['IPAddress']} " \
           f"({a1['MacAddress']}) at VTEP {HOST1.vtep}" in done.stderr, done.stderr
    # a1's MAC given by hand with another address: the network driver refuses it.
    done = HOST2.docker.run("run", "-d", "--name", "dupmac", "--network", NET,
                            "--mac-address", a1["MacAddress"], image, "sleep", "600",
                            check=False)
    HOST2.docker.run("rm", "-f", "dupmac", check=False)
    assert done.returncode != 0
    assert f"MAC {a1['MacAddress']} at VTEP {HOST1.vtep}" in done.stderr, done.stderr
    status = HOST2.status()
    assert status["counters"]["refused_collision"] == 2 and status["endpoints"] == 1
    # Never installed: host1 still has only its own a1 there, and a1 still works.
    assert HOST1.fdb().get(a1["MacAddress"]) is None
    ping(HOST1, "a1", HOST2.endpoint("b1")["IPAddress"], count=1)


def test_a_collision_that_got_through_is_detected_logged_counted_and_shown(
    lab: tuple[Host, Host], image: str
) -> None:
    """host1 cut off from the route reflector while both hosts start a container with the
    same address: neither could know. Once the routes flow, both hosts say so."""
    address = "10.40.0.250"
    # The route reflector's side goes down: host1 keeps its addresses and routes.
    FABRIC.run("rr", ["ip", "link", "set", "eth1", "down"])
    try:
        HOST1.docker.run("run", "-d", "--name", "c9", "--network", NET, "--ip", address,
                         image, "sleep", "600")
        HOST2.docker.run("run", "-d", "--name", "d9", "--network", NET, "--ip", address,
                         "--mac-address", "02:aa:0a:28:00:fa", image, "sleep", "600")
    finally:
        FABRIC.run("rr", ["ip", "link", "set", "eth1", "up"])
    for host, other in ((HOST1, HOST2), (HOST2, HOST1)):
        status = wait_for(f"{host.node} to show the collision", lambda: (
            s := host.status())["collisions"] and s, timeout=60)  # noqa: B023
        [line] = status["collisions"]
        assert f"{address} " in line and f"at VTEP {other.vtep}" in line, line
        assert status["counters"]["collisions_detected"] == 1
        assert "docker container's address is also advertised by another VTEP" in host.log()
    text = subprocess.run(["ip", "netns", "exec", HOST2.netns, sys.executable, "-m", "evpnd",
                           "show", "status", "-c", str(HOST2.config)],
                          capture_output=True, text=True, timeout=30).stdout
    assert "address collisions" in text and f"at VTEP {HOST1.vtep}" in text, text
    HOST1.docker.run("rm", "-f", "c9")
    HOST2.docker.run("rm", "-f", "d9")
    for host in lab:
        wait_for(f"{host.node}'s collision to end", lambda: not host.status()[  # noqa: B023
            "collisions"])


def _pinger(host: Host, container: str, target: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [host.docker.client, "-H", host.docker.host, "exec", container, "ping", "-i", "0.1",
         "-W", "1", "-c", str(count), target],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_an_evpnd_hand_over_on_either_host_loses_no_ping(
    lab: tuple[Host, Host], image: str
) -> None:
    b1 = HOST2.endpoint("b1")["IPAddress"]
    for host in lab:
        (old,) = host.evpnd_pids()
        count = 150  # 15 s at 10/s
        pinger = _pinger(HOST1, "a1", b1, count)
        try:
            time.sleep(1)
            stopped_at = time.monotonic()
            os.kill(old, signal.SIGTERM)
            wait_for(f"{host.node}'s evpnd to exit after SIGTERM",
                     lambda: old not in host.evpnd_pids())  # noqa: B023
            stopped = time.monotonic() - stopped_at
            program.start_evpnd(host.netns, host.config, labstate.lab_dir(LAB) / host.node)
            out, _ = pinger.communicate(timeout=count * 0.1 + 30)
        finally:
            if pinger.poll() is None:
                pinger.kill()
                pinger.wait()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(old, os.WNOHANG)
        summary = next((line for line in out.splitlines() if "packets transmitted" in line),
                       out)
        print(f"\n{host.node}'s evpnd handed over (exited {stopped:.1f}s after SIGTERM) under "
              f"a1 -> b1 ping: {summary}")
        assert f"{count} packets transmitted, {count} packets received" in summary, out
        serving = [json.loads(line) for line in host.log().splitlines()
                   if '"docker network driver serving"' in line]
        assert serving[-1]["networks"] == 1 and serving[-1]["endpoints"] == 1, serving
    # Both still take Docker calls after their hand-over.
    HOST2.docker.run("run", "-d", "--name", "b2", "--network", NET, image, "sleep", "3600")
    ping(HOST2, "b2", HOST1.endpoint("a1")["IPAddress"], count=1)


def test_network_rm_on_one_host_leaves_the_other_hosts_containers_working(
    lab: tuple[Host, Host], image: str
) -> None:
    a1 = HOST1.endpoint("a1")
    b1, b2 = HOST2.endpoint("b1")["IPAddress"], HOST2.endpoint("b2")["IPAddress"]
    HOST1.docker.run("rm", "-f", "a1")
    HOST1.docker.run("network", "rm", NET)
    assert not {f"br{VNI}", f"vxlan{VNI}"} & set(HOST1.links())
    # host2: nothing towards host1 is left, its own network and containers are untouched.
    wait_for("host2's entries towards host1 to go",
             lambda: not [m for m, vteps in HOST2.fdb().items() if HOST1.vtep in vteps])
    assert a1["IPAddress"] not in HOST2.neighbours()
    assert {f"br{VNI}", f"vxlan{VNI}"} <= set(HOST2.links())
    ping(HOST2, "b1", b2)
    ping(HOST2, "b2", GATEWAY, count=1)
    # host1 joins again: host2's containers were advertised all along.
    HOST1.create_network()
    HOST1.docker.run("run", "-d", "--name", "a2", "--network", NET, image, "sleep", "3600")
    ping(HOST1, "a2", b1)
    ping(HOST2, "b2", HOST1.endpoint("a2")["IPAddress"], count=1)
