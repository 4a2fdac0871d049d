"""The chaos lab: an FRR route reflector that is also a VTEP (the oracle), two evpnd
hosts and a scriptable BGP speaker, on one segment (bench.topo's namespaces).

    hub bridge, 192.0.2.0/24
      rr     192.0.2.1   FRR 8.4.4: route reflector (graceful restart) and VTEP of VNI 100
      host1  192.0.2.11  evpnd, peer rr; a port lp0 on br100 for local MACs
      host2  192.0.2.12  evpnd, peer rr; the same
      src    192.0.2.20  tests.chaos.speaker, peer rr: churn from VTEPs 198.51.100.1-8
      bad    192.0.2.30  tests.chaos.speaker, peer host1 only (hand-made UPDATEs)

FRR's zebra on rr is a VTEP of VNI 100, so `show evpn mac vni 100` says where
FRR itself would send each MAC: that is what each evpnd host's vxlan FDB must
hold (oracle.py compares them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import topo
from bench.topo import ASN, VNI, BenchError, Lines, program
from evpnd import netns
from tests.chaos import oracle

RR, HOSTS, SRC, BAD = "rr", ("host1", "host2"), "src", "bad"
ADDRESS = {RR: "192.0.2.1", "host1": "192.0.2.11", "host2": "192.0.2.12", SRC: "192.0.2.20",
           BAD: "192.0.2.30"}
PORT = "lp0"  # a port on each host's br100 that local MACs are put behind


class Speaker(Lines):
    """tests.chaos.speaker in a namespace."""

    def command(self, line: str, timeout: float = 30) -> list[str]:
        self.send(line)
        return self.wait("paused" if line == "pause" else "sent", timeout)


def control(socket_path: Path, request: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """One request on evpnd's control socket (a unix socket: no namespace needed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


