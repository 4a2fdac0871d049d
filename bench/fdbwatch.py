"""Event-driven FDB watcher, run inside a namespace: `python -m bench.fdbwatch DEV [--new]`.

It subscribes to RTNLGRP_NEIGH (RTM_NEWNEIGH/RTM_DELNEIGH) and keeps the set of
unicast MACs on device DEV; no polling of `bridge fdb show`. Timestamps are
time.monotonic() at the moment the datagram was read (CLOCK_MONOTONIC is the
same in every namespace, so the parent can compare them with its own).

Counting mode (default) counts vxlan entries (the ones carrying NDA_DST, a
remote VTEP); the all-zero flood entries are not counted. Commands on stdin:
    target N    print `reached N T` as soon as the count is >= N (N > 0) or 0 (N = 0)
    atmost N    print `down N T` as soon as the count is <= N
    count       print `count N`
    changes     print `changes N`: RTM_NEWNEIGH/RTM_DELNEIGH seen for counted entries
stdout starts with `ready N` (N = entries already present, from a dump).

`--new` mode prints `new MAC T` the first time each unicast MAC shows up on
DEV, with or without NDA_DST (a bridge port's learned entries carry none).
On a receive-buffer overrun (ENOBUFS) the table is dumped again and the
watcher says `overrun`.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator

# Kernel ABI (linux/netlink.h, linux/rtnetlink.h, linux/neighbour.h). The watcher keeps its
# own copy rather than importing evpnd's: the instrument must not change with what it measures.
AF_BRIDGE = 7
NDA_DST, NDA_LLADDR = 1, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE = 3
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTMGRP_NEIGH = 4
NLMSGHDR = struct.Struct("=IHHII")


class MalformedMessage(ValueError):
    pass


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(type, flags, seq, pid, payload start, payload end) of each netlink message."""
    off = 0
    while off + NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, pid = NLMSGHDR.unpack_from(data, off)
        if length < NLMSGHDR.size or off + length > len(data):
            raise MalformedMessage(f"netlink header length {length} at offset {off}")
        yield mtype, flags, seq, pid, off + NLMSGHDR.size, off + length
        off += (length + 3) & ~3


SO_RCVBUFFORCE = 33
NDMSG = struct.Struct("=BxxxiHBB")
RTATTR = struct.Struct("=HH")
ZERO = b"\0" * 6


def parse(data: bytes, start: int, end: int) -> tuple[int, bytes | None, bool]:
    """(ifindex, lladdr, has_dst) of a bridge-family ndmsg; ifindex 0 for other families."""
    family, ifindex, _, _, _ = NDMSG.unpack_from(data, start)
    if family != AF_BRIDGE:
        return 0, None, False
    lladdr = None
    has_dst = False
    pos = start + NDMSG.size
    while pos + 4 <= end:
        length, atype = RTATTR.unpack_from(data, pos)
        if length < 4:
            break
        atype &= 0x3FFF
        if atype == NDA_LLADDR:
            lladdr = bytes(data[pos + 4 : pos + length])
        elif atype == NDA_DST:
            has_dst = True
        pos += (length + 3) & ~3
    return ifindex, lladdr, has_dst


class Watcher:
    def __init__(self, device: str, new_mode: bool) -> None:
        self.ifindex = socket.if_nametoindex(device)
        self.new_mode = new_mode
        self.macs: set[bytes] = set()
        self.seen: set[bytes] = set()
        self.targets: list[int] = []
        self.ceilings: list[int] = []
        self.changes = 0
        self.events = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.events.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 << 20)
        self.events.bind((0, RTMGRP_NEIGH))
        self.events.setblocking(False)

    def wanted(self, ifindex: int, lladdr: bytes | None, has_dst: bool) -> bool:
        if ifindex != self.ifindex or lladdr is None or len(lladdr) != 6 or lladdr == ZERO:
            return False
        if lladdr[0] & 1:
            return False
        return self.new_mode or has_dst

    def feed(self, data: bytes, now: float) -> None:
        out = []
        try:
            for mtype, _, _, _, start, end in iter_messages(data):
                if mtype not in (RTM_NEWNEIGH, RTM_DELNEIGH):
                    continue
                ifindex, lladdr, has_dst = parse(data, start, end)
                if not self.wanted(ifindex, lladdr, has_dst):
                    continue
                assert lladdr is not None
                self.changes += 1
                if mtype == RTM_NEWNEIGH:
                    self.macs.add(lladdr)
                    if self.new_mode and lladdr not in self.seen:
                        self.seen.add(lladdr)
                        out.append(f"new {lladdr.hex(':')} {now:.6f}")
                else:
                    self.macs.discard(lladdr)
        except MalformedMessage:
            pass
        if out:
            print("\n".join(out), flush=True)
        self.check(now)

    def check(self, now: float) -> None:
        if not self.targets and not self.ceilings:
            return
        count = len(self.macs)
        for ceiling in [c for c in self.ceilings if count <= c]:
            print(f"down {ceiling} {now:.6f}", flush=True)
            self.ceilings.remove(ceiling)
        left = []
        for target in self.targets:
            if (target > 0 and count >= target) or (target == 0 and count == 0):
                print(f"reached {target} {now:.6f}", flush=True)
            else:
                left.append(target)
        self.targets = left

    def dump(self) -> None:
        """Rebuild the table from a dump (start-up and after an overrun)."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        try:
            sock.bind((0, 0))
            hdr = struct.pack("=IHHII", 16 + NDMSG.size, RTM_GETNEIGH,
                              NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
            sock.send(hdr + NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0))
            macs: set[bytes] = set()
            done = False
            while not done:
                data = sock.recv(1 << 20)
                for mtype, _, _, _, start, end in iter_messages(data):
                    if mtype == NLMSG_DONE:
                        done = True
                        break
                    if mtype != RTM_NEWNEIGH:
                        continue
                    ifindex, lladdr, has_dst = parse(data, start, end)
                    if self.wanted(ifindex, lladdr, has_dst) and lladdr is not None:
                        macs.add(lladdr)
            self.macs = macs
            if self.new_mode:
                self.seen |= macs
        finally:
            sock.close()

    def command(self, line: str) -> bool:
        words = line.split()
        if not words:
            return True
        if words[0] == "quit":
            return False
        if words[0] == "target":
            self.targets.append(int(words[1]))
            self.check(time.monotonic())
        elif words[0] == "atmost":
            self.ceilings.append(int(words[1]))
            self.check(time.monotonic())
        elif words[0] == "count":
            print(f"count {len(self.macs)}", flush=True)
        elif words[0] == "changes":
            print(f"changes {self.changes}", flush=True)
        return True

    def run(self) -> None:
        self.dump()
        print(f"ready {len(self.macs)}", flush=True)
        stdin = sys.stdin.fileno()
        pending = b""
        while True:
            readable, _, _ = select.select([self.events, stdin], [], [])
            if self.events in readable:
                while True:
                    try:
                        data = self.events.recv(1 << 20)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno != errno.ENOBUFS:
                            raise
                        print("overrun", flush=True)
                        self.dump()
                        self.check(time.monotonic())
                        continue
                    self.feed(data, time.monotonic())
            if stdin in readable:
                chunk = os.read(stdin, 4096)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not self.command(line.decode()):
                        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("device")
    parser.add_argument("--new", action="store_true", help="report each new MAC")
    args = parser.parse_args()
    Watcher(args.device, args.new).run()


if __name__ == "__main__":
    main()
