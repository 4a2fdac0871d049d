"""The GoBGP image's stand-in: the host's gobgpd, run inside the node's namespace.

The images (`jauderho/gobgp:v3.10.0`, `osrg/gobgp`) run gobgpd; here the
host's /usr/bin/gobgpd (3.10.0) runs instead, one per node, with
- the config bound to /etc/gobgp/gobgpd.conf (or .toml, .yaml, .yml,
  .json; `-t` follows the host file's extension, .conf meaning TOML),
- the gRPC API on 127.0.0.1:50051 *of the node's namespace* (each node has
  its own loopback), so `gobgp ...` in `lab exec NODE -- gobgp ...` talks to
  that node's gobgpd with its defaults,
- pprof disabled (it would otherwise listen on localhost:6060),
- plain-text logs in <runtime dir>/gobgpd.log.
gobgpd runs as root (it needs to bind port 179) and in the foreground; `lab
down` stops it like every other process in the lab's namespaces.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from evpnd.lab.detached import start_in_node

GOBGPD = "gobgpd"
API_HOST = "127.0.0.1:50051"  # inside the node's namespace
STARTUP_GRACE = 1.0  # seconds gobgpd must survive for `up` to call it started
CONFIG_TYPES = {".conf": "toml", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class GobgpError(RuntimeError):
    pass


def program() -> str | None:
    return shutil.which(GOBGPD)


def config_type(config: Path) -> str:
    kind = CONFIG_TYPES.get(config.suffix.lower())
    if kind is None:
        known = ", ".join(sorted(CONFIG_TYPES))
        raise GobgpError(
            f"{config}: cannot tell the gobgpd config type (file names end in {known})"
        )
    return kind


def gobgpd_command(config: Path, gobgpd: str = GOBGPD) -> list[str]:
    """What the GoBGP image's entrypoint becomes. The one place to adjust."""
    return [
        gobgpd, "-f", str(config), "-t", config_type(config),
        "--api-hosts", API_HOST, "--pprof-disable", "--log-plain",
    ]  # fmt: skip


def check_config(config: Path) -> str | None:
    """gobgpd's own dry run (-d); None when it accepts the file, else its complaint."""
    gobgpd = program()
    if gobgpd is None:
        return "gobgpd not found (Debian package gobgpd)"
    try:
        kind = config_type(config)
    except GobgpError as exc:
        return str(exc)
    result = subprocess.run(
        [gobgpd, "-d", "-f", str(config), "-t", kind],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if result.returncode != 0:
        return (result.stderr.strip() or result.stdout.strip() or "rejected")[-2000:]
    return None


def start(
    netns_name: str, config: Path, runtime_dir: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start gobgpd detached in the namespace, logging to <runtime_dir>/gobgpd.log."""
    gobgpd = program()
    if gobgpd is None:
        raise GobgpError("gobgpd not found (Debian package gobgpd)")
    return start_in_node(netns_name, gobgpd_command(config, gobgpd), runtime_dir / "gobgpd.log",
                         what="gobgpd", error=GobgpError, grace=STARTUP_GRACE, env=env,
                         cwd=runtime_dir)  # fmt: skip
