"""The `control:` section of the config file: where the control socket lives, who may use it.

Standalone on purpose (no import of `evpnd.config`): the main config model
imports this one.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

SOCKET_NAME = "control.sock"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes with the NUL
_GROUP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")


class ControlConfig(BaseModel):
    # Same style as evpnd/config.py's Strict: unknown keys are typos.
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Path of the unix socket; None = <state_dir>/control.sock.
    socket: Path | None = None
    # Group allowed to use the socket (name or numeric gid): the socket is then
    # chowned to it with mode 0660. None = mode 0600, the daemon's user only.
    group: str | int | None = Field(default=None)

    @field_validator("socket")
    @classmethod
    def _socket(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        if len(str(value).encode()) > SUN_PATH_MAX:
            raise ValueError(f"longer than the {SUN_PATH_MAX} bytes a unix socket path may have")
        return value

    @field_validator("group")
    @classmethod
    def _group(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and not 0 <= value <= 4_294_967_294:
            raise ValueError("a numeric gid must be 0..4294967294")
        if isinstance(value, str) and not _GROUP_RE.match(value):
            raise ValueError("not a valid group name")
        return value

    def socket_path(self, state_dir: Path) -> Path:
        return self.socket or Path(state_dir) / SOCKET_NAME
