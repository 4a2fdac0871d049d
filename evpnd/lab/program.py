"""The evpnd image's stand-in: this checkout's evpnd, run inside the node's namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

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
    runtime_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(runtime_dir / "evpnd.log", "ab") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns_name, *evpnd_command(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            # Its own session: a Ctrl-C aimed at `lab up` must not reach the lab.
            start_new_session=True,
        )
    # A missing subcommand or a config error ends it at once; say so now, not
    # later as an unexplained missing bridge.
    deadline = time.monotonic() + STARTUP_GRACE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EvpndStartError(
                f"evpnd exited with {process.returncode} right after start; "
                f"last lines of {runtime_dir / 'evpnd.log'}:\n{_tail(runtime_dir / 'evpnd.log')}"
            )
        time.sleep(0.1)
    # `ip netns exec` execs the command, so this pid is evpnd itself.
    return process.pid


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
