"""Namespaces for the benchmarks: one L2 segment (a hub bridge), FRR and evpnd nodes.

Every namespace is named `evb-<token>-<node>`, the token starting with the
running process's RUN token (so one `bench.run` can tell its own namespaces
from another bench run's); a Lab removes all of them (and so every process
started inside them: ours), its FRR run directories and its temporary files
on close, also from atexit. Underlay addresses are TEST-NET-1
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

from bench import figures
from bench.figures import intruders
from evpnd import netns

REPO = Path(__file__).resolve().parent.parent
ASN = 65000
VNI = 100
FRR_RUN = Path("/var/run/frr")
VTEP_NET = "198.51.100.0/24"
NETNS_DIR = Path("/run/netns")
PREFIX = "evb-"
RUN = secrets.token_hex(2)  # this process's labs: evb-<RUN><2 hex>-<node>


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
        self.backlog: list[str] = []  # lines read while waiting for another prefix
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
        """Words of the first line starting with `prefix`. Lines that do not match are
        kept for a later wait (an answer must not be lost while waiting for another)."""
        for index, line in enumerate(self.backlog):
            if line.startswith(prefix):
                del self.backlog[index]
                return line.split()
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
                self.queue.put(None)  # every later wait learns it too
                raise BenchError(f"{self.what} exited ({self.proc.poll()}) before `{prefix}`")
            if line.startswith(prefix):
                return line.split()
            self.backlog.append(line)

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

    STALL = 60.0  # seconds without the count moving: the receiver is stuck, not slow

    def target(self, count: int, timeout: float,
               alive: Callable[[], str | None] | None = None) -> float:
        """Monotonic time the count reached `count`; `alive` names a dead daemon, if any."""
        self.send(f"target {count}")
        return self._until(f"reached {count} ", f"not {count}", timeout, alive)

    def at_most(self, count: int, timeout: float,
                alive: Callable[[], str | None] | None = None) -> float:
        """Monotonic time the count fell to `count` or below."""
        self.send(f"atmost {count}")
        return self._until(f"down {count} ", f"not at most {count}", timeout, alive)

    def _until(self, answer: str, wanted: str, timeout: float,
               alive: Callable[[], str | None] | None) -> float:
        """Wait for the watcher's answer; give up at `timeout`, when a daemon died, or when
        the count has not moved for STALL seconds."""
        deadline = time.monotonic() + timeout
        moved, last = time.monotonic(), -1
        while True:
            try:
                return float(self.wait(answer, min(5.0, timeout))[2])
            except BenchError:
                have = self.count()
                now = time.monotonic()
                if have != last:
                    moved, last = now, have
                dead = alive() if alive else None
                why = dead or ("stalled" if now - moved > self.STALL else None)
                if why or now > deadline:
                    raise BenchError(f"{self.what}: {have} entries, {wanted}"
                                     + (f" ({why})" if why else "")) from None

    def count(self) -> int:
        self.send("count")
        return int(self.wait("count", 10)[1])


class Tap(Lines):
    """bench.bgptap in a namespace: when the last BGP data byte from a peer arrived."""

    def last(self, quiet: float = 0.5, timeout: float = 60) -> tuple[float, int]:
        """(monotonic arrival of the last counted segment or 0.0, payload bytes), once
        nothing more came for `quiet` seconds."""
        self.send(f"quiet {quiet}")
        words = self.wait("last ", timeout)
        return float(words[1]), int(words[2])

    def reset(self) -> None:
        """Forget what came so far (answered, so nothing later is forgotten)."""
        self.send("reset")
        self.wait("reset", 10)


class Lab:
    def __init__(self, tag: str) -> None:
        self.token = RUN + secrets.token_hex(1)
        self.prefix = f"{PREFIX}{self.token}-"
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
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            netns.unwind_on_sigterm()

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
        # EVB_EVPND_TREE=DIR: run the evpnd of another source tree (say, an export of
        # another commit, to compare); by default this checkout's.
        tree = os.environ.get("EVB_EVPND_TREE", str(REPO))
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), sys.executable, *prof, "-m", "evpnd", "run",
             "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=tree,
            env={**os.environ, "PYTHONPATH": tree},
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

    def alone(self, frr: list[str], evpnd: list[str]) -> list[str]:
        """Check that FRR daemons run only in the `frr` nodes and evpnd only in the
        `evpnd` nodes of this lab, in every bench namespace. A misplaced one of this
        run raises; another bench run's are returned (they share the machine)."""
        allowed = {"frr": [self.ns(n) for n in frr], "evpnd": [self.ns(n) for n in evpnd]}
        ours, others = intruders(bench_processes(), allowed, PREFIX + RUN)
        if ours:
            raise BenchError(f"not alone: {', '.join(ours)}")
        return others

    def tap(self, node: str, peer: str, device: str = "eth0") -> Tap:
        tap = Tap(self.python(node, "bench.bgptap", device, peer), f"bgp tap on {node}")
        tap.wait("ready", 30)
        return tap

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
    """`exabgp`, `relay` or `evpnd` for evpnd's process tree, `bgpd`/`zebra`, else the
    command name (figures.process_name); `?` when it is gone."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    return figures.process_name(comm, [a.decode(errors="replace") for a in argv if a])


def evpnd_pids(lab: Lab, node: str) -> list[int]:
    """evpnd, its ExaBGP and the relay in the node (ExaBGP may outlive its daemon)."""
    return [pid for pid in netns.pids_in(lab.ns(node))
            if figures.KINDS.get(process_name(pid)) == "evpnd"]


def cpu_by_process(pids: list[int]) -> dict[str, float]:
    """CPU seconds of the processes, summed by process_name()."""
    totals: dict[str, float] = {}
    for p in pids:
        name = process_name(p)
        totals[name] = totals.get(name, 0.0) + cpu_seconds(p)
    return totals


def vmhwm_by_process(pids: list[int]) -> dict[str, float]:
    """Peak RSS (VmHWM) in MiB, summed by process_name()."""
    totals: dict[str, float] = {}
    for p in pids:
        name = process_name(p)
        totals[name] = totals.get(name, 0.0) + vmhwm_kib(p) / 1024
    return totals


class CpuMeter:
    """CPU seconds per process name used between start() and stop() by the processes
    `pids()` names (asked at both ends: one started in between counts from zero)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {p: cpu_seconds(p) for p in self.pids()}

    def stop(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for p in sorted(set(self.pids()) | set(self.before)):
            if not Path(f"/proc/{p}").exists():
                continue  # gone meanwhile: its last figures are lost with it
            now = cpu_seconds(p)
            name = process_name(p)
            totals[name] = totals.get(name, 0.0) + now - self.before.get(p, 0.0)
        return totals


def settle(pids: Callable[[], list[int]], window: float = 0.5, busy: float = 0.05,
           timeout: float = 20) -> float:
    """Wait until the processes together use under `busy` of a core over `window` seconds
    (a daemon that just came up still installs its own routes, loads, collects); the
    seconds waited. After `timeout` it goes on: a busy machine must not stop the run."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(cpu_seconds(p) for p in pids())
        time.sleep(window)
        if sum(cpu_seconds(p) for p in pids()) - before < busy * window:
            return time.monotonic() - started
    print(f"still busy after {timeout:.0f} s; measuring anyway", flush=True)
    return time.monotonic() - started


def bench_processes() -> list[tuple[str, str]]:
    """(namespace, kind) of every FRR daemon (kind `frr`) and evpnd process (kind
    `evpnd`) in any bench namespace (evb-*) on the machine, this run's or another's."""
    inodes: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for entry in NETNS_DIR.iterdir():
            if entry.name.startswith(PREFIX):
                with contextlib.suppress(OSError):
                    inodes[entry.stat().st_ino] = entry.name
    found: list[tuple[str, str]] = []
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            namespace = inodes.get(os.stat(f"/proc/{entry}/ns/net").st_ino)
        except OSError:
            continue
        if namespace is not None:
            kind = figures.KINDS.get(process_name(int(entry)))
            if kind:
                found.append((namespace, kind))
    return found
