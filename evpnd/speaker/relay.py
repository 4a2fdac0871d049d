"""The API process ExaBGP spawns: a relay between ExaBGP and the evpnd daemon.

    python -m evpnd.speaker.relay <unix socket of the daemon>

ExaBGP writes every received UPDATE and state change to this process's stdin
with blocking writes, from its one reactor thread: if nobody reads, ExaBGP
stops sending keepalives and every session dies. So this relay reads stdin
continuously and queues whatever the daemon has not taken yet (asyncio
transports buffer every write; drain() is deliberately never awaited in that
direction), up to a bound: `EVPND_RELAY_BUFFER` bytes (bgp.receive_buffer).
Past it the relay sheds load instead of growing: received UPDATE lines (raw
frames and JSON UPDATEs) are dropped and counted per peer until the daemon
has taken half of the queue; state, End-of-RIB, route-refresh, notification
and ack lines always go through (an End-of-RIB inside a dropped raw frame is
passed on as a frame of its own). Then the relay tells the daemon
(`#evpnd overflow {"lines": N, "bytes": B, "peers": [...]}`), which asks
those peers for a route refresh: a resync, so nothing is lost for good.
Commands flow the other way: socket -> stdout, where back-pressure is
harmless (the daemon keeps a window of unacknowledged lines).

Hello: the first line on the socket is
`evpnd-relay <token> <exabgp pid> <peer states as compact JSON>`; the token
comes from the environment the daemon gave ExaBGP, so a daemon accepts only
the relay of the ExaBGP it started (or adopts). The peer states tell a daemon
that adopts a running ExaBGP which sessions are already established.

Hand-over: the daemon may send `#evpnd hold <seconds>` (never passed on to
ExaBGP). When the daemon's socket then closes, the relay keeps ExaBGP and its
sessions alive for that long, keeps draining ExaBGP (dropping what it says,
remembering only each peer's latest state), and reconnects as soon as the
next daemon listens. Without a hold, or when the hold runs out, the relay
has ExaBGP withdraw every route (`evpnd retire`), then SIGTERMs ExaBGP (its
parent), which closes the sessions, and exits. When
ExaBGP goes first, the relay hands the daemon what is queued and exits.

Both directions are cut at line boundaries only, so a daemon never gets half
a JSON line and ExaBGP never gets half a command; acknowledgements of
commands the previous daemon sent are not passed to the next one.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import os
import signal
import sys

TOKEN_ENV = "EVPND_RELAY_TOKEN"
BUFFER_ENV = "EVPND_RELAY_BUFFER"  # bytes queued for the daemon before UPDATEs are dropped
DEFAULT_BUFFER = 64 * 1024 * 1024
MIN_BUFFER = 64 * 1024
OVERFLOW_PREFIX = "#evpnd overflow "  # relay -> daemon: UPDATEs were dropped
HELLO = "evpnd-relay"
CONTROL_PREFIX = b"#evpnd "
CONNECT_ATTEMPTS = 25
CONNECT_PAUSE = 0.2
RECONNECT_PAUSE = 0.1
FLUSH_TIMEOUT = 5.0
RETIRE_TIMEOUT = 35.0  # ExaBGP gives up after 30 s (commands.RETIRE_TIMEOUT)
# A state line is short; anything longer is an UPDATE and is not looked into.
STATE_LINE_MAX = 4096
_STATE_MARK = b'"type": "state"'
_ACKS = (b"done", b"error")
# Where to look for the JSON envelope's type and peer: ExaBGP writes them
# first, before the message itself (only the host name comes before them).
_HEAD = 1024
_UPDATE_MARK = b'"type": "update"'
_EOR_MARK = b'"eor":'
_PEER_MARK = b'"peer": "'
_FRAME = b"="
# A raw frame body this short may be an End-of-RIB (an empty MP_UNREACH).
_EOR_BODY_MAX = 24
_EVPN_EOR_VALUE = b"\x00\x19\x46"  # AFI 25 (L2VPN), SAFI 70 (EVPN)


def hello_line(token: str, pid: int, states: dict[str, str]) -> bytes:
    compact = json.dumps(states, separators=(",", ":"), sort_keys=True)
    return f"{HELLO} {token} {pid} {compact}\n".encode()


def hold_line(seconds: float) -> bytes:
    """The daemon's `#evpnd hold <seconds>`: how long to keep ExaBGP up once it is gone."""
    return CONTROL_PREFIX + f"hold {seconds:g}\n".encode()


