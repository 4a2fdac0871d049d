"""`evpnd lab up|down|exec|inspect`: argparse wiring and handlers returning exit codes.

Hook into the main CLI with `add_subparsers(subparsers)`; every parser sets
`handler` (a `Callable[[argparse.Namespace], int]`) like the rest of evpnd's
commands. `python -m evpnd.lab ...` runs the same commands stand-alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from evpnd.lab import realize, topology
from evpnd.lab.topology import LabError

DESCRIPTION = (
    "Realize a containerlab topology file in network namespaces: one namespace "
    "per node (clab-<lab>-<node>), veth pairs for links, host FRR and this "
    "checkout's evpnd standing in for the images (see containerlab/README.md)."
)


def add_subparsers(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add `lab` with its subcommands to an existing `add_subparsers()` result."""
    lab = subparsers.add_parser(
        "lab", help="containerlab topologies in network namespaces", description=DESCRIPTION
    )
    add_lab_commands(lab.add_subparsers(dest="lab_command", required=True))
    return lab


def add_lab_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = sub.add_parser("up", help="create the lab's namespaces, links and programs")
    up.add_argument("topology", help="a containerlab topology file (*.clab.yml)")
    up.add_argument(
        "--reconfigure", action="store_true", help="take the lab down first if it is up"
    )
    up.set_defaults(handler=cmd_up)

    down = sub.add_parser("down", help="stop the lab's programs, remove its namespaces")
    down.add_argument("topology", nargs="?", help="the topology file the lab was made from")
    down.add_argument("--lab", help="the lab name instead of the topology file")
    down.set_defaults(handler=cmd_down)

    run = sub.add_parser(
        "exec",
        help="run a command in a node's namespace",
        description="Run CMD inside NODE's namespace. On FRR nodes `vtysh` gets the "
        "node's --vty_socket; on evpnd nodes `evpnd` is this checkout's evpnd.",
    )
    run.add_argument("--lab", help="lab name, when several labs have a node of that name")
    run.add_argument("-t", "--topology", help="topology file, instead of --lab")
    run.add_argument("node", help="node name (or its namespace name clab-<lab>-<node>)")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(handler=cmd_exec)

    inspect = sub.add_parser("inspect", help="list running labs, nodes and processes")
    inspect.add_argument("--lab", help="only this lab")
    inspect.set_defaults(handler=cmd_inspect)


def cmd_up(args: argparse.Namespace) -> int:
    try:
        report = realize.up(args.topology, reconfigure=args.reconfigure)
    except LabError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    print(report.render())
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if not args.topology and not args.lab:
        print("lab down: give the topology file or --lab NAME", file=sys.stderr)
        return 2
    try:
        report = realize.down(args.topology, lab=args.lab)
    except (LabError, OSError) as exc:
        print(exc.render() if isinstance(exc, LabError) else str(exc), file=sys.stderr)
        return 1
    print(report.render())
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("lab exec: give the command after --, e.g. lab exec rr -- vtysh", file=sys.stderr)
        return 2
    try:
        lab = args.lab or (topology.read_identity(args.topology)[0] if args.topology else None)
        prepared = realize.node_command(args.node, command, lab=lab)
    except (LabError, OSError) as exc:
        print(exc.render() if isinstance(exc, LabError) else str(exc), file=sys.stderr)
        return 1
    try:
        return subprocess.run(prepared.argv, env=prepared.env).returncode
    except KeyboardInterrupt:
        return 130


def cmd_inspect(args: argparse.Namespace) -> int:
    labs = [s for s in realize.running_labs() if not args.lab or s.lab == args.lab]
    if not labs:
        print("no lab is up")
        return 0
    for st in labs:
        print(f"lab {st.lab} ({st.status}) from {st.topology}")
        for node in st.nodes.values():
            alive = [pid for pid in node.pids if Path(f"/proc/{pid}").exists()]
            what = node.role or node.kind
            print(f"  {node.name:<12} {node.netns:<28} {what:<9} pids {alive or '-'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evpnd.lab", description=DESCRIPTION)
    add_lab_commands(parser.add_subparsers(dest="lab_command", required=True))
    args = parser.parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result
