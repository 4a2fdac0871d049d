"""Faults on a running fabric, FRR as the oracle (C1, C2, C4, C7, C10 of the chaos suite).

One chaos lab (lab.py) for the module: FRR route reflector + VTEP rr, evpnd on
host1 and host2, a churning BGP speaker src behind rr. After every fault (once
the churn is paused) each evpnd host's vxlan FDB, flood list and neighbour
table must equal what FRR's zebra on rr holds (oracle.py), and no evpnd may
have exited on its own. Sizes: conftest.size (a few rounds in CI, the issue's
counts under `make chaos`).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest

from bench import bgpsend
from evpnd.control import client
from tests.chaos import speaker as wire
from tests.chaos.conftest import size
from tests.chaos.lab import ADDRESS, BAD, HOSTS, RR, SRC, ChaosLab, Speaker, control
from tests.chaos.tally import Row, Tally
from tests.conftest import require_program, require_root
from tests.unit.test_control_hostile import HOSTILE

pytestmark = pytest.mark.netns

SEED = int(os.environ.get("EVPND_CHAOS_SEED", "7"))
POOL = size(300, 10_000)  # MACs the churn draws from
RATE = size(100, 1000)  # routes per second
SETTLE = 120.0  # seconds a fault may take to settle (ExaBGP's restart backoff reaches 30 s)
FREEZE = 30  # dad.freeze: the shortest FRR takes


@pytest.fixture(scope="module")
def lab() -> Iterator[ChaosLab]:
    require_root()
    for daemon in ("zebra", "bgpd", "vtysh"):
        require_program(daemon, "frr")
    require_program("bridge", "iproute2")
    with ChaosLab(dad=f"{{max_moves: 5, window: 180, freeze: {FREEZE}}}") as chaos:
        src = chaos.speaker(SRC, [RR])
        chaos.wait("rr's sessions", lambda: chaos.sessions_up([*HOSTS, SRC]))
        for vtep in wire.CHURN_VTEPS:
            src.command(f"imet {vtep}")
        yield chaos


def settle(lab: ChaosLab, row: Row, what: str, hosts: tuple[str, ...] = HOSTS,
           timeout: float = SETTLE) -> float:  # fmt: skip
    """Wait for every host to equal FRR; count what is left (stale, missing, crashes) and
    fail on any. Seconds it took."""
    started = time.monotonic()
    found = lab.converge(hosts, timeout)
    took = time.monotonic() - started
    crashed = lab.crashed()
    row.stale += sum(len(d.stale) for d in found.values())
    row.missing += sum(len(d.missing) for d in found.values())
    row.crashes += len(crashed)
    assert not crashed, f"evpnd exited on {crashed} after {what}\n{lab.tails()}"
    left = {h: str(d) for h, d in found.items() if d}
    assert not left, f"after {what}, {took:.0f}s: {left}\n{lab.tails()}"
    # How much was compared (a comparison of two empty tables proves nothing).
    held = max(len(lab.kernel(h).macs) for h in hosts)
    row.notes["max_remote_macs"] = max(held, row.notes.get("max_remote_macs", 0))
    return took


def src_of(lab: ChaosLab) -> Speaker:
    return lab.speakers[SRC]


@contextlib.contextmanager
def churning(lab: ChaosLab, seed: int) -> Iterator[None]:
    src_of(lab).command(f"churn {POOL} {RATE} {seed}")
    try:
        yield
    finally:
        src_of(lab).command("pause")


def exabgp_pid(lab: ChaosLab, host: str, not_pid: int | None = None) -> int:
    def fresh() -> int | None:
        pid = lab.exabgp_pid(host)
        return pid if pid and pid != not_pid and os.path.exists(f"/proc/{pid}") else None

    return lab.wait(f"ExaBGP on {host}", fresh, SETTLE)


# ------------------------------------------------------------------------- C1


def test_c1_exabgp_killed_again_and_again_under_churn(lab: ChaosLab, tally: Tally) -> None:
    row = tally.row("C1 kill -9 ExaBGP")
    rng = random.Random(SEED)
    kills = size(4, 100)
    done = 0
    slowest = 0.0
    while done < kills:
        burst = min(rng.randint(1, 4), kills - done)
        host = rng.choice(HOSTS)
        with churning(lab, rng.randrange(1 << 30)):
            pid = None
            for _ in range(burst):
                pid = exabgp_pid(lab, host, pid)
                os.kill(pid, signal.SIGKILL)
                row.faults += 1
                done += 1
                # Half the pairs closer than the start-up hold (the table not back yet).
                time.sleep(rng.uniform(0.2, 1.5) if rng.random() < 0.5 else rng.uniform(2, 6))
        slowest = max(slowest, settle(lab, row, f"{burst} ExaBGP kill(s) on {host}"))
        row.rounds += 1
    row.notes["slowest_settle_s"] = round(slowest, 1)


# ------------------------------------------------------------------------- C2


def writes(lab: ChaosLab, host: str) -> int:
    return int(lab.show(host, "status")["dataplane"]["writes"])


def test_c2_evpnd_killed_again_and_again(lab: ChaosLab, tally: Tally) -> None:
    row = tally.row("C2 kill -9 evpnd")
    rng = random.Random(SEED + 2)
    rounds = size(4, 100)
    learned: dict[str, list[str]] = {h: [] for h in HOSTS}
    restart_writes = 0
    why: list[str] = []
    # The hosts hold the churn's table (about half the pool) whatever ran before.
    with churning(lab, rng.randrange(1 << 30)):
        time.sleep(POOL / RATE)
    settle(lab, row, "the churn before C2")
    for n in range(rounds):
        host = rng.choice(HOSTS)
        announced = n % 2 == 0  # every other kill within 2 s of a new local MAC
        if announced:
            mac = f"02:d2:00:{HOSTS.index(host):02x}:{(n >> 8) & 255:02x}:{n & 255:02x}"
            lab.learn(host, [mac])
            learned[host].append(mac)
            time.sleep(rng.uniform(0, 2))
        lab.kill_evpnd(host)
        row.faults += 1
        lab.start_evpnd(host)
        settle(lab, row, f"evpnd killed on {host}")
        # rr holds from the host exactly the host's local MACs (its adj-RIB-in from it).
        lab.wait(f"rr's routes from {host}",
                 lambda h=host: lab.routes_from(h) == lab.local_macs(h), 60)  # fmt: skip
        if not announced:
            # Nothing changed while it was down: the new daemon wrote nothing.
            wrote = writes(lab, host)
            restart_writes += wrote
            if wrote:
                why.append(f"round {n}, {host}: {wrote} writes\n{lab.tails()}")
        row.rounds += 1
    row.notes["kernel_writes_on_unchanged_restarts"] = restart_writes
    assert restart_writes == 0, "\n".join(why[:3])
    for host, macs in learned.items():
        lab.unlearn(host, macs)
    settle(lab, row, "the C2 MACs removed")


# ------------------------------------------------------------------------- C4


def flapper(lab: ChaosLab, host: str, mac: str, seconds: float, rate: float) -> object:
    """An endpoint that keeps talking, as a shell loop in the host: whenever the bridge
    entry of the MAC has gone over to the vxlan port (the other VTEP's claim won), it
    is learned on lp0 again, checked `rate` times a second."""
    take_back = (f"bridge fdb del {mac} dev vxlan100 master 2>/dev/null && "
                 f"bridge fdb add {mac} dev lp0 master dynamic")
    script = (f"bridge fdb replace {mac} dev lp0 master dynamic; "
              f"end=$(( $(date +%s) + {int(seconds)} )); "
              f"while [ $(date +%s) -lt $end ]; do {take_back}; sleep {1 / rate:.3f}; done")
    return lab.shell(host, script)


def mac_row(lab: ChaosLab, host: str, mac: str) -> dict:
    for vni in lab.show(host, "mac", vni=100)["vnis"]:
        for entry in vni["macs"]:
            if entry["mac"] == mac:
                return entry
    return {}


def test_c4_two_vteps_claim_one_mac_many_times_a_second(lab: ChaosLab, tally: Tally) -> None:
    row = tally.row("C4 one MAC on two VTEPs")
    rounds = size(1, 3)
    seconds = size(6, 120)
    for n in range(rounds):
        mac = f"02:d4:00:00:00:{n:02x}"
        flaps = [flapper(lab, h, mac, seconds, 50) for h in HOSTS]  # 100 claims/s in all
        row.faults += 1
        for proc in flaps:
            proc.wait(seconds + 60)  # type: ignore[attr-defined]
        crashed = lab.crashed()
        row.crashes += len(crashed)
        assert not crashed, lab.tails()
        flagged = {h: mac_row(lab, h, mac) for h in HOSTS}
        assert any(e.get("duplicate") for e in flagged.values()), flagged
        seqs = [int(e.get("seq") or 0) for e in flagged.values()]
        assert max(seqs) < 1 << 32
        row.notes["max_seq"] = max(max(seqs), row.notes.get("max_seq", 0))
        # The MAC stays on host1 only; released by hand, the fabric agrees with FRR again.
        lab.unlearn("host2", [mac])
        lab.learn("host1", [mac])
        for host in HOSTS:
            control(lab.socket(host), {"command": "clear", "what": "duplicate",
                                       "args": {"vni": 100, "mac": mac}})  # fmt: skip
        settle(lab, row, f"{seconds}s of {mac} on both hosts")
        lab.unlearn("host1", [mac])
        settle(lab, row, f"{mac} gone")
        row.rounds += 1


# ------------------------------------------------------------------------- C7


def test_c7_vxlan_device_deleted_under_churn(lab: ChaosLab, tally: Tally) -> None:
    row = tally.row("C7 ip link del vxlan100")
    rng = random.Random(SEED + 7)
    rounds = size(3, 20)
    slowest = 0.0
    for _ in range(rounds):
        host = rng.choice(HOSTS)
        with churning(lab, rng.randrange(1 << 30)):
            time.sleep(rng.uniform(0.5, 2))
            lab.sh(host, "ip", "link", "del", "vxlan100")
            deleted = time.monotonic()
            row.faults += 1
            time.sleep(rng.uniform(0, 1))
        settle(lab, row, f"vxlan100 deleted on {host}")
        slowest = max(slowest, time.monotonic() - deleted)
        row.rounds += 1
    row.notes["slowest_back_s"] = round(slowest, 1)


# ------------------------------------------------------------------------ C10

BAD_VTEP = IPv4Address("198.51.100.60")


def body(update: bytes) -> str:
    return update[19:].hex()


def bad_updates() -> dict[str, bytes]:
    """UPDATEs evpnd must refuse (treat-as-withdraw or unusable route), by what is wrong."""
    attrs = wire.path_attributes(100, None)

    def mac_route(mac: str, nexthop: str = str(BAD_VTEP)) -> bytes:
        return bgpsend.reach(IPv4Address(nexthop), wire.type2(mac, BAD_VTEP, None), attrs)

    def imet(tunnel: str) -> bytes:
        pmsi = bgpsend.attribute(0xC0, 22, bytes((0, 6)) + (100).to_bytes(3, "big")
                                 + IPv4Address(tunnel).packed)  # fmt: skip
        return bgpsend.reach(BAD_VTEP, bgpsend.type3(BAD_VTEP, 100), attrs + pmsi)

    return {
        "zero MAC": mac_route("00:00:00:00:00:00"),
        "multicast MAC": mac_route("01:00:5e:00:00:01"),
        "broadcast MAC": mac_route("ff:ff:ff:ff:ff:ff"),
        "next hop 0.0.0.0": mac_route("02:ee:00:00:00:02", "0.0.0.0"),
        "next hop multicast": mac_route("02:ee:00:00:00:03", "224.0.0.1"),
        "next hop loopback": mac_route("02:ee:00:00:00:04", "127.0.0.1"),
        "PMSI tunnel 0.0.0.0": imet("0.0.0.0"),
        "PMSI tunnel multicast": imet("239.1.1.1"),
        "PMSI tunnel broadcast": imet("255.255.255.255"),
    }


def refused(decoder: dict) -> int:
    """Decode errors counted: treat-as-withdraw and unusable routes ("bad-route")."""
    return sum(decoder.get("errors", {}).values())


def test_c10_unusable_routes_are_withdrawn_counted_and_never_installed(
    lab: ChaosLab, tally: Tally
) -> None:
    row = tally.row("C10 unusable routes")
    settle(lab, row, "nothing yet")
    bad = lab.speaker(BAD, ["host1"])
    lab.reload("host1", [RR, BAD])
    lab.wait("host1's session with bad", lambda: any(
        p["address"] == ADDRESS[BAD] and p["state"] == "established"
        for p in lab.show("host1", "peers")["peers"]))  # fmt: skip
    before = lab.kernel("host1")
    rounds = size(2, 20)
    counted = 0
    for n in range(rounds):
        # A good route first, then the same route with a next hop of 0.0.0.0: treat-as-
        # withdraw must remove what the good one installed.
        good = f"02:ee:00:00:01:{n:02x}"
        bad.command(f"announce {good} {BAD_VTEP} 0")
        lab.wait("the good route installed", lambda m=good: m in lab.kernel("host1").macs)
        decoder = dict(lab.show("host1", "status")["decoder"])
        sent = {**bad_updates(), "the good route, next hop 0.0.0.0": bgpsend.reach(
            IPv4Address("0.0.0.0"), wire.type2(good, BAD_VTEP, None),
            wire.path_attributes(100, None))}  # fmt: skip
        for update in sent.values():
            bad.command(f"raw {body(update)}")
            row.faults += 1
        lab.wait("the good route withdrawn", lambda m=good: m not in lab.kernel("host1").macs)
        after = dict(lab.show("host1", "status")["decoder"])
        counted += refused(after) - refused(decoder)
        assert lab.kernel("host1") == before
        peers = {p["address"]: p["state"] for p in lab.show("host1", "peers")["peers"]}
        assert peers[ADDRESS[BAD]] == "established", peers  # no session reset
        row.rounds += 1
    # A route with the largest sequence number, then the MAC learned here (issue 11,
    # finding 1: the daemon used to exit).
    top = "02:ee:00:00:02:01"
    bad.command(f"announce {top} {BAD_VTEP} {(1 << 32) - 1}")
    lab.wait("the top-sequence route", lambda: top in lab.kernel("host1").macs)
    lab.learn("host1", [top])
    lab.wait("the MAC local on host1", lambda: top not in lab.kernel("host1").macs)
    row.faults += 1
    assert not lab.crashed(), lab.tails()
    row.notes["counted"] = counted
    assert counted >= rounds * len(sent)
    lab.unlearn("host1", [top])
    bad.command(f"withdraw {top} {BAD_VTEP}")
    lab.reload("host1", [RR])
    settle(lab, row, "the bad peer gone")


# ------------------------------------------------------------------------- F7


def test_f7_hostile_control_clients_against_a_running_daemon(lab: ChaosLab, tally: Tally) -> None:
    """tests/unit/test_control_hostile.py's hostile process (1000 held connections,
    clients that never read, oversize lines, one-byte-at-a-time writers) against host1's
    real daemon under route churn: `show status` answers within 2 s throughout."""
    row = tally.row("F7 control socket abuse")
    path = lab.socket("host1")
    answered = 0
    for n in range(size(1, 3)):
        with churning(lab, SEED + 70 + n):
            hostile = subprocess.Popen([sys.executable, "-c", HOSTILE, str(path)],
                                       stdout=subprocess.PIPE, text=True)  # fmt: skip
            row.faults += 1
            try:
                while hostile.poll() is None:
                    answer = client.request(path, {"command": "show", "what": "status"}, 2.0)
                    assert answer["ok"], answer
                    answered += 1
                    time.sleep(0.1)
                assert hostile.stdout is not None
                assert hostile.stdout.read().split() == ["connects", "non-readers", "oversize",
                                                         "slow", "done"]  # fmt: skip
            finally:
                if hostile.poll() is None:
                    hostile.kill()
                hostile.wait()
        crashed = lab.crashed()
        row.crashes += len(crashed)
        assert not crashed, lab.tails()
        settle(lab, row, "hostile control clients")
        row.rounds += 1
    row.notes["status_answers"] = answered
    assert answered > 10
