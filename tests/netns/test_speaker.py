"""The speaker (ExaBGP + EVPN commands, supervised) against FRR 8.4 in namespaces.

The last tests need no root: a fake ExaBGP pins down the supervisor (restart,
re-announcement through the real pipes and window, SIGKILL after an ignored
SIGTERM); the outbox's bookkeeping itself is unit-tested (tests/unit/test_outbox.py).
The `netns` ones run the real thing:

    speaker ns: e0 192.0.2.1/24 --veth-- e0 192.0.2.2/24 :FRR ns
                                           br100 + vxlan100 (VNI 100, local 192.0.2.2)
                                           zebra + bgpd, per-node pathspace (DESIGN.md 4)

FRR's zebra programs what it learns from us into its namespace's kernel, so
the kernel FDB there shows whether our routes mean what we think they mean.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from evpnd import netns
from evpnd.config import Bgp, Config
from evpnd.model import ImetKey, ImetRoute, MacIpKey, MacIpRoute
from evpnd.speaker.messages import SpeakerAttached, SpeakerRestarted
from evpnd.speaker.speaker import Speaker, SpeakerError
from tests.conftest import require_program

SPEAKER_IP = "192.0.2.1"
FRR_IP = "192.0.2.2"
ASN = 65000
VNI = 100
RD = f"{SPEAKER_IP}:{VNI}"
RT = f"{ASN}:{VNI}"
FRR_RUN = Path("/var/run/frr")

ZEBRA_CONF = """\
hostname {name}
log file {dir}/zebra.log
"""

BGPD_CONF = """\
hostname {name}
log file {dir}/bgpd.log
!
router bgp {asn}
 bgp router-id {frr_ip}
 no bgp default ipv4-unicast
 bgp log-neighbor-changes
 neighbor {speaker_ip} remote-as {asn}
 neighbor {speaker_ip} timers 3 9
 neighbor {speaker_ip} timers connect 2
 !
 address-family l2vpn evpn
  neighbor {speaker_ip} activate
  advertise-all-vni
 exit-address-family
