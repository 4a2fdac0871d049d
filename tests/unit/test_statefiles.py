"""State files: nobody else chooses what evpnd (root) overwrites, and a crash leaves a whole file.

Real files, real symlinks, real owners (the tests chown to `nobody`, so they
need root, which CI has).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from evpnd import statefiles
from evpnd.docker.state import DriverState, EndpointRecord, StateStore
from evpnd.speaker import handover
from tests.conftest import require_root

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_new_state_dir_is_made_0700(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    statefiles.secure_dir(state)
    assert state.is_dir() and mode(state) == 0o700
    statefiles.secure_dir(state)  # an existing good one is fine


def test_a_state_dir_someone_else_owns_or_may_write_is_refused(tmp_path: Path) -> None:
    require_root()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(statefiles.UnsafeStateDir, match=f"owned by uid {NOBODY}"):
        statefiles.secure_dir(state)
    os.chown(state, 0, 0)
    for bad in (0o770, 0o707, 0o777):
        os.chmod(state, bad)
        with pytest.raises(statefiles.UnsafeStateDir, match="writable by group or others"):
            statefiles.secure_dir(state)
    os.chmod(state, 0o755)  # readable by others is fine: the files themselves are 0600
    statefiles.secure_dir(state)
    # Writes check again: a directory handed to another user later is refused too.
    statefiles.write_private(state / "f.json", "one")
    os.chown(state, NOBODY, NOBODY)
    with pytest.raises(statefiles.UnsafeStateDir):
        statefiles.write_private(state / "f.json", "two")
    assert (state / "f.json").read_text() == "one"


def test_a_symlinked_state_dir_must_be_ours(tmp_path: Path) -> None:
    require_root()
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    statefiles.secure_dir(link)  # root's own symlink: fine
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(statefiles.UnsafeStateDir, match="symlink owned by uid"):
        statefiles.secure_dir(link)
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(statefiles.UnsafeStateDir, match="not a directory"):
        statefiles.secure_dir(plain)


def test_planted_symlinks_are_never_written_through(tmp_path: Path) -> None:
    state = tmp_path / "state"
    statefiles.secure_dir(state)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    # At the target, and at every temporary name the old writers used.
    for name in ("announced.json", "announced.json.tmp", ".announced.json.tmp",
                 "devices.tmp", ".docker-evpn.json.tmp"):  # fmt: skip
        (state / name).symlink_to(victim)
    statefiles.write_private(state / "announced.json", '{"format": 1}')
    handover.write_announced(state, [])
    StateStore(state, "evpn").save(DriverState())
    assert victim.read_text() == "precious"
    target = state / "announced.json"
    assert not target.is_symlink() and mode(target) == 0o600
    assert target.read_text() == '{"format": 1, "routes": []}'
    assert mode(state / "docker-evpn.json") == 0o600
    # A symlinked record is not read either (it could point anywhere).
    (state / handover.RECORD_NAME).symlink_to(victim)
    with pytest.raises(OSError):
        handover.read_record(state)


def test_the_lock_and_log_are_never_opened_through_a_symlink(tmp_path: Path) -> None:
    require_root()
    state = tmp_path / "state"
    statefiles.secure_dir(state)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (state / "evpnd.lock").symlink_to(victim)
    with pytest.raises(OSError):
        statefiles.open_private(state / "evpnd.lock", os.O_RDWR | os.O_CREAT)
    foreign = state / "exabgp.log"
    foreign.write_text("")
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(statefiles.UnsafeStateDir, match="owned by uid"):
        statefiles.open_private(foreign, os.O_WRONLY | os.O_APPEND)
    assert victim.read_text() == "precious"


CRASHING_WRITER = """
import os, sys, time
from evpnd import statefiles
real_fsync = os.fsync
def stall(fd):  # the moment between writing the new file and renaming it over the old
    print("written", flush=True)
    time.sleep(3600)
os.fsync = stall
statefiles.write_private(sys.argv[1], "new " * 100000)
"""


def test_a_crash_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    statefiles.secure_dir(state)
    target = state / "speaker.json"
    statefiles.write_private(target, "old")
    child = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(target)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "written\n"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert target.read_text() == "old"
    # The next write goes through; the dead one's temporary file is only litter.
    statefiles.write_private(target, "newer")
    assert target.read_text() == "newer"


def test_a_full_filesystem_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    require_root()
    mountpoint = tmp_path / "small"
    mountpoint.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "evpnd-test", mountpoint],
                   check=True)  # fmt: skip
    try:
        target = mountpoint / "announced.json"
        statefiles.write_private(target, "old")
        with pytest.raises(OSError) as raised:
            statefiles.write_private(target, "x" * (256 * 1024))
        assert raised.value.errno == 28  # ENOSPC
        assert target.read_text() == "old" and leftovers(mountpoint) == []
        # AnnouncedRecord's writer, the Docker driver's: the same clear error.
        store = StateStore(mountpoint, "evpn")
        store.save(DriverState())
        endpoints = {f"ep{i}": EndpointRecord(f"ep{i}", "net", "02:00:00:00:00:01")
                     for i in range(4000)}  # fmt: skip
        with pytest.raises(OSError):
            store.save(DriverState(endpoints=endpoints))
        assert store.load() == DriverState() and leftovers(mountpoint) == []
    finally:
        if subprocess.run(["umount", mountpoint]).returncode != 0:
            subprocess.run(["umount", "-l", mountpoint], check=True)
