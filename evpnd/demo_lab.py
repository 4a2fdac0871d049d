"""What every lab demo (`make demo`, `make demo-irb`) does around its own steps.

A demo brings a containerlab topology up in network namespaces, runs its
steps (printing sections, running commands in the nodes, pinging), and
takes the lab down again, also on an error; `--keep` leaves it up.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from evpnd import lab

REPO = Path(__file__).resolve().parent.parent


class DemoLab:
    """One topology of containerlab/ and the commands a demo runs in its nodes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.topology = REPO / "containerlab" / f"{name}.clab.yml"

    def node(self, node: str, *argv: str) -> str:
        result = lab.run_in_node(node, list(argv), lab=self.name)
        return (result.stdout + result.stderr).rstrip()

    def evpnd_show(self, host: str, *view: str) -> str:
        config = REPO / "containerlab" / "configs" / self.name / host / "evpnd.yaml"
        return self.node(host, sys.executable, "-m", "evpnd", "show", *view, "-c", str(config))

    def run(self, argv: list[str] | None, description: str,
            steps: Callable[[], tuple[int, int]]) -> int:  # fmt: skip
        """Up, `steps` (which return (succeeded, attempted)), down; 0 when all succeeded."""
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
        args = parser.parse_args(argv)
        if os.geteuid() != 0:
            print("the demo needs root (it creates network namespaces)", file=sys.stderr)
            return 1
        if any(s.lab == self.name for s in lab.running_labs()):
            print(f"lab {self.name} was already up: taking it down first")
            lab.down(self.topology)
        where = self.topology.relative_to(REPO)
        section(f"evpnd lab up {where}")
        print(lab.up(self.topology).render())
        ok = total = 0
        try:
            ok, total = steps()
        finally:
            if args.keep:
                print(f"\nthe lab is still up; take it down with: evpnd lab down {where}")
            else:
                section("evpnd lab down")
                print(lab.down(self.topology).render())
        return 0 if ok == total and total > 0 else 1


def section(title: str) -> None:
    print(f"\n=== {title}")
