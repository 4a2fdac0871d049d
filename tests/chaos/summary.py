"""Print the last chaos run's table and its closing line (`make chaos` ends with this).

    python -m tests.chaos.summary [REPORT]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.chaos.tally import Tally
from tests.conftest import REPO


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else REPO / ".cache" / "chaos" / "report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"no chaos report at {path}: {exc}", file=sys.stderr)
        return 1
    tally = Tally.from_json(report["rows"])
    print(f"chaos ({'full' if report['full'] else 'CI'} counts)")
    for line in tally.table():
        print(line)
    print(tally.line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
