"""Synchronous control-socket client for the CLI: one request, one response."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

# Exit codes of `evpnd show`: 1 = the daemon refused the request, 2 = no daemon to ask.
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
MAX_RESPONSE = 1 << 30


class ClientError(Exception):
    """A request that got no answer (exit 2) or an error answer (exit 1)."""

    def __init__(self, message: str, exit_code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotRunning(ClientError):
    pass


def not_running_message(path: Path) -> str:
    return f"evpnd is not running (no control socket at {path})"


def request(path: str | Path, payload: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request, return the decoded response (`ok` true or false)."""
    path = Path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, NotADirectoryError):
            raise NotRunning(not_running_message(path)) from None
        except ConnectionRefusedError:
            raise NotRunning(
                f"evpnd is not running (no control socket at {path}: "
                "the file is there but nothing listens on it)"
            ) from None
        except PermissionError:
            raise ClientError(
                f"permission denied on the control socket {path} "
                "(run as root, or as a member of the socket's group: control.group)"
            ) from None
        try:
            sock.sendall(json.dumps(payload).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline(MAX_RESPONSE)
        except TimeoutError:
            raise ClientError(f"evpnd did not answer within {timeout:g} s ({path})") from None
        except OSError as exc:
            raise ClientError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not line.endswith(b"\n"):
        raise ClientError(f"evpnd closed the connection without a complete answer ({path})")
    try:
        response = json.loads(line)
    except ValueError:
        raise ClientError(f"evpnd sent an answer that is not JSON ({path})") from None
    if not isinstance(response, dict) or "ok" not in response:
        raise ClientError(f"evpnd sent an unexpected answer ({path})")
    return response


def call(path: str | Path, payload: dict[str, Any], timeout: float = 30.0) -> Any:
    """`request`, returning `data`; an error answer raises ClientError (exit 1)."""
    response = request(path, payload, timeout)
    if not response["ok"]:
        raise ClientError(str(response.get("error", "unknown error")), EXIT_REFUSED)
    return response.get("data")


def show(path: str | Path, what: str, args: dict[str, Any] | None = None,
         timeout: float = 30.0) -> Any:
    clean = {k: v for k, v in (args or {}).items() if v is not None}
    return call(path, {"command": "show", "what": what, "args": clean}, timeout)


def reload(path: str | Path, timeout: float = 60.0) -> Any:
    return call(path, {"command": "reload"}, timeout)


def clear_duplicate(path: str | Path, vni: int, mac: str, timeout: float = 30.0) -> Any:
    """Release a MAC flagged by duplicate-address detection (ClientError if it is not)."""
    payload = {"command": "clear", "what": "duplicate", "args": {"vni": vni, "mac": mac}}
    return call(path, payload, timeout)
