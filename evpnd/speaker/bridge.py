"""The API process ExaBGP spawns: a relay between ExaBGP and the evpnd daemon.

    python -m evpnd.speaker.bridge <unix socket of the daemon>

ExaBGP writes every received UPDATE and state change to this process's stdin
with blocking writes, from its one reactor thread: if nobody reads, ExaBGP
stops sending keepalives and every session dies. So this relay reads stdin
continuously and queues whatever the daemon has not taken yet, without bound
(asyncio transports buffer every write; drain() is deliberately never awaited
in that direction). Commands flow the other way: socket -> stdout, where
back-pressure is harmless (the daemon keeps a window of unacknowledged lines).

The first line on the socket is `evpnd-relay <token> <exabgp pid>`; the token
comes from the environment the daemon gave ExaBGP, so the daemon accepts only
the relay of the ExaBGP it started last.

The relay exits when either side closes: ExaBGP gone -> flush to the daemon
and exit; daemon gone -> exit at once, and ExaBGP follows (api.terminate).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

TOKEN_ENV = "EVPND_RELAY_TOKEN"
HELLO = "evpnd-relay"
CONNECT_ATTEMPTS = 25
CONNECT_PAUSE = 0.2
FLUSH_TIMEOUT = 5.0


class _ToSocket(asyncio.Protocol):
    """stdin (ExaBGP's output) -> daemon socket, buffering without limit."""

    def __init__(self, sock: asyncio.Transport, finished: asyncio.Future[str]) -> None:
        self._sock = sock
        self._finished = finished

    def data_received(self, data: bytes) -> None:
        self._sock.write(data)

    def eof_received(self) -> bool:
        if not self._finished.done():
            self._finished.set_result("exabgp closed our stdin")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._finished.done():
            self._finished.set_result(f"stdin lost ({exc})")


class _FromSocket(asyncio.Protocol):
    """daemon socket -> stdout (ExaBGP's command input)."""

    def __init__(self, stdout: asyncio.WriteTransport, finished: asyncio.Future[str]) -> None:
        self._stdout = stdout
        self._finished = finished

    def data_received(self, data: bytes) -> None:
        self._stdout.write(data)

    def eof_received(self) -> bool:
        if not self._finished.done():
            self._finished.set_exception(ConnectionError("daemon closed the socket"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._finished.done():
            self._finished.set_exception(ConnectionError(f"daemon socket lost ({exc})"))


class _Quiet(asyncio.Protocol):
    pass


async def _connect(path: str, protocol: _FromSocket) -> asyncio.Transport:
    loop = asyncio.get_running_loop()
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            transport, _ = await loop.create_unix_connection(lambda: protocol, path)
            assert isinstance(transport, asyncio.Transport)
            return transport
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt == CONNECT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(CONNECT_PAUSE)
    raise AssertionError("unreachable")


async def relay(path: str, token: str) -> int:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[str] = loop.create_future()
    # stdout first: the daemon may send commands as soon as it reads the hello.
    stdout, _ = await loop.connect_write_pipe(_Quiet, sys.stdout.buffer)
    sock = await _connect(path, _FromSocket(stdout, finished))
    sock.write(f"{HELLO} {token} {os.getppid()}\n".encode())
    await loop.connect_read_pipe(lambda: _ToSocket(sock, finished), sys.stdin.buffer)

    def terminate() -> None:
        # ExaBGP sends SIGTERM after its shutdown notice: pass that on first.
        if not finished.done():
            finished.set_result("terminated")

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        reason = await finished
    except ConnectionError:
        return 1
    if reason == "terminated":
        await asyncio.sleep(0.05)  # let the read pipe deliver what is already in it
    # ExaBGP is done with us: hand the daemon whatever is still queued.
    deadline = loop.time() + FLUSH_TIMEOUT
    while sock.get_write_buffer_size() and not sock.is_closing() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    sock.close()
    await asyncio.sleep(0)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m evpnd.speaker.bridge <unix socket>\n")
        return 2
    token = os.environ.get(TOKEN_ENV, "")
    try:
        return asyncio.run(relay(args[0], token))
    except OSError as exc:
        sys.stderr.write(f"evpnd relay: cannot reach the daemon at {args[0]}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
