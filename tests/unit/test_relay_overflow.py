"""The relay's bound: a daemon that falls behind costs dropped UPDATEs and a notice, never
a blocked ExaBGP or unbounded memory.

Real sockets and a real relay process; the daemon's end simply stops reading.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evpnd.speaker import relay

PEER_A, PEER_B = "192.0.2.2", "192.0.2.3"
# An EVPN End-of-RIB as FRR sends it (an empty MP_UNREACH for AFI 25 / SAFI 70).
EOR_BODY = bytes.fromhex("0000" "0006" "800f03001946")
EOR_BODY_EXTENDED = bytes.fromhex("0000" "0007" "900f0003001946")


def b64(body: bytes) -> bytes:
    return base64.b64encode(body)


def frame(peer: str, *bodies: bytes) -> bytes:
    return b" ".join([b"=evpn", peer.encode(), *(b64(b) for b in bodies)]) + b"\n"


def route_body(i: int) -> bytes:
    return b"\0\0\0\x40" + i.to_bytes(4, "big") * 16  # the relay never looks inside


def json_line(kind: str, peer: str, message: dict, pad: int = 0) -> bytes:
    envelope = {"exabgp": "5.0.0", "time": 1.0, "host": "h", "pid": 1, "ppid": 1,
                "counter": 1, "type": kind,
                "neighbor": {"address": {"local": "192.0.2.1", "peer": peer},
                             "message": message, "pad": "x" * pad}}  # fmt: skip
    return json.dumps(envelope).encode() + b"\n"


def state_line(peer: str, state: str) -> bytes:
    return json.dumps({"exabgp": "5.0.0", "type": "state",
                       "neighbor": {"address": {"local": "192.0.2.1", "peer": peer},
                                    "state": state}}).encode() + b"\n"  # fmt: skip


def test_update_lines_are_told_from_the_lines_that_must_go_through() -> None:
    assert relay.update_peer(frame(PEER_A, route_body(1)).rstrip()) == PEER_A
    update = json_line("update", PEER_B, {"update": {"announce": {}}}).rstrip()
    assert relay.update_peer(update) == PEER_B
    for kept in (
        json_line("update", PEER_B, {"eor": {"afi": "l2vpn", "safi": "evpn"}}),
        json_line("refresh", PEER_B, {"refresh": "begin"}),
        json_line("notification", PEER_B, {}),
        state_line(PEER_A, "up"),
        b"done\n", b"error\n", b"something else\n",
    ):  # fmt: skip
        assert relay.update_peer(kept.rstrip()) is None, kept


def test_an_end_of_rib_inside_a_dropped_frame_is_kept() -> None:
    line = frame(PEER_A, route_body(1), EOR_BODY, route_body(2), EOR_BODY_EXTENDED)
    assert relay.end_of_rib_frame(line) == frame(PEER_A, EOR_BODY, EOR_BODY_EXTENDED)
    assert relay.end_of_rib_frame(frame(PEER_A, route_body(1))) is None
    # Short bodies that are not an EVPN End-of-RIB (another family, withdrawn routes).
    ipv4_eor = bytes.fromhex("0000" "0006" "800f03000101")
    assert relay.end_of_rib_frame(frame(PEER_A, ipv4_eor, b"\0\x01\0")) is None


def test_overflow_notices_round_trip() -> None:
    line = relay.overflow_line(12, 3400, [PEER_B, PEER_A])
    assert relay.parse_overflow(line.rstrip()) == (12, 3400, (PEER_A, PEER_B))
    assert relay.parse_overflow(b"#evpnd overflow nonsense") is None
    assert relay.parse_overflow(b'{"type": "update"}') is None


class Sink:
    def write(self, data: bytes) -> None:
        pass


async def test_a_daemon_that_stops_reading_costs_updates_not_memory() -> None:
    limit = relay.MIN_BUFFER
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    loop = asyncio.get_running_loop()
    state = relay.Relay(Sink(), limit)  # type: ignore[arg-type]
    transport, _ = await loop.create_unix_connection(lambda: relay._FromDaemon(state), sock=ours)
    assert isinstance(transport, asyncio.Transport)
    state.attach(transport)
    try:
        chunk = b"".join(frame(PEER_A, route_body(i)) for i in range(20))
        most = 0
        for i in range(400):  # ~0.9 MB of UPDATEs, the daemon reads none of it
            state.from_exabgp(chunk)
            if i == 200:
                state.from_exabgp(state_line(PEER_B, "up"))
                state.from_exabgp(frame(PEER_B, route_body(0), EOR_BODY))
                state.from_exabgp(json_line("update", PEER_B, {"eor": {"afi": "l2vpn"}}))
            most = max(most, transport.get_write_buffer_size())
        assert state.overflowing and state.shed_lines > 0
        # Bounded: the limit, the one read that crossed it, and the few lines
        # that go through whatever happens.
        assert most <= limit + 2 * len(chunk)

        # The daemon catches up: it finds the lines that must go through, in
        # order, and then the notice naming the peers whose UPDATEs were dropped
        # (B's frame held a route besides its End-of-RIB).
        theirs.setblocking(False)
        received = bytearray()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                data = theirs.recv(1 << 20)
            except BlockingIOError:
                if received.endswith(b"\n") and relay.OVERFLOW_PREFIX.encode() in received:
                    break
                await asyncio.sleep(0.01)
                continue
            received += data
        lines = bytes(received).splitlines()
        notice = relay.parse_overflow(lines[-1])
        assert notice is not None and notice[1] > 0 and notice[2] == (PEER_A, PEER_B)
        assert notice[0] == state.shed_lines
        assert state_line(PEER_B, "up").rstrip() in lines
        assert frame(PEER_B, EOR_BODY).rstrip() in lines
        assert sum(b'"eor"' in line for line in lines) == 1
        forwarded = sum(line.startswith(b"=evpn " + PEER_A.encode()) for line in lines)
        assert forwarded + state.shed_lines == 400 * 20 + 1
        assert not state.overflowing
    finally:
        transport.close()
        theirs.close()


def test_the_relay_process_keeps_draining_exabgp_while_the_daemon_sleeps() -> None:
    """ExaBGP's writes to the relay never block, however far behind the daemon is."""
    with tempfile.TemporaryDirectory(prefix="evr-") as tmp:
        path = str(Path(tmp) / "d.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        env = {**os.environ, relay.TOKEN_ENV: "tok", relay.BUFFER_ENV: str(1 << 20)}
        proc = subprocess.Popen([sys.executable, "-m", "evpnd.speaker.relay", path],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)  # fmt: skip
        try:
            server.settimeout(10)
            daemon, _ = server.accept()
            daemon.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert proc.stdin is not None
            chunk = b"".join(frame(PEER_A, route_body(i)) for i in range(100))
            written = 0
            started = time.monotonic()
            while written < 32 << 20:  # 32 MiB, 32 times the relay's bound
                proc.stdin.write(chunk)
                written += len(chunk)
                assert time.monotonic() - started < 60, "writing to the relay blocked"
            proc.stdin.write(state_line(PEER_A, "up"))
            proc.stdin.flush()
            # The relay's memory stayed near its bound, not the 32 MiB written.
            rss_kib = int(next(line.split()[1] for line in
                               Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                               if line.startswith("VmRSS:")))  # fmt: skip
            assert rss_kib < 48 * 1024  # ~22 MiB measured; holding it all would take 55
            daemon.settimeout(10)
            received = b""
            while relay.OVERFLOW_PREFIX.encode() not in received or not received.endswith(b"\n"):
                data = daemon.recv(1 << 20)
                assert data, "the relay closed the connection"
                received += data
            lines = received.splitlines()
            notice = next(relay.parse_overflow(line) for line in lines
                          if line.startswith(relay.OVERFLOW_PREFIX.encode()))  # fmt: skip
            assert notice is not None and notice[2] == (PEER_A,) and notice[0] > 0
            assert lines[0].startswith(relay.HELLO.encode())
        finally:
            proc.kill()
            proc.wait()
            server.close()
