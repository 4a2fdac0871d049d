"""Fewer cyclic-GC passes for the long-running processes (evpnd run, its ExaBGP).

Both hold one object graph per route (100k routes: millions of objects) that
lives as long as the route, and create few reference cycles. With the default
thresholds (700, 10, 10) a burst of routes runs a young collection every 700
allocations and a full one whenever the old generation grew by a quarter.
`gc.freeze()` moves what start-up created (modules, config, ExaBGP's tables)
out of every later collection; a gen0 threshold of 50,000 makes young passes
rare. Cycles are still collected.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 50_000


def tune() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