!
"""


def sh(ns: str, *cmd: str) -> str:
    return netns.run(ns, list(cmd)).stdout


@dataclass
class FrrLab:
    frr_ns: str
    speaker_ns: str
    frr_dir: Path

    def vtysh_sync(self, command: str) -> Any:
        result = subprocess.run(
            ["vtysh", "--vty_socket", str(self.frr_dir), "-c", command],
            capture_output=True, text=True, timeout=60,
        )
        try:
            return json.loads(result.stdout)
        except ValueError:
            return None

    async def vtysh(self, command: str) -> Any:
        # Off the event loop: the speaker must keep draining ExaBGP meanwhile.
        return await asyncio.to_thread(self.vtysh_sync, command)

    async def remote_macs(self) -> dict[str, dict]:
        shown = await self.vtysh(f"show evpn mac vni {VNI} json") or {}
        return {mac: entry for mac, entry in shown.get("macs", {}).items()
                if entry.get("type") == "remote"}

    async def bgp_routes(self, rd: str) -> dict[str, dict]:
        table = await self.vtysh("show bgp l2vpn evpn json") or {}
        return {k: v for k, v in table.get(rd, {}).items() if k.startswith("[")}

    async def updates_from_speaker(self) -> int:
        """UPDATE messages FRR has received from us on the current session."""
        shown = await self.vtysh(f"show bgp neighbors {SPEAKER_IP} json") or {}
        return int(shown.get(SPEAKER_IP, {}).get("messageStats", {}).get("updatesRecv", -1))

    async def peer(self) -> dict:
        summary = await self.vtysh("show bgp l2vpn evpn summary json") or {}
        return summary.get("peers", {}).get(SPEAKER_IP, {})

    async def fdb(self) -> list[dict]:
        out = await asyncio.to_thread(sh, self.frr_ns, "bridge", "-j", "fdb", "show",
                                      "dev", f"vxlan{VNI}")
        return json.loads(out or "[]")


@pytest.fixture
def frr_lab(ns_factory: Callable[[str], str]) -> Iterator[FrrLab]:
    zebra = require_program("zebra", "frr")
    bgpd = require_program("bgpd", "frr")
    require_program("vtysh", "frr")
    require_program("bridge", "iproute2")
    frr_ns = ns_factory("evs")
    speaker_ns = ns_factory("evs")
    # /tmp, not pytest's tmp_path: FRR runs as `frr` and must traverse the path.
    frr_dir = Path(tempfile.mkdtemp(prefix="evs-frr-"))
    try:
        sh(speaker_ns, "ip", "link", "add", "e0", "type", "veth", "peer", "name", "e0",
           "netns", frr_ns)
        sh(speaker_ns, "ip", "addr", "add", f"{SPEAKER_IP}/24", "dev", "e0")
        sh(speaker_ns, "ip", "link", "set", "e0", "up")
        sh(frr_ns, "ip", "addr", "add", f"{FRR_IP}/24", "dev", "e0")
        sh(frr_ns, "ip", "link", "set", "e0", "up")
        sh(frr_ns, "ip", "link", "add", f"br{VNI}", "type", "bridge")
        sh(frr_ns, "ip", "link", "add", f"vxlan{VNI}", "type", "vxlan", "id", str(VNI),
           "dstport", "4789", "local", FRR_IP, "nolearning")
        sh(frr_ns, "ip", "link", "set", f"vxlan{VNI}", "master", f"br{VNI}",
           "addrgenmode", "none")
        sh(frr_ns, "ip", "link", "set", f"vxlan{VNI}", "type", "bridge_slave",
           "neigh_suppress", "off", "learning", "off")
        sh(frr_ns, "ip", "link", "set", f"vxlan{VNI}", "up")
        sh(frr_ns, "ip", "link", "set", f"br{VNI}", "up")

        values = {"name": frr_ns, "dir": frr_dir, "asn": ASN, "frr_ip": FRR_IP,
                  "speaker_ip": SPEAKER_IP}
        (frr_dir / "zebra.conf").write_text(ZEBRA_CONF.format(**values))
        (frr_dir / "bgpd.conf").write_text(BGPD_CONF.format(**values))
        frr_dir.chmod(0o755)
        shutil.chown(frr_dir, "frr", "frr")
        for path in frr_dir.iterdir():
            shutil.chown(path, "frr", "frr")
        for name, program in (("zebra", zebra), ("bgpd", bgpd)):
            sh(frr_ns, program, "-d", "-N", frr_ns, "-f", str(frr_dir / f"{name}.conf"),
               "-i", str(frr_dir / f"{name}.pid"), "-z", str(frr_dir / "zserv.api"),
               "--vty_socket", str(frr_dir), "-A", "127.0.0.1", "-P", "0")
        lab = FrrLab(frr_ns, speaker_ns, frr_dir)
        deadline = time.monotonic() + 30
        while not (lab.vtysh_sync("show bgp l2vpn evpn summary json") or {}).get("peers"):
            assert time.monotonic() < deadline, "FRR did not come up"
            time.sleep(0.2)
        yield lab
    finally:
        # ns_factory kills what runs in the namespaces (FRR included).
        for name in ("bgpd", "zebra"):
            _kill_pidfile(frr_dir / f"{name}.pid", frr_ns)
        shutil.rmtree(frr_dir, ignore_errors=True)
        shutil.rmtree(FRR_RUN / frr_ns, ignore_errors=True)  # -N made it


def _kill_pidfile(path: Path, ns: str) -> None:
    """SIGKILL the daemon named in a pid file, if it really runs in our namespace."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    if pid in netns.pids_in(ns):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Received:
    """Everything the speaker hands out, with a way to wait for a match.

    JSON lines parsed; the speaker's own events as {"type": "speaker", "event": ...};
    raw frames (never asked for here) as {"type": "frame", "line": ...}.
    """

    lines: list[dict] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def collect(self, speaker: Speaker) -> None:
        async for batch in speaker.batches():
            messages = [
                (json.loads(item) if item.startswith(b"{") else {"type": "frame", "line": item})
                if isinstance(item, bytes) else {"type": "speaker", "event": item}
                for item in batch
            ]
            async with self.changed:
                self.lines += messages
                self.changed.notify_all()

    async def wait(self, predicate: Callable[[dict], bool], start: int = 0,
                   timeout: float = 60) -> int:
        """Index of the first line at or after `start` matching the predicate."""

        def find() -> int | None:
            for index in range(start, len(self.lines)):
                if predicate(self.lines[index]):
                    return index
            return None

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: find() is not None), timeout)
            found = find()
            assert found is not None
            return found


