"""The README's quickstart, followed as written, in network namespaces of the test's own.

The three files come from the README (tests/quickstart.py reads the blocks its
`<!-- quickstart-file: ... -->` comments mark) and are used as they are:

  rr       host FRR 8.4.4 (the lab's stand-in for an FRR router, evpnd/lab/frr.py) with
           the README's frr.conf and a daemons file with bgpd=yes (step 1 says so)
  hostA/B  `evpnd run` with the README's evpnd.yaml; eth0 on the underlay holds the
           address the file names
  vm1/vm2  an endpoint behind each host, attached with step 4's command

The one change to the files: a `state_dir:` line for each host. Two hosts on one
machine share /run, and evpnd runs one daemon per state directory, so the default
(/run/evpnd) cannot serve both. The addresses are the README's: they exist only in
the test's namespaces, joined by a bridge in a namespace of their own (the
underlay switch).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from evpnd import config, netns
from evpnd.lab import frr, program
from tests.conftest import REPO, require_program, require_root
from tests.netns.fabric import FRR_LAB_NEEDS, wait_for
from tests.quickstart import attach_command, quickstart_files

pytestmark = pytest.mark.netns

PREFIX = 24  # the README's underlay, 192.0.2.0/24
UNDERLAY_DEVICE = "eth0"  # vtep.device in the README's files
VNI_BRIDGE, VNI_VXLAN = "br100", "vxlan100"
ENDPOINT_MTU = 1450  # the README: 1450 on a 1500-byte underlay
# The README's picture: (host, endpoint port on the host, endpoint address).
ENDPOINTS = {"hostA": ("vm1", "10.100.0.11"), "hostB": ("vm2", "10.100.0.12")}
CONVERGE = 60.0  # seconds: a BGP session with FRR's default timers, then the routes


@dataclass
class Host:
    name: str
    netns: str
    config: Path  # the README's file plus the state_dir line
    cfg: config.Config
    endpoint_netns: str
    endpoint_mac: str = ""


@dataclass
class Quickstart:
    hosts: list[Host]  # host A, host B
    vty_dir: Path  # the route reflector's vtysh socket directory


def ip(namespace: str, *args: str) -> None:
    done = subprocess.run(["ip", "-n", namespace, *args], capture_output=True, text=True,
                          timeout=10)  # fmt: skip
    assert done.returncode == 0, (namespace, args, done.stderr)


def show(host: Host, view: str) -> dict:
    """`evpnd show VIEW --json -c FILE`, as an operator on the host would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "evpnd", "show", view, "--json", "-c", str(host.config)],
        capture_output=True, text=True, timeout=20, cwd=REPO,
    )  # fmt: skip
    return json.loads(done.stdout) if done.returncode == 0 else {}


def fdb(host: Host) -> list[dict]:
    out = netns.run(host.netns, ["bridge", "-j", "fdb", "show", "dev", VNI_VXLAN], check=False)
    return json.loads(out.stdout or "[]") if out.returncode == 0 else []


def mac_of(namespace: str, device: str) -> str:
    out = netns.run(namespace, ["ip", "-j", "link", "show", device]).stdout
    return json.loads(out)[0]["address"]


