"""A test run stopped with SIGTERM (CI's limit, a developer's `kill`) removes what it made.

Without tests/conftest.py's handler (evpnd.netns.unwind_on_sigterm) SIGTERM kills
pytest on the spot: fixtures never tear down, and the namespaces and the processes
inside them stay on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evpnd import netns
from tests.conftest import REPO, require_root

pytestmark = pytest.mark.netns

SLEEPER = """
import subprocess
import time
from pathlib import Path

import pytest

from evpnd import netns


@pytest.fixture
def lab():
    with netns.temporary("evt-term") as name:
        proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"])
        try:
            yield name, proc
        finally:
            proc.kill()
            proc.wait()


def test_waits_to_be_stopped(lab):
    name, proc = lab
    Path({out!r}).write_text(f"{{name}} {{proc.pid}}")
    time.sleep(600)
"""


def wait_for(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the inner test run never wrote {path}")


def test_sigterm_to_a_test_run_removes_its_namespaces_and_processes(tmp_path: Path) -> None:
    require_root()
    out = tmp_path / "lab"
    test = tmp_path / "test_sleeper.py"
    test.write_text(textwrap.dedent(SLEEPER.format(out=str(out))))
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(test)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    name = ""
    try:
        name, pid = wait_for(out, 60).split()
        assert netns.exists(name)
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=60)
        assert not netns.exists(name), f"{name} left behind\n{output}"
        assert not os.path.exists(f"/proc/{pid}"), f"sleep {pid} left running\n{output}"
        assert "KeyboardInterrupt: signal 15" in output, output
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if name and netns.exists(name):
            netns.remove(name)


def test_a_forked_child_given_sigterm_ends_instead_of_unwinding_its_parents_code() -> None:
    # pyroute2 forks a child to open a socket in a namespace and ends it with SIGTERM;
    # inheriting the handler, it must exit there, not raise into the parent's stack.
    script = textwrap.dedent("""
        import os, signal, sys
        from evpnd import netns
        netns.unwind_on_sigterm()
        child = os.fork()
        if child == 0:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()
            except BaseException:
                print("child unwound")
            os._exit(0)
        _, status = os.waitpid(child, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
        except KeyboardInterrupt as exc:
            print("parent unwound:", exc)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.stdout.splitlines() == ["child exit 143", "parent unwound: signal 15"], done
