"""The benchmark suite's arithmetic (bench/figures.py): bound flags, ratios, alone checks,
process names and the machine-readable last line."""

from __future__ import annotations

import math

import pytest

from bench import figures
from bench.figures import Phase, Run


def run(receiver: str, per_update: int, add: float, withdraw: float,
        rss: dict[str, float], count: int = 100_000, source: str = "bgpsend") -> Run:
    return Run(source, receiver, count, per_update,
               Phase(add, 0.05, add * 0.9), Phase(withdraw, 0.04, withdraw * 0.9), rss)


FRR_RSS = {"bgpd": 150.0, "zebra": 100.0}
EVPND_RSS = {"evpnd": 250.0, "exabgp": 200.0, "relay": 50.0}
# The hand-measured figures of the brief (each receiver alone, bgpsend, 100k).
RUNS = [
    run("frr", 1, 1.78, 1.40, FRR_RSS),
    run("evpnd", 1, 33.9, 24.5, {**EVPND_RSS, "evpnd": 400.0}),
    run("frr", 100, 1.71, 1.35, FRR_RSS),
    run("evpnd", 100, 6.73, 6.63, EVPND_RSS),
    run("frr", 1, 0.17, 0.17, FRR_RSS, count=10_000),
    run("evpnd", 1, 3.48, 2.28, EVPND_RSS, count=10_000),
]


def test_a_receiver_within_ten_percent_of_the_sources_last_byte_is_source_bound() -> None:
    # the old headline: FRR-VTEP source done at 8.86 s, both receivers at ~8.9-9.8 s
    assert figures.bound(8.94, 8.86) == "source-bound"
    assert figures.bound(9.746, 8.86) == "source-bound"  # 10 % exactly
    assert figures.bound(9.75, 8.86) == "receiver"
    assert figures.bound(1.78, 0.05) == "receiver"
    assert figures.bound(0.02, 0.0) == "receiver"  # no last byte known: nothing to blame


def test_ratios_come_from_the_same_size_and_packing() -> None:
    assert figures.phase_ratio(RUNS, 100_000, 1, "add") == pytest.approx(33.9 / 1.78)
    assert figures.phase_ratio(RUNS, 100_000, 1, "withdraw") == pytest.approx(24.5 / 1.40)
    assert figures.phase_ratio(RUNS, 100_000, 100, "add") == pytest.approx(6.73 / 1.71)
    assert figures.phase_ratio(RUNS, 10_000, 1, "add") == pytest.approx(3.48 / 0.17)
    assert math.isnan(figures.phase_ratio(RUNS, 10_000, 100, "add"))  # not run
    assert math.isnan(figures.phase_ratio(RUNS, 100_000, None, "add"))
    failed = [r for r in RUNS if not (r.receiver == "frr" and r.per_update == 1)]
    failed.append(Run("bgpsend", "frr", 100_000, 1))  # a run that failed: no phases
    assert math.isnan(figures.phase_ratio(failed, 100_000, 1, "add"))


def test_packed_is_the_largest_k_above_one() -> None:
    assert figures.packed_size([1, 100]) == 100
    assert figures.packed_size([1, 50, 100]) == 100
    assert figures.packed_size([1]) is None


def test_rss_ratio_prefers_packed_and_says_which() -> None:
    ratio, which = figures.rss_ratio(RUNS, 100_000, [1, 100])
    assert which == "k100"
    assert ratio == pytest.approx(500.0 / 250.0)
    ratio, which = figures.rss_ratio(RUNS, 100_000, [1])
    assert which == "k1"
    assert ratio == pytest.approx(650.0 / 250.0)
    assert math.isnan(figures.rss_ratio(RUNS, 5, [1])[0])
    # a receiver whose main processes were not found gives no figure, not a small one
    assert math.isnan(figures.total_rss(run("evpnd", 1, 1, 1, {"relay": 20.0})))


