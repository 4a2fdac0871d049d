"""Remote convergence and withdrawal: one source, two receivers (FRR VTEP, evpnd host).

    src 192.0.2.10 ---- hub ---- rf 192.0.2.21  FRR 8.4 VTEP (zebra + bgpd, advertise-all-vni)
                          \\---- re 192.0.2.22  evpnd host
All three speak iBGP to each other (full mesh, no reflection: the receivers
only get what the source originates). Each receiver's kernel FDB on vxlan100
is counted by bench.fdbwatch from netlink events in its own namespace.

Sources:
  a  FRR VTEP: its bridge learns N MACs through `bridge -batch` while an
     outbound route-map denies everything to both (established) sessions; t0
     is the vtysh command removing it. FRR packs many NLRIs per UPDATE. One
     FRR VTEP has one VTEP address: the N MACs come from 1 VTEP, not 40.
     Withdrawal: t0 is the `bridge -batch` that deletes the N MACs.
  b  bench.bgpsend: one NLRI per UPDATE, N MACs round-robin over 40 VTEPs plus
     40 Type-3 routes, all encoded before the sessions come up; t0 is the
     first byte written to the sessions (to both at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.restart import wait_ping
from bench.topo import (
    VNI,
    BenchError,
    Lab,
    Lines,
    Watch,
    cpu_by_process,
    evpnd_pids,
    vmhwm_kib,
)

SRC, RF, RE = "192.0.2.10", "192.0.2.21", "192.0.2.22"


@dataclass
class Convergence:
    source: str
    count: int
    add: dict[str, float] = field(default_factory=dict)  # receiver -> seconds
    withdraw: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)  # hook results
    note: str = ""
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds during the add

    def cpu_text(self) -> str:
        c = self.cpu
        return (f"CPU seconds during add N={self.count} source ({self.source}): evpnd "
                f"{c.get('evpnd', 0):.1f} + ExaBGP {c.get('exabgp', 0):.1f} + relay "
                f"{c.get('relay', 0):.1f}; FRR receiver bgpd + zebra {c.get('frr', 0):.1f}")


Hook = Callable[[Lab, dict[str, object]], dict[str, object]]


def _receivers(lab: Lab, endpoints: bool) -> dict[str, object]:
    for node, address in (("src", SRC), ("rf", RF), ("re", RE)):
        lab.node(node, address)
    for node in ("rf", "re"):
        lab.route_vteps(node, SRC)
    lab.frr("rf", [SRC, RE])
    evpnd = lab.evpnd("re", [SRC, RF])
    if endpoints:
        lab.endpoint("re", "ep1", "02:00:00:00:0e:01", "198.18.100.1")
        lab.endpoint("rf", "ep2", "02:00:00:00:0f:01", "198.18.100.2")
    return {"evpnd": evpnd}


class CpuMeter:
    """CPU seconds the two receivers' processes use between start() and stop()."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = cpu_by_process(evpnd_pids(self.lab, "re"))
        now["frr"] = sum(cpu_by_process(self.lab.frr_pids("rf")).values())
        return now

    def start(self) -> None:
        self.before = self._now()

    def stop(self) -> dict[str, float]:
        return {k: v - self.before.get(k, 0.0) for k, v in self._now().items()}


def _fdb_wait(watches: dict[str, Watch], count: int, t0: float, timeout: float,
              alive: Callable[[], str | None]) -> dict[str, float]:
    return {name: w.target(count, timeout, alive) - t0 for name, w in watches.items()}