def is_restart(message: dict) -> bool:
    return isinstance(message.get("event"), SpeakerRestarted)


def is_attached(message: dict) -> bool:
    return isinstance(message.get("event"), SpeakerAttached)


def is_up(message: dict) -> bool:
    return message.get("type") == "state" and message["neighbor"].get("state") == "up"


def announced_evpn(message: dict) -> list[tuple[str, dict]]:
    if message.get("type") != "update":
        return []
    update = message["neighbor"]["message"].get("update", {})
    families = update.get("announce", {}).get("l2vpn evpn", {})
    return [(nexthop, route) for nexthop, routes in families.items() for route in routes]


@pytest.fixture
async def speaker(frr_lab: FrrLab) -> AsyncIterator[tuple[Speaker, Received]]:
    bgp: dict[str, Any] = {"peers": [{"address": FRR_IP, "remote_asn": ASN, "hold_time": 9}]}
    if "receive" in Bgp.model_fields:
        # These tests read what ExaBGP says themselves: its JSON, not raw frames.
        bgp["receive"] = "json"
    config = Config.model_validate(
        {"router_id": SPEAKER_IP, "asn": ASN, "vtep": {"address": SPEAKER_IP, "device": "e0"},
         "bgp": bgp}
    )
    state_dir = Path(tempfile.mkdtemp(prefix="evs-spk-"))
    speaker = Speaker(
        config,
        state_dir=state_dir,
        exec_prefix=["ip", "netns", "exec", frr_lab.speaker_ns],
        backoff_initial=0.2,
        stop_timeout=3,
    )
    received = Received()
    await speaker.start()
    collector = asyncio.create_task(received.collect(speaker))
    try:
        yield speaker, received
    finally:
        await speaker.stop()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        shutil.rmtree(state_dir, ignore_errors=True)


async def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Await `check()` (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.2)


def mac(i: int, prefix: str = "02:00:00:aa") -> str:
    return f"{prefix}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"


def imet_route() -> ImetRoute:
    vtep = ip_address(SPEAKER_IP)
    return ImetRoute(ImetKey(RD, 0, vtep), vtep, VNI, route_targets=(RT,))


def mac_routes(count: int, with_ip: bool) -> list[MacIpRoute]:
    vtep = ip_address(SPEAKER_IP)
    routes = []
    for i in range(count):
        if with_ip:
            key = MacIpKey(RD, 0, mac(i, "02:00:00:bb"), ip_address(f"192.168.100.{10 + i}"))
            routes.append(MacIpRoute(key, vtep, VNI, route_targets=(RT,), mobility_seq=i + 1))
        else:
            routes.append(MacIpRoute(MacIpKey(RD, 0, mac(i)), vtep, VNI, route_targets=(RT,)))
    return routes


