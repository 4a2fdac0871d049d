"""A scriptable BGP EVPN speaker for the chaos suite: route churn and hand-made UPDATEs.

Run inside a namespace:
    python -m tests.chaos.speaker --peer IP [--peer IP ...] [--listen ADDR]
It listens on port 179 (the peers connect to it), answers OPEN with
multiprotocol L2VPN/EVPN, route refresh and 4-octet AS, keeps the sessions
alive and discards what it receives. UPDATEs are encoded with bench.bgpsend's
helpers and sent to every established session.

stdin commands, one a line (answers on stdout):
    imet VTEP                        a Type-3 (PMSI ingress replication) from VTEP
    announce MAC VTEP SEQ [IP]       a Type-2 MAC (or MAC/IP) route, MAC mobility SEQ
    withdraw MAC VTEP [IP]           its withdrawal
    churn POOL RATE SEED             a thread announces/withdraws random routes of a pool
                                     of POOL MACs (MAC i behind VTEP i % 8, every third
                                     with an IP) at about RATE routes/s
    pause                            stops the churn; answers `paused N` (routes it sent)
    raw HEX                          one UPDATE whose body (after the 19-byte header) is HEX
    quit
Answers: `listening`, `up PEER`, `down PEER ...`, `sent` after each command.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import struct
import sys
import threading
import time
from ipaddress import IPv4Address, ip_address

from bench import bgpsend
from bench.bgpsend import KEEPALIVE, NOTIFICATION, OPEN, attribute

ASN = 65000
VNI = 100
CHURN_VTEPS = [IPv4Address("198.51.100.1") + i for i in range(8)]


def churn_mac(i: int) -> str:
    return f"02:cc:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:01"


def churn_ip(i: int) -> str | None:
    return f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" if i % 3 == 0 else None


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def type2(mac: str, vtep: IPv4Address, ip: str | None, vni: int = VNI) -> bytes:
    address = b"" if ip is None else ip_address(ip).packed
    body = (bgpsend.rd(vtep, vni) + b"\0" * 10 + b"\0\0\0\0" + b"\x30" + mac_bytes(mac)
            + bytes((len(address) * 8,)) + address + vni.to_bytes(3, "big"))
    return bytes((2, len(body))) + body


def communities(vni: int, seq: int | None) -> bytes:
    value = (struct.pack("!BBHI", 0x00, 0x02, ASN & 0xFFFF, vni)  # route target ASN:VNI
             + bytes((0x03, 0x0C, 0, 0, 0, 0, 0, 8)))  # encapsulation: VXLAN
    if seq is not None:
        value += struct.pack("!BBBBI", 0x06, 0x00, 0, 0, seq)  # MAC mobility
    return attribute(0xC0, 16, value)


def path_attributes(vni: int, seq: int | None) -> bytes:
    return (attribute(0x40, 1, b"\0") + attribute(0x40, 2, b"")
            + attribute(0x40, 5, struct.pack("!I", 100)) + communities(vni, seq))


def announce_update(mac: str, vtep: IPv4Address, seq: int, ip: str | None) -> bytes:
    return bgpsend.reach(vtep, type2(mac, vtep, ip), path_attributes(VNI, seq or None))


def withdraw_update(mac: str, vtep: IPv4Address, ip: str | None) -> bytes:
    return bgpsend.unreach(type2(mac, vtep, ip))


def imet_update(vtep: IPv4Address) -> bytes:
    pmsi = attribute(0xC0, 22, bytes((0, 6)) + VNI.to_bytes(3, "big") + vtep.packed)
    return bgpsend.reach(vtep, bgpsend.type3(vtep, VNI), path_attributes(VNI, None) + pmsi)


def say(text: str) -> None:
    print(text, flush=True)


class Session:
    """One established (or establishing) session with a peer that connected to us."""

    def __init__(self, sock: socket.socket, peer: str, speaker: Speaker) -> None:
        self.sock = sock
        self.peer = peer
        self.speaker = speaker
        self.lock = threading.Lock()
        self.up = False
        self.keepalive_every = speaker.hold / 3  # until the peer's OPEN says otherwise
        self.last_keepalive = 0.0

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def run(self) -> None:
        try:
            self.send(bgpsend.open_message(ASN, self.speaker.router_id, self.speaker.hold))
            while True:
                kind, body = bgpsend.read_message(self.sock)
                if kind == OPEN:
                    self.keepalive_every = bgpsend.keepalive_interval(self.speaker.hold, body)
                    self.send(bgpsend.message(KEEPALIVE, b""))
                elif kind == KEEPALIVE and not self.up:
                    self.up = True
                    self.send(b"".join(self.speaker.table()) + bgpsend.eor())
                    say(f"up {self.peer}")
                elif kind == NOTIFICATION:
                    say(f"down {self.peer} notification {body[:2].hex()}")
                    return
        except (OSError, ConnectionError) as exc:
            say(f"down {self.peer} {exc}")
        finally:
            self.speaker.forget(self)
            with contextlib.suppress(OSError):
                self.sock.close()


class Speaker:
    def __init__(self, peers: list[str], router_id: str, hold: int) -> None:
        self.peers = set(peers)
        self.router_id = IPv4Address(router_id)
        self.hold = hold
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        # What a peer that connects gets first: the routes announced and not withdrawn.
        self.announced: dict[tuple[str, IPv4Address, str | None], bytes] = {}
        self.churning = threading.Event()
        self.churned = 0
        self.churner: threading.Thread | None = None
        self.live: set[int] = set()  # pool indexes the churn has announced

    def table(self) -> list[bytes]:
        with self.lock:
            return list(self.announced.values())

    def forget(self, session: Session) -> None:
        with self.lock:
            if self.sessions.get(session.peer) is session:
                del self.sessions[session.peer]

    def listen(self, address: str) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, 179))
        server.listen(16)
        say("listening")
        while True:
            sock, (peer, _) = server.accept()
            with self.lock:
                if peer not in self.peers or peer in self.sessions:
                    sock.close()
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                session = Session(sock, peer, self)
                self.sessions[peer] = session
            threading.Thread(target=session.run, daemon=True).start()

    def keepalives(self) -> None:
        # Each session at a third of its own hold time (rr's is 9 s, ours 30: at 10 s
        # rr expired the session whenever no churn flowed, taking every route away).
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            for session in self._up():
                if now - session.last_keepalive >= session.keepalive_every > 0:
                    session.last_keepalive = now
                    with contextlib.suppress(OSError):
                        session.send(bgpsend.message(KEEPALIVE, b""))

    def _up(self) -> list[Session]:
        with self.lock:
            return [s for s in self.sessions.values() if s.up]

    def send(self, data: bytes) -> None:
        for session in self._up():
            with contextlib.suppress(OSError):
                session.send(data)

    def announce(self, mac: str, vtep: IPv4Address, seq: int, ip: str | None) -> None:
        data = announce_update(mac, vtep, seq, ip)
        with self.lock:
            self.announced[(mac, vtep, ip)] = data
        self.send(data)

    def withdraw(self, mac: str, vtep: IPv4Address, ip: str | None) -> None:
        with self.lock:
            self.announced.pop((mac, vtep, ip), None)
        self.send(withdraw_update(mac, vtep, ip))

    def imet(self, vtep: IPv4Address) -> None:
        data = imet_update(vtep)
        with self.lock:
            self.announced[("imet", vtep, None)] = data
        self.send(data)

    def churn(self, pool: int, rate: float, seed: int) -> None:
        rng = random.Random(seed)
        live = self.live  # kept across pauses: a later churn goes on from there
        period = 1.0 / rate
        started = time.monotonic()
        while self.churning.is_set():
            i = rng.randrange(pool)
            vtep, ip = CHURN_VTEPS[i % len(CHURN_VTEPS)], churn_ip(i)
            if i in live:
                self.withdraw(churn_mac(i), vtep, ip)
                live.discard(i)
            else:
                self.announce(churn_mac(i), vtep, 0, ip)
                live.add(i)
            self.churned += 1
            delay = started + self.churned * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def command(self, words: list[str]) -> None:
        verb = words[0]
        if verb == "imet":
            self.imet(IPv4Address(words[1]))
        elif verb == "announce":
            ip = words[4] if len(words) > 4 else None
            self.announce(words[1], IPv4Address(words[2]), int(words[3]), ip)
        elif verb == "withdraw":
            self.withdraw(words[1], IPv4Address(words[2]), words[3] if len(words) > 3 else None)
        elif verb == "churn":
            self.churning.set()
            self.churned = 0
            args = (int(words[1]), float(words[2]), int(words[3]))
            self.churner = threading.Thread(target=self.churn, args=args, daemon=True)
            self.churner.start()
        elif verb == "pause":
            self.churning.clear()
            if self.churner is not None:
                self.churner.join()
            say(f"paused {self.churned}")
            return
        elif verb == "raw":
            self.send(bgpsend.message(bgpsend.UPDATE, bytes.fromhex(words[1])))
        say("sent")

    def serve(self, address: str) -> None:
        threading.Thread(target=self.listen, args=(address,), daemon=True).start()
        threading.Thread(target=self.keepalives, daemon=True).start()
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                break
            self.command(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--router-id", default="192.0.2.20")
    parser.add_argument("--hold", type=int, default=30)
    parser.add_argument("--peer", action="append", required=True)
    args = parser.parse_args()
    Speaker(args.peer, args.router_id, args.hold).serve(args.listen)


if __name__ == "__main__":
    main()
