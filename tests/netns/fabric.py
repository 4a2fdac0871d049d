"""Helpers shared by the fabric tests: commands in a lab's nodes, FDB reads, bounded waits."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from evpnd import lab, netns
from evpnd.lab import state as labstate
from tests.conftest import require_program, require_root

T = TypeVar("T")

# (program, Debian package) that labs with FRR nodes and ping checks need.
FRR_LAB_NEEDS: tuple[tuple[str, str], ...] = (
    *((daemon, "frr") for daemon in ("zebra", "staticd", "bgpd", "vtysh")),
    ("ping", "iputils-ping"),
    ("bridge", "iproute2"),
)


@contextlib.contextmanager
def running_lab(
    lab_file: Path, needs: Iterable[tuple[str, str]] = FRR_LAB_NEEDS
) -> Iterator[lab.UpReport]:
    """The lab up for the duration (a stale instance removed first), always taken down.

    What it needs must be there: a failure in CI, a skip with the reason locally.
    """
    require_root()
    for program, package in needs:
        require_program(program, package)
    lab.down(lab_file)  # an interrupted run's instance would make `up` refuse
    try:
        yield lab.up(lab_file)
    finally:
        lab.down(lab_file)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 20,
    interval: float = 0.5,
    explain: Callable[[], str] = lambda: "",
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            details = explain()
            pytest.fail(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f"\n{details}" if details else ""),
                pytrace=False,
            )
        time.sleep(interval)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Fabric:
    """One running lab, addressed by name so nodes of other labs never get in the way."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(
        self, node: str, argv: list[str], timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        return lab.run_in_node(node, argv, lab=self.name, timeout=timeout)

    def procs(self, node: str, marker: str) -> list[int]:
        """Live processes in the node whose command line contains `marker`."""
        return [p for p in netns.pids_in(f"clab-{self.name}-{node}")
                if marker in cmdline(p) and alive(p)]  # fmt: skip

    def fdb(self, node: str, device: str = "vxlan100") -> list[dict[str, Any]]:
        """`bridge -j fdb show dev DEVICE` in the node; [] when the device is absent."""
        out = self.run(node, ["bridge", "-j", "fdb", "show", "dev", device])
        if out.returncode != 0 or not out.stdout.strip():
            return []
        return json.loads(out.stdout)

    def show(self, node: str, view: str, config: str = "/etc/evpnd/evpnd.yaml") -> dict[str, Any]:
        """`evpnd show VIEW --json` of the evpnd in the node."""
        out = self.run(node, ["evpnd", "show", view, "--json", "-c", config], timeout=30)
        assert out.returncode == 0, f"evpnd show {view} on {node}: {out.stderr}"
        return json.loads(out.stdout)

    def ping(self, src: str, address: str, count: int = 2) -> subprocess.CompletedProcess[str]:
        return self.run(src, ["ping", "-c", str(count), "-W", "1", "-i", "0.2", address])

    def log_tail(self, node: str, name: str = "evpnd.log", lines: int = 10) -> str:
        log = labstate.lab_dir(self.name) / node / name
        try:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            tail = "(no log)"
        return f"--- {log} (last lines)\n{tail}"