@pytest.mark.netns
async def test_speaker_against_frr(frr_lab: FrrLab,
                                   speaker: tuple[Speaker, Received]) -> None:
    spk, received = speaker
    await received.wait(is_up)

    # -- announce: one Type-3 and Type-2s, MAC only and MAC+IP with a sequence
    macs_only = mac_routes(10, with_ip=False)
    macs_ip = mac_routes(10, with_ip=True)
    spk.announce([imet_route(), *macs_only, *macs_ip])
    await spk.flush(30)
    assert spk.counters.announced == 21 and spk.counters.errors == 0

    async def frr_has_all() -> dict[str, dict] | None:
        remote = await frr_lab.remote_macs()
        return remote if len(remote) == 20 else None

    remote = await eventually(frr_has_all, what="FRR to learn 20 MACs")
    for route in [*macs_only, *macs_ip]:
        entry = remote[route.mac]
        assert entry["remoteVtep"] == SPEAKER_IP
        assert entry["remoteSequence"] == route.mobility_seq

    bgp = await frr_lab.bgp_routes(RD)
    for route in macs_ip:
        path = bgp[f"[2]:[0]:[48]:[{route.mac}]:[32]:[{route.ip}]"]["paths"][0]
        assert path["nexthops"][0]["ip"] == SPEAKER_IP
        assert f"MM:{route.mobility_seq}" in path["extendedCommunity"]["string"]
        assert f"RT:{RT}" in path["extendedCommunity"]["string"]
    imet = bgp[f"[3]:[0]:[32]:[{SPEAKER_IP}]"]["paths"][0]
    assert imet["nexthops"][0]["ip"] == SPEAKER_IP

    async def kernel_fdb_has_all() -> bool:
        fdb = await frr_lab.fdb()
        tunnelled = {e["mac"] for e in fdb if e.get("dst") == SPEAKER_IP and "self" in e["flags"]}
        wanted = {r.mac for r in [*macs_only, *macs_ip]} | {"00:00:00:00:00:00"}
        return wanted <= tunnelled

    await eventually(kernel_fdb_has_all, what="FRR's kernel FDB to point at our VTEP")

    # -- FRR's own Type-3 reaches us as a JSON line
    await received.wait(lambda m: any(
        nexthop == FRR_IP and route["code"] == 3 and route["ip"] == FRR_IP
        for nexthop, route in announced_evpn(m)
    ))

    # -- withdraw one of each: gone from FRR, the session untouched
    gone = [macs_only[3], macs_ip[5]]
    spk.withdraw(route.key for route in gone)
    await spk.flush(30)
    assert spk.counters.withdrawn == 2

    async def withdrawn() -> bool:
        remote = await frr_lab.remote_macs()
        return len(remote) == 18 and not {r.mac for r in gone} & remote.keys()

    await eventually(withdrawn, what="FRR to drop the withdrawn MACs")
    peer = await frr_lab.peer()
    assert peer["state"] == "Established"
    assert peer["connectionsDropped"] == 0  # a wrong withdraw NLRI would reset the session
    assert peer["pfxRcd"] == 19

    # -- kill ExaBGP (our child, by pid): restarted, routes back
    pid = spk.pid
    assert pid is not None
    restart_base = len(received.lines)
    os.kill(pid, signal.SIGKILL)
    notice = await received.wait(is_restart, start=restart_base)
    assert received.lines[notice]["event"].peers == (FRR_IP,)
    await received.wait(is_up, start=notice)
    assert spk.counters.restarts == 1
    assert spk.pid not in (None, pid)

    async def back() -> bool:
        remote = await frr_lab.remote_macs()
        peer = await frr_lab.peer()
        return (len(remote) == 18 and not {r.mac for r in gone} & remote.keys()
                and peer.get("pfxRcd") == 19
                and all(e["remoteVtep"] == SPEAKER_IP for e in remote.values()))

    await eventually(back, what="FRR to have our routes again after the restart")
    await spk.flush(30)
    assert spk.counters.errors == 0


def is_refresh_end(message: dict) -> bool:
    return (message.get("type") == "refresh"
            and message["neighbor"]["route-refresh"]["subtype"] == "end")


@pytest.mark.netns
async def test_hand_over_keeps_the_session_and_the_next_speaker_adopts_it(
    frr_lab: FrrLab, speaker: tuple[Speaker, Received]
) -> None:
    spk, received = speaker
    await received.wait(is_up)
    routes = mac_routes(5, with_ip=False)
    spk.announce([imet_route(), *routes])
    await spk.flush(30)

    await eventually(frr_macs(frr_lab, 5), what="FRR to learn 5 MACs")
    pid = spk.pid
    assert pid is not None and await spk.hand_over() is True
    await asyncio.sleep(1.5)
    assert netns.pids_in(frr_lab.speaker_ns) and os.path.exists(f"/proc/{pid}")
    peer = await frr_lab.peer()
    assert peer["state"] == "Established" and peer["connectionsDropped"] == 0
    assert len(await frr_lab.remote_macs()) == 5  # nobody withdrew anything

    # The next speaker adopts that ExaBGP: same process, same session.
    nxt = Speaker(spk.config, state_dir=spk.state_dir, exec_prefix=spk.exec_prefix,
                  backoff_initial=0.2, stop_timeout=3, hold=2)  # fmt: skip
    seen = Received()
    await nxt.start()
    collector = asyncio.create_task(seen.collect(nxt))
    try:
        attached = seen.lines[await seen.wait(is_attached, timeout=20)]["event"]
        assert attached.adopted is True and attached.peers == ((FRR_IP, "up"),)
        assert nxt.pid == pid and nxt.counters.restarts == 0
        updates_before = await frr_lab.updates_from_speaker()
        # Wants four of the five MACs now; the fifth must go, the rest stay put.
        nxt.announce([imet_route(), *routes[:4]])
        nxt.prune()
        nxt.refresh(FRR_IP)
        await nxt.flush(30)
        assert nxt.counters.announced == 0  # ExaBGP already holds them: nothing re-sent
        assert nxt.counters.withdrawn == 1
        await eventually(frr_macs(frr_lab, 4), what="FRR to drop the MAC nobody wants")
        assert routes[4].mac not in await frr_lab.remote_macs()
        # The refresh brings FRR's table again, closed by an EoRR.
        end = await seen.wait(is_refresh_end, timeout=20)
        assert any(route["code"] == 3 for line in seen.lines[:end]
                   for _, route in announced_evpn(line))
        # ExaBGP took FRR's BoRR/EoRR for what they are, not for requests to
        # re-send our table: FRR got the one withdrawal and nothing else.
        await asyncio.sleep(1)
        assert await frr_lab.updates_from_speaker() - updates_before == 1
        peer = await frr_lab.peer()
        assert peer["connectionsDropped"] == 0

        # Handed over again, but nobody comes within the 2 s hold: our routes
        # are withdrawn (a graceful-restart helper would keep them otherwise)
        # and the session closes.
        assert await nxt.hand_over() is True
        await eventually(frr_macs(frr_lab, 0), what="FRR to drop our routes after the hold")
        assert not await frr_lab.bgp_routes(RD)
        await eventually(lambda: asyncio.sleep(0, not os.path.exists(f"/proc/{pid}")),
                         what="the abandoned ExaBGP to exit")
    finally:
        await nxt.stop()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


