"""The control socket: newline-delimited JSON requests, one JSON response each.

Requests::

    {"command": "show", "what": "mac", "args": {"vni": 100}}
    {"command": "reload"}
    {"command": "clear", "what": "duplicate", "args": {"vni": 100, "mac": "02:00:00:00:00:01"}}
    {"command": "ping"}

Responses: `{"ok": true, "data": ...}` or `{"ok": false, "error": "..."}`.
A connection may carry several requests, one per line. A malformed or
failing request gets an error response and never stops the server; a
request longer than `max_request` bytes gets one and the connection is
closed.

Slow or hostile clients cannot hold the socket: a request line must arrive
whole within `idle_timeout` seconds (of connecting, or of the previous
answer), an answer must be taken within `write_timeout` seconds (a client
that does not read is cut off, its buffered answer dropped), and at most
`max_clients` connections are open: a new one pushes out the one that has
been waiting longest (never one in the middle of a reload). So `show status`
from a well-behaved client is answered whatever the others do.

The socket is created with mode 0600 (umask held while binding, so it is
never reachable by others, not even for a moment); with a group it is
chowned to that group and opened to 0660. A stale socket left by a killed
daemon is removed at start; a live one (another daemon answers) is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import grp
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from evpnd import __version__
from evpnd.control import views
from evpnd.control.settings import SUN_PATH_MAX, ControlConfig
from evpnd.control.snapshot import DaemonView, Snapshot, take_snapshot
from evpnd.model import normalize_mac

VNI_MAX = 16_777_215

log = structlog.get_logger(__name__)

MAX_REQUEST = 64 * 1024
IDLE_TIMEOUT = 10.0  # seconds for a whole request line to arrive
WRITE_TIMEOUT = 5.0  # seconds for a client to take its answer
# Connections open at once; past it a new one pushes out the longest-waiting.
# Large enough that a burst of connections cannot push out a client before its
# request (sent with the connect) is read: asyncio accepts at most
# ACCEPT_BURST connections per turn of the loop, and a client is served
# within a few turns. A big answer held for a client that does not read costs
# the server the CPU time to build it first, which bounds what they can hold.
MAX_CLIENTS = 256
ACCEPT_BURST = 32  # connections asyncio accepts per turn of the loop
# The kernel's queue of connections not accepted yet: a client finding it full
# fails at once (a unix socket connect with a timeout does not wait).
LISTEN_BACKLOG = 4096

Reload = Callable[[], Awaitable[bool]]
ClearDuplicate = Callable[[int, str], bool]  # (vni, mac) -> it was flagged
Response = dict[str, Any]


class ControlError(RuntimeError):
    """The control socket cannot be set up (bad path, unknown group, another daemon)."""


@dataclass(slots=True, eq=False)
class _Client:
    writer: asyncio.StreamWriter
    task: asyncio.Task[None] | None
    since: float  # when its current wait began (for its request, or for it to read)
    busy: bool = False  # running a reload: never pushed out


_CURRENT: contextvars.ContextVar[_Client | None] = contextvars.ContextVar(
    "control_client", default=None
)


def resolve_group(group: str | int) -> int:
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlError(f"control socket group {group!r} does not exist") from None


def error(message: str) -> Response:
    return {"ok": False, "error": message}


class ControlServer:
    """Serves `show` (and `reload`) for one daemon on a unix socket."""

    def __init__(
        self,
        daemon: DaemonView,
        path: str | Path,
        *,
        group: str | int | None = None,
        reload: Reload | None = None,
        clear_duplicate: ClearDuplicate | None = None,
        max_request: int = MAX_REQUEST,
        idle_timeout: float = IDLE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
        snapshot: Callable[[], Snapshot] | None = None,
    ) -> None:
        """`snapshot` replaces `take_snapshot(daemon)` (tests, or a daemon that builds its own)."""
        self.path = Path(path)
        self.group = group
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.max_clients = max(1, max_clients)
        self.requests = 0
        self.errors = 0
        self.timeouts = 0  # connections closed: no whole request in time, or answer not taken
        self.evictions = 0  # connections pushed out by a new one at max_clients
        self._snapshot = snapshot or (lambda: take_snapshot(daemon))
        self._reload = reload
        self._clear_duplicate = clear_duplicate
        self._reload_lock = asyncio.Lock()
        self._server: asyncio.AbstractServer | None = None
        self._inode: tuple[int, int] | None = None
        self._clients: dict[asyncio.StreamWriter, _Client] = {}

    @classmethod
    def for_daemon(
        cls,
        daemon: DaemonView,
        reload: Reload | None = None,
        clear_duplicate: ClearDuplicate | None = None,
    ) -> ControlServer:
        """From the daemon's config: `control.socket`/`control.group`, else the defaults."""
        control = getattr(daemon.cfg, "control", None) or ControlConfig()
        return cls(
            daemon, control.socket_path(daemon.cfg.state_dir), group=control.group, reload=reload,
            clear_duplicate=clear_duplicate,
        )

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if len(os.fsencode(self.path)) > SUN_PATH_MAX:
            raise ControlError(f"control socket path {self.path} is too long for a unix socket")
        gid = None if self.group is None else resolve_group(self.group)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The mode comes from the umask at bind time: no chmod by path,
            # which would follow a symlink swapped in meanwhile.
            old = os.umask(0o177 if gid is None else 0o117)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old)
            if gid is not None:
                os.chown(self.path, -1, gid, follow_symlinks=False)
            st = os.lstat(self.path)
            if not stat.S_ISSOCK(st.st_mode):
                raise ControlError(f"{self.path} was replaced while binding; not using it")
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(
                self._on_client, sock=sock, limit=self.max_request, backlog=ACCEPT_BURST
            )
            sock.listen(LISTEN_BACKLOG)  # asyncio keeps accepting ACCEPT_BURST per turn
        except BaseException:
            sock.close()
            self._unlink_own()
            raise
        log.info("control socket listening", path=str(self.path),
                 mode=oct(stat.S_IMODE(st.st_mode)), group=self.group)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            client.writer.transport.abort()  # not close(): it would wait for a non-reader
        tasks = [c.task for c in clients if c.task is not None and not c.task.done()]
        if tasks:  # each ends on its own once its connection is gone
            await asyncio.wait(tasks, timeout=2)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self._unlink_own()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _remove_stale(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; not removing it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # nobody listens: left over by a daemon that did not stop cleanly
        except OSError as exc:
            raise ControlError(f"cannot check the existing socket {self.path}: {exc}") from None
        else:
            raise ControlError(f"another process answers on the control socket {self.path}")
        finally:
            probe.close()
        log.info("removing stale control socket", path=str(self.path))
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _unlink_own(self) -> None:
        # Only our own socket: a successor may already have bound the path.
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if self._inode == (st.st_dev, st.st_ino):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # ------------------------------------------------------------ connections

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        if len(self._clients) >= self.max_clients and not self._push_out_one():
            writer.write(_encode(error("too many control connections; try again")))
            writer.transport.abort()
            return
        client = _Client(writer, asyncio.current_task(), loop.time())
        self._clients[writer] = client
        _CURRENT.set(client)  # this task's own context: for _do_reload
        try:
            while writer in self._clients:
                client.since = loop.time()
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except TimeoutError:
                    self.timeouts += 1
                    break
                except (ValueError, asyncio.LimitOverrunError):
                    self.errors += 1
                    await self._send(client, error(f"request too large (limit "
                                                   f"{self.max_request} bytes per line)"))
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                response = await self.handle_line(line)
                if not await self._send(client, response):
                    break
        except (ConnectionError, OSError):
            pass  # the client went away
        finally:
            if self._clients.get(writer) is client:
                del self._clients[writer]
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # an answer nobody takes is not waited for
            else:
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _push_out_one(self) -> bool:
        """Make room: close the connection that has waited longest (not one reloading)."""
        candidates = [c for c in self._clients.values() if not c.busy]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: c.since)
        del self._clients[victim.writer]
        victim.writer.transport.abort()
        self.evictions += 1
        return True

    async def _send(self, client: _Client, response: Response) -> bool:
        """Write an answer; False (the connection is cut) if it is not taken in time."""
        client.since = asyncio.get_running_loop().time()
        writer = client.writer
        writer.write(_encode(response))
        try:
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except TimeoutError:
            self.timeouts += 1
            writer.transport.abort()
            return False
        return True

    async def handle_line(self, line: bytes) -> Response:
        self.requests += 1
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            self.errors += 1
            return error("request is not valid JSON")
        response = await self.handle(request)
        if not response.get("ok"):
            self.errors += 1
        return response

    async def handle(self, request: object) -> Response:
        """One decoded request -> its response; never raises."""
        if not isinstance(request, dict):
            return error("request must be a JSON object")
        command = request.get("command")
        try:
            if command == "show":
                return self._show(request)
            if command == "reload":
                return await self._do_reload()
            if command == "clear":
                return self._clear(request)
            if command == "ping":
                return {"ok": True, "data": {"version": __version__, "pid": os.getpid()}}
        except views.ViewError as exc:
            return error(str(exc))
        except Exception as exc:  # a bug in a view must not take the daemon down
            log.exception("control request failed", command=command)
            return error(f"internal error: {type(exc).__name__}: {exc}")
        return error(f"unknown command {command!r}; one of: show, reload, clear, ping")

    def _show(self, request: dict[str, Any]) -> Response:
        what = request.get("what")
        args = request.get("args") or {}
        if not isinstance(what, str):
            return error(f"'show' needs 'what': one of {', '.join(views.VIEWS)}")
        if not isinstance(args, dict):
            return error("'args' must be a JSON object")
        return {"ok": True, "data": views.show(self._snapshot(), what, args)}

    def _clear(self, request: dict[str, Any]) -> Response:
        """`clear duplicate`: release a MAC flagged by duplicate-address detection."""
        what = request.get("what")
        args = request.get("args") or {}
        if what != "duplicate":
            return error("'clear' needs 'what': duplicate")
        if self._clear_duplicate is None:
            return error("this daemon does not take clear requests")
        if not isinstance(args, dict):
            return error("'args' must be a JSON object")
        vni, mac = args.get("vni"), args.get("mac")
        if not isinstance(vni, int) or isinstance(vni, bool) or not 1 <= vni <= VNI_MAX:
            return error(f"argument 'vni' must be a VNI (1 to {VNI_MAX}), not {vni!r}")
        try:
            mac = normalize_mac(mac) if isinstance(mac, str) else None
        except ValueError:
            mac = None
        if mac is None:
            return error(f"argument 'mac' must be a MAC address, not {args.get('mac')!r}")
        if not self._clear_duplicate(vni, mac):
            return error(f"MAC {mac} in VNI {vni} is not flagged as a duplicate")
        return {"ok": True, "data": {"vni": vni, "mac": mac, "cleared": True}}

    async def _do_reload(self) -> Response:
        if self._reload is None:
            return error("this daemon does not take reload requests")
        async with self._reload_lock:
            client = _CURRENT.get()
            if client is not None:
                client.busy = True  # a reload half done is not cut off
            try:
                done = await self._reload()
            finally:
                if client is not None:
                    client.busy = False
        if not done:
            return error("reload refused (invalid config, or not read from a file); "
                         "the running config is kept; see the daemon log")
        return {"ok": True, "data": {"reloaded": True}}


def _encode(response: Response) -> bytes:
    try:
        text = json.dumps(response, separators=(",", ":"), default=str)
    except (TypeError, ValueError) as exc:  # e.g. a non-string dict key in a view
        log.error("control answer is not JSON", error=str(exc))
        text = json.dumps(error(f"internal error: answer is not JSON: {exc}"))
    return text.encode() + b"\n"
