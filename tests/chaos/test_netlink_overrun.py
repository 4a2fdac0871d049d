"""C6: the reconciler's netlink monitor overruns during a large write.

The reconciler runs in this process against a real kernel (a namespace with
br100/vxlan100, tests/netns/test_writer.py's segment) with its monitor's
receive buffer shrunk to 4 KiB (the module constant, the test hook). Each
round rewrites every remote MAC (CI 10,000; `make chaos` 100,000, all moved
to another VTEP) while another process deletes our entries in bursts of
1,000: the deletions' notifications overflow the monitor (ENOBUFS). The
overrun must be counted, and the resync it triggers must leave the kernel
exactly as wanted (0 differences).
"""

from __future__ import annotations

import asyncio
import threading
from ipaddress import IPv4Address

import pytest

from evpnd import netns
from evpnd.dataplane import reconciler as reconciler_mod
from evpnd.dataplane.dump import dump
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import ForwardingState, RemoteMac
from tests.chaos.conftest import size
from tests.chaos.tally import Tally
from tests.netns.test_writer import VX, make_segment

pytestmark = pytest.mark.netns

COUNT = size(10_000, 100_000)
ROUNDS = size(2, 5)
VTEPS = [IPv4Address(f"198.51.100.{i}") for i in range(1, 21)]


def wanted(shift: int) -> dict[tuple[str, str], RemoteMac]:
    macs = [RemoteMac(VX, f"02:5e:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:01",
                      VTEPS[(i + shift) % len(VTEPS)]) for i in range(COUNT)]  # fmt: skip
    return {m.key: m for m in macs}


def state(macs: dict[tuple[str, str], RemoteMac]) -> ForwardingState:
    s = ForwardingState()
    for mac in macs.values():
        s.add_mac(mac)
    return s


class Deleter:
    """Another process deleting our entries, 1,000 at a time, until stopped."""

    def __init__(self, ns: str, macs: list[RemoteMac], path: str) -> None:
        self.ns, self.macs, self.path = ns, macs, path
        self.stop = threading.Event()
        self.bursts = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        step = 0
        while not self.stop.is_set():
            burst = self.macs[step % len(self.macs):][:1000]
            step += 7919  # a prime: the bursts wander over the table
            with open(self.path, "w") as batch:
                batch.writelines(f"fdb del {m.mac} dev {VX} self\n" for m in burst)
            netns.run(self.ns, ["bridge", "-force", "-batch", self.path], check=False)
            self.bursts += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


async def test_c6_monitor_overrun_during_a_large_write(
    ns: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object, tally: Tally
) -> None:
    row = tally.row("C6 netlink overrun")
    await asyncio.to_thread(make_segment, ns)  # pyroute2 runs a loop of its own
    monkeypatch.setattr(reconciler_mod, "MONITOR_RCVBUF", 4096)
    async with Reconciler(ns, ForwardingState()) as rec:
        for n in range(ROUNDS):
            macs = wanted(n)
            overruns = rec.stats.overruns
            deleter = Deleter(ns, list(macs.values()), f"{tmp_path}/del.batch")
            try:
                await rec.set_desired(state(macs))  # the large write
            finally:
                await asyncio.to_thread(deleter.close)
            row.faults += deleter.bursts
            left = await settle(rec, ns, macs)
            row.stale += left[0]
            row.missing += left[1]
            assert left == (0, 0), left
            assert rec.stats.overruns > overruns, rec.stats
            row.rounds += 1
        row.notes.update(entries=COUNT, overruns=rec.stats.overruns, resyncs=rec.stats.resyncs)


async def settle(rec: Reconciler, ns: str, macs: dict, timeout: float = 120) -> tuple[int, int]:
    """Until the kernel holds exactly `macs` (ours); (stale, missing) left at the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        owned = (await asyncio.to_thread(dump, ns)).owned.macs
        stale = sum(1 for k, v in owned.items() if macs.get(k) != v)
        missing = sum(1 for k, v in macs.items() if owned.get(k) != v)
        if ((stale, missing) == (0, 0) and not rec.pending) or loop.time() > deadline:
            return stale, missing
        await asyncio.sleep(0.5)
