"""Frames arriving at a lab node's interface: a raw AF_PACKET socket opened in its namespace.

For the fabric tests that check what suppression keeps off a wire (ARP
requests, IPv6 neighbour solicitations): open the capture, drain what is
there, provoke, then read what came in. Outgoing frames are left out.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

from evpnd.dataplane.netlink.routesocket import inside_netns

PACKET_OUTGOING = 4  # sll_pkttype of a frame the node sent itself


class FrameCapture:
    def __init__(self, namespace: str, ethertype: int, interface: str = "eth1") -> None:
        with inside_netns(namespace):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        self.sock.bind((interface, ethertype))
        self.sock.settimeout(0.1)

    def close(self) -> None:
        self.sock.close()

    def drain(self) -> None:
        """Forget what arrived so far."""
        self.sock.settimeout(0)
        try:
            while True:
                self.sock.recv(2048)
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(0.1)

    def incoming(self, linger: float = 1.0) -> Iterator[bytes]:
        """Every frame received so far, and for `linger` seconds more."""
        end = time.monotonic() + linger
        while True:
            try:
                frame, addr = self.sock.recvfrom(2048)
            except (TimeoutError, BlockingIOError):
                if time.monotonic() >= end:
                    return
                continue
            if addr[2] != PACKET_OUTGOING:
                yield frame
