"""Building containerlab/Dockerfile without a registry: a Debian 12 base made by
debootstrap, evpnd's dependencies from a local wheel directory.

- The base: `debootstrap --variant=minbase bookworm` from the Debian mirror
  apt already uses here (read from /etc/apt/sources.list*), with the packages
  the Dockerfile installs (so its apt step has nothing to do and needs no
  network) plus systemd (the tests boot contrib/systemd/evpnd.service in the
  image). Packed as a tarball under `.cache/image/` (git-ignored) and named by
  everything that makes it: a second run reuses it. `docker import` turns it
  into the image the Dockerfile's `BASE` argument names.
- The wheels: `pip wheel` of the project's dependencies and build
  requirements (read from pyproject.toml) into `.cache/image/wheels`, with
  pip's own configuration; served on 127.0.0.1 for the build (`--network
  host`, PIP_NO_INDEX + PIP_FIND_LINKS build arguments).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO

CACHE = REPO / ".cache" / "image"
SUITE = "bookworm"
# What the Dockerfile installs (it checks and finds them) + what the systemd test boots.
PACKAGES = ("python3", "python3-venv", "iproute2", "tini", "systemd")
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive apt uses for `SUITE` on this machine (deb822 or one-line form)."""
    # apt reads sources.list and sources.list.d/*.list (one-line) and *.sources (deb822).
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list")),
             *sorted((sources / "sources.list.d").glob("*.sources"))]
    for path in files:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if path.suffix == ".sources":
                for stanza in text.split("\n\n"):
                    fields = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.M))
                    suites = fields.get("Suites", "").split()
                    if SUITE in suites and "deb" in fields.get("Types", "").split():
                        return fields["URIs"].split()[0].rstrip("/")
            else:
                for line in text.splitlines():
                    words = re.sub(r"\[[^]]*\]", "", line).split()
                    if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                        return words[1].rstrip("/")
    return DEFAULT_MIRROR


def base_key(mirror: str) -> str:
    recipe = f"{SUITE} minbase {','.join(PACKAGES)} {mirror}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        yield


def debian_base(debootstrap: str, log: Any = print) -> Path:
    """The cached base tarball, made by debootstrap if it is not there yet."""
    mirror = debian_mirror()
    tarball = CACHE / f"debian-{SUITE}-{base_key(mirror)}.tar.gz"
    with _locked(CACHE / "base.lock"):
        if tarball.exists():
            return tarball
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        root = work / "root"
        started = time.monotonic()
        try:
            done = subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(root), mirror],
                capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap failed ({done.returncode}):\n"
                                   f"{done.stdout[-3000:]}{done.stderr[-3000:]}")
            # Downloaded packages and indexes: not needed in the image.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / junk).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            partial = work / "base.tar.gz"
            subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-czf", str(partial),
                            "."], check=True, capture_output=True, timeout=600)
            partial.rename(tarball)
        finally:
            _umount_under(root)
            shutil.rmtree(work, ignore_errors=True)
        log(f"debootstrap {SUITE} from {mirror}: {time.monotonic() - started:.0f} s, "
            f"{tarball.stat().st_size / 1e6:.0f} MB ({tarball})")
    return tarball


def _umount_under(root: Path) -> None:
    """debootstrap mounts /proc and /sys in the target; a failed run may leave them."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(root))), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def requirements() -> list[str]:
    """What `pip install .` needs: the build system's and the project's requirements."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [*project["build-system"]["requires"], *project["project"]["dependencies"]]


def wheelhouse() -> Path:
    """Wheels of every requirement, for the image's Python (Debian 12's 3.11, as here)."""
    target = CACHE / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(target),
                           *requirements()], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return target


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """An HTTP listing of `directory` on 127.0.0.1 (pip's --find-links reads it)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# The Linux capabilities by number (linux/capability.h): a container that needs "all
# of them" gets those this machine's bounding set holds (`--privileged` asks for
# every one and fails where one is missing, as in some VMs).
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)


def missing_capabilities(status: str | None = None) -> list[str]:
    """Capabilities this process's bounding set lacks (names as docker takes them)."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    bounding = int(re.search(r"^CapBnd:\s*([0-9a-f]+)$", text, re.M).group(1), 16)  # type: ignore[union-attr]
    return [name for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1]


def all_capabilities_args() -> list[str]:
    return ["--cap-add", "ALL", *(arg for cap in missing_capabilities()
                                  for arg in ("--cap-drop", cap))]
