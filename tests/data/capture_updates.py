"""Capture real EVPN UPDATE bodies from FRR 8.4.4 and GoBGP into captured_updates.json.

Run once, as root, from the repository root (it makes and removes its own
network namespaces; nothing leaves the machine):

    .venv/bin/python -m tests.data.capture_updates [--out tests/data/captured_updates.json]

What it builds, all in throwaway namespaces named evcap-*:

    collector ns: e-frr 192.0.2.1/24 ------ e0 192.0.2.2/24 : FRR ns (zebra + bgpd)
                  e-gob 198.51.100.1/24 --- e0 198.51.100.2/24 : GoBGP ns (gobgpd)

- the collector is a minimal BGP speaker (this file, `collect` mode): it
  answers OPEN with multiprotocol L2VPN/EVPN, 4-octet AS, route refresh and
  graceful restart (so both peers send End-of-RIB), keeps the sessions alive
  and writes every UPDATE body it receives, in arrival order, as hex;
- FRR is a VTEP as in DESIGN.md sections 4 and 8: br100/vxlan100 (VNI 100)
  with `advertise-all-vni` and `advertise-default-gw` (br100 has an address,
  its MAC goes out as default gateway), L3VNI 5000 in the default VRF
  (br5000/vxlan5000, `advertise ipv4 unicast`, connected routes redistributed:
  Type-5 routes, and MAC+IP routes with two labels and the router MAC), hosts
  in their own namespaces behind br100 (MAC+IPv4, MAC+IPv6, link-local), a
  static MAC, a MAC that moves (the collector announces it first, then a host
  with that MAC appears behind br100: MAC mobility), then a host and the
  static MAC removed (withdrawals);
- GoBGP originates routes from `gobgp global rib -a evpn add ...` (macadv,
  multicast, prefix; one and two labels, router MAC, default gateway, several
  route-target kinds, an IPv6 next hop, types 1 and 4) and deletes some of
  them. (gobgp 3.10's CLI takes no `default-gateway` for macadv, whatever its
  usage text says: FRR's default-gateway routes cover that community.)

The result lists each body with its sender; tests/unit/test_wire.py decodes
every one with ExaBGP and with evpnd's wire decoder and compares.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

OUT = Path(__file__).resolve().parent / "captured_updates.json"
COLLECTOR_FRR, FRR_IP = "192.0.2.1", "192.0.2.2"
COLLECTOR_GOB, GOBGP_IP = "198.51.100.1", "198.51.100.2"
ASN = 65000
MARKER = b"\xff" * 16
OPEN, UPDATE, NOTIFICATION, KEEPALIVE = 1, 2, 3, 4
AFI_L2VPN, SAFI_EVPN = 25, 70
MOVING_MAC = "02:00:00:00:01:30"  # announced by the collector, then learned by FRR
FRR_RUN = Path("/var/run/frr")

# --------------------------------------------------------------------- collector


def _message(kind: int, body: bytes) -> bytes:
    return MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def _open_message(router_id: str) -> bytes:
    evpn = struct.pack("!HBB", AFI_L2VPN, 0, SAFI_EVPN)
    caps = (
        bytes((1, 4)) + evpn  # multiprotocol L2VPN/EVPN
        + bytes((2, 0))  # route refresh
        + bytes((65, 4)) + struct.pack("!I", ASN)  # 4-octet AS
        + bytes((64, 6)) + struct.pack("!HHBB", 120, AFI_L2VPN, SAFI_EVPN, 0)  # graceful restart
    )  # fmt: skip
    params = bytes((2, len(caps))) + caps
    return _message(OPEN, struct.pack("!BHH", 4, ASN, 90) + IPv4Address(router_id).packed
                    + bytes((len(params),)) + params)  # fmt: skip


def _moving_mac_update(nexthop: str) -> bytes:
    """A Type-2 for MOVING_MAC from the collector (VNI 100): FRR learns it as remote."""
    mac = bytes.fromhex(MOVING_MAC.replace(":", ""))
    rd = struct.pack("!H", 1) + IPv4Address(nexthop).packed + struct.pack("!H", 100)
    route = rd + bytes(10) + bytes(4) + b"\x30" + mac + b"\x00" + (100).to_bytes(3, "big")
    nlri = bytes((2, len(route))) + route
    mp = struct.pack("!HBB", AFI_L2VPN, SAFI_EVPN, 4) + IPv4Address(nexthop).packed + b"\0" + nlri
    communities = struct.pack("!BBHI", 0, 2, ASN, 100) + bytes((3, 0x0C, 0, 0, 0, 0, 0, 8))
    attributes = (
        bytes((0x40, 1, 1, 0)) + bytes((0x40, 2, 0)) + bytes((0x40, 5, 4)) + struct.pack("!I", 100)
        + bytes((0xC0, 16, len(communities))) + communities + bytes((0x80, 14, len(mp))) + mp
    )  # fmt: skip
    return _message(UPDATE, struct.pack("!HH", 0, len(attributes)) + attributes)


def collect(out: Path, announce_to: str | None) -> None:
    """Accept BGP sessions on port 179; append every UPDATE body to `out` (JSON lines)."""
    lock = threading.Lock()
    sessions: list[socket.socket] = []

    def record(entry: dict[str, str]) -> None:
        with lock, open(out, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def recv_exact(sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def serve(sock: socket.socket, peer: str) -> None:
        try:
            local = sock.getsockname()[0]
            sock.sendall(_open_message(local))
            established = False
            while True:
                header = recv_exact(sock, 19)
                length, kind = struct.unpack("!HB", header[16:])
                body = recv_exact(sock, length - 19)
                if kind == OPEN:
                    sock.sendall(_message(KEEPALIVE, b""))
                elif kind == KEEPALIVE and not established:
                    established = True
                    record({"event": "up", "peer": peer})
                    if peer == announce_to:
                        sock.sendall(_moving_mac_update(local))
                elif kind == UPDATE:
                    record({"peer": peer, "hex": body.hex()})
                elif kind == NOTIFICATION:
                    record({"event": "notification", "peer": peer, "hex": body.hex()})
                    return
        except (OSError, ConnectionError) as exc:
            record({"event": "down", "peer": peer, "reason": str(exc)})

    def keepalives() -> None:
        while True:
            time.sleep(10)
            with lock:
                for sock in list(sessions):
                    with contextlib.suppress(OSError):
                        sock.sendall(_message(KEEPALIVE, b""))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 179))
    listener.listen(8)
    record({"event": "listening"})
    threading.Thread(target=keepalives, daemon=True).start()
    while True:
        sock, (peer, _) = listener.accept()
        with lock:
            sessions.append(sock)
        threading.Thread(target=serve, args=(sock, peer), daemon=True).start()


# ------------------------------------------------------------------ orchestration

ZEBRA_CONF = """\
hostname {name}
log file {dir}/zebra.log
!
vrf default
 vni 5000
