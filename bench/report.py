"""The suite's tables: a header, rows of cells, notes; printed as Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field

SUMMARY = ("part", "what", "evpnd", "FRR / other", "evpnd/FRR")


@dataclass
class Table:
    header: tuple[str, ...] = SUMMARY
    title: str = ""
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, *cells: str) -> tuple[str, ...]:
        if len(cells) != len(self.header):
            raise ValueError(f"{len(cells)} cells for {len(self.header)} columns")
        self.rows.append(tuple(cells))
        return self.rows[-1]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def lines(self) -> list[str]:
        table = [self.header, *self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(self.header))]
        out = [f"### {self.title}", ""] if self.title else []
        for index, line in enumerate(table):
            out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                       + " |")
            if index == 0:
                out.append("|-" + "-|-".join("-" * w for w in widths) + "-|")
        out += [f"- {note}" for note in self.notes]
        return out

    def print(self) -> None:
        print()
        print("\n".join(self.lines()), flush=True)


def text(cells: tuple[str, ...]) -> str:
    return " | ".join(cells)
