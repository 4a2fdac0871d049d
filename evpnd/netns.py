"""Throwaway network namespaces for the lab realizer, the demo, tests and benchmarks.

Every namespace evpnd creates carries the `evt-` or a caller-given prefix so
cleanup code can tell its own namespaces from anything else on the host.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from types import FrameType

from pyroute2 import netns as _netns


def unwind_on_sigterm() -> None:
    """Make SIGTERM unwind the calling process like Ctrl-C, so that `with` blocks, atexit
    and pytest's fixture teardown remove the namespaces and processes it started (the
    default action kills it on the spot and leaves them behind).

    KeyboardInterrupt, not SystemExit: pytest reports a SystemExit as one failed test
    and goes on, and the benchmarks catch it per run. A forked child inherits the
    handler (pyroute2 forks one to open a socket in a namespace and ends it with
    SIGTERM); it must end there, not unwind into a second copy of its parent."""
    if threading.current_thread() is not threading.main_thread():
        return
    owner = os.getpid()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_sigterm)


def unique_name(prefix: str = "evt") -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def create(name: str) -> str:
    _netns.create(name)
    run(name, ["ip", "link", "set", "lo", "up"])
    return name


def remove(name: str) -> None:
    """Kill what runs inside the namespace (we started it) and delete it; never raises."""
    for pid in pids_in(name):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 9)
    with contextlib.suppress(Exception):
        _netns.remove(name)


def exists(name: str) -> bool:
    return name in _netns.listnetns()


def pids_in(name: str) -> list[int]:
    """PIDs whose network namespace is `name` (processes started inside it)."""
    try:
        target = os.stat(f"/run/netns/{name}").st_ino
    except FileNotFoundError:
        return []
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                found.append(int(entry))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


def run(
    name: str, cmd: Sequence[str], check: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", name, *cmd],
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def temporary(prefix: str = "evt") -> Iterator[str]:
    name = create(unique_name(prefix))
    try:
        yield name
    finally:
        remove(name)
