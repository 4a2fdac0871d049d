"""What `lab up` and `lab down` tell the user: above all, what ran instead of each image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NOTES = (
    "no management network: nodes have no eth0 and no 172.20.20.0/24 address",
    "exec lines run the host's programs inside the node's network namespace; a word "
    "equal to a bind target is replaced by the bound host file",
    "there is no container filesystem: programs see the host's files",
)


@dataclass(frozen=True)
class NodeReport:
    node: str
    netns: str
    image: str
    substitute: str


@dataclass(frozen=True)
class UpReport:
    lab: str
    topology: Path
    runtime_dir: Path
    nodes: tuple[NodeReport, ...]
    links: int
    notes: tuple[str, ...] = NOTES

    def render(self) -> str:
        width = max((len(n.node) for n in self.nodes), default=4)
        ns_width = max((len(n.netns) for n in self.nodes), default=4)
        lines = [
            f"lab {self.lab} is up: {len(self.nodes)} nodes, {self.links} links "
            f"(runtime {self.runtime_dir})",
            "substitutions (image -> what runs instead):",
        ]
        lines += [
            f"  {n.node:<{width}}  {n.netns:<{ns_width}}  {n.image} -> {n.substitute}"
            for n in self.nodes
        ]
        lines += ["not realized or not checked:"] + [f"  {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class DownReport:
    lab: str
    was_up: bool
    namespaces: tuple[str, ...] = ()
    stopped: tuple[int, ...] = ()
    untouched: tuple[str, ...] = ()  # same names, but not recorded as ours

    def render(self) -> str:
        if not self.was_up:
            lines = [f"lab {self.lab} is not up (no state file): nothing removed"]
            lines += [
                f"  namespace {ns} exists but this lab engine did not record it; left alone"
                for ns in self.untouched
            ]
            return "\n".join(lines)
        return (
            f"lab {self.lab} is down: stopped {len(self.stopped)} processes, "
            f"removed {len(self.namespaces)} namespaces"
        )
