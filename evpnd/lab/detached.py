"""Lab programs started detached inside a node's namespace, with a log and a start-up check.

Each runs in its own session (a Ctrl-C aimed at `lab up` must not reach the
lab) and outlives `lab up`; `lab down` stops it with everything else in the
lab's namespaces. A program that dies within the grace period (a bad config,
a missing option) is reported at once with the end of its log, not later as
an unexplained missing session or bridge.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def start_in_node(
    netns_name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    what: str,
    error: type[Exception],
    grace: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `argv` in the namespace, output appended to `log_path`; its pid.

    `ip netns exec` execs the command, so the pid is the program's own.
    Raises `error` if it exits within `grace` seconds.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns_name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise error(
                f"{what} exited with {process.returncode} right after start; "
                f"last lines of {log_path}:\n{tail(log_path)}"
            )
        time.sleep(0.1)
    return process.pid


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
