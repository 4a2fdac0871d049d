"""The chaos suite's two sizes and its tally.

`make chaos` sets EVPND_CHAOS=full: every scenario at the issue's counts.
Otherwise (CI, `make test`) each runs a few rounds. Every scenario records
what it did in one tally; the session ends with the line

    chaos_rounds=N faults=F stale=S missing=M pings_lost=P crashes=C

(also written, with a row per scenario, to `EVPND_CHAOS_REPORT`, by default
.cache/chaos/report.json, which `python -m tests.chaos.summary` prints last).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.tally import Tally
from tests.conftest import REPO

FULL = os.environ.get("EVPND_CHAOS", "").lower() == "full"
REPORT = Path(os.environ.get("EVPND_CHAOS_REPORT", REPO / ".cache" / "chaos" / "report.json"))
TALLY = Tally()
FULL_TIMEOUT = 4 * 3600  # seconds per scenario under `make chaos` (CI's tier keeps 900)


def size(ci: int, full: int) -> int:
    """A count: `full` under `make chaos`, `ci` otherwise."""
    return full if FULL else ci


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the chaos and fuzz suite (tests/chaos)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
            if FULL:  # the issue's counts: C2's 100 restarts alone take longer than 900 s
                item.add_marker(pytest.mark.timeout(FULL_TIMEOUT))


@pytest.fixture(scope="session")
def tally() -> Iterator[Tally]:
    yield TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY.rows:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"full": FULL, "rows": TALLY.as_json()}, indent=1))
    terminalreporter.section("chaos")
    for line in TALLY.table():
        terminalreporter.write_line(line)
    terminalreporter.write_line(TALLY.line())