@pytest.mark.netns
async def test_reload_restarts_only_the_sessions_that_changed(
    frr_lab: FrrLab, speaker: tuple[Speaker, Received]
) -> None:
    spk, received = speaker
    await received.wait(is_up)
    spk.announce([imet_route(), *mac_routes(3, with_ip=False)])
    await spk.flush(30)
    pid = spk.pid

    def with_peers(*peers: dict[str, Any]) -> Config:
        raw = spk.config.model_dump(mode="json", exclude_unset=True)
        return Config.model_validate({**raw, "bgp": {**raw["bgp"], "peers": list(peers)}})

    frr = {"address": FRR_IP, "remote_asn": ASN, "hold_time": 9}
    # A peer added (it never answers) and later removed: FRR's session is untouched.
    await spk.reload(with_peers(frr, {"address": "192.0.2.3", "remote_asn": ASN}))
    await spk.flush(30)
    assert "192.0.2.3" in (spk.state_dir / "exabgp.conf").read_text()
    await asyncio.sleep(3)  # ExaBGP has re-read its configuration and tries the new peer
    await spk.reload(with_peers(frr))
    await spk.flush(30)
    await asyncio.sleep(2)
    peer = await frr_lab.peer()
    assert peer["state"] == "Established" and peer["connectionsDropped"] == 0, peer
    assert spk.pid == pid and spk.counters.restarts == 0
    assert len(await frr_lab.remote_macs()) == 3

    # The FRR peer itself changes (hold time): that session, and only it, is re-made,
    # and our routes are announced on the new one.
    await spk.reload(with_peers({**frr, "hold_time": 15}))

    async def remade() -> bool:
        peer = await frr_lab.peer()
        return peer.get("connectionsDropped") == 1 and peer.get("state") == "Established"

    await eventually(remade, what="FRR's session to be re-established after the change")
    await eventually(frr_macs(frr_lab, 3), what="our 3 MACs back at FRR")
    assert spk.pid == pid and spk.counters.restarts == 0


def frr_macs(frr_lab: FrrLab, count: int) -> Callable[[], Any]:
    """A check for eventually(): FRR's zebra holds exactly `count` remote MACs."""

    async def check() -> bool:
        return len(await frr_lab.remote_macs()) == count

    return check