def _frr_source_ready(lab: Lab, count: int, timeout: float) -> int:
    """Wait until the source's zebra and bgpd hold every local MAC; how many MACs it has.

    bgpd's table version grows by one per route it processed (its own Type-3,
    the N MACs, what the receivers send): stable and above N means bgpd has
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
            return macs
        last_version = version
        time.sleep(1)
    raise BenchError(f"the FRR source did not take {count} local MACs in {timeout:.0f}s")


def run_frr_source(count: int, hook: Hook | None = None, endpoints: bool = False,
                   timeout: float = 600) -> Convergence:
    result = Convergence("a", count, note="source (a) FRR VTEP: all MACs from 1 VTEP "
                         "(one FRR VTEP cannot originate 40), packed UPDATEs")
    with Lab("conv-a") as lab:
        state = _receivers(lab, endpoints)
        # The source cannot learn its own MACs from a route: no IPv6 chatter either.
        lab.sh("src", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        lab.sh("src", "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        lab.frr("src", [RF, RE], hold_out=True)
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
        # numMacs counts remote MACs too; with IPv6 off the source learns only ours.
        total = count
        if endpoints:
            # Each receiver also holds the other's endpoint MAC.
            total += 1
        watches = {"frr": lab.watch("rf"), "evpnd": lab.watch("re")}

        def alive() -> str | None:
            # the restart replaces evpnd: only its FRR daemons are checked after it
            return lab.dead(["rf", "src"], [] if result.extra else [state["evpnd"]])

        if endpoints:
            wait_ping(lab, "ep1", "198.18.100.2")
            for w in watches.values():
                w.target(1, 60)
        deadline = time.monotonic() + 120
        while not lab.established("src", [RF, RE]):
            if time.monotonic() > deadline:
                raise BenchError("the FRR source's sessions did not come up")
            time.sleep(0.2)
        meter = CpuMeter(lab)
        meter.start()
        t0 = time.monotonic()
        lab.release_out("src", [RF, RE])
        result.add = _fdb_wait(watches, total, t0, timeout, alive)
        result.cpu = meter.stop()
        if hook:
            result.extra = hook(lab, {**state, "watches": watches})
        t0 = time.monotonic()
        lab.sh("src", "bridge", "-batch", str(delete), timeout=timeout)
        result.withdraw = _fdb_wait(watches, total - count, t0, timeout, alive)
    return result


def run_sender_source(count: int, vteps: int = 40, hook: Hook | None = None,
                      timeout: float = 600) -> Convergence:
    result = Convergence("b", count, note=f"source (b) bench.bgpsend: 1 NLRI per UPDATE, "
                         f"{vteps} VTEPs + {vteps} Type-3")
    with Lab("conv-b") as lab:
        state = _receivers(lab, endpoints=False)
        sender = Lines(lab.python("src", "bench.bgpsend", "--count", str(count), "--vteps",
                                  str(vteps), "--peer", RF, "--peer", RE), "bgpsend")
        sender.wait("listening", 300)  # encoding 100k UPDATEs takes a while
        up = {sender.wait("up ", 120)[1], sender.wait("up ", 120)[1]}
        if up != {RF, RE}:
            raise BenchError(f"sessions up: {up}")
        watches = {"frr": lab.watch("rf"), "evpnd": lab.watch("re")}

        def alive() -> str | None:
            return lab.dead(["rf"], [state["evpnd"]])

        meter = CpuMeter(lab)
        meter.start()
        sender.send("announce")
        t0 = float(sender.wait("announce-start", 30)[1])
        result.add = _fdb_wait(watches, count, t0, timeout, alive)
        result.cpu = meter.stop()
        if hook:
            result.extra = hook(lab, {**state, "watches": watches})
        sender.send("withdraw")
        t0 = float(sender.wait("withdraw-start", 30)[1])
        result.withdraw = _fdb_wait(watches, 0, t0, timeout, alive)
    return result


def memory(lab: Lab, state: dict[str, object]) -> dict[str, object]:
    """Peak RSS (VmHWM) of evpnd + its ExaBGP and of bgpd + zebra, in MiB."""
    del state
    return {
        "evpnd_mib": sum(vmhwm_kib(p) for p in evpnd_pids(lab, "re")) / 1024,
        "frr_mib": sum(vmhwm_kib(p) for p in lab.frr_pids("rf")) / 1024,
    }


def assert_sane(result: Convergence) -> None:
    for phase in (result.add, result.withdraw):
        for name, seconds in phase.items():
            if seconds < 0:
                raise BenchError(f"{name}: negative time {seconds}")
