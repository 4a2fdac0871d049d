"""When did a BGP speaker's last byte reach us: `python -m bench.bgptap DEV PEER`, in a namespace.

The benchmark's FRR-VTEP source is bgpd: its writes cannot be stamped from
outside, so the receiver's side of the wire is: an AF_PACKET socket on DEV
with a kernel filter passing only TCP segments from PEER (IPv4, port 179
either way), each stamped by the kernel on arrival (SO_TIMESTAMPNS). A
segment whose TCP payload is exactly one KEEPALIVE does not count; any other
payload does.

Commands on stdin / answers on stdout:
    quiet S    once no counted segment has arrived for S seconds:
               `last T BYTES` (T = time.monotonic() of the last counted
               segment's arrival, 0.0 if none; BYTES = payload bytes counted)
    reset      forget what was counted so far; answers `reset`
    quit
stdout starts with `ready`.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import socket
import struct
import sys
import time
from ipaddress import IPv4Address

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SNAP = 128  # IP + TCP headers (up to 120 bytes) and the start of the payload
KEEPALIVE = 19
BGP_PORT = 179


def tcp_filter(peer: IPv4Address) -> bytes:
    """Classic BPF on a cooked (SOCK_DGRAM) IPv4 packet: TCP from `peer`, first SNAP bytes."""
    ld_b, ld_w, jeq, ret = 0x30, 0x20, 0x15, 0x06
    program = [
        (ld_b, 0, 0, 9),  # protocol
        (jeq, 0, 3, socket.IPPROTO_TCP),
        (ld_w, 0, 0, 12),  # source address
        (jeq, 0, 1, int(peer)),
        (ret, 0, 0, SNAP),
        (ret, 0, 0, 0),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def payload(packet: bytes, peer: IPv4Address) -> tuple[int, bytes] | None:
    """(payload length, its first bytes) of a BGP segment (port 179) from peer, else None.

    The kernel filter already passes only TCP from peer; packets queued before it was
    attached are sorted out here."""
    if len(packet) < 20 or packet[9] != socket.IPPROTO_TCP or packet[12:16] != peer.packed:
        return None
    ihl = (packet[0] & 15) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if len(packet) < ihl + 20:
        return None
    sport, dport = struct.unpack_from("!HH", packet, ihl)
    if BGP_PORT not in (sport, dport):
        return None
    doff = (packet[ihl + 12] >> 4) * 4
    return total - ihl - doff, packet[ihl + doff :]


def counts(length: int, head: bytes) -> bool:
    """Whether a segment's payload carries more than one lone KEEPALIVE."""
    if length <= 0:
        return False
    return not (length == KEEPALIVE and len(head) >= KEEPALIVE and head[18] == 4)


class Tap:
    def __init__(self, device: str, peer: IPv4Address) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        # struct sock_fprog {unsigned short len; struct sock_filter *filter;}: the
        # instructions must stay alive while the kernel copies them.
        insns = tcp_filter(peer)
        program = ctypes.create_string_buffer(insns, len(insns))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                             struct.pack("HL", len(insns) // 8, ctypes.addressof(program)))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((device, ETH_P_IP))
        self.sock.setblocking(False)
        self.last = 0.0
        self.bytes = 0
        self.quiet: float | None = None
        self.peer = peer

    def drain(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(SNAP, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return
            found = payload(data, self.peer)
            if found is None or not counts(*found):
                continue
            stamp = time.monotonic()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("=qq", value[:16])
                    # kernel arrival time (CLOCK_REALTIME) moved onto CLOCK_MONOTONIC
                    stamp = sec + nsec / 1e9 - (time.time() - time.monotonic())
            self.last = max(self.last, stamp)
            self.bytes += found[0]

    def command(self, line: str) -> bool:
        words = line.split()
        if not words:
            return True
        if words[0] == "quit":
            return False
        if words[0] == "quiet":
            self.quiet = float(words[1])
        elif words[0] == "reset":
            self.drain()
            self.last, self.bytes = 0.0, 0
            print("reset", flush=True)
        return True

    def answer(self) -> None:
        if self.quiet is not None and time.monotonic() - self.last >= self.quiet:
            print(f"last {self.last:.6f} {self.bytes}", flush=True)
            self.quiet = None

    def run(self) -> None:
        print("ready", flush=True)
        stdin = sys.stdin.fileno()
        pending = b""
        while True:
            readable, _, _ = select.select([self.sock, stdin], [], [], 0.05)
            if self.sock in readable:
                self.drain()
            if stdin in readable:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not self.command(line.decode()):
                        return
            self.answer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("device")
    parser.add_argument("peer", type=IPv4Address)
    args = parser.parse_args()
    Tap(args.device, args.peer).run()


if __name__ == "__main__":
    main()