class ChaosLab(topo.Lab):
    def __init__(self, dad: str = "{}") -> None:
        super().__init__("chaos")
        self.dad = dad
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}  # each host's running evpnd's log
        self.exits: list[str] = []  # evpnd exits the lab did not ask for
        self.speakers: dict[str, Speaker] = {}
        for node in (RR, *HOSTS, SRC):
            self.node(node, ADDRESS[node])
        self.route_vteps(RR, ADDRESS[SRC])  # FRR resolves the churn's next hops
        self.rr()
        for host in HOSTS:
            self.start_evpnd(host)
            self.port(host)

    # --- FRR route reflector + VTEP

    def rr(self) -> None:
        self.vxlan_bridge(RR)
        rundir = self.dir / "frr-rr"
        rundir.mkdir()
        peers = [ADDRESS[h] for h in (*HOSTS, SRC, BAD)]
        neighbors = "".join(f" neighbor {p} peer-group CLIENTS\n" for p in peers)
        (rundir / "zebra.conf").write_text(f"hostname rr\nlog file {rundir}/zebra.log\n")
        (rundir / "bgpd.conf").write_text(
            f"hostname rr\nlog file {rundir}/bgpd.log\n!\nrouter bgp {ASN}\n"
            f" bgp router-id {ADDRESS[RR]}\n bgp cluster-id {ADDRESS[RR]}\n"
            " no bgp default ipv4-unicast\n bgp graceful-restart\n"
            " bgp graceful-restart preserve-fw-state\n"
            f" neighbor CLIENTS peer-group\n neighbor CLIENTS remote-as {ASN}\n"
            " neighbor CLIENTS timers 3 9\n neighbor CLIENTS timers connect 1\n"
            f"{neighbors} !\n address-family l2vpn evpn\n  neighbor CLIENTS activate\n"
            "  neighbor CLIENTS route-reflector-client\n  advertise-all-vni\n"
            " exit-address-family\n!\n")
        shutil.chown(rundir, "frr", "frr")
        for path in rundir.iterdir():
            shutil.chown(path, "frr", "frr")
        self.frr_dirs[RR] = rundir
        for daemon in ("zebra", "bgpd"):
            extra = ["-s", "90000000"] if daemon == "zebra" else []
            self.sh(RR, program(daemon), "-d", "-N", self.ns(RR),
                    "-f", str(rundir / f"{daemon}.conf"), "-i", str(rundir / f"{daemon}.pid"),
                    "-z", str(rundir / "zserv.api"), "--vty_socket", str(rundir),
                    "-A", "127.0.0.1", "-P", "0", *extra)  # fmt: skip
        self.wait("FRR on rr", lambda: self.vtysh(RR, "show bgp l2vpn evpn summary json"))

    def bgpd_pid(self) -> int:
        return int((self.frr_dirs[RR] / "bgpd.pid").read_text())

    def restart_bgpd(self, down: float) -> None:
        """SIGKILL rr's bgpd, start it again `down` seconds later (graceful restart)."""
        pid = self.bgpd_pid()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGKILL)
        time.sleep(down)
        self.sh(RR, *(a.decode() for a in argv))

    def sessions_up(self, peers: list[str]) -> bool:
        shown = (self.vtysh(RR, "show bgp l2vpn evpn summary json") or {}).get("peers", {})
        return all(shown.get(ADDRESS[p], {}).get("state") == "Established" for p in peers)

    def frr_view(self) -> oracle.FrrView:
        macs = self.vtysh(RR, f"show evpn mac vni {VNI} json") or {}
        arp = self.vtysh(RR, f"show evpn arp-cache vni {VNI} json") or {}
        imets = self.vtysh(RR, "show bgp l2vpn evpn route type multicast json") or {}
        return oracle.frr_view(ADDRESS[RR], macs, arp, imets)

    def routes_from(self, host: str) -> set[str]:
        """MACs of the Type-2 routes rr holds from `host` (its adj-RIB-in from host)."""
        table = self.vtysh(RR, "show bgp l2vpn evpn route type macip json") or {}
        return oracle.type2_macs_from(table, ADDRESS[host])

    # --- evpnd hosts

    def config_text(self, host: str, peers: list[str]) -> str:
        address = ADDRESS[host]
        peer_lines = "".join(f"    - {{address: {ADDRESS[p]}, remote_asn: {ASN}, hold_time: 9}}\n"
                             for p in peers)  # fmt: skip
        return (f"router_id: {address}\nasn: {ASN}\n"
                f"vtep: {{address: {address}, device: eth0}}\n"
                f"bgp:\n  eor_timeout: 10\n  peers:\n{peer_lines}"
                f"vnis:\n  - vni: {VNI}\n    bridge: br{VNI}\n"
                f"dad: {self.dad}\n"
                f"state_dir: {self.state_dir(host)}\nlogging: {{level: info, format: json}}\n")

    def state_dir(self, host: str) -> Path:
        return self.dir / f"evpnd-{host}"

    def socket(self, host: str) -> Path:
        return self.state_dir(host) / "control.sock"

    def start_evpnd(self, host: str, peers: list[str] | None = None) -> None:
        config = self.dir / f"evpnd-{host}.yaml"
        if peers is not None or not config.exists():
            config.write_text(self.config_text(host, peers or [RR]))
        log_name = f"evpnd-{len(self.procs)}.log"
        self.daemons[host] = self.evpnd(host, log_name=log_name)
        self.logs[host] = self.dir / f"{host}-{log_name}"
        self.wait(f"evpnd's control socket on {host}", lambda: self.ping_daemon(host))

    def reload(self, host: str, peers: list[str]) -> None:
        (self.dir / f"evpnd-{host}.yaml").write_text(self.config_text(host, peers))
        answer = control(self.socket(host), {"command": "reload"}, 30)
        assert answer.get("ok"), answer

    def ping_daemon(self, host: str) -> bool:
        with contextlib.suppress(OSError, ValueError):
            return bool(control(self.socket(host), {"command": "ping"}, 5).get("ok"))
        return False

    def show(self, host: str, what: str, **args: Any) -> Any:
        answer = control(self.socket(host), {"command": "show", "what": what, "args": args}, 30)
        assert answer.get("ok"), answer
        return answer["data"]

    def kill_evpnd(self, host: str) -> None:
        """SIGKILL evpnd (not its ExaBGP: a daemon that dies leaves it to the next)."""
        proc = self.daemons[host]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def exabgp_pid(self, host: str) -> int | None:
        pid = self.show(host, "status")["speaker"]["pid"]
        return int(pid) if pid else None

    def crashed(self) -> list[str]:
        """evpnd daemons of the lab that exited without being asked to."""
        return [h for h, p in self.daemons.items() if p.poll() is not None]

    def port(self, host: str) -> None:
        """lp0 on br100 (its peer lp0p up too): local MACs are put behind it."""
        self.sh(host, "ip", "link", "add", PORT, "type", "veth", "peer", "name", f"{PORT}p")
        self.sh(host, "ip", "link", "set", PORT, "master", f"br{VNI}", "up")
        self.sh(host, "ip", "link", "set", f"{PORT}p", "up")

    def learn(self, host: str, macs: list[str]) -> None:
        """MACs appear behind lp0 as the bridge would learn them (dynamic: not sticky).

        A `fdb replace` onto an extern_learn entry (a remote MAC's) keeps the flag, so
        the entry would still read as remote: it is deleted first, as the bridge's own
        learning takes such an entry over."""
        self.batch(host, [line for m in macs for line in (
            f"fdb del {m} dev vxlan{VNI} master", f"fdb replace {m} dev {PORT} master dynamic")],
            check=False)  # fmt: skip

    def unlearn(self, host: str, macs: list[str]) -> None:
        self.batch(host, [f"fdb del {m} dev {PORT} master" for m in macs], check=False)

    def batch(self, host: str, lines: list[str], check: bool = True) -> None:
        path = self.dir / f"{host}.batch"
        path.write_text("".join(f"{line}\n" for line in lines))
        netns.run(self.ns(host), ["bridge", "-force", "-batch", str(path)], check=check)

    def local_macs(self, host: str) -> set[str]:
        out = self.sh(host, "bridge", "-j", "fdb", "show", "br", f"br{VNI}")
        return {e["mac"] for e in json.loads(out or "[]")
                if e.get("ifname") == PORT and "permanent" not in e.get("state", "")}

    def kernel(self, host: str) -> oracle.HostTables:
        """The host's tables; a device that is not there (deleted, not yet back) holds
        nothing."""
        ns = self.ns(host)
        fdb = netns.run(ns, ["bridge", "-j", "fdb", "show", "dev", f"vxlan{VNI}"], check=False)
        neigh = netns.run(ns, ["ip", "-j", "neigh", "show", "dev", f"br{VNI}"], check=False)
        return oracle.host_tables(json.loads(fdb.stdout or "[]") if fdb.returncode == 0 else [],
                                  json.loads(neigh.stdout or "[]") if neigh.returncode == 0
                                  else [])  # fmt: skip

    def differences(self, host: str, view: oracle.FrrView | None = None) -> oracle.Differences:
        return oracle.compare(view or self.frr_view(), ADDRESS[host], self.kernel(host))

    def converge(self, hosts: tuple[str, ...] = HOSTS, timeout: float = 60,
                 quiet: float = 1.0) -> dict[str, oracle.Differences]:
        """Wait until every host's tables equal what FRR says (twice, `quiet` s apart);
        the differences left at the timeout otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.frr_view()
            found = {h: self.differences(h, view) for h in hosts}
            if not any(found.values()):
                time.sleep(quiet)
                view = self.frr_view()
                found = {h: self.differences(h, view) for h in hosts}
                if not any(found.values()):
                    return found
            if time.monotonic() > deadline or self.crashed():
                return found
            time.sleep(0.5)

    # --- speakers

    def speaker(self, node: str, peers: list[str]) -> Speaker:
        if node not in self.addresses:
            self.node(node, ADDRESS[node])
        args = [a for p in peers for a in ("--peer", ADDRESS[p])]
        speaker = Speaker(self.python(node, "tests.chaos.speaker", "--router-id", ADDRESS[node],
                                      *args), f"speaker on {node}")  # fmt: skip
        speaker.wait("listening", 30)
        self.speakers[node] = speaker
        return speaker

    # --- helpers

    def shell(self, node: str, script: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(node), "sh", "-c", script],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def wait(self, what: str, probe: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}\n"
                                 + self.tails())
            time.sleep(0.3)

    def tails(self, lines: int = 15) -> str:
        """The last lines of each host's running evpnd's log."""
        parts = []
        for host, log in sorted(self.logs.items()):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {host}: {log.name}\n" + "\n".join(text))
        return "\n".join(parts)