def parse_hello(line: bytes) -> tuple[str, int, dict[str, str]] | None:
    """(token, pid, peer states) from a relay's hello, or None if it is not one."""
    words = line.decode("ascii", "replace").split()
    if len(words) not in (3, 4) or words[0] != HELLO or not words[2].isdigit():
        return None
    states: dict[str, str] = {}
    if len(words) == 4:
        try:
            loaded = json.loads(words[3])
        except ValueError:
            return None
        if not isinstance(loaded, dict):
            return None
        states = {str(k): str(v) for k, v in loaded.items()}
    return words[1], int(words[2]), states


def overflow_line(lines: int, size: int, peers: list[str]) -> bytes:
    """The relay's notice that it dropped received UPDATEs (the daemon asks for a refresh)."""
    body = json.dumps({"lines": lines, "bytes": size, "peers": sorted(peers)},
                      separators=(",", ":"))  # fmt: skip
    return f"{OVERFLOW_PREFIX}{body}\n".encode()


def parse_overflow(line: bytes) -> tuple[int, int, tuple[str, ...]] | None:
    """(lines, bytes, peers) of an overflow notice; None if `line` is not one.

    An empty peer list means "some peer we could not tell": refresh them all.
    """
    prefix = OVERFLOW_PREFIX.encode()
    if not line.startswith(prefix):
        return None
    try:
        body = json.loads(line[len(prefix) :])
        peers = tuple(str(peer) for peer in body["peers"])
        return int(body["lines"]), int(body["bytes"]), peers
    except (ValueError, KeyError, TypeError):
        return None


def buffer_limit(environ: dict[str, str] | os._Environ[str]) -> int:
    """The relay's bound on what it queues for the daemon, from its environment."""
    try:
        return max(MIN_BUFFER, int(environ.get(BUFFER_ENV, DEFAULT_BUFFER)))
    except ValueError:
        return DEFAULT_BUFFER


def update_peer(line: bytes) -> str | None:
    """If `line` is a received UPDATE that may be dropped: its peer ("" if unknown).

    None for everything that must go through: state, End-of-RIB, route
    refresh, notifications, acks, anything not recognised as an UPDATE.
    """
    if line.startswith(_FRAME):
        words = line.split(b" ", 2)
        return words[1].decode("ascii", "replace") if len(words) > 1 else ""
    head = line[:_HEAD]
    if not line.startswith(b"{") or _UPDATE_MARK not in head:
        return None
    if len(line) <= STATE_LINE_MAX and _EOR_MARK in line:
        return None  # an End-of-RIB (ExaBGP's JSON calls it an update)
    start = head.find(_PEER_MARK)
    if start < 0:
        return ""
    start += len(_PEER_MARK)
    end = head.find(b'"', start)
    return head[start:end].decode("ascii", "replace") if end > 0 else ""


def end_of_rib_frame(line: bytes) -> bytes | None:
    """The End-of-RIB bodies of a raw frame line, as a frame of their own (None: none)."""
    words = line.rstrip(b"\n").split(b" ")
    kept = [body for body in words[2:] if len(body) <= _EOR_BODY_MAX and _is_eor(body)]
    if not kept:
        return None
    return b" ".join([*words[:2], *kept]) + b"\n"


