"""The Eclipse Mosquitto image's stand-in: the host's mosquitto, run inside the node's namespace.

The image (`eclipse-mosquitto:2.0.11`) runs `mosquitto -c
/mosquitto/config/mosquitto.conf`; here the host's /usr/sbin/mosquitto
(Debian's 2.0.11) runs instead, one per node, with the host file bound to
that path. Output (`log_dest stdout`/`stderr` in the config) goes to
<runtime dir>/mosquitto.log. Started as root, mosquitto drops to its
`mosquitto` user as in the image, so the bound config must be readable by
everyone, and a `persistence_location` or log file must be writable by that
user (the lab configs use neither). The listener is the node's own: bind
`0.0.0.0` to be reachable over the node's links. `lab down` stops it like
every other process in the lab's namespaces.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from evpnd.lab.detached import start_in_node

MOSQUITTO = "mosquitto"
SEARCH = ("/usr/sbin/mosquitto",)  # Debian installs it outside a user's PATH
STARTUP_GRACE = 1.0  # seconds mosquitto must survive for `up` to call it started


class MosquittoError(RuntimeError):
    pass


def program() -> str | None:
    return shutil.which(MOSQUITTO) or next((p for p in SEARCH if os.access(p, os.X_OK)), None)


def mosquitto_command(config: Path, mosquitto: str = MOSQUITTO) -> list[str]:
    """What the image's entrypoint becomes. The one place to adjust."""
    return [mosquitto, "-c", str(config)]


def check_config(config: Path) -> str | None:
    """What can be checked without starting it: the program, a readable file."""
    if program() is None:
        return "mosquitto not found (Debian package mosquitto)"
    mode = config.stat().st_mode
    if not mode & 0o004:
        return f"{config} is not readable by others (mosquitto drops to its own user)"
    return None


def start(
    netns_name: str, config: Path, runtime_dir: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start mosquitto detached in the namespace, logging to <runtime_dir>/mosquitto.log."""
    mosquitto = program()
    if mosquitto is None:
        raise MosquittoError("mosquitto not found (Debian package mosquitto)")
    return start_in_node(netns_name, mosquitto_command(config, mosquitto),
                         runtime_dir / "mosquitto.log", what="mosquitto", error=MosquittoError,
                         grace=STARTUP_GRACE, env=env, cwd=runtime_dir)  # fmt: skip
