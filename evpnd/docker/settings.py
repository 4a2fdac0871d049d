"""The optional `docker:` section of the config file (off by default).

Standalone on purpose, like `evpnd.metrics.settings`: `evpnd/config.py` will
import `DockerConfig` from here, so this module must not import
`evpnd.config`. Same conventions: unknown keys are errors, the model is
frozen, every error names its field. Documented in `config/evpnd.example.yaml`.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_PLUGIN = "evpn"
DEFAULT_SOCKET_DIR = Path("/run/docker/plugins")
DEFAULT_STATE_DIR = Path("/var/lib/evpnd/docker")
DEFAULT_DOCKERD_SOCKET = Path("/run/docker.sock")
# A unix socket path holds at most 107 bytes (sun_path is 108 with the NUL).
SUN_PATH_MAX = 107
# Docker accepts plugin names as a reference path component: lower case
# letters, digits and separators; keep to the safe subset.
_PLUGIN_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
# Endpoints the driver takes, per network and in all: each is a veth pair, a
# RIB entry and a route at every peer; a runaway orchestrator stops here.
MAX_ENDPOINTS_PER_NETWORK = 4096
MAX_ENDPOINTS = 16384


class DockerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Serve the libnetwork remote network driver. Off unless asked for.
    enabled: bool = False
    # The driver's name: `docker network create -d <plugin>`; also the socket name.
    plugin: str = DEFAULT_PLUGIN
    # Where dockerd looks for plugin sockets; the socket is <socket_dir>/<plugin>.sock.
    socket_dir: Path = DEFAULT_SOCKET_DIR
    # Networks and endpoints, kept across evpnd restarts (survives a reboot
    # unless on a tmpfs; dockerd keeps its own networks across reboots).
    state_dir: Path = DEFAULT_STATE_DIR
    # dockerd's API socket: read (never written) to rebuild the networks and endpoints
    # when the state file is lost.
    dockerd_socket: Path = DEFAULT_DOCKERD_SOCKET
    # CreateEndpoint past either cap is refused (and counted).
    max_endpoints_per_network: int = Field(default=MAX_ENDPOINTS_PER_NETWORK, ge=1,
                                           le=1_000_000)
    max_endpoints: int = Field(default=MAX_ENDPOINTS, ge=1, le=1_000_000)

    @field_validator("plugin")
    @classmethod
    def _plugin(cls, value: str) -> str:
        # fullmatch: `$` would also match before a trailing newline.
        if not _PLUGIN_RE.fullmatch(value):
            raise ValueError(
                "plugin must be 1-64 characters: lower-case letters, digits, '_', '.', '-'"
                " (starting with a letter or digit)"
            )
        return value

    @field_validator("socket_dir", "state_dir", "dockerd_socket")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f"{self.plugin}.sock"

    @model_validator(mode="after")
    def _socket_fits(self) -> DockerConfig:
        if len(str(self.socket_path).encode()) > SUN_PATH_MAX:
            raise ValueError(
                f"socket path {self.socket_path} is longer than {SUN_PATH_MAX} bytes"
            )
        return self
