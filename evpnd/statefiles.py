"""Files in a state directory, written so that nobody else chooses what evpnd overwrites.

evpnd runs as root and writes into `state_dir` (and the Docker driver's
state directory). If another user could create that directory first, or
plant a symlink in it, root would write where that user points. So:

* `secure_dir` creates the directory with mode 0700, or checks an existing
  one: owned by evpnd's user and writable by nobody else (group or others).
  A symlink to it is accepted only if root or evpnd's user owns the link.
  Anything else is refused with an `UnsafeStateDir` that says what to fix.
* `write_private` replaces a file atomically: a temporary file of a random
  name created with O_EXCL | O_NOFOLLOW (a planted symlink is never
  followed, whatever its name), written, fsynced, renamed over the target
  (a rename replaces a symlink there, it never writes through it), then the
  directory fsynced. A crash at any point leaves the old file or the new
  one, never half of one; a failure (ENOSPC) leaves the old file and no
  temporary file, and raises the OSError for the caller to report.
* `open_private` / `read_private` open a file without following a symlink
  and only if it is a regular file owned by evpnd's user (the lock file,
  ExaBGP's log, the hand-over records).

Every write checks the directory again (one fstat): a directory whose
owner or mode changed after start-up is refused then too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeStateDir(OSError):
    """A state directory or file someone else could control: evpnd will not use it."""


def secure_dir(path: Path | str, *, create: bool = True) -> None:
    """Create `path` (mode 0700), or check that an existing one is evpnd's alone.

    Raises UnsafeStateDir naming the problem and the fix, or the OSError of
    creating it.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made meanwhile: checked below
            os.mkdir(path, 0o700)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid not in (0, os.geteuid()):
            raise UnsafeStateDir(
                f"state directory {path} is a symlink owned by uid {st.st_uid}: refusing it "
                "(point state_dir at the real directory)"
            )
        st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateDir(f"state directory {path} exists and is not a directory")
    check_dir(path, st)


def check_dir(path: Path | str, st: os.stat_result) -> None:
    """UnsafeStateDir unless `st` (of the directory `path`) is owned by us, not writable
    by group or others."""
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeStateDir(
            f"state directory {path} is owned by uid {st.st_uid}, not by evpnd's uid {uid}: "
            f"refusing it (another user could plant files evpnd would overwrite); "
            f"chown {uid} {path}, or use another state_dir"
        )
    if st.st_mode & 0o022:
        raise UnsafeStateDir(
            f"state directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): refusing it; chmod go-w {path}"
        )


def write_private(path: Path | str, data: str | bytes, mode: int = 0o600) -> None:
    """Replace `path` atomically with `data`, mode 0600 (see the module docstring)."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    directory = os.open(path.parent, _DIR_FLAGS)
    try:
        check_dir(path.parent, os.fstat(directory))
        tmp = f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, _TMP_FLAGS, mode, dir_fd=directory)
        try:
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=directory)
            raise
        # The rename itself must reach the disk (a state_dir not on tmpfs).
        with contextlib.suppress(OSError):
            os.fsync(directory)
    finally:
        os.close(directory)


def open_private(path: Path | str, flags: int, mode: int = 0o600) -> int:
    """os.open without following a symlink; only a regular file owned by us.

    Raises UnsafeStateDir for anything else (the descriptor is closed).
    """
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStateDir(f"{path} is not a regular file: refusing it")
        if st.st_uid != os.geteuid():
            raise UnsafeStateDir(
                f"{path} is owned by uid {st.st_uid}, not by evpnd's uid {os.geteuid()}: "
                "refusing it"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_private(path: Path | str) -> str:
    """The text of a state file, never through a symlink (FileNotFoundError if absent)."""
    fd = open_private(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode()
