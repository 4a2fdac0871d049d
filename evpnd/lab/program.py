"""The evpnd image's stand-in: this checkout's evpnd, run inside the node's namespace."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from evpnd.lab.detached import start_in_node

STARTUP_GRACE = 1.0  # seconds evpnd must survive for `up` to call it started


class EvpndStartError(RuntimeError):
    pass


def evpnd_command(config: Path, python: str = sys.executable) -> list[str]:
    """What the evpnd image's ENTRYPOINT+CMD become. The one place to adjust."""
    return [python, "-m", "evpnd", "run", "-c", str(config)]


def start_evpnd(
    netns_name: str, config: Path, runtime_dir: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start evpnd detached (it outlives `lab up`), logging to <runtime_dir>/evpnd.log."""
    return start_in_node(netns_name, evpnd_command(config), runtime_dir / "evpnd.log",
                         what="evpnd", error=EvpndStartError, grace=STARTUP_GRACE,
                         env={**(env or {}), "PYTHONUNBUFFERED": "1"})  # fmt: skip
