"""containerlab topology files realized in network namespaces (the lab engine).

containerlab cannot run here, so the same topology files are realized with
one network namespace per node: see `realize` for the order of things,
`images` for what runs instead of each image, and containerlab/README.md.

Public API:
    load(path) -> Topology                      parse + validate a topology file
    up(path, reconfigure=False) -> UpReport     realize it; report the substitutions
    down(path | lab=...) -> DownReport          undo exactly what `up` recorded
    node_command(node, argv) -> NodeCommand     `lab exec` argv/env (vtysh, evpnd mapped)
    run_in_node(node, argv) -> CompletedProcess `lab exec` with captured output
    LabError                                    every failure a user should read
"""

from evpnd.lab.realize import (
    DownReport,
    NodeCommand,
    UpReport,
    down,
    find_node,
    node_command,
    run_in_node,
    running_labs,
    up,
)
from evpnd.lab.topology import LabError, Topology, load

__all__ = [
    "DownReport",
    "LabError",
    "NodeCommand",
    "Topology",
    "UpReport",
    "down",
    "find_node",
    "load",
    "node_command",
    "run_in_node",
    "running_labs",
    "up",
]
