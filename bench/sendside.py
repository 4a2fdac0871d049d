"""Send side: N local MACs appear at once on one origin host; how long until an FRR
receiver's kernel FDB has them all (and none again after they go).

    org 192.0.2.51 ---- hub ---- rcv 192.0.2.52   FRR 8.4 VTEP (the receiver)
The origin is an evpnd host or an FRR VTEP, one lab each, never both at
once. The MACs appear through one `bridge -batch` of `fdb add MAC dev p0
master dynamic` on a port of the origin's br100 (what a burst of learning
looks like to both: RTM_NEWNEIGH on a bridge port); t0 is just before the
batch starts, t1 the receiver's FDB count on vxlan100 reaching N (bench.fdbwatch).
Removal: one `bridge -batch` of `fdb del`, t1 the count back to the warm-up.
A warm-up MAC, learnt and received before t0, proves the session is up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.topo import VNI, BenchError, CpuMeter, Lab, evpnd_pids, settle

ORG, RCV = "192.0.2.51", "192.0.2.52"
ORIGINS = ("evpnd", "frr")
WARMUP = "02:dd:ff:ff:ff:01"


@dataclass
class SendResult:
    origin: str
    count: int
    add_s: float = 0.0
    remove_s: float = 0.0
    batch_s: float = 0.0  # how long `bridge -batch` itself took to add the N
    origin_cpu: dict[str, float] = field(default_factory=dict)  # during the add
    receiver_cpu: dict[str, float] = field(default_factory=dict)  # during the add
    others: list[str] = field(default_factory=list)


def run(origin: str, count: int, timeout: float = 600) -> SendResult:
    if origin not in ORIGINS:
        raise ValueError(f"origin {origin!r}: one of {ORIGINS}")
    result = SendResult(origin, count)
    with Lab(f"send-{origin}") as lab:
        lab.node("org", ORG)
        lab.node("rcv", RCV)
        # The origin learns only the MACs we add: no IPv6 chatter from its port.
        lab.sh("org", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        lab.sh("org", "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        lab.frr("rcv", [ORG])
        if origin == "evpnd":
            proc = lab.evpnd("org", [RCV])

            def origin_pids() -> list[int]:
                return evpnd_pids(lab, "org")

            def dead() -> str | None:
                return lab.dead(["rcv"], [proc])
        else:
            lab.frr("org", [RCV])

            def origin_pids() -> list[int]:
                return lab.frr_pids("org")

            def dead() -> str | None:
                return lab.dead(["rcv", "org"], [])
        lab.sh("org", "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p0x")
        lab.sh("org", "ip", "link", "set", "p0", "master", f"br{VNI}", "up")
        lab.sh("org", "ip", "link", "set", "p0x", "up")
        macs = [f"02:dd:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}:02"
                for i in range(count)]
        add = lab.dir / "add.batch"
        add.write_text("".join(f"fdb add {m} dev p0 master dynamic\n" for m in macs))
        delete = lab.dir / "del.batch"
        delete.write_text("".join(f"fdb del {m} dev p0 master\n" for m in macs))
        watch = lab.watch("rcv")
        lab.sh("org", "bridge", "fdb", "add", WARMUP, "dev", "p0", "master", "dynamic")
        watch.target(1, 120, dead)  # the session is up and carries a MAC
        base = watch.count()
        if base != 1:
            raise BenchError(f"the receiver holds {base} MACs before the burst, not 1")
        settle(lambda: origin_pids() + lab.frr_pids("rcv"))
        result.others = lab.alone(frr=["rcv", *(["org"] if origin == "frr" else [])],
                                  evpnd=["org"] if origin == "evpnd" else [])
        meter, receiver = CpuMeter(origin_pids), CpuMeter(lambda: lab.frr_pids("rcv"))
        meter.start()
        receiver.start()
        t0 = time.monotonic()
        lab.sh("org", "bridge", "-batch", str(add), timeout=timeout)
        result.batch_s = time.monotonic() - t0
        result.add_s = watch.target(base + count, timeout, dead) - t0
        result.origin_cpu = meter.stop()
        result.receiver_cpu = receiver.stop()
        t0 = time.monotonic()
        lab.sh("org", "bridge", "-batch", str(delete), timeout=timeout)
        result.remove_s = watch.at_most(base, timeout, dead) - t0
    return result