@contextlib.contextmanager
def frr_dir() -> Iterator[Path]:
    """A directory FRR's daemons can read after dropping to user frr (/tmp's may not be)."""
    base = Path(tempfile.mkdtemp(prefix="evpnd-quickstart-", dir="/run"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def quickstart(tmp_path: Path) -> Iterator[Quickstart]:
    """The quickstart's machines, up as the README sets them up; all removed after."""
    require_root()
    for program_name, package in FRR_LAB_NEEDS:
        require_program(program_name, package)
    files = quickstart_files()
    created: list[str] = []

    def namespace(role: str) -> str:
        name = netns.create(netns.unique_name(f"evq{role}"))
        created.append(name)
        return name

    with contextlib.ExitStack() as stack:
        stack.callback(lambda: [netns.remove(n) for n in reversed(created)])
        switch = namespace("sw")
        ip(switch, "link", "add", "underlay", "type", "bridge")
        ip(switch, "link", "set", "underlay", "up")

        def plug(node: str, address: IPv4Address, port: str) -> None:
            ip(switch, "link", "add", port, "type", "veth", "peer", "name", UNDERLAY_DEVICE,
               "netns", node)  # fmt: skip
            ip(switch, "link", "set", port, "master", "underlay", "up")
            ip(node, "addr", "add", f"{address}/{PREFIX}", "dev", UNDERLAY_DEVICE)
            ip(node, "link", "set", UNDERLAY_DEVICE, "up")

        # The hosts' files, as the README gives them, with their state_dir.
        hosts: dict[str, Host] = {}
        for name in ENDPOINTS:
            text = files[f"{name}/evpnd.yaml"]
            assert "state_dir" not in text  # the line below must not give the key twice
            path = tmp_path / name / "evpnd.yaml"
            path.parent.mkdir()
            path.write_text(text + f"state_dir: {tmp_path / name / 'state'}\n")
            cfg = config.load(path)
            assert cfg.vtep.device == UNDERLAY_DEVICE
            hosts[name] = Host(name, namespace(name[-1].lower()), path, cfg, namespace(
                f"e{name[-1].lower()}"))  # fmt: skip
        [rr_address] = {peer.address for h in hosts.values() for peer in h.cfg.bgp.peers}

        # Step 1: the route reflector.
        rr = namespace("rr")
        plug(rr, rr_address, "p-rr")
        runtime = stack.enter_context(frr_dir()) / "rr"
        frr.prepare_runtime_dir(runtime)
        (runtime / "frr.conf").write_text(files["rr/frr.conf"])
        (runtime / "daemons").write_text("bgpd=yes\n")
        node = frr.FrrNode(pathspace=rr, runtime_dir=runtime, config=runtime / "frr.conf",
                           daemons=frr.parse_daemons((runtime / "daemons").read_text()))
        assert frr.check_config(node.config) is None, "vtysh refuses the README's frr.conf"
        assert frr.readable_by_frr(node.config)
        stack.callback(lambda: shutil.rmtree(frr.pathspace_dir(rr), ignore_errors=True))
        frr.start(rr, node)

        # Steps 2 and 3: each host's underlay, then `evpnd run`.
        for host in hosts.values():
            plug(host.netns, host.cfg.vtep.address, f"p-{host.name}")
            program.start_evpnd(host.netns, host.config, host.config.parent)
        # Step 4: an endpoint behind each host, its port attached to br100 by the README's
        # command (for host B with its own port's name).
        readme_port, command = attach_command()
        for host in hosts.values():
            port, address = ENDPOINTS[host.name]
            wait_for(f"{host.name}'s {VNI_BRIDGE}", lambda h=host: netns.run(
                h.netns, ["ip", "link", "show", VNI_BRIDGE], check=False).returncode == 0,
                timeout=CONVERGE, explain=lambda h=host: log_tail(h))  # fmt: skip
            ip(host.netns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
               "netns", host.endpoint_netns)  # fmt: skip
            ip(host.endpoint_netns, "link", "set", "eth0", "mtu", str(ENDPOINT_MTU), "up")
            ip(host.endpoint_netns, "addr", "add", f"{address}/24", "dev", "eth0")
            netns.run(host.netns, shlex.split(command.replace(readme_port, port)))
            host.endpoint_mac = mac_of(host.endpoint_netns, "eth0")
        yield Quickstart(list(hosts.values()), runtime)


def log_tail(host: Host, lines: int = 15) -> str:
    try:
        text = (host.config.parent / "evpnd.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def established(host: Host) -> bool:
    peers = show(host, "peers").get("peers", [])
    return bool(peers) and all(p["state"] == "established" for p in peers)


def test_the_readme_quickstart_works_as_written(tmp_path: Path) -> None:
    with quickstart(tmp_path) as lab:
        hosts = lab.hosts
        for host in hosts:
            wait_for(f"{host.name}'s session with the route reflector",
                     lambda h=host: established(h), timeout=CONVERGE,
                     explain=lambda h=host: log_tail(h))  # fmt: skip

        # Step 5: each endpoint pings the other across the overlay.
        for host, other in (hosts, hosts[::-1]):
            address = ENDPOINTS[other.name][1]
            wait_for(f"{host.name}'s endpoint pinging {address}", lambda h=host, a=address:
                     netns.run(h.endpoint_netns, ["ping", "-c", "2", "-W", "1", "-i", "0.2", a],
                               check=False).returncode == 0,
                     timeout=CONVERGE, explain=lambda h=host: log_tail(h))  # fmt: skip

        # ... through EVPN: each host installed the other's endpoint towards its VTEP.
        for host, other in (hosts, hosts[::-1]):
            vtep = str(other.cfg.vtep.address)

            def installed(h: Host = host, mac: str = other.endpoint_mac, dst: str = vtep) -> bool:
                return any(e["mac"] == mac and e.get("dst") == dst
                           and "extern_learn" in e.get("flags", []) for e in fdb(h))  # fmt: skip

            wait_for(f"{host.name}: {other.endpoint_mac} towards {vtep}", installed,
                     timeout=CONVERGE, explain=lambda h=host: json.dumps(fdb(h)))  # fmt: skip
            vnis = show(host, "vni")["vnis"]
            assert [(v["vni"], v["vteps"]) for v in vnis] == [(100, [vtep])], vnis

        # The route reflector holds and reflects both hosts' routes (their RDs: auto).
        out = subprocess.run(frr.vtysh_command(["-c", "show bgp l2vpn evpn"], lab.vty_dir),
                             capture_output=True, text=True, timeout=20).stdout  # fmt: skip
        for host in hosts:
            assert f"Route Distinguisher: {host.cfg.router_id}:100" in out, out
