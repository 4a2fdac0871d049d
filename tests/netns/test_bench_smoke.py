"""The benchmark suite at its smoke size: it runs end to end and prints the agreed last line.

No timing is asserted (shared machines are noisy); only the output's shape.
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
KEYS = ["ratio_100k_add", "ratio_100k_withdraw", "p99_learn_ms", "restart_writes",
        "restart_pings_lost"]


def test_bench_smoke_prints_the_table_and_the_machine_readable_line() -> None:
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
    assert any(line.startswith("| part ") for line in lines), "no table"
    pairs = [word.split("=", 1) for word in lines[-1].split()]
    assert [key for key, _ in pairs] == KEYS, lines[-1]
    values = {key: float(value) for key, value in pairs}
    assert all(math.isfinite(v) and v >= 0 for v in values.values()), lines[-1]
    assert re.fullmatch(r"\d+", dict(pairs)["restart_writes"])
    assert re.fullmatch(r"\d+", dict(pairs)["restart_pings_lost"])
