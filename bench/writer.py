"""FDB programming throughput: evpnd's batched netlink writer vs `bridge -batch`.

Run as root: .venv/bin/python bench/writer.py [--count N]

Everything happens in a namespace of its own (removed at the end) holding two
bridges, each with a vxlan device port; addresses are TEST-NET ones. Both
write N remote MACs, each the vxlan entry and its bridge entry in one message
(`self master` for `bridge`). The last line is machine-readable (rates in MACs):
    writer_entries_per_s=N bridge_batch_entries_per_s=M reconcile_writes=K
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evpnd import log, netns
from evpnd.dataplane.dump import dump
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import ForwardingState, RemoteMac
from evpnd.dataplane.tracker import Changes
from evpnd.dataplane.writer import DataplaneWriter

VTEPS = [IPv4Address("198.51.100.0") + i for i in range(1, 201)]


def setup(ns: str) -> None:
    for cmd in (
        "ip link add br0 type bridge",
        "ip link set br0 up",
        "ip link add vxlan100 type vxlan id 100 dstport 4789 local 192.0.2.1 nolearning",
        "ip link add vxlan200 type vxlan id 200 dstport 4789 local 192.0.2.1 nolearning",
        "ip link add br1 type bridge",
        "ip link set br1 up",
        "ip link set vxlan100 master br0",
        "ip link set vxlan200 master br1",
        "ip link set vxlan100 up",
        "ip link set vxlan200 up",
    ):
        netns.run(ns, cmd.split())


def macs(count: int, device: str) -> list[RemoteMac]:
    return [
        RemoteMac(
            device,
            f"02:5e:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:01",
            VTEPS[i % len(VTEPS)],
        )
        for i in range(count)
    ]


def bench_writer(ns: str, entries: list[RemoteMac]) -> float:
    with DataplaneWriter(ns) as writer:
        start = time.perf_counter()
        result = writer.apply(Changes(macs_put=entries))
        elapsed = time.perf_counter() - start
    if result.errors:
        raise SystemExit(f"writer errors: {len(result.errors)}, first: {result.errors[0]}")
    return len(entries) / elapsed


def bench_bridge_batch(ns: str, entries: list[RemoteMac]) -> float:
    lines = "".join(
        # Both entries of a remote MAC in one message, as the writer (and zebra) sends it.
        f"fdb replace {m.mac} dev {m.device} dst {m.vtep} self master dynamic extern_learn\n"
        for m in entries
    )
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as f:
        f.write(lines)
    try:
        start = time.perf_counter()
        netns.run(ns, ["bridge", "-batch", f.name], timeout=600)
        elapsed = time.perf_counter() - start
    finally:
        os.unlink(f.name)
    return len(entries) / elapsed


async def bench_reconcile(ns: str, desired: ForwardingState) -> tuple[int, float]:
    start = time.perf_counter()
    async with Reconciler(ns, desired) as rec:
        elapsed = time.perf_counter() - start
        return rec.stats.writes, elapsed


def run(count: int) -> dict[str, float]:
    """Writer vs `bridge -batch` for `count` entries, then a start-up reconcile."""
    ns = netns.create(netns.unique_name("evb"))
    try:
        setup(ns)
        ours = macs(count, "vxlan100")
        writer_rate = bench_writer(ns, ours)
        print(f"evpnd writer:  {count} remote MACs, {writer_rate:,.0f} MACs/s")

        batch_rate = bench_bridge_batch(ns, macs(count, "vxlan200"))
        print(f"bridge -batch: {count} remote MACs, {batch_rate:,.0f} MACs/s")
        # Only the writer's device stays, so the reconciler sees the same table.
        netns.run(ns, ["ip", "link", "del", "vxlan200"])

        start = time.perf_counter()
        tables = dump(ns)
        dump_s = time.perf_counter() - start
        print(f"dump:          {tables.owned.count()} owned entries in {dump_s:.2f} s")
        found = tables.owned.count()
        if found != count:
            raise SystemExit(f"expected {count} owned entries, the dump found {found}")

        desired = ForwardingState()
        for m in ours:
            desired.add_mac(m)
        writes, reconcile_s = asyncio.run(bench_reconcile(ns, desired))
        print(f"reconcile:     {writes} writes, start-up (dump + diff) {reconcile_s:.2f} s")
    finally:
        netns.remove(ns)
    return {"writer": writer_rate, "bridge_batch": batch_rate, "reconcile_writes": writes,
            "reconcile_s": reconcile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark creates a network namespace")

    log.configure(level="warning")  # keep stdout for the figures
    result = run(args.count)
    print(
        f"writer_entries_per_s={result['writer']:.0f} "
        f"bridge_batch_entries_per_s={result['bridge_batch']:.0f} "
        f"reconcile_writes={result['reconcile_writes']}"
    )


if __name__ == "__main__":
    main()