def _is_eor(body: bytes) -> bool:
    """An UPDATE body that only holds an empty EVPN MP_UNREACH (RFC 4724 End-of-RIB)."""
    try:
        raw = binascii.a2b_base64(body)
    except (binascii.Error, ValueError):
        return False
    if len(raw) < 4 or raw[:2] != b"\0\0" or int.from_bytes(raw[2:4], "big") != len(raw) - 4:
        return False
    attrs = raw[4:]
    if len(attrs) == 6 and not attrs[0] & 0x10:  # flags, code, 1-byte length
        return attrs[1] == 15 and attrs[2] == 3 and attrs[3:] == _EVPN_EOR_VALUE
    if len(attrs) == 7 and attrs[0] & 0x10:  # extended length
        return attrs[1] == 15 and attrs[2:4] == b"\0\3" and attrs[4:] == _EVPN_EOR_VALUE
    return False


def peer_state(line: bytes) -> tuple[str, str] | None:
    """(peer address, state) if `line` is ExaBGP's JSON state message."""
    if len(line) > STATE_LINE_MAX or _STATE_MARK not in line:
        return None
    try:
        message = json.loads(line)
        neighbor = message["neighbor"]
        return str(neighbor["address"]["peer"]), str(neighbor["state"])
    except (ValueError, KeyError, TypeError):
        return None


