"""Event-loop lag: how late a timer fires, measured by a task of the loop itself.

Every `interval` seconds the task sleeps for `interval` and compares the time
that actually passed: whatever exceeds the interval is time the loop spent in
other callbacks without yielding (a large JSON line decoded, 100k entries
diffed, a blocking call by mistake). A lag near zero means the loop is
responsive; BGP keepalives, netlink drains and scrapes all wait that long.

Kept: the last measurement, the maximum since start, and a cumulative
histogram (count, sum, per-bucket counts) for the collector to expose.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Sequence

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class LoopLagMonitor:
    """Measures the running loop's lag; `start()` inside the loop, `await stop()` to end."""

    def __init__(self, interval: float = 0.5, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        bounds = tuple(sorted(float(b) for b in buckets))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError("buckets must be distinct and non-empty")
        self.interval = interval
        self.buckets = bounds
        self.last = 0.0  # seconds, the latest measurement
        self.max = 0.0  # seconds, the largest since start
        self.count = 0
        self.sum = 0.0
        self._counts = [0] * (len(bounds) + 1)  # per bucket, the last one is +Inf
        self._task: asyncio.Task[None] | None = None

    def observe(self, lag: float) -> None:
        """Record one measurement (negative values, timer jitter, count as zero)."""
        lag = max(0.0, lag)
        self.last = lag
        self.max = max(self.max, lag)
        self.count += 1
        self.sum += lag
        self._counts[bisect.bisect_left(self.buckets, lag)] += 1

    def histogram(self) -> list[tuple[float, int]]:
        """Cumulative (upper bound, count) pairs, ending with (inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.buckets, float("inf")), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start measuring on the running loop (idempotent)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            begin = loop.time()
            await asyncio.sleep(self.interval)
            self.observe(loop.time() - begin - self.interval)
