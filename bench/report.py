"""The suite's table: rows of (part, what, evpnd, FRR / reference, ratio) and notes."""

from __future__ import annotations

from dataclasses import dataclass, field

HEADER = ("part", "what", "evpnd", "FRR / other", "evpnd/FRR")


@dataclass
class Row:
    cells: tuple[str, str, str, str, str]

    def text(self) -> str:
        return " | ".join(self.cells)


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, part: str, what: str, evpnd: str, other: str, ratio: str) -> None:
        self.rows.append(Row((part, what, evpnd, other, ratio)))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def print(self) -> None:
        lines = [HEADER, *(r.cells for r in self.rows)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
        sep = "|-" + "-|-".join("-" * w for w in widths) + "-|"
        print()
        for index, line in enumerate(lines):
            print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
            if index == 0:
                print(sep)
        for note in self.notes:
            print(f"- {note}")
