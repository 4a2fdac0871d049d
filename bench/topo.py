"""Namespaces for the benchmarks: one L2 segment (a hub bridge), FRR and evpnd nodes.

Every namespace is named `evb-<token>-<node>`; a Lab removes all of them (and
so every process started inside them: ours), its FRR run directories and its
temporary files on close, also from atexit. Underlay addresses are TEST-NET-1
(192.0.2.0/24), the source's VTEPs TEST-NET-2 (198.51.100.0/24).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evpnd import netns

REPO = Path(__file__).resolve().parent.parent
ASN = 65000
VNI = 100
FRR_RUN = Path("/var/run/frr")
VTEP_NET = "198.51.100.0/24"


def program(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/lib/frr/{name}", f"/usr/sbin/{name}") if os.path.exists(p)), None)
    if path is None:
        raise SystemExit(f"{name} not found")
    return path


class BenchError(RuntimeError):
    pass


class Lines:
    """A child process's stdout, read by a thread into a queue; wait for a prefix."""

    def __init__(self, proc: subprocess.Popen[str], what: str) -> None:
        self.proc = proc
        self.what = what
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, prefix: str, timeout: float) -> list[str]:
        """Words of the first line starting with `prefix` (other lines are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.what}: no `{prefix}` within {timeout:.0f}s")
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise BenchError(f"{self.what} exited ({self.proc.poll()}) before `{prefix}`")
            if line.startswith(prefix):
                return line.split()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("quit")
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=3)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Watch(Lines):
    """bench.fdbwatch in a namespace."""

    def target(self, count: int, timeout: float,
               alive: Callable[[], str | None] | None = None) -> float:
        """Monotonic time the count reached `count`; `alive` names a dead daemon, if any."""
        self.send(f"target {count}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                return float(self.wait(f"reached {count} ", min(5.0, timeout))[2])
            except BenchError:
                dead = alive() if alive else None
                if dead or time.monotonic() > deadline:
                    self.send("count")
                    have = self.wait("count", 10)[1]
                    raise BenchError(f"{self.what}: {have} entries, not {count}"
                                     + (f" ({dead})" if dead else "")) from None


class Lab:
    def __init__(self, tag: str) -> None:
        self.token = secrets.token_hex(2)
        self.prefix = f"evb-{self.token}-"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self.frr_dirs: dict[str, Path] = {}
        self.dir = Path(tempfile.mkdtemp(prefix=f"evb-{tag}-"))
        self.dir.chmod(0o755)
        self.hub = self._namespace("hub")
        netns.run(self.hub, ["ip", "link", "add", "hub", "type", "bridge"])
        netns.run(self.hub, ["ip", "link", "set", "hub", "up"])
        self.addresses: dict[str, str] = {}
        atexit.register(self.close)
        # A SIGTERM (timeout, CI) must unwind through close() too, not just vanish.
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def ns(self, node: str) -> str:
        return self.prefix + node

    def _namespace(self, node: str) -> str:
        name = netns.create(self.ns(node))
        self.namespaces.append(name)
        return name

    def sh(self, node: str, *cmd: str, timeout: float = 120) -> str:
        return netns.run(self.ns(node), list(cmd), timeout=timeout).stdout

    def node(self, node: str, address: str) -> str:
        """A namespace with eth0 (address/24) on the hub; MTU 9000 leaves room for VXLAN."""
        ns = self._namespace(node)
        netns.run(self.hub, ["ip", "link", "add", node, "mtu", "9000", "type", "veth",
                             "peer", "name", "eth0", "mtu", "9000", "netns", ns])
        netns.run(self.hub, ["ip", "link", "set", node, "master", "hub", "up"])
        self.sh(node, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        self.sh(node, "ip", "link", "set", "eth0", "up")
        self.addresses[node] = address
        return ns

    def route_vteps(self, node: str, via: str) -> None:
        """The source's 40 VTEP addresses are reachable through it (FRR checks next hops)."""
        self.sh(node, "ip", "route", "add", VTEP_NET, "via", via)

    def endpoint(self, host: str, name: str, mac: str, address: str) -> str:
        """An endpoint namespace on host's br<VNI> (port `name`), overlay address/24."""
        ns = self._namespace(name)
        self.sh(host, "ip", "link", "add", name, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
        self.sh(host, "ip", "link", "set", name, "master", f"br{VNI}", "up")
        for cmd in (["ip", "link", "set", "eth0", "address", mac],
                    ["ip", "addr", "add", f"{address}/24", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "mtu", "1400", "up"]):
            netns.run(ns, cmd)
        return ns

    # --- FRR

    def vxlan_bridge(self, node: str) -> None:
        local = self.addresses[node]
        for cmd in (
            f"ip link add br{VNI} type bridge",
            f"ip link add vxlan{VNI} type vxlan id {VNI} dstport 4789 local {local} nolearning",
            f"ip link set vxlan{VNI} master br{VNI} addrgenmode none",
            f"ip link set vxlan{VNI} type bridge_slave neigh_suppress off learning off",
            f"ip link set vxlan{VNI} up",
            f"ip link set br{VNI} up",
        ):
            self.sh(node, *cmd.split())

    def frr(self, node: str, peers: list[str], hold_out: bool = False) -> Path:
        """zebra + bgpd (advertise-all-vni) in the node, iBGP to `peers`.

        `hold_out`: an outbound route-map denies everything to every peer until
        `release_out` removes it (sessions up, nothing advertised).
        """
        self.vxlan_bridge(node)
        ns = self.ns(node)
        rundir = self.dir / f"frr-{node}"
        rundir.mkdir()
        neighbors = "".join(
            f" neighbor {p} remote-as {ASN}\n neighbor {p} timers connect 1\n" for p in peers)
        activate = "".join(
            f"  neighbor {p} activate\n" + (f"  neighbor {p} route-map EVB-HOLD out\n"
                                            if hold_out else "")
            for p in peers)
        (rundir / "zebra.conf").write_text(f"hostname {ns}\nlog file {rundir}/zebra.log\n")
        (rundir / "bgpd.conf").write_text(
            f"hostname {ns}\nlog file {rundir}/bgpd.log\n!\nrouter bgp {ASN}\n"
            f" bgp router-id {self.addresses[node]}\n no bgp default ipv4-unicast\n"
            f"{neighbors} !\n address-family l2vpn evpn\n{activate}  advertise-all-vni\n"
            " exit-address-family\n!\nroute-map EVB-HOLD deny 10\n!\n")
        shutil.chown(rundir, "frr", "frr")
        for path in rundir.iterdir():
            shutil.chown(path, "frr", "frr")
        self.frr_dirs[node] = rundir
        for daemon in ("zebra", "bgpd"):
            # -s: zebra's netlink receive buffer, as Debian's /etc/frr/daemons sets it;
            # without it zebra overruns (and here died) under 100k one-NLRI UPDATEs.
            extra = ["-s", "90000000"] if daemon == "zebra" else []
            self.sh(node, program(daemon), "-d", "-N", ns, "-f", str(rundir / f"{daemon}.conf"),
                    "-i", str(rundir / f"{daemon}.pid"), "-z", str(rundir / "zserv.api"),
                    "--vty_socket", str(rundir), "-A", "127.0.0.1", "-P", "0", *extra)
        deadline = time.monotonic() + 30
        while self.vtysh(node, "show bgp l2vpn evpn summary json") is None:
            if time.monotonic() > deadline:
                raise BenchError(f"FRR on {node} did not come up")
            time.sleep(0.2)
        return rundir

    def release_out(self, node: str, peers: list[str]) -> None:
        """Drop the `hold_out` route-map: the node advertises its table to `peers` now."""
        self.vtysh(node, "configure terminal", f"router bgp {ASN}", "address-family l2vpn evpn",
                   *(f"no neighbor {p} route-map EVB-HOLD out" for p in peers), parse=False)

    def established(self, node: str, peers: list[str]) -> bool:
        shown = (self.vtysh(node, "show bgp l2vpn evpn summary json") or {}).get("peers", {})
        return all(shown.get(p, {}).get("state") == "Established" for p in peers)

    def vtysh(self, node: str, *commands: str, parse: bool = True) -> Any:
        argv = ["vtysh", "--vty_socket", str(self.frr_dirs[node])]
        for command in commands:
            argv += ["-c", command]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
        if not parse:
            return out
        try:
            return json.loads(out)
        except ValueError:
            return None

    def dead(self, frr_nodes: list[str], evpnd_procs: list[subprocess.Popen[bytes]]) -> str | None:
        """Which of these daemons is gone, if any."""
        for node in frr_nodes:
            pids = self.frr_pids(node)
            if len(pids) < 2 or not all(Path(f"/proc/{p}").exists() for p in pids):
                return f"FRR on {node} is not running"
        for proc in evpnd_procs:
            if proc.poll() is not None:
                return f"evpnd exited with {proc.returncode}"
        return None

    def frr_pids(self, node: str) -> list[int]:
        pids = []
        for daemon in ("zebra", "bgpd"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int((self.frr_dirs[node] / f"{daemon}.pid").read_text()))
        return pids

    # --- evpnd

    def evpnd_config(self, node: str, peers: list[str], passive: bool = False) -> Path:
        address = self.addresses[node]
        state = self.dir / f"evpnd-{node}"
        # ExaBGP listens only for passive peers: between two evpnd hosts one must be.
        peer_lines = "".join(
            f"    - {{address: {p}, remote_asn: {ASN}, hold_time: 180"
            f"{', passive: true' if passive else ''}}}\n" for p in peers)
        config = self.dir / f"evpnd-{node}.yaml"
        config.write_text(
            f"router_id: {address}\nasn: {ASN}\n"
            f"vtep: {{address: {address}, device: eth0}}\n"
            f"bgp:\n  peers:\n{peer_lines}"
            f"vnis:\n  - vni: {VNI}\n    bridge: br{VNI}\n"
            f"state_dir: {state}\nlogging: {{level: info, format: json}}\n")
        return config

    def evpnd(self, node: str, peers: list[str] | None = None, log_name: str = "evpnd.log",
              wait: bool = True, passive: bool = False) -> subprocess.Popen[bytes]:
        """`evpnd run` in the node (config written on first use); waits for vxlan<VNI>."""
        config = self.dir / f"evpnd-{node}.yaml"
        if not config.exists():
            assert peers is not None
            self.evpnd_config(node, peers, passive)
        log = self.dir / f"{node}-{log_name}"
        # EVB_PROFILE=DIR: run evpnd under cProfile, stats in DIR/<node>-<log>.prof on exit.
        profile = os.environ.get("EVB_PROFILE")
        prof = ["-m", "cProfile", "-o", f"{profile}/{node}-{log_name}.prof"] if profile else []
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), sys.executable, *prof, "-m", "evpnd", "run",
             "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=REPO,
        )
        self.procs.append(proc)
        if wait:
            deadline = time.monotonic() + 60
            while netns.run(self.ns(node), ["ip", "link", "show", f"vxlan{VNI}"],
                            check=False).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"evpnd on {node} did not create vxlan{VNI}; see {log}")
                time.sleep(0.1)
        return proc

    def log_records(self, node: str, log_name: str) -> list[dict[str, Any]]:
        records = []
        for line in (self.dir / f"{node}-{log_name}").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    # --- helpers run in namespaces

    def python(self, node: str, module: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, bufsize=1,
        )
        self.procs.append(proc)
        return proc

    def watch(self, node: str, device: str = f"vxlan{VNI}", new: bool = False) -> Watch:
        watch = Watch(self.python(node, "bench.fdbwatch", device, *(["--new"] if new else [])),
                      f"fdb watcher on {node}")
        watch.wait("ready", 30)
        return watch

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
        for name in reversed(self.namespaces):
            netns.remove(name)  # kills what runs inside: only what this lab started
            shutil.rmtree(FRR_RUN / name, ignore_errors=True)
        self.namespaces.clear()
        self.procs.clear()
        if os.environ.get("EVB_KEEP") is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def vmhwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, in KiB; 0 when it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    """Every descendant of pid."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    frontier.append(int(child))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, in seconds; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_name(pid: int) -> str:
    """`exabgp`, `relay` or `evpnd` for evpnd's process tree, else the command name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = b" ".join(argv).decode(errors="replace")
    if "exabgp" in text or "launcher" in text:
        return "exabgp"
    if "bridge" in text or "relay" in text:
        return "relay"
    if "evpnd" in text:
        return "evpnd"
    return Path(argv[0].decode(errors="replace")).name


def evpnd_pids(lab: Lab, node: str) -> list[int]:
    """evpnd, its ExaBGP and the relay in the node (ExaBGP may outlive its daemon)."""
    found = []
    for pid in netns.pids_in(lab.ns(node)):
        try:
            text = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"evpnd" in text and b"bench." not in text and not text.startswith(b"ip netns"):
            found.append(pid)
    return found


def cpu_by_process(pids: list[int]) -> dict[str, float]:
    """CPU seconds of the processes, summed by process_name()."""
    totals: dict[str, float] = {}
    for p in pids:
        name = process_name(p)
        totals[name] = totals.get(name, 0.0) + cpu_seconds(p)
    return totals