@pytest.mark.netns
async def test_throughput_against_frr(frr_lab: FrrLab,
                                      speaker: tuple[Speaker, Received]) -> None:
    """10k Type-2 through ExaBGP into FRR (and 10k from FRR back); measured, not asserted."""
    spk, received = speaker
    await received.wait(is_up)
    count = 10_000
    vtep = ip_address(SPEAKER_IP)
    routes = [
        MacIpRoute(MacIpKey(RD, 0, f"02:01:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:"
                                   f"{i & 0xFF:02x}"), vtep, VNI, route_targets=(RT,))
        for i in range(count)
    ]

    started = time.monotonic()
    spk.announce(routes)
    await spk.flush(300)
    acked = time.monotonic() - started

    async def frr_bgp_has_all() -> bool:
        return (await frr_lab.peer()).get("pfxRcd", 0) >= count

    await eventually(frr_bgp_has_all, timeout=300, what="FRR's BGP table to hold 10k")
    in_bgp = time.monotonic() - started

    async def zebra_has_all() -> bool:
        return len(await frr_lab.remote_macs()) >= count

    await eventually(zebra_has_all, timeout=300, what="zebra to hold 10k remote MACs")
    in_zebra = time.monotonic() - started

    started = time.monotonic()
    spk.withdraw(route.key for route in routes)
    await spk.flush(300)

    async def frr_bgp_empty() -> bool:
        return (await frr_lab.peer()).get("pfxRcd", -1) == 0

    await eventually(frr_bgp_empty, timeout=300, what="FRR to drop 10k")
    withdrawn = time.monotonic() - started

    # Receive: FRR learns 10k local MACs on a bridge port and advertises them.
    sh(frr_lab.frr_ns, "ip", "link", "add", "h0", "type", "veth", "peer", "name", "h0p")
    sh(frr_lab.frr_ns, "ip", "link", "set", "h0", "master", f"br{VNI}", "up")
    sh(frr_lab.frr_ns, "ip", "link", "set", "h0p", "up")
    batch = frr_lab.frr_dir / "fdb.batch"
    batch.write_text("".join(
        f"fdb add 02:02:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x} "
        f"dev h0 master static\n" for i in range(count)
    ))
    base = len(received.lines)
    started = time.monotonic()
    await asyncio.to_thread(sh, frr_lab.frr_ns, "bridge", "-batch", str(batch))

    def ours(lines: list[dict]) -> int:
        return sum(1 for m in lines for _, r in announced_evpn(m)
                   if r["code"] == 2 and r["mac"].startswith("02:02:00"))

    seen, scanned = 0, base
    while seen < count:
        await received.wait(lambda m: True, start=scanned, timeout=120)
        upto = len(received.lines)
        seen += ours(received.lines[scanned:upto])
        scanned = upto
    received_in = time.monotonic() - started

    print(
        f"\nspeaker throughput (N={count} Type-2, batch {spk.batch_size}, window {spk.window}):"
        f" announce acked {acked:.2f}s, FRR BGP {in_bgp:.2f}s ({count / in_bgp:.0f}/s),"
        f" FRR zebra {in_zebra:.2f}s ({count / in_zebra:.0f}/s);"
        f" withdraw {withdrawn:.2f}s ({count / withdrawn:.0f}/s);"
        f" receive from FRR {received_in:.2f}s ({count / received_in:.0f}/s)"
    )
    assert spk.counters.errors == 0


# ---------------------------------------------------------------------------
# The supervisor against a fake ExaBGP (no root, no network)

FAKE_EXABGP = """#!{python}
# Stands in for `python -m evpnd.speaker.launcher <conf>`: connects like the
# relay, says a session is up, logs each command line, and acknowledges them
# only once the speaker pauses, so the log shows how many were outstanding.
import os, select, signal, socket, sys, time
if os.environ.get("FAKE_IGNORE_SIGTERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
log = open("fake.log", "a")
sock = socket.socket(socket.AF_UNIX)
sock.connect("exabgp-api.sock")
sock.sendall(("evpnd-relay %s %d\\n" % (os.environ["EVPND_RELAY_TOKEN"], os.getpid())).encode())
sock.sendall(b'{{"type": "state", "neighbor": {{"state": "up"}}}}\\n')
buffer, unacked = b"", 0
while True:
    ready, _, _ = select.select([sock], [], [], 0.2)
    if not ready:
        if unacked:
            log.write("%d pause %d\\n" % (os.getpid(), unacked)); log.flush()
            sock.sendall(b"done\\n" * unacked)
            unacked = 0
        continue
    data = sock.recv(65536)
    if not data:
        time.sleep(3600)
    buffer += data
    while b"\\n" in buffer:
        line, buffer = buffer.split(b"\\n", 1)
        if line.startswith(b"#evpnd "):
            continue  # for the relay, which this fake stands in for
        log.write("%d line %s\\n" % (os.getpid(), line.decode())); log.flush()
        unacked += 1
"""


