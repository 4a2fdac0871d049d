"""Turn a command meant for a container into one that works in the node's namespace.

Inside a real container the command would see the image's files; here it
runs with the host's programs. Three rewrites keep the usual commands
working, nothing more:
- a word equal to a bind target (a whole word, e.g. `/lab/attach-ports.sh`)
  becomes the bound host path;
- on FRR nodes `vtysh` gets the node's `--vty_socket`;
- on evpnd nodes `evpnd` becomes `<python> -m evpnd` (no entry point needed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from evpnd.lab import frr
from evpnd.lab.images import Role


def node_argv(
    words: Sequence[str],
    *,
    role: str | None,
    binds: Mapping[str, str],
    vty_dir: Path | str | None = None,
    python: str | None = None,
) -> list[str]:
    if not words:
        raise ValueError("empty command")
    argv = [binds.get(word, word) for word in words]
    program = os.path.basename(argv[0])
    if role == Role.FRR and program == "vtysh" and vty_dir is not None:
        return frr.vtysh_command(argv[1:], vty_dir, program=argv[0])
    if role == Role.EVPND and program == "evpnd":
        return [python or sys.executable, "-m", "evpnd", *argv[1:]]
    return argv


def in_netns(netns_name: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns_name, *argv]
