"""The suite's arithmetic, without I/O: bound flags, ratios, alone checks, the last line.

Everything here takes plain figures (seconds, MiB, process lists) and returns
plain results, so it is unit-tested without namespaces.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SOURCE_BOUND_MARGIN = 0.10  # within 10 % of the source's last byte: the source set the pace
LAST_LINE_KEYS = ("ratio_100k_add_k1", "ratio_100k_withdraw_k1", "ratio_100k_add_packed",
                  "ratio_100k_withdraw_packed", "rss_ratio_100k", "p99_learn_ms",
                  "restart_writes", "restart_pings_lost")
RECEIVER_PROCESSES = {"frr": ("bgpd", "zebra"), "evpnd": ("evpnd", "exabgp", "relay")}
KINDS = {name: kind for kind, names in RECEIVER_PROCESSES.items() for name in names}


@dataclass
class Phase:
    """One timed phase (add or withdraw) of one receiver's run; times from t0, seconds."""

    seconds: float  # t1 - t0: the receiver's FDB reached its target
    source_done: float  # the source's last byte (written, or arrived for an FRR source)
    last_in: float  # the source's last BGP data byte arriving at the receiver
    cpu: dict[str, float] = field(default_factory=dict)  # receiver's processes
    source_cpu: float = 0.0
    others: list[str] = field(default_factory=list)  # another bench run's processes seen


@dataclass
class Run:
    """One receiver alone behind one source: add then withdraw."""

    source: str  # "bgpsend" or "frr-vtep"
    receiver: str  # "frr" or "evpnd"
    count: int
    per_update: int  # NLRIs per UPDATE asked of bgpsend; 0: FRR's own packing
    add: Phase | None = None
    withdraw: Phase | None = None
    rss_mib: dict[str, float] = field(default_factory=dict)  # VmHWM per process after add
    digest: str = ""  # bgpsend's stream digest: both receivers got the same bytes


def process_name(comm: str, argv: list[str]) -> str:
    """What a process is: `bgpd`/`zebra` (FRR), `evpnd`, `exabgp` (evpnd's launcher) or
    `relay` (ExaBGP's API process), from Python's `-m MODULE`; else the command's name.

    Only the module counts: arguments can hold any path (the relay's socket is
    .../exabgp-api.sock), and the last `-m` (under EVB_PROFILE the daemon runs as
    `python -m cProfile -o FILE -m evpnd run`).
    """
    if comm in ("bgpd", "zebra"):
        return comm
    program = argv[0].rsplit("/", 1)[-1] if argv else comm
    if not program.startswith("python"):
        return program
    flags = [i for i, word in enumerate(argv[:-1]) if word == "-m"]
    module = argv[flags[-1] + 1] if flags else ""
    if module.endswith(".launcher") or module.startswith("exabgp"):
        return "exabgp"
    if module.endswith((".bridge", ".relay")):
        return "relay"
    if module == "evpnd" or module.startswith("evpnd."):
        return "evpnd"
    return program


def bound(seconds: float, source_done: float) -> str:
    """`source-bound` when the receiver finished within 10 % of the source's last byte."""
    if source_done > 0 and seconds <= source_done * (1 + SOURCE_BOUND_MARGIN):
        return "source-bound"
    return "receiver"


def ratio(evpnd: float | None, frr: float | None) -> float:
    if evpnd is None or frr is None or frr <= 0:
        return math.nan
    return evpnd / frr


def packing(per_update: int) -> str:
    """`k1`, `k100`, ...; `FRR` for an FRR source's own packing."""
    return f"k{per_update}" if per_update else "FRR"


def total_rss(run: Run) -> float:
    """Sum of the receiver's processes' peak RSS (MiB); NaN when one is missing."""
    names = RECEIVER_PROCESSES[run.receiver]
    if not all(run.rss_mib.get(n, 0) > 0 for n in names[:2]):
        return math.nan
    return sum(run.rss_mib.get(n, 0.0) for n in names)


def find(runs: Iterable[Run], source: str, receiver: str, count: int,
         per_update: int) -> Run | None:
    for run in runs:
        if (run.source, run.receiver, run.count, run.per_update) == (
                source, receiver, count, per_update):
            return run
    return None


def packed_size(per_updates: Iterable[int]) -> int | None:
    """The packed setting the last line reports: the largest K > 1 run, if any."""
    packed = [k for k in per_updates if k > 1]
    return max(packed) if packed else None


def phase_ratio(runs: list[Run], count: int, per_update: int | None, phase: str) -> float:
    if per_update is None:
        return math.nan
    pair = [find(runs, "bgpsend", r, count, per_update) for r in ("evpnd", "frr")]
    seconds = [getattr(run, phase).seconds if run and getattr(run, phase) else None
               for run in pair]
    return ratio(seconds[0], seconds[1])


def rss_ratio(runs: list[Run], count: int, per_updates: Iterable[int]) -> tuple[float, str]:
    """evpnd's summed VmHWM / (bgpd + zebra) at `count` from bgpsend: packed if that ran,
    else k1; and which one it is."""
    packed = packed_size(per_updates)
    for k in ([packed] if packed else []) + [1]:
        evpnd, frr = (find(runs, "bgpsend", r, count, k) for r in ("evpnd", "frr"))
        if evpnd and frr:
            return ratio(total_rss(evpnd), total_rss(frr)), packing(k)
    return math.nan, "-"


def last_line(values: Mapping[str, float | int]) -> str:
    """The machine-readable last line, keys in their agreed order (nan / -1: not measured)."""
    words = []
    for key in LAST_LINE_KEYS:
        value = values.get(key, math.nan)
        if key.startswith("restart_"):  # counts; -1 when not measured
            words.append(f"{key}={-1 if math.isnan(value) else int(value)}")
        elif key == "p99_learn_ms":
            words.append(f"{key}={value:.1f}")
        else:
            words.append(f"{key}={value:.2f}")
    return " ".join(words)


def intruders(found: Iterable[tuple[str, str]], allowed: Mapping[str, Iterable[str]],
              own_prefix: str) -> tuple[list[str], list[str]]:
    """Bench processes that must not run now, as (this run's, another bench run's).

    found: (namespace, kind) of every FRR daemon / evpnd process in a bench
    namespace; allowed: kind -> the namespaces where that kind belongs now.
    A process of this run outside its place is a bug of the suite (the caller
    raises); another run's processes share the machine (the caller flags the row).
    """
    ours: list[str] = []
    others: list[str] = []
    for namespace, kind in found:
        if namespace in set(allowed.get(kind, ())):
            continue
        text = f"{kind} in {namespace}"
        (ours if namespace.startswith(own_prefix) else others).append(text)
    return sorted(set(ours)), sorted(set(others))


def cpu_text(cpu: Mapping[str, float], order: Iterable[str] = ()) -> str:
    """`bgpd 1.1, zebra 1.7`: named processes first in `order`, then any others."""
    names = [n for n in order if n in cpu] + sorted(n for n in cpu if n not in order)
    return ", ".join(f"{n} {cpu[n]:.1f}" for n in names) or "-"


def seconds_text(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} s"
