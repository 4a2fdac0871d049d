"""Learn latency: a MAC appears on host A's bridge; how long until host B's FDB has it.

Two pairs, each in a lab of its own (one after the other, never both at
once), iBGP between its two hosts:
    ea 192.0.2.31 -- eb 192.0.2.32   evpnd -> evpnd
    fa 192.0.2.41 -- fb 192.0.2.42   FRR   -> FRR
Each sample adds a fresh MAC (`bridge fdb add MAC dev p0 master dynamic`) on
A's bridge port p0. A watcher in A stamps the kernel's RTM_NEWNEIGH for the
port, a watcher in B stamps the RTM_NEWNEIGH on B's vxlan100; the latency is
the difference (both CLOCK_MONOTONIC). One warm-up sample (sessions coming
up) is discarded; samples run one after the other.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.topo import VNI, BenchError, Lab, Watch

PAIRS = {"evpnd": ("ea", "192.0.2.31", "eb", "192.0.2.32"),
         "frr": ("fa", "192.0.2.41", "fb", "192.0.2.42")}


@dataclass
class Latency:
    kind: str
    samples_ms: list[float]
    missed: int

    def percentile(self, q: float) -> float:
        if not self.samples_ms:
            return float("nan")
        if len(self.samples_ms) == 1:
            return self.samples_ms[0]
        return statistics.quantiles(self.samples_ms, n=100, method="inclusive")[int(q) - 1]


def _port(lab: Lab, node: str) -> None:
    lab.sh(node, "ip", "link", "add", "p0", "type", "veth", "peer", "name", "p0x")
    lab.sh(node, "ip", "link", "set", "p0", "master", f"br{VNI}", "up")
    lab.sh(node, "ip", "link", "set", "p0x", "up")


def _sample(lab: Lab, a: str, wa: Watch, wb: Watch, mac: str, timeout: float) -> float:
    lab.sh(a, "bridge", "fdb", "add", mac, "dev", "p0", "master", "dynamic")
    ta = float(wa.wait(f"new {mac} ", 10)[2])
    tb = float(wb.wait(f"new {mac} ", timeout)[2])
    return (tb - ta) * 1000


def measure(samples: int) -> dict[str, Latency]:
    results: dict[str, Latency] = {}
    for kind, (a, ia, b, ib) in PAIRS.items():
        with Lab(f"learn-{kind}") as lab:
            lab.node(a, ia)
            lab.node(b, ib)
            if kind == "frr":
                lab.frr(a, [ib])
                lab.frr(b, [ia])
            else:
                lab.evpnd(a, [ib])
                lab.evpnd(b, [ia], passive=True)
            _port(lab, a)
            wa = lab.watch(a, "p0", new=True)
            wb = lab.watch(b, f"vxlan{VNI}", new=True)
            _sample(lab, a, wa, wb, "02:cc:ff:00:00:01", 120)  # warm-up: sessions come up
            lab.alone(frr=[a, b] if kind == "frr" else [], evpnd=[a, b] if kind == "evpnd" else [])
            got: list[float] = []
            missed = 0
            for i in range(samples):
                mac = f"02:cc:{i >> 8 & 255:02x}:{i & 255:02x}:00:01"
                try:
                    got.append(_sample(lab, a, wa, wb, mac, 10))
                except BenchError:
                    missed += 1
            results[kind] = Latency(kind, got, missed)
    return results