exit-vrf
!
"""

BGPD_CONF = """\
hostname {name}
log file {dir}/bgpd.log
!
router bgp {asn}
 bgp router-id {frr_ip}
 no bgp default ipv4-unicast
 neighbor {collector} remote-as {asn}
 neighbor {collector} timers 10 30
 neighbor {collector} timers connect 2
 !
 address-family ipv4 unicast
  redistribute connected
 exit-address-family
 !
 address-family l2vpn evpn
  neighbor {collector} activate
  advertise-all-vni
  advertise-default-gw
  advertise ipv4 unicast
 exit-address-family
!
"""

GOBGPD_CONF = """\
[global.config]
  as = {asn}
  router-id = "{gobgp_ip}"
  port = -1

[[neighbors]]
  [neighbors.config]
    neighbor-address = "{collector}"
    peer-as = {asn}
  [neighbors.timers.config]
    connect-retry = 2
    hold-time = 30
    keepalive-interval = 10
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l2vpn-evpn"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
"""

# GoBGP routes: (description, gobgp arguments after `global rib -a evpn`).
GOBGP_ROUTES = [
    ("mac only", "add macadv 02:00:00:00:03:01 0.0.0.0 etag 0 label 200 rd 198.51.100.2:200 "
                 "rt 65000:200 encap vxlan"),
    ("mac ipv4 two labels router mac",
     "add macadv 02:00:00:00:03:02 10.200.0.2 etag 0 label 200,5000 rd 198.51.100.2:200 "
     "rt 65000:200 65000:5000 encap vxlan router-mac 02:00:00:00:03:fe"),
    ("mac ipv6, ipv6 next hop",
     "add macadv 02:00:00:00:03:03 2001:db8:200::3 etag 0 label 200 rd 198.51.100.2:200 "
     "rt 65000:200 encap vxlan nexthop fd99::2"),
    ("route targets of each kind, esi, etag",
     "add macadv 02:00:00:00:03:04 10.200.0.4 esi 0 11:22:33:44:55:66:77:88:99 etag 7 "
     "label 200 rd 65000:200 rt 65000:200 4200000000:7 192.0.2.9:42 encap vxlan"),
    ("rd 4-octet as, no encapsulation",
     "add macadv 02:00:00:00:03:05 0.0.0.0 etag 0 label 300 rd 4200000000:300 rt 65000:300"),
    ("multicast", "add multicast 198.51.100.2 etag 0 rd 198.51.100.2:200 rt 65000:200 "
                  "encap vxlan pmsi ingress-repl 200 198.51.100.2"),
    ("multicast without pmsi",
     "add multicast 198.51.100.2 etag 0 rd 198.51.100.2:300 rt 65000:300 encap vxlan"),
    ("prefix ipv4", "add prefix 10.60.0.0/24 gw 0.0.0.0 etag 0 label 5000 rd 198.51.100.2:1 "
                    "rt 65000:5000 encap vxlan router-mac 02:00:00:00:03:fe"),
    ("prefix ipv4 with gateway", "add prefix 10.61.0.0/16 gw 10.200.0.1 etag 0 label 5000 "
                                 "rd 198.51.100.2:1 rt 65000:5000 encap vxlan"),
    ("prefix ipv6", "add prefix 2001:db8:60::/48 gw :: etag 0 label 5000 rd 198.51.100.2:1 "
                    "rt 65000:5000 encap vxlan router-mac 02:00:00:00:03:fe"),
    ("ethernet auto-discovery (type 1)", "add a-d esi 0 11:22:33:44:55:66:77:88:99 etag 0 "
                                         "label 200 rd 198.51.100.2:200 rt 65000:200"),
    ("ethernet segment (type 4)", "add esi 198.51.100.2 esi 0 11:22:33:44:55:66:77:88:99 "
                                  "rd 198.51.100.2:200 rt 65000:200"),
    ("withdraw mac only", "del macadv 02:00:00:00:03:01 0.0.0.0 etag 0 label 200 "
                          "rd 198.51.100.2:200"),
    ("withdraw multicast", "del multicast 198.51.100.2 etag 0 rd 198.51.100.2:300"),
    ("withdraw prefix", "del prefix 10.61.0.0/16 gw 10.200.0.1 etag 0 label 5000 "
                        "rd 198.51.100.2:1"),
    ("withdraw ethernet auto-discovery", "del a-d esi 0 11:22:33:44:55:66:77:88:99 etag 0 "
                                         "label 200 rd 198.51.100.2:200"),
]  # fmt: skip


def sh(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    from evpnd import netns

    return netns.run(ns, list(cmd), check=check)


class Capture:
    def __init__(self, workdir: Path) -> None:
        from evpnd import netns

        self.netns = netns
        self.dir = workdir
        self.frr_dir = workdir / "frr"
        self.entries_path = workdir / "updates.jsonl"
        self.namespaces: list[str] = []
        self.cap = self.frr = self.gob = ""
        self.notes: list[str] = []

    def make_ns(self) -> str:
        name = self.netns.create(self.netns.unique_name("evcap"))
        self.namespaces.append(name)
        return name

    def entries(self) -> list[dict[str, str]]:
        if not self.entries_path.exists():
            return []
        return [json.loads(line) for line in self.entries_path.read_text().splitlines()]

    def wait(self, what: str, predicate: object, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; log: {self.entries()[-5:]}")
            time.sleep(0.3)

    def quiet(self, seconds: float = 4.0, timeout: float = 60) -> None:
        """Wait until no UPDATE has arrived for `seconds`."""
        deadline = time.monotonic() + timeout
        count, since = len(self.entries()), time.monotonic()
        while time.monotonic() - since < seconds and time.monotonic() < deadline:
            time.sleep(0.3)
            now = len(self.entries())
            if now != count:
                count, since = now, time.monotonic()

    def up(self, peer: str) -> bool:
        return any(e.get("event") == "up" and e.get("peer") == peer for e in self.entries())

    # -- topology

    def build(self) -> None:
        self.cap, self.frr, self.gob = self.make_ns(), self.make_ns(), self.make_ns()
        for ns, mine, theirs, ours_ip, their_ip in (
            (self.frr, "e-frr", "e0", COLLECTOR_FRR, FRR_IP),
            (self.gob, "e-gob", "e0", COLLECTOR_GOB, GOBGP_IP),
        ):
            sh(self.cap, "ip", "link", "add", mine, "type", "veth", "peer", "name", theirs,
               "netns", ns)  # fmt: skip
            sh(self.cap, "ip", "addr", "add", f"{ours_ip}/24", "dev", mine)
            sh(self.cap, "ip", "link", "set", mine, "up")
            sh(ns, "ip", "addr", "add", f"{their_ip}/24", "dev", theirs)
            sh(ns, "ip", "link", "set", theirs, "up")
        sh(self.gob, "ip", "addr", "add", "fd99::2/64", "dev", "e0", "nodad")
        f = self.frr
        for vni, bridge_mac, addresses in (
            (100, "02:00:00:00:02:fe", ("192.168.100.1/24", "2001:db8:100::1/64")),
            (5000, "02:00:00:00:50:fe", ()),
        ):
            sh(f, "ip", "link", "add", f"br{vni}", "address", bridge_mac, "type", "bridge")
            for address in addresses:
                sh(f, "ip", "addr", "add", address, "dev", f"br{vni}", "nodad")
            sh(f, "ip", "link", "add", f"vxlan{vni}", "type", "vxlan", "id", str(vni),
               "dstport", "4789", "local", FRR_IP, "nolearning")  # fmt: skip
            sh(f, "ip", "link", "set", f"vxlan{vni}", "master", f"br{vni}", "addrgenmode", "none")
            sh(f, "ip", "link", "set", f"vxlan{vni}", "type", "bridge_slave", "neigh_suppress",
               "off", "learning", "off")  # fmt: skip
            sh(f, "ip", "link", "set", f"vxlan{vni}", "up")
            sh(f, "ip", "link", "set", f"br{vni}", "up")

    def host(self, port: str, mac: str, *addresses: str) -> str:
        """A host namespace behind FRR's br100 on `port`."""
        ns = self.make_ns()
        sh(self.frr, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", ns)  # fmt: skip
        sh(self.frr, "ip", "link", "set", port, "master", "br100")
        sh(self.frr, "ip", "link", "set", port, "up")
        sh(ns, "ip", "link", "set", "eth0", "address", mac)
        for address in addresses:
            sh(ns, "ip", "addr", "add", address, "dev", "eth0", "nodad")
        sh(ns, "ip", "link", "set", "eth0", "up")
        return ns

    # -- programs

    def start_collector(self) -> None:
        log = open(self.dir / "collector.log", "wb")  # noqa: SIM115 (lives as long as it)
        subprocess.Popen(
            ["ip", "netns", "exec", self.cap, sys.executable, "-m", "tests.data.capture_updates",
             "collect", "--out", str(self.entries_path), "--announce-to", FRR_IP],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self.wait("the collector", lambda: any(e.get("event") == "listening"
                                               for e in self.entries()))  # fmt: skip

    def start_frr(self) -> None:
        d = self.frr_dir
        d.mkdir()
        values = {"name": self.frr, "dir": d, "asn": ASN, "frr_ip": FRR_IP,
                  "collector": COLLECTOR_FRR}  # fmt: skip
        (d / "zebra.conf").write_text(ZEBRA_CONF.format(**values))
        (d / "bgpd.conf").write_text(BGPD_CONF.format(**values))
        self.dir.chmod(0o755)
        for path in (d, *d.iterdir()):
            shutil.chown(path, "frr", "frr")
        for daemon in ("zebra", "bgpd"):
            sh(self.frr, f"/usr/lib/frr/{daemon}", "-d", "-N", self.frr,
               "-f", str(d / f"{daemon}.conf"), "-i", str(d / f"{daemon}.pid"),
               "-z", str(d / "zserv.api"), "--vty_socket", str(d),
               "-A", "127.0.0.1", "-P", "0")  # fmt: skip

    def start_gobgp(self) -> None:
        config = self.dir / "gobgpd.toml"
        config.write_text(GOBGPD_CONF.format(asn=ASN, gobgp_ip=GOBGP_IP, collector=COLLECTOR_GOB))
        from evpnd.lab import gobgp

        gobgp.start(self.gob, config, self.dir)

    def gobgp(self, args: str) -> bool:
        result = sh(self.gob, "gobgp", "global", "rib", "-a", "evpn", *args.split(), check=False)
        if result.returncode != 0:
            self.notes.append(f"gobgp {args!r} failed: {(result.stderr or result.stdout).strip()}")
            return False
        return True

    # -- the scenario

    def run(self) -> list[dict[str, str]]:
        self.build()
        self.start_collector()
        self.start_frr()
        self.start_gobgp()
        self.wait("FRR's session", lambda: self.up(FRR_IP), 90)
        self.wait("GoBGP's session", lambda: self.up(GOBGP_IP), 90)
        self.quiet()

        # FRR: hosts, a static MAC, a MAC that moves here from the collector.
        h1 = self.host("p1", "02:00:00:00:01:11", "192.168.100.11/24", "2001:db8:100::11/64")
        h2 = self.host("p2", "02:00:00:00:01:12", "192.168.100.12/24")
        for ns, target in ((h1, "192.168.100.1"), (h2, "192.168.100.1"), (h1, "2001:db8:100::1")):
            sh(ns, "ping", "-c", "2", "-W", "1", target, check=False)
        sh(self.frr, "bridge", "fdb", "add", "02:00:00:00:01:20", "dev", "p1", "master", "static")
        self.quiet()
        h3 = self.host("p3", MOVING_MAC, "192.168.100.30/24")
        sh(h3, "ping", "-c", "2", "-W", "1", "192.168.100.1", check=False)
        self.quiet()
        sh(self.frr, "ip", "link", "del", "p2")
        sh(self.frr, "bridge", "fdb", "del", "02:00:00:00:01:20", "dev", "p1", "master", "static")
        self.quiet()

        # GoBGP: one command per route.
        for _, args in GOBGP_ROUTES:
            self.gobgp(args)
            time.sleep(0.3)
        self.quiet()
        return self.entries()

    def cleanup(self) -> None:
        for name in ("bgpd", "zebra"):
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.frr_dir / f"{name}.pid").read_text())
                if pid in self.netns.pids_in(self.frr):
                    os.kill(pid, 9)
        for ns in reversed(self.namespaces):
            self.netns.remove(ns)  # kills what runs inside (collector, gobgpd)
        if self.frr:
            shutil.rmtree(FRR_RUN / self.frr, ignore_errors=True)


