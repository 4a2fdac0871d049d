"""The benchmark suite: `make bench` (full sizes) or `make bench BENCH_ARGS=--smoke`.

    .venv/bin/python -m bench.run [--smoke] [--sizes 10000,100000] [--per-update 1,100]
        [--parts writer,receive,vtep,send,learn,restart] [--receivers frr,evpnd]
        [--samples 200] [--send-count 10000] [--writer-count 100000]

Every receiver runs alone: each run is one lab (namespaces `evb-*`, removed
at its end) holding a source and one receiver; FRR's run first, then evpnd's,
never both at once, and before every timed phase the run checks that no other
FRR daemon or evpnd of the bench is running. Parts:
  writer   evpnd's dataplane writer vs `bridge -batch` (bench.writer)
  receive  bench.bgpsend -> FRR, then -> evpnd: N MAC routes over 40 VTEPs, K
           NLRIs per UPDATE (1 and ~100), add then withdraw (bench.convergence);
           CPU per process, the source's CPU, its last byte, peak RSS after the add
  vtep     the same from an FRR VTEP source (one extra, realistic row)
  send     N local MACs appear at once on an evpnd host / on an FRR VTEP: time
           until an FRR receiver has them all (bench.sendside)
  learn    learn latency evpnd->evpnd, FRR->FRR, each pair alone (bench.learn)
  restart  an evpnd restart holding the largest N from the FRR VTEP, under a ping
           (bench.restart; runs inside the vtep part's evpnd run)
It prints the tables; the last line is machine-readable:
  ratio_100k_add_k1=A ratio_100k_withdraw_k1=B ratio_100k_add_packed=C
  ratio_100k_withdraw_packed=D rss_ratio_100k=E p99_learn_ms=F restart_writes=G
  restart_pings_lost=H
(ratios evpnd/FRR from bench.bgpsend at the largest size run, k1 and the
largest K > 1; in a smoke run that size is the smoke size, the key names stay;
a figure not measured prints nan, or -1 for the restart's counts).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import subprocess
import sys
import time

from bench import convergence, figures, learn, sendside
from bench.figures import Phase, Run
from bench.report import Table, text
from bench.restart import RestartResult, restart, wait_ping
from bench.topo import BenchError, Lab, Watch
from evpnd import log

# What a scenario may raise and still leave the others to run (and a FAILED row).
FAILURES = (BenchError, subprocess.SubprocessError, OSError)
PARTS = ("writer", "receive", "vtep", "send", "learn", "restart")
SUMMARY_ORDER = ("receive", "vtep", "memory", "send", "learn", "restart", "writer")
RECEIVE = ("source", "N", "per UPDATE", "phase", "receiver", "time", "source done",
           "last byte in", "bound", "CPU s, receiver", "CPU s, source")
MEMORY = ("source", "N", "per UPDATE", "receiver", "peak RSS per process (MiB)", "total")
SOURCE_NAMES = {"bgpsend": "bgpsend", "frr-vtep": "FRR VTEP"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--sizes", help="comma-separated N (default 10000,100000)")
    parser.add_argument("--per-update", default="1,100",
                        help="bgpsend NLRIs per UPDATE, comma-separated (default 1,100)")
    parser.add_argument("--parts", default=",".join(PARTS), help="parts to run: " + ",".join(PARTS))
    parser.add_argument("--receivers", default=",".join(convergence.RECEIVERS),
                        help="receivers to run, in order (default frr,evpnd)")
    parser.add_argument("--samples", type=int, help="learn-latency samples (default 200)")
    parser.add_argument("--send-count", type=int, help="send-side MACs (default 10000)")
    parser.add_argument("--writer-count", type=int, help="writer entries (default 100000)")
    args = parser.parse_args(argv)
    args.sizes = [int(n) for n in (args.sizes or ("300" if args.smoke else "10000,100000"))
                  .split(",")]
    args.per_update = [int(k) for k in args.per_update.split(",")]
    args.parts = args.parts.split(",")
    args.receivers = args.receivers.split(",")
    for name, chosen, known in (("part", args.parts, PARTS),
                                ("receiver", args.receivers, convergence.RECEIVERS)):
        if unknown := [c for c in chosen if c not in known]:
            parser.error(f"unknown {name} {unknown}: choose from {', '.join(known)}")
    args.samples = args.samples or (5 if args.smoke else 200)
    args.send_count = args.send_count or (300 if args.smoke else 10_000)
    args.writer_count = args.writer_count or (1000 if args.smoke else 100_000)
    return args


def n_label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def phase_cells(run: Run, name: str, phase: Phase | None) -> tuple[str, ...]:
    head = (SOURCE_NAMES[run.source], n_label(run.count), figures.packing(run.per_update),
            name, run.receiver)
    if phase is None:
        return (*head, "FAILED", "-", "-", "-", "-", "-")
    flag = figures.bound(phase.seconds, phase.source_done)
    if phase.others:
        flag += f"; NOT ALONE: {', '.join(phase.others)}"
    order = figures.RECEIVER_PROCESSES[run.receiver]
    return (*head, f"{phase.seconds:.2f} s", f"{phase.source_done:.3f} s",
            f"{phase.last_in:.3f} s", flag, figures.cpu_text(phase.cpu, order),
            f"{phase.source_cpu:.1f}")


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.largest = max(args.sizes)
        self.runs: list[Run] = []
        self.receive = Table(RECEIVE, "Receive, each receiver alone (times from t0)")
        self.memory = Table(MEMORY, "Peak RSS (VmHWM) after the add")
        self.summary = Table(title="Summary (each receiver / origin alone)")
        self.restart: RestartResult | None = None
        self.p99 = math.nan

    def failed(self, part: str, what: str, exc: BaseException) -> None:
        """A scenario that failed still leaves a row (and the run goes on)."""
        print(f"{part} {what} FAILED: {exc}", flush=True)
        self.summary.row(part, f"{what}: FAILED", "-", "-", "-")
        self.summary.note(f"{part} {what} failed: {exc}")

    def keep(self, run: Run) -> None:
        convergence.assert_sane(run)
        twin = figures.find(self.runs, run.source, "frr" if run.receiver == "evpnd" else "evpnd",
                            run.count, run.per_update)
        if twin and twin.digest != run.digest:
            raise BenchError(f"bgpsend sent different streams: {twin.digest} vs {run.digest}")
        self.runs.append(run)
        for name, phase in (("add", run.add), ("withdraw", run.withdraw)):
            row = self.receive.row(*phase_cells(run, name, phase))
            print(text(row), flush=True)
        order = figures.RECEIVER_PROCESSES[run.receiver]
        self.memory.row(SOURCE_NAMES[run.source], n_label(run.count),
                        figures.packing(run.per_update), run.receiver,
                        ", ".join(f"{n} {run.rss_mib[n]:.0f}" for n in order if n in run.rss_mib),
                        f"{figures.total_rss(run):.0f} MiB")

    def writer(self) -> None:
        print("== writer", flush=True)
        try:
            # imported here: it drives evpnd's own writer, whose import must not stop the suite
            from bench import writer

            w = writer.run(self.args.writer_count)
        except (Exception, SystemExit) as exc:
            self.failed("writer", f"{self.args.writer_count} entries", exc)
            return
        self.summary.row("writer", f"evpnd writer, {self.args.writer_count} remote MACs "
                         "(vxlan + bridge entry)",
                         f"{w['writer']:,.0f}/s", f"bridge -batch {w['bridge_batch']:,.0f}/s", "")

    def receive_part(self) -> None:
        for size in self.args.sizes:
            for k in self.args.per_update:
                for receiver in self.args.receivers:
                    print(f"== receive: bgpsend N={size} k{k} -> {receiver} alone", flush=True)
                    try:
                        self.keep(convergence.run_sender(receiver, size, k))
                    except FAILURES as exc:
                        self.failed("receive", f"N={size} k{k} {receiver}", exc)

    def restart_hook(self, size: int) -> convergence.Hook:
        def hook(lab: Lab, proc: subprocess.Popen[bytes] | None,
                 watch: Watch) -> dict[str, object]:
            if proc is None:
                raise BenchError("the restart needs an evpnd receiver")
            print("== restart", flush=True)
            lab.endpoint("rcv", "ep1", "02:00:00:00:0e:01", "198.18.100.1")
            lab.endpoint("src", "ep2", "02:00:00:00:0f:01", "198.18.100.2")
            wait_ping(lab, "ep1", "198.18.100.2")
            watch.target(size + 1, 60)  # ep2's MAC came as a route
            return {"restart": restart(lab, "rcv", proc, watch, "ep1", "198.18.100.2")}
        return hook

    def vtep_part(self) -> None:
        with_restart = "restart" in self.args.parts
        sizes = self.args.sizes if "vtep" in self.args.parts else [self.largest]
        receivers = self.args.receivers if "vtep" in self.args.parts else ["evpnd"]
        for size in sizes:
            for receiver in receivers:
                hook = (self.restart_hook(size)
                        if with_restart and receiver == "evpnd" and size == self.largest
                        else None)
                print(f"== vtep: FRR VTEP N={size} -> {receiver} alone", flush=True)
                try:
                    run, extra = convergence.run_frr_vtep(receiver, size, hook)
                except FAILURES as exc:
                    self.failed("vtep", f"N={size} {receiver}", exc)
                    continue
                self.keep(run)
                result = extra.get("restart")
                if isinstance(result, RestartResult):
                    self.restart = result

    def send_part(self) -> None:
        results: dict[str, sendside.SendResult] = {}
        count = self.args.send_count
        for origin in ("evpnd", "frr"):
            print(f"== send: {count} local MACs on an {origin} origin -> FRR", flush=True)
            try:
                results[origin] = r = sendside.run(origin, count)
            except FAILURES as exc:
                self.failed("send", f"{origin} origin", exc)
                continue
            order = figures.RECEIVER_PROCESSES[origin]
            self.summary.note(
                f"send, {origin} origin, {count} MACs: `bridge -batch` {r.batch_s:.2f} s; CPU "
                f"s during the add: origin {figures.cpu_text(r.origin_cpu, order)}; FRR "
                f"receiver {figures.cpu_text(r.receiver_cpu, ('bgpd', 'zebra'))}"
                + (f"; NOT ALONE: {', '.join(r.others)}" if r.others else ""))
        e, f = results.get("evpnd"), results.get("frr")
        for what, attr in (("appear", "add_s"), ("go", "remove_s")):
            ev, fv = (getattr(r, attr) if r else math.nan for r in (e, f))
            self.summary.row("send", f"{n_label(count)} local MACs {what} at once -> FRR "
                             f"receiver's FDB", figures.seconds_text(ev),
                             figures.seconds_text(fv), f"{figures.ratio(ev, fv):.2f}")

    def learn_part(self) -> None:
        print("== learn latency", flush=True)
        try:
            lat = learn.measure(self.args.samples)
        except FAILURES as exc:
            self.failed("learn", f"{self.args.samples} samples", exc)
            return
        for kind in ("evpnd", "frr"):
            self.summary.note(f"learn {kind}->{kind}: {len(lat[kind].samples_ms)} samples, "
                              f"{lat[kind].missed} missed (10 s)")
        for q in (50, 99):
            e, f = lat["evpnd"].percentile(q), lat["frr"].percentile(q)
            self.summary.row("learn", f"learn latency p{q}", f"{e:.1f} ms", f"{f:.1f} ms",
                             f"{figures.ratio(e, f):.2f}")
        self.p99 = lat["evpnd"].percentile(99)

    def summarize(self) -> dict[str, float]:
        runs, largest = self.runs, self.largest
        packed = figures.packed_size(self.args.per_update)
        for size in self.args.sizes:
            for source, ks in (("bgpsend", self.args.per_update), ("frr-vtep", [0])):
                for k in ks:
                    pair = [figures.find(runs, source, r, size, k) for r in ("evpnd", "frr")]
                    if not any(pair):
                        continue
                    for phase in ("add", "withdraw"):
                        sec = [getattr(run, phase).seconds if run and getattr(run, phase)
                               else math.nan for run in pair]
                        what = f"{phase} N={n_label(size)} {SOURCE_NAMES[source]}" + (
                            f" {figures.packing(k)}" if source == "bgpsend" else "")
                        if size == largest and k in (1, packed):
                            what = f"**{what}**"
                        self.summary.row("receive" if source == "bgpsend" else "vtep", what,
                                         figures.seconds_text(sec[0]),
                                         figures.seconds_text(sec[1]),
                                         f"{figures.ratio(sec[0], sec[1]):.2f}")
        rss, which = figures.rss_ratio(runs, largest, self.args.per_update)
        pair = [figures.find(runs, "bgpsend", r, largest, int(which[1:]) if which != "-" else 1)
                for r in ("evpnd", "frr")]
        if all(pair):
            self.summary.row("memory", f"peak RSS holding {n_label(largest)} (bgpsend {which})",
                             f"{figures.total_rss(pair[0]):.0f} MiB (evpnd + ExaBGP + relay)",
                             f"{figures.total_rss(pair[1]):.0f} MiB (bgpd + zebra)", f"{rss:.2f}")
        r = self.restart
        if r:
            n = n_label(largest)
            self.summary.row("restart", f"evpnd restart holding {n}: reconcile writes",
                             str(r.writes), "", "")
            self.summary.row("restart", "  FDB changes seen on vxlan100 during the restart",
                             str(r.fdb_changes), "", "")
            self.summary.row("restart", "  new start to `converged`", f"{r.converged_s:.2f} s",
                             "", "")
            self.summary.row("restart", f"  pings lost ({r.pings_sent} at 10/s)",
                             str(r.pings_lost), "", "")
        return {
            "ratio_100k_add_k1": figures.phase_ratio(runs, largest, 1, "add"),
            "ratio_100k_withdraw_k1": figures.phase_ratio(runs, largest, 1, "withdraw"),
            "ratio_100k_add_packed": figures.phase_ratio(runs, largest, packed, "add"),
            "ratio_100k_withdraw_packed": figures.phase_ratio(runs, largest, packed, "withdraw"),
            "rss_ratio_100k": rss,
            "p99_learn_ms": self.p99,
            "restart_writes": r.writes if r else -1,
            "restart_pings_lost": r.pings_lost if r else -1,
        }


def main() -> None:
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmarks create network namespaces")
    log.configure(level="warning")
    # SIGTERM (a `timeout`, CI) unwinds like an exception: every Lab removes its namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    suite = Suite(args)
    started = time.monotonic()
    load = os.getloadavg()
    if "writer" in args.parts:
        suite.writer()
    if "receive" in args.parts:
        suite.receive_part()
    if "vtep" in args.parts or "restart" in args.parts:
        suite.vtep_part()
    if "send" in args.parts:
        suite.send_part()
    if "learn" in args.parts:
        suite.learn_part()
    values = suite.summarize()
    suite.summary.note(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - started:.0f} s;"
        f" load average (1 min) {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    suite.receive.note("bound: `source-bound` when the receiver finished within 10 % of the "
                       "source's last byte (bgpsend: written; FRR VTEP: arrived at the receiver)")
    suite.receive.note("CPU s: during the phase (t0 until the FDB target), per process")
    if suite.runs:
        suite.memory.note(f"rss_ratio_100k uses the bgpsend runs at N={n_label(suite.largest)}, "
                          f"{figures.rss_ratio(suite.runs, suite.largest, args.per_update)[1]}")
    # The summary in a fixed order of parts, whatever order they ran in.
    suite.summary.rows.sort(key=lambda row: SUMMARY_ORDER.index(row[0]))
    for table in (suite.receive, suite.memory, suite.summary):
        if table.rows:
            table.print()
    print(figures.last_line(values))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
