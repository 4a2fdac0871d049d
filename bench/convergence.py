"""Remote convergence and withdrawal, one receiver alone behind one source.

    src 192.0.2.10 ---- hub ---- rcv 192.0.2.20   the receiver: FRR 8.4 VTEP (zebra +
                                                   bgpd, advertise-all-vni) or evpnd
One lab per run: the source and exactly one receiver, iBGP between them. The
other receiver is not started, and before each timed phase the run checks
that no FRR daemon / evpnd of the bench runs anywhere else (bench_processes):
on 2 cores a second receiver's CPU would slow the first. The receiver's FDB
on vxlan100 is counted by bench.fdbwatch from netlink events in its
namespace; bench.bgptap stamps the source's last BGP data byte arriving.

Sources:
  bgpsend   bench.bgpsend, N MACs round-robin over 40 VTEPs plus their 40
            Type-3 routes, K NLRIs per UPDATE (`--per-update`), every UPDATE
            encoded before the session comes up (the same bytes for both
            receivers: the stream's digest is kept); t0 is the first byte
            written, the source is done when its last byte is written (into a
            send buffer that holds the whole stream, so never waiting for the
            receiver).
  frr-vtep  an FRR VTEP: its bridge learns N MACs through `bridge -batch`
            while an outbound route-map denies everything on the established
            session; t0 is the vtysh command removing it. All N MACs come
            from its one VTEP address; FRR packs them as it likes. Withdrawal:
            t0 is the `bridge -batch` deleting the N MACs. It is done when its
            last BGP data byte arrives at the receiver (bgpd's writes cannot
            be stamped from outside).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from bench.figures import Phase, Run
from bench.topo import (
    VNI,
    BenchError,
    CpuMeter,
    Lab,
    Lines,
    Watch,
    cpu_seconds,
    evpnd_pids,
    settle,
    vmhwm_by_process,
)

SRC, RCV = "192.0.2.10", "192.0.2.20"
RECEIVERS = ("frr", "evpnd")

# hook(lab, evpnd process, watch) -> figures; runs between add and withdraw
Hook = Callable[[Lab, "subprocess.Popen[bytes] | None", Watch], dict[str, object]]


class Receiver:
    """The receiver node of a lab: FRR or evpnd, its processes, whether it is alive."""

    def __init__(self, lab: Lab, kind: str) -> None:
        if kind not in RECEIVERS:
            raise ValueError(f"receiver {kind!r}: one of {RECEIVERS}")
        self.lab = lab
        self.kind = kind
        self.evpnd: subprocess.Popen[bytes] | None = None
        lab.route_vteps("rcv", SRC)
        if kind == "frr":
            lab.frr("rcv", [SRC])
        else:
            self.evpnd = lab.evpnd("rcv", [SRC])
        self.restarted = False

    def pids(self) -> list[int]:
        if self.kind == "frr":
            return self.lab.frr_pids("rcv")
        return evpnd_pids(self.lab, "rcv")

    def dead(self, frr_nodes: tuple[str, ...] = ()) -> str | None:
        nodes = [*frr_nodes, *(["rcv"] if self.kind == "frr" else [])]
        # after a restart the daemon is not ours to watch any more (restart checks it)
        procs = [self.evpnd] if self.evpnd is not None and not self.restarted else []
        return self.lab.dead(nodes, procs)


def assert_alone(lab: Lab, receiver: str, frr_source: bool) -> list[str]:
    """Only this receiver (and an FRR source's daemons) run: see Lab.alone."""
    return lab.alone(frr=(["rcv"] if receiver == "frr" else []) + (["src"] if frr_source else []),
                     evpnd=["rcv"] if receiver == "evpnd" else [])


def _lab(lab: Lab) -> None:
    lab.node("src", SRC)
    lab.node("rcv", RCV)


def run_sender(receiver: str, count: int, per_update: int, vteps: int = 40,
               timeout: float = 600) -> Run:
    """bench.bgpsend -> one receiver: add N, then withdraw N."""
    result = Run("bgpsend", receiver, count, per_update)
    with Lab(f"recv-{receiver}") as lab:
        _lab(lab)
        sender = Lines(lab.python("src", "bench.bgpsend", "--count", str(count), "--vteps",
                                  str(vteps), "--per-update", str(per_update), "--peer", RCV),
                       "bgpsend")
        result.digest = sender.wait("listening", 300)[1]
        rcv = Receiver(lab, receiver)
        if sender.wait("up ", 120)[1] != RCV:
            raise BenchError("bgpsend: an unexpected peer came up")
        watch = lab.watch("rcv")
        tap = lab.tap("rcv", SRC)
        source_cpu = sender.proc.pid  # `ip netns exec` execs: this is bgpsend itself

        def timed(command: str, target: int) -> Phase:
            settle(rcv.pids)
            others = assert_alone(lab, receiver, frr_source=False)
            tap.reset()
            meter = CpuMeter(rcv.pids)
            meter.start()
            cpu0 = cpu_seconds(source_cpu)
            sender.send(command)
            t0 = float(sender.wait(f"{command}-start", 30)[1])
            t1 = watch.target(target, timeout, rcv.dead)
            cpu = meter.stop()
            sent = float(sender.wait(f"{command}-sent", timeout)[1])
            last, _ = tap.last()
            return Phase(t1 - t0, sent - t0, last - t0 if last else 0.0, cpu,
                         cpu_seconds(source_cpu) - cpu0, others)

        result.add = timed("announce", count)
        result.rss_mib = vmhwm_by_process(rcv.pids())
        result.withdraw = timed("withdraw", 0)
    return result


def _frr_source_ready(lab: Lab, count: int, timeout: float) -> None:
    """Wait until the source's zebra and bgpd hold every local MAC.

    bgpd's table version grows by one per route it processed (its own Type-3,
    the N MACs, what the receiver sends): stable and above N means bgpd has
    them all. zebra's numMacs counts remote MACs as well.
    """
    deadline = time.monotonic() + timeout
    last_version = -1
    while time.monotonic() < deadline:
        macs = (lab.vtysh("src", f"show evpn vni {VNI} json") or {}).get("numMacs", 0)
        header = lab.vtysh("src", "show bgp l2vpn evpn route type multicast", parse=False)
        version = next((int(line.split()[4].rstrip(",")) for line in header.splitlines()
                        if line.startswith("BGP table version is")), 0)
        if macs >= count and version > count and version == last_version:
            return
        last_version = version
        time.sleep(1)
    raise BenchError(f"the FRR source did not take {count} local MACs in {timeout:.0f}s")


def run_frr_vtep(receiver: str, count: int, hook: Hook | None = None,
                 timeout: float = 600) -> tuple[Run, dict[str, object]]:
    """An FRR VTEP -> one receiver: add N, hook, withdraw N."""
    result = Run("frr-vtep", receiver, count, 0)
    extra: dict[str, object] = {}
    with Lab(f"vtep-{receiver}") as lab:
        _lab(lab)
        # The source must learn only our MACs: no IPv6 chatter from its ports.
        lab.sh("src", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        lab.sh("src", "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        lab.frr("src", [RCV], hold_out=True)
        rcv = Receiver(lab, receiver)
        lab.sh("src", "ip", "link", "add", "h0", "type", "veth", "peer", "name", "h0p")
        lab.sh("src", "ip", "link", "set", "h0", "master", f"br{VNI}", "up")
        lab.sh("src", "ip", "link", "set", "h0p", "up")
        macs = [f"02:aa:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:01"
                for i in range(count)]
        add = lab.dir / "add.batch"
        add.write_text("".join(f"fdb add {m} dev h0 master static\n" for m in macs))
        delete = lab.dir / "del.batch"
        delete.write_text("".join(f"fdb del {m} dev h0 master\n" for m in macs))
        lab.sh("src", "bridge", "-batch", str(add), timeout=timeout)
        _frr_source_ready(lab, count, timeout)
        deadline = time.monotonic() + 120
        while not lab.established("src", [RCV]):
            if time.monotonic() > deadline:
                raise BenchError("the FRR source's session did not come up")
            time.sleep(0.2)
        watch = lab.watch("rcv")
        tap = lab.tap("rcv", SRC)

        def dead() -> str | None:
            return rcv.dead(("src",))

        def source_pids() -> list[int]:
            return lab.frr_pids("src")

        def timed(start: Callable[[], None], reached: Callable[[], float]) -> Phase:
            settle(lambda: rcv.pids() + source_pids())
            others = assert_alone(lab, receiver, frr_source=True)
            tap.reset()
            meter, source = CpuMeter(rcv.pids), CpuMeter(source_pids)
            meter.start()
            source.start()
            t0 = time.monotonic()
            start()
            t1 = reached()
            cpu = meter.stop()
            last, _ = tap.last()
            return Phase(t1 - t0, last - t0 if last else 0.0, last - t0 if last else 0.0, cpu,
                         sum(source.stop().values()), others)

        result.add = timed(lambda: lab.release_out("src", [RCV]),
                           lambda: watch.target(count, timeout, dead))
        result.rss_mib = vmhwm_by_process(rcv.pids())
        if hook is not None:
            extra = hook(lab, rcv.evpnd, watch)
            rcv.restarted = True
        # Whatever else the receiver holds now (an endpoint's MAC) stays.
        floor = watch.count() - count
        result.withdraw = timed(
            lambda: lab.sh("src", "bridge", "-batch", str(delete), timeout=timeout),
            lambda: watch.at_most(floor, timeout, dead))
    return result, extra


def assert_sane(run: Run) -> None:
    for phase in (run.add, run.withdraw):
        if phase is not None and phase.seconds < 0:
            raise BenchError(f"{run.receiver}: negative time {phase.seconds}")