def version(command: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    run_parser = sub.add_parser("run", help="capture (the default)")
    run_parser.add_argument("--out", type=Path, default=OUT)
    collect_parser = sub.add_parser("collect", help="internal: the collector, inside its ns")
    collect_parser.add_argument("--out", type=Path, required=True)
    collect_parser.add_argument("--announce-to")
    args = parser.parse_args(argv)
    if args.mode == "collect":
        collect(args.out, args.announce_to)
        return 0
    out = getattr(args, "out", OUT)
    if os.geteuid() != 0:
        print("needs root (network namespaces, FRR, port 179)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="evcap-") as tmp:
        capture = Capture(Path(tmp))
        try:
            entries = capture.run()
        finally:
            capture.cleanup()
    senders = {FRR_IP: "frr", GOBGP_IP: "gobgp"}
    updates = [{"sender": senders[e["peer"]], "hex": e["hex"]} for e in entries if "hex" in e]
    document = {
        "about": "UPDATE bodies (no 19-byte header) received by a minimal BGP speaker, in "
                 "arrival order; made by tests/data/capture_updates.py (see its docstring).",
        "senders": {"frr": version(["/usr/lib/frr/bgpd", "--version"]),
                    "gobgp": version(["gobgp", "--version"])},
        "gobgp_commands": [args for _, args in GOBGP_ROUTES],
        "notes": capture.notes,
        "updates": updates,
    }  # fmt: skip
    out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(updates)} UPDATEs written to {out}")
    for note in capture.notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else ["run"]))
