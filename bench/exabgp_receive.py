"""ExaBGP's CPU to receive EVPN UPDATEs: its stock JSON path vs evpnd's raw path.

    .venv/bin/python -m bench.exabgp_receive [--count 100000] [--per-update 100] [--repeat 2]

For each receive mode (`bgp.receive: json` and `raw`) and each stream (N
one-NLRI Type-2 UPDATEs, the N Type-2 routes packed --per-update to an
UPDATE) it starts a fresh ExaBGP (evpnd's launcher, the configuration evpnd
generates) in a namespace of its own, peers it with a minimal in-process BGP
sender over the namespace's loopback, and has it hand what it receives to a
trivial API process that only reads and counts. The figure is ExaBGP's CPU
seconds (utime + stime from /proc) from the first byte sent to the last
route counted by the API process. Run it on a quiet machine: ExaBGP and the
counter share the cores with whatever else runs.

The harness (`Peering`) is also what tests/netns/test_raw_receive.py drives;
`record` and `count` are the API processes:

    python -m bench.exabgp_receive record <file>     every line ExaBGP writes
    python -m bench.exabgp_receive count <N> <file>  writes <file> at N UPDATEs
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from bench import bgpsend
from bench.topo import cpu_seconds
from evpnd import netns
from evpnd.config import Config
from evpnd.speaker import exabgp_config

REPO = Path(__file__).resolve().parent.parent
EXABGP_IP = "192.0.2.1"
SENDER_IP = "192.0.2.2"
ASN = 65000
VNI = 100
VTEPS = 40
AFI_IPV4, SAFI_UNICAST = 1, 1


# ---------------------------------------------------------------------------
# Messages (bench.bgpsend encodes the EVPN routes)


def open_message(hold: int, families: Sequence[tuple[int, int]]) -> bytes:
    caps = b"".join(bytes((1, 4)) + struct.pack("!HBB", afi, 0, safi) for afi, safi in families)
    caps += (bytes((2, 0)) + bytes((70, 0))  # route refresh, enhanced route refresh
             + bytes((65, 4)) + struct.pack("!I", ASN))
    params = bytes((2, len(caps))) + caps
    return bgpsend.message(bgpsend.OPEN, struct.pack("!BHH", 4, ASN, hold)
                           + IPv4Address(SENDER_IP).packed + bytes((len(params),)) + params)


def keepalive() -> bytes:
    return bgpsend.message(bgpsend.KEEPALIVE, b"")


def route_refresh(subtype: int) -> bytes:
    """RFC 7313: 0 request, 1 BoRR, 2 EoRR, for L2VPN/EVPN."""
    return bgpsend.message(bgpsend.ROUTE_REFRESH,
                           struct.pack("!HBB", bgpsend.AFI_L2VPN, subtype, bgpsend.SAFI_EVPN))


def type2_updates(count: int, first: int = 0) -> list[bytes]:
    """One Type-2 (MAC only) per UPDATE, next hops round-robin over the VTEPs."""
    common = bgpsend.common_attributes(ASN, VNI)
    updates = []
    for i in range(first, first + count):
        nexthop = bgpsend.vtep(i % VTEPS)
        updates.append(bgpsend.reach(nexthop, bgpsend.type2(i, nexthop, VNI), common))
    return updates


def packed_updates(count: int, per_update: int, first: int = 0) -> list[bytes]:
    """The same kind of routes, `per_update` NLRIs in each UPDATE (one next hop each)."""
    common = bgpsend.common_attributes(ASN, VNI)
    updates = []
    for start in range(first, first + count, per_update):
        nexthop = bgpsend.vtep((start // per_update) % VTEPS)
        nlri = b"".join(bgpsend.type2(i, nexthop, VNI)
                        for i in range(start, min(start + per_update, first + count)))
        updates.append(bgpsend.reach(nexthop, nlri, common))
    return updates


def ipv4_update(prefix: str, length: int) -> bytes:
    """An IPv4 unicast UPDATE: ORIGIN, AS_PATH, NEXT_HOP, LOCAL_PREF and one NLRI."""
    attributes = (bgpsend.attribute(0x40, 1, b"\0") + bgpsend.attribute(0x40, 2, b"")
                  + bgpsend.attribute(0x40, 3, IPv4Address(SENDER_IP).packed)
                  + bgpsend.attribute(0x40, 5, struct.pack("!I", 100)))
    nlri = bytes((length,)) + IPv4Address(prefix).packed[: (length + 7) // 8]
    return bgpsend.message(bgpsend.UPDATE, struct.pack("!HH", 0, len(attributes))
                           + attributes + nlri)


def ipv4_eor() -> bytes:
    return bgpsend.message(bgpsend.UPDATE, b"\0\0\0\0")


def body(update: bytes) -> bytes:
    return update[19:]


# ---------------------------------------------------------------------------
# The harness: a real ExaBGP in a namespace, a BGP sender in this process


def socket_in(ns: str) -> socket.socket:
    """A TCP socket created inside namespace `ns` (it stays there).

    setns() moves only the calling thread, so a short-lived thread does it
    and this process's own threads never change namespace.
    """
    made: list[socket.socket | BaseException] = []

    def create() -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=create)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


@dataclass
class Peering:
    """evpnd's launcher peered with an in-process sender inside namespace `ns`.

    ExaBGP (192.0.2.1) connects to the sender (192.0.2.2:179), both on the
    namespace's loopback. `api` is the command ExaBGP runs as its API process.
    """

    ns: str
    workdir: Path
    api: list[str]
    receive: str = "raw"
    hold: int = 90
    families: tuple[tuple[int, int], ...] = ((bgpsend.AFI_L2VPN, bgpsend.SAFI_EVPN),)
    keepalive_interval: float = 20.0
    exabgp: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    received: list[tuple[int, bytes]] = field(default_factory=list)  # from ExaBGP
    closed: threading.Event = field(default_factory=threading.Event)
    keepalives: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def config_path(self) -> Path:
        return self.workdir / "exabgp.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "exabgp.log"

    def config_text(self, receive: str) -> str:
        config = Config.model_validate({
            "router_id": EXABGP_IP, "asn": ASN,
            "vtep": {"address": EXABGP_IP, "device": "lo"},
            "bgp": {"receive": receive,
                    "peers": [{"address": SENDER_IP, "remote_asn": ASN, "hold_time": self.hold}]},
        })
        text = exabgp_config.render(config, self.api)
        if (AFI_IPV4, SAFI_UNICAST) in self.families:
            text = text.replace("l2vpn evpn;", "l2vpn evpn;\n        ipv4 unicast;")
        return text

    def start(self, timeout: float = 60) -> None:
        for address in (EXABGP_IP, SENDER_IP):
            netns.run(self.ns, ["ip", "addr", "add", f"{address}/32", "dev", "lo"])
        server = socket_in(self.ns)
        try:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((SENDER_IP, 179))
            server.listen(1)
            server.settimeout(timeout)
            self.config_path.write_text(self.config_text(self.receive))
            env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}
            env.update(exabgp_config.environment("INFO"))
            env["EXABGP_ENVFILE"] = str(self.workdir / "exabgp.env")
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO), env.get("PYTHONPATH")) if p)
            with self.log_path.open("wb") as log:
                self.exabgp = subprocess.Popen(
                    ["ip", "netns", "exec", self.ns, sys.executable, "-m",
                     "evpnd.speaker.launcher", str(self.config_path)],
                    cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT,
                )
            sock, _ = server.accept()
        finally:
            server.close()
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        kind, _ = self._read_message()
        if kind != bgpsend.OPEN:
            raise RuntimeError(f"ExaBGP sent message type {kind} before its OPEN")
        sock.sendall(open_message(self.hold, self.families) + keepalive())
        while True:
            kind, payload = self._read_message()
            if kind == bgpsend.KEEPALIVE:
                break
            if kind == bgpsend.NOTIFICATION:
                raise RuntimeError(f"ExaBGP refused the session: {payload[:2].hex()}")
        sock.settimeout(None)
        self.keepalives.set()
        threading.Thread(target=self._read_loop, daemon=True).start()
        threading.Thread(target=self._keepalive_loop, daemon=True).start()

    @property
    def pid(self) -> int:
        assert self.exabgp is not None
        return self.exabgp.pid  # `ip netns exec` execs the launcher: same pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        with self._lock:
            self.sock.sendall(data)

    def notifications(self) -> list[bytes]:
        """NOTIFICATION bodies ExaBGP sent us so far."""
        return [payload for kind, payload in list(self.received)
                if kind == bgpsend.NOTIFICATION]

    def reload(self, receive: str) -> None:
        """Rewrite the configuration with another receive mode; ExaBGP reloads (SIGUSR1)."""
        self.config_path.write_text(self.config_text(receive))
        assert self.exabgp is not None
        self.exabgp.send_signal(signal.SIGUSR1)

    def close(self) -> None:
        self.keepalives.clear()
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        if self.exabgp is not None and self.exabgp.poll() is None:
            self.exabgp.terminate()
            try:
                self.exabgp.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.exabgp.kill()
                self.exabgp.wait()

    def _read_message(self) -> tuple[int, bytes]:
        assert self.sock is not None
        return bgpsend.read_message(self.sock)

    def _read_loop(self) -> None:
        try:
            while True:
                self.received.append(self._read_message())
        except (OSError, ConnectionError):
            pass
        finally:
            self.closed.set()

    def _keepalive_loop(self) -> None:
        while not self.closed.wait(self.keepalive_interval):
            if self.keepalives.is_set():
                with contextlib.suppress(OSError):
                    self.send(keepalive())


@contextlib.contextmanager
def peering(api: list[str], receive: str, **options: object) -> Iterator[Peering]:
    """A started Peering in a namespace of its own; everything removed afterwards."""
    with netns.temporary("evb") as ns, tempfile.TemporaryDirectory(prefix="evb-exa-") as tmp:
        session = Peering(ns, Path(tmp), api, receive, **options)  # type: ignore[arg-type]
        try:
            session.start()
            yield session
        finally:
            session.close()


# ---------------------------------------------------------------------------
# API processes


def updates_in(line: bytes) -> int:
    """How many received UPDATEs one line from ExaBGP stands for."""
    if line.startswith(b"=evpn "):
        return line.count(b" ") - 1
    return 1 if b'"type": "update"' in line else 0


def record(path: str) -> int:
    """Every line ExaBGP writes, appended to `path` as it comes."""
    with open(path, "ab", buffering=0) as out:
        for line in sys.stdin.buffer:
            out.write(line)
    return 0


def count(expected: int, path: str) -> int:
    """Read and count; write `path` once `expected` UPDATEs have arrived."""
    seen = 0
    for line in sys.stdin.buffer:
        seen += updates_in(line)
        if seen >= expected:
            Path(path).write_text(f"{seen}\n")
            expected = sys.maxsize
    return 0


# ---------------------------------------------------------------------------
# The measurement


@dataclass
class Figure:
    mode: str
    stream: str
    updates: int
    routes: int
    cpu: float
    wall: float


def measure(mode: str, stream: str, updates: list[bytes], routes: int,
            timeout: float = 600) -> Figure:
    with tempfile.TemporaryDirectory(prefix="evb-count-") as tmp:
        done = Path(tmp) / "done"
        api = [sys.executable, "-m", "bench.exabgp_receive", "count", str(len(updates)),
               str(done)]
        with peering(api, mode) as session:
            time.sleep(1)  # ExaBGP's start-up and state line are not what is measured
            data = b"".join(updates)
            before = session.cpu()
            started = time.monotonic()
            sender = threading.Thread(target=session.send, args=(data,), daemon=True)
            sender.start()
            while not done.exists():
                if time.monotonic() - started > timeout or session.closed.is_set():
                    raise RuntimeError(f"{mode}/{stream}: not all UPDATEs counted "
                                       f"(see {session.log_path})")
                time.sleep(0.005)
            cpu = session.cpu() - before
            wall = time.monotonic() - started
            sender.join()
    return Figure(mode, stream, len(updates), routes, cpu, wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="Type-2 routes per stream")
    parser.add_argument("--per-update", type=int, default=100, help="NLRIs per packed UPDATE")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--modes", default="json,raw")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates a network namespace")
    streams = {
        "one NLRI/UPDATE": type2_updates(args.count),
        f"{args.per_update} NLRI/UPDATE": packed_updates(args.count, args.per_update),
    }
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}; {os.cpu_count()} CPUs", flush=True)
    figures: list[Figure] = []
    for run in range(1, args.repeat + 1):
        for name, updates in streams.items():
            for mode in args.modes.split(","):
                figure = measure(mode, name, updates, args.count)
                figures.append(figure)
                print(f"run {run}: {mode:4} {name:17} {figure.updates:7} UPDATEs "
                      f"{figure.routes} routes: ExaBGP CPU {figure.cpu:6.2f} s "
                      f"({figure.cpu / figure.updates * 1e6:6.1f} µs/UPDATE), "
                      f"wall {figure.wall:6.2f} s", flush=True)
    print(f"\nExaBGP CPU seconds to receive {args.count} Type-2 routes (each run):")
    for name in streams:
        cells = []
        for mode in args.modes.split(","):
            runs = [f.cpu for f in figures if f.stream == name and f.mode == mode]
            cells.append(f"{mode} " + " / ".join(f"{cpu:.2f}" for cpu in runs))
        print(f"  {name:17} " + "   ".join(cells))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "record":
        sys.exit(record(sys.argv[2]))
    if len(sys.argv) > 1 and sys.argv[1] == "count":
        sys.exit(count(int(sys.argv[2]), sys.argv[3]))
    sys.exit(main())