def test_last_line_keys_in_order_and_numbers() -> None:
    line = figures.last_line({
        "ratio_100k_add_k1": 33.9 / 1.78, "ratio_100k_withdraw_k1": 17.5,
        "ratio_100k_add_packed": 3.94, "ratio_100k_withdraw_packed": 4.91,
        "rss_ratio_100k": 2.0, "p99_learn_ms": 7.44, "restart_writes": 0,
        "restart_pings_lost": 0})
    assert line == ("ratio_100k_add_k1=19.04 ratio_100k_withdraw_k1=17.50 "
                    "ratio_100k_add_packed=3.94 ratio_100k_withdraw_packed=4.91 "
                    "rss_ratio_100k=2.00 p99_learn_ms=7.4 restart_writes=0 "
                    "restart_pings_lost=0")
    missing = figures.last_line({})
    assert [w.split("=")[0] for w in missing.split()] == list(figures.LAST_LINE_KEYS)
    assert "ratio_100k_add_k1=nan" in missing and "restart_writes=-1" in missing


def test_intruders_tell_this_runs_misplaced_processes_from_another_runs() -> None:
    found = [("evb-ab12cd-rcv", "frr"), ("evb-ab12cd-src", "frr"),
             ("evb-ab1201-rcv", "evpnd"),  # an earlier lab of this run, left running
             ("evb-99ff00-rcv", "evpnd"),  # another bench run on the machine
             ("evb-a3525c", "evpnd")]
    allowed = {"frr": ["evb-ab12cd-rcv", "evb-ab12cd-src"], "evpnd": []}
    ours, others = figures.intruders(found, allowed, "evb-ab12")
    assert ours == ["evpnd in evb-ab1201-rcv"]
    assert others == ["evpnd in evb-99ff00-rcv", "evpnd in evb-a3525c"]
    # the evpnd run of the same lab: FRR only as the source
    ours, _ = figures.intruders(found[:2], {"frr": ["evb-ab12cd-src"],
                                            "evpnd": ["evb-ab12cd-rcv"]}, "evb-ab12")
    assert ours == ["frr in evb-ab12cd-rcv"]


@pytest.mark.parametrize(("comm", "argv", "name"), [
    # command lines seen in a bench namespace (evpnd run, its ExaBGP, the relay)
    ("python", ["/work/main/.venv/bin/python", "-m", "evpnd", "run", "-c",
                "/tmp/evb-ps-t4hwm6ro/evpnd-rcv.yaml"], "evpnd"),
    ("python", ["/work/main/.venv/bin/python", "-m", "evpnd.speaker.launcher",
                "/tmp/evb-ps-t4hwm6ro/evpnd-rcv/exabgp.conf"], "exabgp"),
    # the relay's socket path says `exabgp`: only the module counts
    ("python", ["/work/main/.venv/bin/python", "-m", "evpnd.speaker.bridge",
                "/tmp/evb-ps-t4hwm6ro/evpnd-rcv/exabgp-api.sock"], "relay"),
    ("python", ["/usr/bin/python3", "-m", "cProfile", "-o", "/tmp/p/rcv-evpnd.log.prof",
                "-m", "evpnd", "run", "-c", "x.yaml"], "evpnd"),
    ("bgpd", ["/usr/lib/frr/bgpd", "-d", "-N", "evb-ab12cd-rcv"], "bgpd"),
    ("zebra", ["/usr/lib/frr/zebra", "-d", "-N", "evb-ab12cd-rcv", "-s", "90000000"], "zebra"),
    # bench helpers are no receiver even when their arguments name evpnd
    ("python", ["/work/main/.venv/bin/python", "-m", "bench.fdbwatch", "vxlan100"], "python"),
    ("python", ["/work/main/.venv/bin/python", "-m", "bench.exabgp_receive", "record",
                "/tmp/evpnd-lines.txt"], "python"),
    # `ip netns exec` before it execs python: not the daemon yet
    ("ip", ["ip", "netns", "exec", "evb-ab12cd-rcv", "python", "-m", "evpnd"], "ip"),
])
def test_process_names(comm: str, argv: list[str], name: str) -> None:
    assert figures.process_name(comm, argv) == name


def test_cpu_text_lists_the_known_processes_first() -> None:
    cpu = {"relay": 0.4, "exabgp": 35.2, "evpnd": 29.6}
    assert figures.cpu_text(cpu, figures.RECEIVER_PROCESSES["evpnd"]) == \
        "evpnd 29.6, exabgp 35.2, relay 0.4"
    assert figures.cpu_text({}) == "-"