@dataclass
class FakeLog:
    path: Path

    def entries(self) -> list[tuple[int, str, str]]:
        if not self.path.exists():
            return []
        entries = []
        for raw in self.path.read_text().splitlines():
            pid, kind, rest = raw.split(" ", 2)
            entries.append((int(pid), kind, rest))
        return entries

    def lines(self, pid: int | None = None) -> list[str]:
        return [rest for p, kind, rest in self.entries()
                if kind == "line" and (pid is None or p == pid)]

    def pauses(self) -> list[int]:
        return [int(rest) for _, kind, rest in self.entries() if kind == "pause"]


@pytest.fixture
async def fake_speaker(tmp_path: Path, request: pytest.FixtureRequest
                       ) -> AsyncIterator[tuple[Speaker, FakeLog, Received]]:
    fake = tmp_path / "fake-exabgp"
    fake.write_text(FAKE_EXABGP.format(python=sys.executable))
    fake.chmod(0o755)
    state_dir = Path(tempfile.mkdtemp(prefix="evs-fake-"))
    options = getattr(request, "param", {})
    config = Config.model_validate(
        {"router_id": SPEAKER_IP, "asn": ASN, "vtep": {"address": SPEAKER_IP, "device": "e0"},
         "bgp": {"peers": [{"address": FRR_IP, "remote_asn": ASN}]}}
    )
    speaker = Speaker(config, state_dir=state_dir, python=str(fake), backoff_initial=0.1,
                      stop_timeout=1, **options)
    received = Received()
    await speaker.start()
    collector = asyncio.create_task(received.collect(speaker))
    try:
        yield speaker, FakeLog(state_dir / "fake.log"), received
    finally:
        await speaker.stop()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.mark.parametrize("fake_speaker", [{"batch_size": 2, "window": 1}], indirect=True)
async def test_lines_go_out_within_the_window_and_a_restart_reannounces_what_is_wanted(
    fake_speaker: tuple[Speaker, FakeLog, Received],
) -> None:
    spk, fake, received = fake_speaker
    await received.wait(is_up)
    routes = [*mac_routes(3, with_ip=False), imet_route()]
    spk.announce(routes)
    await spk.flush(30)
    token = spk.announced()
    spk.withdraw([routes[0].key])
    await spk.flush(30)
    old = spk.pid
    assert old is not None
    t0, t1, t2, t3 = (token[route.key] for route in routes)
    assert fake.lines(old) == [f"announce evpn batch {t0};{t1}", f"announce evpn batch {t2};{t3}",
                               f"withdraw evpn {t0}"]  # fmt: skip
    assert set(fake.pauses()) == {1}  # each line waited for its ack: the window is 1
    assert (spk.counters.announced, spk.counters.withdrawn, spk.counters.acks) == (4, 1, 3)

    base = len(received.lines)
    os.kill(old, signal.SIGKILL)
    notice = await received.wait(is_restart, start=base)
    await received.wait(is_up, start=notice)
    await spk.flush(30)
    new = spk.pid
    assert new not in (None, old)
    # Only what is still wanted, the flood-list route (Type-3) first.
    assert fake.lines(new) == [f"announce evpn batch {t3};{t1}", f"announce evpn {t2}"]
    assert spk.counters.restarts == 1 and spk.counters.errors == 0


async def test_stop_kills_a_child_that_ignores_sigterm(
    fake_speaker: tuple[Speaker, FakeLog, Received], monkeypatch: pytest.MonkeyPatch,
) -> None:
    spk, _, received = fake_speaker
    await received.wait(is_up)
    monkeypatch.setenv("FAKE_IGNORE_SIGTERM", "1")
    old = spk.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)  # the next child inherits FAKE_IGNORE_SIGTERM
    await received.wait(is_restart)
    await spk.wait_connected(10)
    stubborn = spk.pid
    assert stubborn is not None
    started = time.monotonic()
    await spk.stop()
    assert time.monotonic() - started >= spk.stop_timeout  # SIGTERM was ignored
    assert not Path(f"/proc/{stubborn}").exists()  # killed and reaped
    with pytest.raises(SpeakerError):
        await spk.flush(1)
