"""Host FRR daemons standing in for an FRR container: one pathspace per node.

Each node gets its own pid files, zserv socket, vty sockets and logs in its
runtime directory, so several FRR "routers" share the host's binaries
without sharing state (`-N <node>` gives each its own pathspace). The
daemons drop to user frr, which is why the runtime directory belongs to frr.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FRR_SBIN = Path("/usr/lib/frr")
FRR_USER = "frr"
# FRR's own daemons file says: "The watchfrr, zebra and staticd daemons are
# always started." watchfrr only restarts crashed daemons; a lab does without.
ALWAYS_STARTED = ("zebra", "staticd")
_DAEMON_LINE = re.compile(r"^\s*([a-z0-9]+d)\s*=\s*\"?([^\"#\s]*)\"?")
_PROFILE_LINE = re.compile(r"^\s*frr_profile\s*=\s*\"?([a-z]+)\"?")


class FrrError(RuntimeError):
    pass


@dataclass(frozen=True)
class FrrDaemons:
    names: tuple[str, ...]  # in start order, zebra first
    profile: str | None = None  # -F, from the daemons file's frr_profile


@dataclass(frozen=True)
class FrrNode:
    pathspace: str  # -N; the namespace name, so two labs never share /var/run/frr/<N>
    runtime_dir: Path  # pid files, sockets, logs
    config: Path  # the integrated frr.conf every daemon reads with -f
    daemons: FrrDaemons


def parse_daemons(text: str | None) -> FrrDaemons:
    """The daemons to start from an FRR `daemons` file (None: no file bound)."""
    names = list(ALWAYS_STARTED)
    profile = None
    for line in (text or "").splitlines():
        if match := _PROFILE_LINE.match(line):
            profile = match[1]
            continue
        match = _DAEMON_LINE.match(line)
        if not match:
            continue
        daemon, value = match[1], match[2]
        if value == "yes":
            if daemon not in names:
                names.append(daemon)
        elif value not in ("no", ""):
            # e.g. "ospfd=1,2" (multi-instance) has no per-node equivalent here.
            raise FrrError(f"daemons file: {daemon}={value!r} is not supported (yes or no)")
    return FrrDaemons(names=tuple(names), profile=profile)


def daemon_command(daemon: str, node: FrrNode, sbin: Path = FRR_SBIN) -> list[str]:
    """One daemon's command line: `-N <node>` pathspace, own vty socket, a per-node log file."""
    run = node.runtime_dir
    command = [
        str(sbin / daemon), "-d",
        "-N", node.pathspace,
        "-f", str(node.config),
        "-i", str(run / f"{daemon}.pid"),
        "-z", str(run / "zserv.api"),
        "--vty_socket", str(run),
        "-A", "127.0.0.1", "-P", "0",
        "--log", f"file:{run / f'{daemon}.log'}",
    ]  # fmt: skip
    if node.daemons.profile:
        command += ["-F", node.daemons.profile]
    return command


def vtysh_command(args: Sequence[str], vty_dir: Path | str, program: str = "vtysh") -> list[str]:
    return [program, "--vty_socket", str(vty_dir), *args]


def missing_programs(daemons: FrrDaemons, sbin: Path = FRR_SBIN) -> list[str]:
    wanted = [sbin / name for name in daemons.names]
    found = [p for p in wanted if p.is_file()]
    missing = [str(p) for p in wanted if p not in found]
    if shutil.which("vtysh") is None:
        missing.append("vtysh")
    return missing


def check_config(config: Path) -> str | None:
    """vtysh's dry run knows every daemon's commands; returns its complaint or None."""
    result = subprocess.run(
        ["vtysh", "-C", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if result.returncode == 0:
        return None
    return (result.stdout + result.stderr).strip() or f"vtysh -C exited {result.returncode}"


def readable_by_frr(path: Path) -> bool:
    """The daemons read their config after dropping to user frr: check the whole path."""
    try:
        user = pwd.getpwnam(FRR_USER)
    except KeyError:
        return False
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if FRR_USER in g.gr_mem}
    path = path.resolve()
    for part in [*reversed(path.parents), path]:
        st = part.stat()
        need = stat.S_IROTH if part == path else stat.S_IXOTH
        if st.st_uid == user.pw_uid:
            need <<= 6
        elif st.st_gid in gids:
            need <<= 3
        if not st.st_mode & need:
            return False
    return True


def user_exists() -> bool:
    try:
        pwd.getpwnam(FRR_USER)
    except KeyError:
        return False
    return True


def prepare_runtime_dir(path: Path) -> None:
    user = pwd.getpwnam(FRR_USER)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o755)


def start(netns_name: str, node: FrrNode, env: dict[str, str] | None = None) -> list[int]:
    """Start the node's daemons (zebra first) inside the namespace; their pids."""
    pids: list[int] = []
    for daemon in node.daemons.names:
        result = subprocess.run(
            ["ip", "netns", "exec", netns_name, *daemon_command(daemon, node)],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        if result.returncode != 0:
            raise FrrError(
                f"{daemon} did not start (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        pid_file = node.runtime_dir / f"{daemon}.pid"
        try:
            pids.append(int(pid_file.read_text().strip()))
        except (OSError, ValueError):
            raise FrrError(f"{daemon} started but wrote no pid file {pid_file}") from None
    return pids


def pathspace_dir(pathspace: str) -> Path:
    """The directory FRR creates for -N even when every path is overridden."""
    return Path("/var/run/frr") / pathspace
