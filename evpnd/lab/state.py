"""The record of a realized lab, so `down` and `exec` work from any later process.

It is written before the first namespace is created and after every step,
so even a crashed `up` leaves enough behind for `down` to undo exactly what
was made, and nothing else.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

RUNTIME_ROOT = Path("/run/evpnd-lab")
STATE_FILE = "state.json"


@dataclass
class NodeState:
    name: str
    netns: str
    kind: str
    image: str | None
    role: str | None  # images.Role value; None for bridge nodes
    runtime_dir: str
    binds: dict[str, str] = field(default_factory=dict)  # container path -> host path
    env: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    python: str | None = None  # the interpreter that runs `evpnd` for evpnd nodes
    pathspace: str | None = None  # FRR -N value for FRR nodes


@dataclass
class LabState:
    lab: str
    topology: str
    status: str = "creating"  # creating -> up
    nodes: dict[str, NodeState] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)  # created by us, in order

    def node(self, name: str) -> NodeState | None:
        found = self.nodes.get(name)
        if found is not None:
            return found
        # Accept the namespace (container) name too: clab-<lab>-<node>.
        return next((n for n in self.nodes.values() if n.netns == name), None)


def lab_dir(lab: str, root: Path = RUNTIME_ROOT) -> Path:
    return root / lab


def save(state: LabState, root: Path = RUNTIME_ROOT) -> None:
    directory = lab_dir(state.lab, root)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    # Atomic, so a concurrent `down` never reads half a file.
    os.replace(tmp, directory / STATE_FILE)


def load(lab: str, root: Path = RUNTIME_ROOT) -> LabState | None:
    path = lab_dir(lab, root) / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    nodes = {name: NodeState(**node) for name, node in raw.pop("nodes", {}).items()}
    return LabState(nodes=nodes, **raw)


def all_labs(root: Path = RUNTIME_ROOT) -> list[LabState]:
    if not root.is_dir():
        return []
    states = [load(entry.name, root) for entry in sorted(root.iterdir()) if entry.is_dir()]
    return [s for s in states if s is not None]