class Relay:
    """The relay's state across daemon connections; the protocols feed it."""

    def __init__(self, stdout: asyncio.WriteTransport, limit: int = DEFAULT_BUFFER) -> None:
        self.stdout = stdout
        self.sock: asyncio.Transport | None = None
        self.limit = limit  # bytes queued for the daemon before UPDATEs are dropped
        self.hold = 0.0
        self.states: dict[str, str] = {}
        self.outstanding = 0  # commands passed to ExaBGP and not acknowledged yet
        self.all_acked = asyncio.Event()
        self.foreign_acks = 0  # acks still due for a previous daemon's commands
        self.dropped_lines = 0  # lines nobody was there to take (between daemons)
        # Shedding: set while the daemon is more than `limit` bytes behind,
        # until it has taken half of that (the transport's write buffer marks).
        self.overflowing = False
        self.shed_lines = 0  # UPDATE lines dropped while overflowing, in total
        self.shed_bytes = 0
        self._shed: dict[str, int] = {}  # peer ("": unknown) -> lines dropped since the notice
        self._shed_bytes = 0
        self._in_partial: list[bytes] = []  # ExaBGP -> daemon, current line so far
        self._out_partial = b""  # daemon -> ExaBGP, current command so far

    # ExaBGP -> daemon ---------------------------------------------------

    def from_exabgp(self, data: bytes) -> None:
        end = data.rfind(b"\n")
        if end < 0:
            self._in_partial.append(data)
            return
        complete = b"".join((*self._in_partial, data[: end + 1])) if self._in_partial \
            else data[: end + 1]
        rest = data[end + 1 :]
        self._in_partial = [rest] if rest else []
        forward = self._inspect(complete)
        if self.sock is not None and not self.sock.is_closing():
            if forward and self.overflowing:
                forward = self._shed_updates(forward)
            if forward:
                self.sock.write(forward)
        else:
            self.dropped_lines += complete.count(b"\n")

    def _shed_updates(self, complete: bytes) -> bytes:
        """Drop the received UPDATE lines of `complete`; keep everything else in order."""
        keep: list[bytes] = []
        for line in complete.split(b"\n")[:-1]:
            peer = update_peer(line)
            if peer is None:
                keep.append(line + b"\n")
                continue
            self._shed[peer] = self._shed.get(peer, 0) + 1
            self._shed_bytes += len(line) + 1
            self.shed_lines += 1
            self.shed_bytes += len(line) + 1
            if line.startswith(_FRAME):
                eor = end_of_rib_frame(line)
                if eor is not None:
                    keep.append(eor)
        return b"".join(keep)

    def overflow_begin(self) -> None:
        """The daemon is `limit` bytes behind: drop UPDATEs until it catches up."""
        if not self.overflowing:
            self.overflowing = True
            sys.stderr.write(f"evpnd relay: daemon {self.limit} bytes behind, "
                             "dropping received updates\n")  # fmt: skip

    def overflow_end(self) -> None:
        """The daemon caught up: tell it what was dropped, so it asks for a refresh."""
        if not self.overflowing:
            return
        self.overflowing = False
        if self._shed and self.sock is not None and not self.sock.is_closing():
            lines = sum(self._shed.values())
            peers = [peer for peer in self._shed if peer]
            if "" in self._shed:
                peers = []  # one we could not tell: all of them
            self.sock.write(overflow_line(lines, self._shed_bytes, peers))
            sys.stderr.write(f"evpnd relay: {lines} received update lines dropped, "
                             f"daemon told\n")  # fmt: skip
        self._shed = {}
        self._shed_bytes = 0

    def _inspect(self, complete: bytes) -> bytes:
        """Track acks and peer states; returns what the current daemon should get."""
        keep: list[bytes] | None = None
        lines = complete.split(b"\n")[:-1]
        for index, line in enumerate(lines):
            if len(line) <= 6 and line.strip() in _ACKS:
                self.outstanding = max(0, self.outstanding - 1)
                if not self.outstanding:
                    self.all_acked.set()
                if self.foreign_acks:
                    self.foreign_acks -= 1
                    if keep is None:
                        keep = lines[:index]
                    continue
            else:
                state = peer_state(line)
                if state is not None:
                    self.states[state[0]] = state[1]
            if keep is not None:
                keep.append(line)
        if keep is None:
            return complete
        return b"".join(line + b"\n" for line in keep)

    # daemon -> ExaBGP ---------------------------------------------------

    def from_daemon(self, data: bytes) -> None:
        data = self._out_partial + data if self._out_partial else data
        end = data.rfind(b"\n")
        if end < 0:
            self._out_partial = data
            return
        complete, self._out_partial = data[: end + 1], data[end + 1 :]
        if CONTROL_PREFIX in complete:
            lines = complete.split(b"\n")[:-1]
            commands = [line for line in lines if not line.startswith(CONTROL_PREFIX)]
            for line in lines:
                if line.startswith(CONTROL_PREFIX):
                    self._control(line[len(CONTROL_PREFIX) :].decode("ascii", "replace"))
            complete = b"".join(line + b"\n" for line in commands)
        if complete:
            self.command(complete)

    def command(self, lines: bytes) -> None:
        self.outstanding += lines.count(b"\n")
        self.all_acked.clear()
        self.stdout.write(lines)

    async def retire(self, timeout: float) -> None:
        """Have ExaBGP withdraw everything (commands.RETIRE) and wait until it is sent."""
        self.command(b"evpnd retire\n")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_acked.wait(), timeout)

    def _control(self, text: str) -> None:
        words = text.split()
        if len(words) == 2 and words[0] == "hold":
            with contextlib.suppress(ValueError):
                self.hold = max(0.0, float(words[1]))

    def attach(self, sock: asyncio.Transport) -> None:
        self.sock = sock
        self._out_partial = b""
        self.overflowing = False
        self._shed = {}  # a new daemon refreshes every established peer anyway
        self._shed_bytes = 0
        # pause_writing() past `limit` queued bytes, resume_writing() below half.
        sock.set_write_buffer_limits(high=self.limit, low=self.limit // 2)
        # Whatever the previous daemon left unacknowledged is answered to nobody.
        self.foreign_acks = self.outstanding

    def detach(self) -> None:
        self.sock = None
        self._out_partial = b""  # half a command must never reach ExaBGP
        self.overflowing = False


class _FromExabgp(asyncio.Protocol):
    def __init__(self, relay: Relay, finished: asyncio.Future[str]) -> None:
        self._relay = relay
        self._finished = finished

    def data_received(self, data: bytes) -> None:
        self._relay.from_exabgp(data)

    def eof_received(self) -> bool:
        if not self._finished.done():
            self._finished.set_result("exabgp closed our stdin")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._finished.done():
            self._finished.set_result(f"stdin lost ({exc})")


class _FromDaemon(asyncio.Protocol):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._transport: asyncio.BaseTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._relay.from_daemon(data)

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    # The transport calls these when what the daemon has not read yet crosses
    # the relay's limit, and when it is back under half of it.
    def pause_writing(self) -> None:
        if self._transport is not None and self._relay.sock is self._transport:
            self._relay.overflow_begin()

    def resume_writing(self) -> None:
        if self._transport is not None and self._relay.sock is self._transport:
            self._relay.overflow_end()

    def _close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Quiet(asyncio.Protocol):
    pass


async def _connect(
    path: str, protocol: _FromDaemon, attempts: int, pause: float
) -> asyncio.Transport | None:
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        try:
            transport, _ = await loop.create_unix_connection(lambda: protocol, path)
            assert isinstance(transport, asyncio.Transport)
            return transport
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt < attempts - 1:
                await asyncio.sleep(pause)
    return None


async def relay(path: str, token: str) -> int:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[str] = loop.create_future()
    # stdout first: the daemon may send commands as soon as it reads the hello.
    stdout, _ = await loop.connect_write_pipe(_Quiet, sys.stdout.buffer)
    state = Relay(stdout, buffer_limit(os.environ))

    async def attach(attempts: int, pause: float) -> _FromDaemon | None:
        protocol = _FromDaemon(state)
        sock = await _connect(path, protocol, attempts, pause)
        if sock is None:
            return None
        sock.write(hello_line(token, os.getppid(), state.states))
        state.attach(sock)
        return protocol

    session = await attach(CONNECT_ATTEMPTS, CONNECT_PAUSE)
    if session is None:
        raise ConnectionRefusedError(f"nothing listens on {path}")
    await loop.connect_read_pipe(lambda: _FromExabgp(state, finished), sys.stdin.buffer)

    def terminate() -> None:
        # ExaBGP sends SIGTERM after its shutdown notice: pass that on first.
        if not finished.done():
            finished.set_result("terminated")

    loop.add_signal_handler(signal.SIGTERM, terminate)
    while True:
        await asyncio.wait({finished, session.closed}, return_when=asyncio.FIRST_COMPLETED)
        if finished.done():
            break
        state.detach()
        if state.hold <= 0:
            await _end_exabgp(state)  # the daemon is gone for good
            return 1
        sys.stderr.write(f"evpnd relay: daemon gone, holding the sessions {state.hold:g}s\n")
        attempts = max(1, int(state.hold / RECONNECT_PAUSE))
        waiting = asyncio.ensure_future(attach(attempts, RECONNECT_PAUSE))
        await asyncio.wait({finished, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if finished.done():
            waiting.cancel()
            break
        reattached = waiting.result()
        if reattached is None:
            sys.stderr.write("evpnd relay: no daemon came back in time, closing the sessions\n")
            await _end_exabgp(state)
            return 1
        session = reattached
        sys.stderr.write(f"evpnd relay: daemon back, {state.dropped_lines} lines dropped\n")

    reason = finished.result()
    if reason == "terminated":
        await asyncio.sleep(0.05)  # let the read pipe deliver what is already in it
    # ExaBGP is done with us: hand the daemon whatever is still queued.
    sock = state.sock
    if sock is None:
        return 0
    deadline = loop.time() + FLUSH_TIMEOUT
    while sock.get_write_buffer_size() and not sock.is_closing() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    sock.close()
    await asyncio.sleep(0)
    return 0


async def _end_exabgp(state: Relay) -> None:
    """Withdraw our routes, then SIGTERM our ExaBGP: it closes its sessions and exits.

    ExaBGP 5.0.15 only notices a dead API process when it next writes to it,
    which a quiet peer may never cause; our routes would stay announced with
    nobody behind them.
    """
    await state.retire(RETIRE_TIMEOUT)
    parent = os.getppid()
    if parent > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(parent, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m evpnd.speaker.relay <unix socket>\n")
        return 2
    token = os.environ.get(TOKEN_ENV, "")
    try:
        return asyncio.run(relay(args[0], token))
    except OSError as exc:
        sys.stderr.write(f"evpnd relay: cannot reach the daemon at {args[0]}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
