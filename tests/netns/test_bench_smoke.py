"""The benchmark suite at its smoke size: it runs end to end and prints the agreed last line.

No timing is asserted (shared machines are noisy); only the output's shape:
the per-run table has a row for each receiver alone (FRR and evpnd, one NLRI
per UPDATE and packed, add and withdraw), and every figure of the last line
is a number.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_program, require_root

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
KEYS = ["ratio_100k_add_k1", "ratio_100k_withdraw_k1", "ratio_100k_add_packed",
        "ratio_100k_withdraw_packed", "rss_ratio_100k", "p99_learn_ms", "restart_writes",
        "restart_pings_lost"]


def test_bench_smoke_prints_the_tables_and_the_machine_readable_line() -> None:
    require_root()
    for name, package in (("zebra", "frr"), ("bgpd", "frr"), ("vtysh", "frr"),
                          ("bridge", "iproute2"), ("ping", "iputils-ping")):
        require_program(name, package)
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("| part ") for line in lines), "no summary table"
    assert not any("FAILED" in line for line in lines), result.stdout[-3000:]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines
            if line.startswith("| bgpsend ")]
    # the receive table's rows: source, N, per UPDATE, phase, receiver, ... (11 cells)
    runs = {tuple(row[2:5]) for row in rows if len(row) == 11}
    assert all(re.fullmatch(r"\d+\.\d+ s", row[5]) for row in rows if len(row) == 11), rows
    # (per UPDATE, phase, receiver) for every receiver alone, both packings, both phases
    assert runs == {(k, phase, receiver) for k in ("k1", "k100")
                    for phase in ("add", "withdraw") for receiver in ("frr", "evpnd")}, runs
    pairs = [word.split("=", 1) for word in lines[-1].split()]
    assert [key for key, _ in pairs] == KEYS, lines[-1]
    values = {key: float(value) for key, value in pairs}
    assert all(math.isfinite(v) and v >= 0 for v in values.values()), lines[-1]
    assert re.fullmatch(r"\d+", dict(pairs)["restart_writes"])
    assert re.fullmatch(r"\d+", dict(pairs)["restart_pings_lost"])
