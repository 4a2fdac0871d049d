"""What each chaos scenario did: rounds, faults injected, and what it found.

A row per scenario; `line()` sums them into the suite's last line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FIELDS = ("rounds", "faults", "stale", "missing", "pings_lost", "crashes")


@dataclass
class Row:
    scenario: str
    rounds: int = 0
    faults: int = 0
    stale: int = 0  # kernel entries FRR says should not be there, after a fault settled
    missing: int = 0  # entries FRR says should be there and are not
    pings_lost: int = 0
    crashes: int = 0  # daemon exits nobody asked for
    notes: dict[str, Any] = field(default_factory=dict)  # figures worth a README line


class Tally:
    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}

    def row(self, scenario: str) -> Row:
        return self.rows.setdefault(scenario, Row(scenario))

    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows.values()]

    @staticmethod
    def from_json(rows: list[dict[str, Any]]) -> Tally:
        tally = Tally()
        for data in rows:
            tally.rows[data["scenario"]] = Row(**data)
        return tally

    def line(self) -> str:
        total = {f: sum(getattr(r, f) for r in self.rows.values()) for f in FIELDS}
        return (f"chaos_rounds={total['rounds']} faults={total['faults']} "
                f"stale={total['stale']} missing={total['missing']} "
                f"pings_lost={total['pings_lost']} crashes={total['crashes']}")

    def table(self) -> list[str]:
        head = ["scenario", *FIELDS, "notes"]
        rows = [[r.scenario, *(str(getattr(r, f)) for f in FIELDS),
                 ", ".join(f"{k}={v}" for k, v in r.notes.items())]
                for r in sorted(self.rows.values(), key=lambda r: _order(r.scenario))]
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
        return ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
                for row in (head, *rows)]


def _order(name: str) -> tuple[str, int]:
    """C1 < C2 < ... < C10 < F1 ..."""
    digits = "".join(c for c in name.split()[0][1:] if c.isdigit())
    return (name[0], int(digits or 0))
