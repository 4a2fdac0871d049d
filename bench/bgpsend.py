"""A minimal BGP speaker that sends prebuilt EVPN UPDATEs (the benchmark's source).

Run inside the source namespace:
    python -m bench.bgpsend --count N [--per-update K] --peer IP ...
It listens on port 179 (the receivers connect to it), answers OPEN with
multiprotocol (L2VPN EVPN), 4-octet AS, route refresh and enhanced route
refresh capabilities, keeps sessions alive and discards what it receives.

Every UPDATE is encoded before any session comes up: N Type-2 MAC routes
spread round-robin over --vteps next hops (198.51.100.1, .2, ...), RD
VTEP:VNI, the VNI raw in the label, RT ASN:VNI and the VXLAN encapsulation
community, plus one Type-3 (IMET, PMSI ingress replication) per VTEP, sent
first. `--per-update K` packs up to K MAC routes of one next hop into one
MP_REACH_NLRI, as an FRR route reflector packs routes sharing their attributes;
withdrawals are packed the same way into MP_UNREACH_NLRI. K = 1 (the default)
is one NLRI per UPDATE. The Type-3 announcements stay one per UPDATE (each
carries its own PMSI tunnel attribute).

Each session's socket gets a send buffer larger than the whole stream
(SO_SNDBUFFORCE), so writing never waits for the receiver: `announce-sent` is
the source's own completion, the receiver reads at its own pace from the kernel.

stdin commands / stdout answers:
    (start)    `listening SHA UPDATES BYTES` (digest and size of the announce
               stream, for checking two runs sent the same bytes), then
               `up PEER` as each session is established
    announce   `announce-start T` (before the first byte is written) then
               `announce-sent T` (the last byte written)
    withdraw   `withdraw-start T` then `withdraw-sent T`
    quit
A ROUTE-REFRESH is answered with BoRR, every announced route, EoRR.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import socket
import struct
import sys
import threading
import time
from ipaddress import IPv4Address

MARKER = b"\xff" * 16
OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE_REFRESH = 1, 2, 3, 4, 5
AFI_L2VPN, SAFI_EVPN = 25, 70
FIRST_VTEP = IPv4Address("198.51.100.1")
MAX_MESSAGE = 4096  # RFC 4271 (no extended messages negotiated)
TYPE2_SIZE = 2 + 33  # route type, length, RD ESI tag MAC-len MAC IP-len label
SO_SNDBUFFORCE = 32


def message(kind: int, body: bytes) -> bytes:
    return MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def attribute(flags: int, code: int, value: bytes) -> bytes:
    if len(value) > 255:
        return struct.pack("!BBH", flags | 0x10, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def update(attributes: bytes) -> bytes:
    return message(UPDATE, struct.pack("!HH", 0, len(attributes)) + attributes)


def vtep(index: int) -> IPv4Address:
    return FIRST_VTEP + index


def rd(address: IPv4Address, vni: int) -> bytes:
    return struct.pack("!H", 1) + address.packed + struct.pack("!H", vni)


def mac_of(i: int) -> bytes:
    return bytes((0x02, 0xBB, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x01))


def type2(i: int, nexthop: IPv4Address, vni: int) -> bytes:
    body = (rd(nexthop, vni) + b"\0" * 10 + b"\0\0\0\0" + b"\x30" + mac_of(i) + b"\0"
            + vni.to_bytes(3, "big"))
    return bytes((2, len(body))) + body


def type3(nexthop: IPv4Address, vni: int) -> bytes:
    body = rd(nexthop, vni) + b"\0\0\0\0" + b"\x20" + nexthop.packed
    return bytes((3, len(body))) + body


def common_attributes(asn: int, vni: int) -> bytes:
    communities = (
        struct.pack("!BBHI", 0x00, 0x02, asn & 0xFFFF, vni)  # route target ASN:VNI
        + bytes((0x03, 0x0C, 0, 0, 0, 0, 0, 8))  # encapsulation: VXLAN
    )
    return (
        attribute(0x40, 1, b"\0")  # ORIGIN IGP
        + attribute(0x40, 2, b"")  # AS_PATH (iBGP: empty)
        + attribute(0x40, 5, struct.pack("!I", 100))  # LOCAL_PREF
        + attribute(0xC0, 16, communities)
    )


def reach(nexthop: IPv4Address, nlri: bytes, common: bytes) -> bytes:
    """One UPDATE with an MP_REACH_NLRI holding `nlri` (one or more packed NLRIs)."""
    mp = struct.pack("!HBB", AFI_L2VPN, SAFI_EVPN, 4) + nexthop.packed + b"\0" + nlri
    return update(attribute(0x80, 14, mp) + common)


def unreach(nlri: bytes) -> bytes:
    return update(attribute(0x80, 15, struct.pack("!HB", AFI_L2VPN, SAFI_EVPN) + nlri))


def max_per_update(asn: int, vni: int) -> int:
    """How many Type-2 NLRIs fit one 4096-byte UPDATE with our attributes."""
    empty = reach(FIRST_VTEP, b"", common_attributes(asn, vni))
    # +1: the MP_REACH header grows from 3 to 4 bytes once its value passes 255 bytes.
    return (MAX_MESSAGE - len(empty) - 1) // TYPE2_SIZE


def chunks(items: list[bytes], size: int) -> list[bytes]:
    return [b"".join(items[i : i + size]) for i in range(0, len(items), size)]


def packed_macs(count: int, vteps: int, vni: int, per_update: int) -> list[tuple[int, bytes]]:
    """(VTEP index, NLRIs) per UPDATE: MAC i belongs to VTEP i % vteps, up to per_update of
    one VTEP per UPDATE, in rounds over the VTEPs (per_update = 1 is plain round robin)."""
    by_vtep = [chunks([type2(i, vtep(v), vni) for i in range(v, count, vteps)], per_update)
               for v in range(vteps)]
    rounds = max((len(c) for c in by_vtep), default=0)
    return [(v, by_vtep[v][r]) for r in range(rounds) for v in range(vteps)
            if r < len(by_vtep[v])]


def encode(count: int, vteps: int, asn: int, vni: int,
           per_update: int = 1) -> tuple[bytes, bytes]:
    """(announce stream, withdraw stream): Type-3s first, then the MACs, up to per_update
    NLRIs per UPDATE; the withdrawals drop the MACs first and the flood lists last."""
    if not 1 <= per_update <= max_per_update(asn, vni):
        raise ValueError(f"per_update must be 1..{max_per_update(asn, vni)}")
    common = common_attributes(asn, vni)
    announce: list[bytes] = []
    imets: list[bytes] = []
    for v in range(vteps):
        nexthop = vtep(v)
        pmsi = attribute(0xC0, 22, bytes((0, 6)) + vni.to_bytes(3, "big") + nexthop.packed)
        nlri = type3(nexthop, vni)
        announce.append(reach(nexthop, nlri, common + pmsi))
        imets.append(nlri)
    macs = packed_macs(count, vteps, vni, per_update)
    announce += [reach(vtep(v), nlri, common) for v, nlri in macs]
    withdraw = [unreach(nlri) for _, nlri in macs] + [unreach(n) for n in chunks(imets, per_update)]
    return b"".join(announce), b"".join(withdraw)


def updates(stream: bytes) -> int:
    """How many BGP messages a stream holds."""
    count = pos = 0
    while pos < len(stream):
        pos += struct.unpack_from("!H", stream, pos + 16)[0]
        count += 1
    return count


def open_message(asn: int, router_id: IPv4Address, hold: int) -> bytes:
    caps = (
        bytes((1, 4)) + struct.pack("!HBB", AFI_L2VPN, 0, SAFI_EVPN)  # multiprotocol
        + bytes((2, 0))  # route refresh
        + bytes((70, 0))  # enhanced route refresh
        + bytes((65, 4)) + struct.pack("!I", asn)  # 4-octet AS
    )
    params = bytes((2, len(caps))) + caps
    return message(OPEN, struct.pack("!BHH", 4, asn if asn < 65536 else 23456, hold)
                   + router_id.packed + bytes((len(params),)) + params)


def eor() -> bytes:
    return unreach(b"")


def keepalive_interval(own_hold: int, open_body: bytes) -> float:
    """Seconds between KEEPALIVEs: a third of the session's hold time, the smaller of
    ours and the one in the peer's OPEN (RFC 4271 section 4.2); 0 when that is 0 (none
    sent). A third of only our own would let a peer with a shorter hold time expire
    the session whenever no UPDATE flows."""
    hold = min(own_hold, struct.unpack("!H", open_body[3:5])[0])
    return hold / 3


def read_message(sock: socket.socket) -> tuple[int, bytes]:
    """The next BGP message on a stream socket: (type, body after the header)."""
    header = recv_exact(sock, 19)
    length, kind = struct.unpack("!HB", header[16:])
    return kind, recv_exact(sock, length - 19)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("peer closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def say(text: str) -> None:
    print(text, flush=True)


class Session:
    def __init__(self, sock: socket.socket, peer: str, sender: Sender) -> None:
        self.sock = sock
        self.peer = peer
        self.sender = sender
        self.lock = threading.Lock()
        self.up = threading.Event()
        self.closed = False
        self.enhanced_refresh = False
        self.keepalive_every = sender.hold / 3  # until the peer's OPEN says otherwise
        self.last_keepalive = 0.0

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def read(self) -> tuple[int, bytes]:
        return read_message(self.sock)

    def run(self) -> None:
        try:
            self.send(open_message(self.sender.asn, self.sender.router_id, self.sender.hold))
            kind, body = self.read()
            if kind != OPEN:
                raise ConnectionError(f"expected OPEN, got {kind}")
            self.enhanced_refresh = b"\x46\x00" in body[10:]
            self.keepalive_every = keepalive_interval(self.sender.hold, body)
            self.send(message(KEEPALIVE, b""))
            while True:
                kind, body = self.read()
                if kind == KEEPALIVE and not self.up.is_set():
                    self.up.set()
                    self.send(eor())
                    say(f"up {self.peer}")
                elif kind == NOTIFICATION:
                    say(f"notification {self.peer} {body[:2].hex()}")
                    return
                elif kind == ROUTE_REFRESH:
                    threading.Thread(target=self.refresh, daemon=True).start()
        except (OSError, ConnectionError) as exc:
            say(f"down {self.peer} {exc}")
        finally:
            self.closed = True
            self.sender.forget(self)
            with contextlib.suppress(OSError):
                self.sock.close()

    def refresh(self) -> None:
        borr = message(ROUTE_REFRESH, struct.pack("!HBB", AFI_L2VPN, 1, SAFI_EVPN))
        eorr = message(ROUTE_REFRESH, struct.pack("!HBB", AFI_L2VPN, 2, SAFI_EVPN))
        try:
            if self.enhanced_refresh:
                self.send(borr)
            if self.sender.announced:
                self.send(self.sender.announce_stream)
            if self.enhanced_refresh:
                self.send(eorr)
            say(f"refreshed {self.peer}")
        except OSError:
            pass

    def keepalive(self, now: float) -> None:
        """A KEEPALIVE if one is due."""
        if self.keepalive_every and now - self.last_keepalive >= self.keepalive_every:
            self.last_keepalive = now
            with contextlib.suppress(OSError):
                self.send(message(KEEPALIVE, b""))


class Sender:
    def __init__(self, args: argparse.Namespace) -> None:
        self.asn = args.asn
        self.router_id = IPv4Address(args.router_id)
        self.hold = args.hold
        self.peers = set(args.peer)
        self.announce_stream, self.withdraw_stream = encode(
            args.count, args.vteps, args.asn, args.vni, args.per_update)
        # Room for a whole stream in the kernel: writing never waits for the receiver.
        self.sndbuf = 2 * max(len(self.announce_stream), len(self.withdraw_stream)) + (1 << 20)
        self.announced = False
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()

    def forget(self, session: Session) -> None:
        with self.lock:
            if self.sessions.get(session.peer) is session:
                del self.sessions[session.peer]

    def listen(self, address: str) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, 179))
        server.listen(16)
        digest = hashlib.sha256(self.announce_stream + self.withdraw_stream).hexdigest()[:16]
        say(f"listening {digest} {updates(self.announce_stream)} {len(self.announce_stream)}")
        while True:
            sock, (peer, _) = server.accept()
            with self.lock:
                if peer not in self.peers or peer in self.sessions:
                    sock.close()
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, self.sndbuf)
                session = Session(sock, peer, self)
                self.sessions[peer] = session
            threading.Thread(target=session.run, daemon=True).start()

    def keepalives(self) -> None:
        while True:
            time.sleep(0.5)
            with self.lock:
                sessions = list(self.sessions.values())
            for session in sessions:
                session.keepalive(time.monotonic())

    def blast(self, stream: bytes, name: str) -> None:
        with self.lock:
            sessions = [s for s in self.sessions.values() if s.up.is_set()]
        say(f"{name}-start {time.monotonic():.6f}")
        threads = [threading.Thread(target=s.send, args=(stream,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        say(f"{name}-sent {time.monotonic():.6f}")

    def serve(self, address: str) -> None:
        threading.Thread(target=self.listen, args=(address,), daemon=True).start()
        threading.Thread(target=self.keepalives, daemon=True).start()
        for line in sys.stdin:
            word = line.strip()
            if word == "announce":
                self.announced = True
                self.blast(self.announce_stream, "announce")
            elif word == "withdraw":
                self.announced = False
                self.blast(self.withdraw_stream, "withdraw")
            elif word == "quit":
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--router-id", default="192.0.2.10")
    parser.add_argument("--asn", type=int, default=65000)
    parser.add_argument("--hold", type=int, default=180)
    parser.add_argument("--peer", action="append", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--vteps", type=int, default=40)
    parser.add_argument("--vni", type=int, default=100)
    parser.add_argument("--per-update", type=int, default=1,
                        help="MAC routes of one next hop per UPDATE (1 = one NLRI per UPDATE)")
    args = parser.parse_args()
    limit = max_per_update(args.asn, args.vni)
    if not 1 <= args.per_update <= limit:
        parser.error(f"--per-update must be 1..{limit} (a 4096-byte UPDATE)")
    Sender(args).serve(args.listen)


if __name__ == "__main__":
    main()
