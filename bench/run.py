"""The benchmark suite: `make bench` (full sizes) or `make bench BENCH_ARGS=--smoke`.

    .venv/bin/python -m bench.run [--smoke] [--sizes 10000,100000] [--samples 200]

Runs, each in namespaces of its own (`evb-*`, removed at the end):
  1. remote convergence + withdrawal, FRR receiver vs evpnd receiver, from
     source (a) an FRR VTEP and (b) a one-NLRI-per-UPDATE sender (bench.convergence)
  2. learn latency evpnd->evpnd and FRR->FRR (bench.learn)
  3. peak RSS of evpnd + ExaBGP vs bgpd + zebra holding the largest N (bench.convergence)
  4. an evpnd restart holding the largest N, under a ping (bench.restart)
  5. the dataplane writer vs `bridge -batch` (bench.writer)
and prints a table; the last line is machine-readable:
  ratio_100k_add=X ratio_100k_withdraw=Y p99_learn_ms=Z restart_writes=W restart_pings_lost=V
(the ratios are evpnd / FRR from source (a) at the largest size run; in a
smoke run that size is the smoke size, the key names stay).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import time

from bench import convergence, learn, writer
from bench.report import Table
from bench.restart import restart
from bench.topo import BenchError
from evpnd import log


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--sizes", help="comma-separated N (default 10000,100000)")
    parser.add_argument("--samples", type=int, help="learn-latency samples (default 200)")
    parser.add_argument("--writer-count", type=int, help="writer entries (default 100000)")
    parser.add_argument("--sources", default="a,b", help="convergence sources to run")
    args = parser.parse_args()
    sizes = "300" if args.smoke else "10000,100000"
    args.sizes = [int(n) for n in (args.sizes or sizes).split(",")]
    args.samples = args.samples or (5 if args.smoke else 200)
    args.writer_count = args.writer_count or (1000 if args.smoke else 100_000)
    args.sources = args.sources.split(",")
    return args


def failed(table: Table, part: str, size: int, exc: Exception) -> None:
    """A scenario that failed still leaves a row (and the run goes on)."""
    print(f"{part} N={size} FAILED: {exc}", flush=True)
    table.row(part, f"N={size}: FAILED", "-", "-", "-")
    table.note(f"{part} N={size} failed: {exc}")


def main() -> None:
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmarks create network namespaces")
    log.configure(level="warning")
    # SIGTERM (a `timeout`, CI) unwinds like an exception: every Lab removes its namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    table = Table()
    table.note(f"machine: {platform.node()}, {os.cpu_count()} cores, Linux "
               f"{platform.release()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    largest = max(args.sizes)

    print("== 5. dataplane writer", flush=True)
    w = writer.run(args.writer_count)
    table.row("writer", f"evpnd writer, {args.writer_count} FDB entries",
              f"{w['writer']:,.0f}/s", f"bridge -batch {w['bridge_batch']:,.0f}/s", "")

    restart_result = None
    mem = None
    ratios: dict[str, float] = {}
    for size in args.sizes:
        for source in args.sources:
            print(f"== 1. convergence source ({source}) N={size}", flush=True)
            if source == "a":
                extra: dict[str, object] = {}

                def hook(lab, state, size=size, extra=extra):  # type: ignore[no-untyped-def]
                    if size != largest:
                        return {}
                    extra["memory"] = convergence.memory(lab, state)
                    print("== 4. restart", flush=True)
                    result = restart(lab, "re", state["evpnd"], state["watches"]["evpnd"],
                                     "ep1", "198.18.100.2")
                    extra["restart"] = result
                    return extra

                try:
                    res = convergence.run_frr_source(size, hook=hook, endpoints=size == largest)
                except BenchError as exc:
                    failed(table, f"conv-{source}", size, exc)
                    continue
                finally:
                    if size == largest:
                        mem = extra.get("memory")
                        restart_result = extra.get("restart")
            else:
                try:
                    res = convergence.run_sender_source(size)
                except BenchError as exc:
                    failed(table, f"conv-{source}", size, exc)
                    continue
            convergence.assert_sane(res)
            table.note(res.note)
            table.note(res.cpu_text())
            for phase, figures in (("add", res.add), ("withdraw", res.withdraw)):
                ratio = figures["evpnd"] / figures["frr"]
                table.row(f"conv-{source}", f"{phase} N={size} source ({source})",
                          f"{figures['evpnd']:.2f} s", f"{figures['frr']:.2f} s",
                          f"{ratio:.2f}")
                if source == "a" and size == largest:
                    ratios[phase] = ratio
            print(table.rows[-2].text(), "\n" + table.rows[-1].text(), flush=True)

    print("== 2. learn latency", flush=True)
    lat = learn.measure(args.samples)
    for kind in ("evpnd", "frr"):
        table.note(f"learn {kind}->{kind}: {len(lat[kind].samples_ms)} samples, "
                   f"{lat[kind].missed} missed (10 s)")
    for q in (50, 99):
        e, f = lat["evpnd"].percentile(q), lat["frr"].percentile(q)
        table.row("learn", f"learn latency p{q}", f"{e:.1f} ms", f"{f:.1f} ms", f"{e / f:.2f}")

    if mem:
        table.row("memory", f"peak RSS (VmHWM) holding {largest} remote MACs",
                  f"{mem['evpnd_mib']:.0f} MiB", f"{mem['frr_mib']:.0f} MiB",
                  f"{mem['evpnd_mib'] / mem['frr_mib']:.2f}")
    if restart_result:
        r = restart_result
        table.row("restart", f"evpnd restart holding {largest}: reconcile writes",
                  str(r.writes), "", "")
        table.row("restart", "  FDB changes seen on vxlan100 during the restart",
                  str(r.fdb_changes), "", "")
        table.row("restart", "  new start to `converged`", f"{r.converged_s:.2f} s", "", "")
        table.row("restart", f"  pings lost ({r.pings_sent} at 10/s)", str(r.pings_lost), "", "")

    table.print()
    p99 = lat["evpnd"].percentile(99)
    print(
        f"ratio_100k_add={ratios.get('add', float('nan')):.2f} "
        f"ratio_100k_withdraw={ratios.get('withdraw', float('nan')):.2f} "
        f"p99_learn_ms={p99:.1f} "
        f"restart_writes={restart_result.writes if restart_result else -1} "
        f"restart_pings_lost={restart_result.pings_lost if restart_result else -1}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
