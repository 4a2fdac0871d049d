"""`lab down`: stop what runs in the lab's namespaces, remove them and the runtime dir.

Only what the state file records is touched. A namespace that merely has a
lab's name (the state file says nothing about it) is reported, not removed:
it may belong to someone else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from evpnd import netns
from evpnd.lab import frr, topology
from evpnd.lab import state as labstate
from evpnd.lab.report import DownReport
from evpnd.lab.state import RUNTIME_ROOT, LabState
from evpnd.lab.topology import Topology

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def down(
    path: str | Path | None = None,
    *,
    lab: str | None = None,
    runtime_root: Path = RUNTIME_ROOT,
) -> DownReport:
    """Take a lab down by its topology file (or lab name): only what its state records."""
    expected: list[str] = []
    if path is not None:
        name, prefix, node_names = topology.read_identity(path)
        probe = Topology(name=name, prefix=prefix, path=Path(path), nodes={}, links=())
        expected = [probe.netns_name(n) for n in node_names]
    elif lab is not None:
        name = lab
    else:
        raise ValueError("down() needs a topology file or a lab name")
    st = labstate.load(name, runtime_root)
    if st is None:
        # A runtime dir without a state file means `up` died before creating anything.
        with contextlib.suppress(OSError):
            labstate.lab_dir(name, runtime_root).rmdir()
        return DownReport(lab=name, was_up=False,
                          untouched=tuple(ns for ns in expected if netns.exists(ns)))  # fmt: skip
    return teardown(st, runtime_root)


def teardown(st: LabState, runtime_root: Path) -> DownReport:
    present = [ns for ns in st.namespaces if netns.exists(ns)]
    stopped = _stop_processes(present)
    for ns in reversed(present):
        netns.remove(ns)
    for node in st.nodes.values():
        if node.pathspace:
            with contextlib.suppress(OSError):
                frr.pathspace_dir(node.pathspace).rmdir()
    shutil.rmtree(labstate.lab_dir(st.lab, runtime_root), ignore_errors=True)
    with contextlib.suppress(OSError):
        runtime_root.rmdir()  # only when no other lab is up
    return DownReport(lab=st.lab, was_up=True, namespaces=tuple(present), stopped=tuple(stopped))


def _stop_processes(namespaces: Sequence[str], grace: float = STOP_GRACE) -> list[int]:
    """SIGTERM everything running in the lab's namespaces, SIGKILL what is left after `grace`."""
    pids = sorted({pid for ns in namespaces for pid in netns.pids_in(ns)})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pids)
        if not any(netns.pids_in(ns) for ns in namespaces):
            break
        time.sleep(0.1)
    for ns in namespaces:
        for pid in netns.pids_in(ns):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    _reap(pids)
    return pids


def _reap(pids: Sequence[int]) -> None:
    # evpnd nodes started by this very process are our children: collect them.
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
