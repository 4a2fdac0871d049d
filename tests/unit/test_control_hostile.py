"""The control socket under hostile clients: `show status` is answered throughout.

A separate process opens 1000 connections and holds them, sends requests
and never reads the answers, drips a request one byte at a time, and sends
lines far over the limit; meanwhile a well-behaved client asks
`show status` again and again. Real sockets, the real server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from evpnd.control import client
from evpnd.control.server import ControlServer
from tests.unit.test_control_server import fake_daemon

HOSTILE = r"""
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
path = sys.argv[1]
held = []

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(path)
    except OSError:
        s.close()
        return None
    held.append(s)
    return s

def phase(name):
    print(name, flush=True)

phase("connects")
for _ in range(1000):  # opened and held, never a byte sent
    connect()
phase("non-readers")
request = b'{"command": "show", "what": "status"}\n' * 200
for _ in range(80):  # ask for many answers and never read one
    s = connect()
    if s is not None:
        s.setblocking(False)
        try:
            s.send(request)
        except OSError:
            pass
phase("oversize")
for _ in range(40):  # a line far over the server's limit
    s = connect()
    if s is not None:
        s.setblocking(False)
        try:
            s.send(b"{" + b"x" * (1 << 20))
        except OSError:
            pass
phase("slow")
slow = [s for s in (connect() for _ in range(80)) if s is not None]
deadline = time.monotonic() + 6
while time.monotonic() < deadline:  # a request, one byte at a time
    for s in slow:
        try:
            s.send(b"{")
        except OSError:
            pass
    time.sleep(0.3)
phase("done")
"""


async def probe(path: Path) -> dict:
    return await asyncio.to_thread(
        client.request, path, {"command": "show", "what": "status"}, 2.0
    )


async def test_hostile_clients_cannot_starve_show_status(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    # Shorter timeouts than the defaults (10 s, 5 s), for a shorter test.
    server = ControlServer(fake_daemon(), path, max_request=64 * 1024, idle_timeout=3.0,
                           write_timeout=2.0)  # fmt: skip
    await server.start()
    hostile = subprocess.Popen([sys.executable, "-c", HOSTILE, str(path)],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    answered = 0
    try:
        assert hostile.stdout is not None
        phases: list[str] = []
        reader = asyncio.create_task(asyncio.to_thread(hostile.stdout.read))
        started = time.monotonic()
        while not reader.done() and time.monotonic() - started < 60:
            response = await probe(path)
            assert response["ok"], response
            assert response["data"]["vnis"] > 0
            answered += 1
            await asyncio.sleep(0.1)
        phases = (await reader).split()
        assert phases == ["connects", "non-readers", "oversize", "slow", "done"]
        # The hostile connections were pushed out or timed out, not served forever.
        assert server.evictions > 0 and server.timeouts > 0
        assert len(server._clients) <= server.max_clients
        response = await probe(path)
        assert response["ok"]
    finally:
        hostile.kill()
        hostile.wait()
        await server.stop()
    assert answered > 10
