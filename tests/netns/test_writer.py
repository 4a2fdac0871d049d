"""Kernel programming and reconciliation against a real kernel, in throwaway namespaces."""

from __future__ import annotations

import asyncio
import errno
import json
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from pyroute2 import IPRoute

from evpnd import netns
from evpnd.dataplane import reconciler as reconciler_mod
from evpnd.dataplane.dump import dump
from evpnd.dataplane.netlink.wire import RTPROT_EVPND
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac, ip
from evpnd.dataplane.tracker import Changes, writes_between
from evpnd.dataplane.writer import DataplaneWriter

pytestmark = pytest.mark.netns

VX = "vxlan100"
BR = "br100"
LOCAL_VTEP = "192.0.2.1"
VTEPS = [IPv4Address(f"198.51.100.{i}") for i in range(1, 21)]
TIMEOUT = 10.0


def make_segment(ns: str, vni: int = 100) -> None:
    """br<vni> with vxlan<vni> enslaved, created with pyroute2 inside the namespace."""
    with IPRoute(netns=ns) as ipr:
        ipr.link("add", ifname=f"br{vni}", kind="bridge")
        ipr.link(
            "add",
            ifname=f"vxlan{vni}",
            kind="vxlan",
            vxlan_id=vni,
            vxlan_local=LOCAL_VTEP,
            vxlan_port=4789,
            vxlan_learning=0,
        )
        br = ipr.link_lookup(ifname=f"br{vni}")[0]
        vx = ipr.link_lookup(ifname=f"vxlan{vni}")[0]
        ipr.link("set", index=vx, master=br)
        ipr.link("set", index=vx, state="up")
        ipr.link("set", index=br, state="up")


@pytest.fixture
def seg(ns: str) -> str:
    make_segment(ns)
    return ns


def remote_macs(count: int, device: str = VX, sticky_every: int = 0) -> list[RemoteMac]:
    return [
        RemoteMac(
            device,
            f"02:5e:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}:01",
            VTEPS[i % len(VTEPS)],
            sticky=bool(sticky_every) and i % sticky_every == 0,
        )
        for i in range(count)
    ]


def state_of(*groups: Any) -> ForwardingState:
    s = ForwardingState()
    for group in groups:
        for e in group if isinstance(group, list) else [group]:
            if isinstance(e, RemoteMac):
                s.add_mac(e)
            elif isinstance(e, FloodEntry):
                s.add_flood(e)
            else:
                s.add_neigh(e)
    return s


def sh(ns: str, cmd: str) -> str:
    return netns.run(ns, cmd.split()).stdout


def fdb_json(ns: str, dev: str = VX) -> list[dict[str, Any]]:
    return json.loads(sh(ns, f"bridge -j fdb show dev {dev}") or "[]")


def fdb_entry(ns: str, mac: str, dev: str = VX) -> list[dict[str, Any]]:
    """The vxlan device's own entries for `mac` (they carry a dst; bridge entries do not)."""
    return [e for e in fdb_json(ns, dev) if e["mac"] == mac and "dst" in e]


def bridge_entry(ns: str, mac: str, br: str = BR) -> list[dict[str, Any]]:
    """The bridge's own FDB entries for `mac` (`bridge fdb show br BR`, no dst)."""
    return [e for e in fdb_json_br(ns, br) if e["mac"] == mac and "dst" not in e]


def fdb_json_br(ns: str, br: str = BR) -> list[dict[str, Any]]:
    return json.loads(sh(ns, f"bridge -j fdb show br {br}") or "[]")


def neigh_json(ns: str, dev: str = BR) -> list[dict[str, Any]]:
    v4 = json.loads(sh(ns, f"ip -j neigh show dev {dev}") or "[]")
    v6 = json.loads(sh(ns, f"ip -j -6 neigh show dev {dev}") or "[]")
    return v4 + v6


async def wait_for(check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def writer(seg: str) -> Iterator[DataplaneWriter]:
    with DataplaneWriter(seg) as w:
        yield w


# -- writer -----------------------------------------------------------------------


def test_writer_programs_remote_macs_as_extern_learn(seg: str, writer: DataplaneWriter) -> None:
    macs = remote_macs(10_000, sticky_every=10)
    result = writer.apply(Changes(macs_put=macs))
    assert result.ok, result.errors[:3]
    assert result.writes["mac_put"] == 10_000

    tables = dump(seg)
    assert len(tables.owned.macs) == 10_000
    assert tables.owned.macs == {m.key: m for m in macs}

    plain, sticky = fdb_entry(seg, macs[1].mac), fdb_entry(seg, macs[0].mac)
    assert plain[0]["dst"] == str(macs[1].vtep)
    assert "extern_learn" in plain[0]["flags"] and "self" in plain[0]["flags"]
    assert plain[0].get("state", "") == ""  # NUD_REACHABLE has no name
    assert sticky[0]["state"] == "static" and "extern_learn" in sticky[0]["flags"]

    assert writes_between(state_of(macs), dump(seg).owned).count() == 0


def test_vtep_move_and_sticky_flip(seg: str, writer: DataplaneWriter) -> None:
    mac = remote_macs(1)[0]
    writer.apply(Changes(macs_put=[mac]))
    moved = RemoteMac(mac.device, mac.mac, VTEPS[5])
    changes = writes_between(state_of(moved), dump(seg).owned)
    assert changes.count() == 1
    assert writer.apply(changes).total == 1
    assert fdb_entry(seg, mac.mac)[0]["dst"] == str(VTEPS[5])

    sticky = RemoteMac(mac.device, mac.mac, VTEPS[5], sticky=True)
    assert writer.apply(writes_between(state_of(sticky), dump(seg).owned)).ok
    assert fdb_entry(seg, mac.mac)[0]["state"] == "static"
    assert dump(seg).owned.macs == {sticky.key: sticky}


def test_remote_macs_also_enter_the_bridge_fdb_towards_the_vxlan_port(
    seg: str, writer: DataplaneWriter
) -> None:
    """ARP/ND suppression needs the MAC in the bridge's FDB behind the suppressing port."""
    macs = remote_macs(3, sticky_every=3)
    result = writer.apply(Changes(macs_put=macs))
    assert result.ok, result.errors
    assert result.writes["mac_put"] == 3 and result.total == 3  # one write per remote MAC
    assert result.bridge_writes["bridge_put"] == 3
    for mac in macs:
        (entry,) = bridge_entry(seg, mac.mac)
        assert entry["ifname"] == VX and entry["master"] == BR, entry
        assert "extern_learn" in entry["flags"], entry
    # The dump (and so the reconciler) still sees exactly the vxlan entries.
    assert dump(seg).owned.macs == {m.key: m for m in macs}
    assert writer.apply(Changes(macs_put=macs)).ok  # a replace changes nothing
    assert len(bridge_entry(seg, macs[0].mac)) == 1

    # A MAC meanwhile learnt on a local port is not the bridge entry evpnd deletes.
    sh(seg, "ip link add port1 type veth peer name port1p")
    sh(seg, f"ip link set port1 master {BR}")
    sh(seg, f"bridge fdb replace {macs[1].mac} dev port1 master static")
    result = writer.apply(Changes(macs_del=macs))
    assert result.ok, result.errors
    assert result.writes["mac_del"] == 3 and result.bridge_writes["bridge_del"] == 3
    assert [e["ifname"] for e in bridge_entry(seg, macs[1].mac)] == ["port1"]
    assert bridge_entry(seg, macs[0].mac) == bridge_entry(seg, macs[2].mac) == []
    assert all(fdb_entry(seg, m.mac) == [] for m in macs)


def test_a_remote_mac_and_its_bridge_entry_travel_in_one_message(
    seg: str, writer: DataplaneWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a bridge port, NTF_MASTER|NTF_SELF writes (and deletes) both entries at
    once; only a message that fails is sent again as the two parts."""
    sent: list[int] = []
    transact = writer._sock.transact

    def counting(requests: Any, *args: Any) -> Any:
        sent.append(len(requests))
        return transact(requests, *args)

    monkeypatch.setattr(writer._sock, "transact", counting)
    macs = remote_macs(50, sticky_every=7)
    result = writer.apply(Changes(macs_put=macs))
    assert result.ok, result.errors
    assert sent == [50]
    assert result.writes["mac_put"] == 50 and result.bridge_writes["bridge_put"] == 50
    assert {e["mac"]: e["dst"] for e in fdb_json(seg) if "dst" in e} == {
        m.mac: str(m.vtep) for m in macs}  # fmt: skip
    bridged = {e["mac"]: e for e in fdb_json_br(seg) if e["mac"] in {m.mac for m in macs}}
    assert set(bridged) == {m.mac for m in macs}
    assert all(e["ifname"] == VX and "extern_learn" in e["flags"] for e in bridged.values())
    # The vxlan entries carry no trace of the bridge's part.
    assert all("master" not in e.get("flags", []) for e in fdb_json(seg) if "dst" in e)
    assert dump(seg).owned.macs == {m.key: m for m in macs}

    # One MAC's bridge entry has moved to a local port: its combined delete fails
    # at the bridge (ENOENT) and is done again as the pair.
    sh(seg, "ip link add port1 type veth peer name port1p")
    sh(seg, f"ip link set port1 master {BR}")
    sh(seg, f"bridge fdb replace {macs[3].mac} dev port1 master static")
    sent.clear()
    result = writer.apply(Changes(macs_del=macs))
    assert result.ok, result.errors
    assert sent == [50, 2]
    assert result.writes["mac_del"] == 50 and result.bridge_writes["bridge_del"] == 50
    assert [e["mac"] for e in fdb_json(seg) if "dst" in e] == []
    assert [e["ifname"] for e in bridge_entry(seg, macs[3].mac)] == ["port1"]


def test_a_vxlan_device_outside_a_bridge_gets_no_bridge_entry(ns: str) -> None:
    sh(ns, f"ip link add {VX} type vxlan id 100 dstport 4789 local {LOCAL_VTEP} nolearning")
    mac = remote_macs(1)[0]
    with DataplaneWriter(ns) as writer:
        put = writer.apply(Changes(macs_put=[mac]))
        assert put.ok and put.writes["mac_put"] == 1 and not put.bridge_writes, put
        (entry,) = fdb_entry(ns, mac.mac)
        assert entry["dst"] == str(mac.vtep) and "master" not in entry["flags"], entry
        gone = writer.apply(Changes(macs_del=[mac]))
        assert gone.ok and gone.writes["mac_del"] == 1, gone
    assert fdb_entry(ns, mac.mac) == []


def test_a_probe_replaces_our_entry_and_the_endpoint_answers_it(
    seg: str, writer: DataplaneWriter, ns_factory: Any
) -> None:
    """A MAC that moved in: our suppression entry of its address goes, the kernel
    probes the address at the MAC (a bridge without an address asks from 0.0.0.0)
    and the endpoint's answer leaves the kernel's own entry, REACHABLE, which is
    what the local learner takes up. An address nobody answers for fails."""
    endpoint = ns_factory("evte")
    sh(seg, f"ip link add p1 type veth peer name eth0 netns {endpoint}")
    sh(seg, f"ip link set p1 master {BR}")
    sh(seg, "ip link set p1 up")
    sh(seg, f"sysctl -qw net.ipv4.neigh.{BR}.retrans_time_ms=100")
    for cmd in ("ip link set eth0 address 02:5e:00:00:00:55", "ip addr add 10.100.0.5/24 dev eth0",
                "ip link set eth0 up"):  # fmt: skip
        sh(endpoint, cmd)
    ours = NeighEntry(BR, ip("10.100.0.5"), "02:5e:00:00:00:55")
    nobody = NeighEntry(BR, ip("10.100.0.6"), "02:5e:00:00:00:66")
    assert writer.apply(Changes(neighs_put=[ours, nobody])).ok
    assert {e["dst"]: e["state"] for e in neigh_json(seg)} == {
        "10.100.0.5": ["NOARP"], "10.100.0.6": ["NOARP"]}  # fmt: skip
    result = writer.apply(Changes(neighs_del=[ours, nobody], neighs_probe=[ours, nobody]))
    assert result.ok and result.writes["neigh_probe"] == 2, result

    def states() -> dict[str, tuple[str, ...]]:
        return {e["dst"]: tuple(e["state"]) for e in neigh_json(seg)}

    deadline = time.monotonic() + TIMEOUT
    while states().get("10.100.0.5") != ("REACHABLE",) or states().get("10.100.0.6") not in (
        None, ("FAILED",)
    ):
        assert time.monotonic() < deadline, states()
        time.sleep(0.05)
    (answered,) = [e for e in neigh_json(seg) if e["dst"] == "10.100.0.5"]
    assert answered["lladdr"] == "02:5e:00:00:00:55"
    # The kernel's entry now: not extern_learn, not ours (the dump leaves it alone).
    assert "extern_learn" not in answered.get("flags", []) and "protocol" not in answered
    assert dump(seg).owned.neighs == {}


def test_flood_entries_one_per_vtep(seg: str, writer: DataplaneWriter) -> None:
    floods = [FloodEntry(VX, v) for v in VTEPS[:4]]
    assert writer.apply(Changes(floods_add=floods)).writes["flood_add"] == 4
    zero = fdb_entry(seg, "00:00:00:00:00:00")
    assert sorted(e["dst"] for e in zero) == sorted(str(v) for v in VTEPS[:4])
    assert all(e["state"] == "permanent" and "extern_learn" in e["flags"] for e in zero)
    assert dump(seg).owned.floods == set(floods)

    assert writer.apply(Changes(floods_del=[floods[1]])).ok
    left = {e["dst"] for e in fdb_entry(seg, "00:00:00:00:00:00")}
    assert left == {str(v) for v in (VTEPS[0], VTEPS[2], VTEPS[3])}


def test_neighbours_visible_in_ip_neigh(seg: str, writer: DataplaneWriter) -> None:
    neighs = [
        NeighEntry(BR, ip("10.100.0.10"), "02:5e:00:00:00:0a"),
        NeighEntry(BR, ip("2001:db8:100::10"), "02:5e:00:00:00:0a"),
    ]
    assert writer.apply(Changes(neighs_put=neighs)).writes["neigh_put"] == 2
    shown = {e["dst"]: e for e in neigh_json(seg)}
    for n in neighs:
        e = shown[str(n.ip)]
        assert e["lladdr"] == n.mac
        assert "NOARP" in e["state"]
        assert "extern_learn" in e  # iproute2 6.1 prints it as a key with null
        assert str(e.get("protocol")) == str(RTPROT_EVPND)
    assert dump(seg).owned.neighs == {n.key: n for n in neighs}

    changed = NeighEntry(BR, ip("10.100.0.10"), "02:5e:00:00:00:0b")
    assert writer.apply(writes_between(state_of(neighs[1], changed), dump(seg).owned)).total == 1
    assert {e["dst"]: e["lladdr"] for e in neigh_json(seg)}["10.100.0.10"] == changed.mac


def test_failing_entries_are_reported_one_by_one_and_the_rest_lands(
    seg: str, writer: DataplaneWriter
) -> None:
    make_segment(seg, 200)
    good = remote_macs(3000)
    doomed = remote_macs(5, device="vxlan200")
    writer.apply(Changes(macs_put=doomed[:1]))  # caches vxlan200's ifindex
    netns.run(seg, ["ip", "link", "del", "vxlan200"])
    unknown = RemoteMac("nosuchdev", "02:5e:ff:00:00:01", VTEPS[0])
    v6_on_v4 = RemoteMac(VX, "02:5e:ff:00:00:02", IPv6Address("2001:db8::1"))
    bad_mac = RemoteMac(VX, "02:5e:ff:00:00", VTEPS[0])
    puts = [*good[:1000], unknown, *doomed, *good[1000:2000], v6_on_v4, bad_mac, *good[2000:]]

    result = writer.apply(Changes(macs_put=puts))

    assert result.writes["mac_put"] == 3000
    by_entry = {e.entry: e for e in result.errors}
    assert set(by_entry) == {unknown, v6_on_v4, bad_mac, *doomed}
    assert by_entry[unknown].errno == errno.ENODEV
    assert "nosuchdev" in by_entry[unknown].message
    assert all(by_entry[d].errno == errno.ENODEV for d in doomed)
    assert by_entry[v6_on_v4].errno == errno.EAFNOSUPPORT
    assert by_entry[bad_mac].errno == errno.EINVAL
    assert len(dump(seg).owned.macs) == 3000


def test_deleting_the_entries_of_a_deleted_device_is_done_not_an_error(
    seg: str, writer: DataplaneWriter
) -> None:
    # Entries go with their device. A delete refused as "no such device" used to stay
    # pending, and the reconciler sent it again and again (16 million times in a
    # minute under chaos C7) while the device's own deletion waited to be handled.
    make_segment(seg, 200)
    macs = remote_macs(50, device="vxlan200")
    floods = [FloodEntry("vxlan200", v) for v in VTEPS[:3]]
    assert writer.apply(Changes(macs_put=macs, floods_add=floods)).ok
    netns.run(seg, ["ip", "link", "del", "vxlan200"])
    known = writer.apply(Changes(macs_del=macs[:25], floods_del=floods))  # cached ifindex
    writer.refresh_links()
    unknown = writer.apply(Changes(macs_del=macs[25:]))  # the device no longer known
    assert known.errors == [] and unknown.errors == []


def test_dump_tells_admin_entries_from_ours(seg: str, writer: DataplaneWriter) -> None:
    sh(seg, f"bridge fdb add 02:aa:00:00:00:01 dev {VX} dst 203.0.113.1 self")
    sh(seg, f"bridge fdb add 02:aa:00:00:00:02 dev {VX} dst 203.0.113.2 self static")
    sh(seg, f"ip neigh add 10.100.0.99 lladdr 02:aa:00:00:00:99 dev {BR} nud permanent")
    writer.apply(Changes(macs_put=remote_macs(2)))
    tables = dump(seg, include_raw=True)
    assert set(tables.owned.macs) == {m.key for m in remote_macs(2)}
    assert {k[1] for k in tables.foreign_macs} == {"02:aa:00:00:00:01", "02:aa:00:00:00:02"}
    assert (BR, ip("10.100.0.99")) in tables.foreign_neighs
    assert not tables.owned.neighs
    assert tables.raw is not None and len(tables.raw) >= 5


# -- reconciler ---------------------------------------------------------------------


def desired_state() -> ForwardingState:
    return state_of(
        remote_macs(10_000, sticky_every=50),
        [FloodEntry(VX, v) for v in VTEPS[:3]],
        NeighEntry(BR, ip("10.100.0.10"), "02:5e:00:00:00:01"),
        NeighEntry(BR, ip("2001:db8:100::10"), "02:5e:00:00:00:01"),
    )


async def test_reconciler_writes_only_the_difference(seg: str) -> None:
    desired = desired_state()
    async with Reconciler(seg, desired, monitor=False) as first:
        assert first.stats.writes == desired.count()
        assert first.stats.errors == 0
    async with Reconciler(seg, desired, monitor=False) as again:
        assert again.stats.writes == 0
        assert again.stats.resyncs == 1

    # One change is one write; dropping everything removes only what is ours.
    sh(seg, f"bridge fdb add 02:aa:00:00:00:01 dev {VX} dst 203.0.113.1 self")
    async with Reconciler(seg, desired, monitor=False) as rec:
        moved = RemoteMac(VX, remote_macs(2)[1].mac, VTEPS[7])
        assert (await rec.update(put=[moved])).total == 1
        assert (await rec.update(remove=[moved])).writes["mac_del"] == 1
        result = await rec.set_desired(ForwardingState())
        assert result.total == desired.count() - 1
    tables = dump(seg)
    assert tables.owned.count() == 0
    assert {k[1] for k in tables.foreign_macs} == {"02:aa:00:00:00:01"}


async def test_reconciler_repairs_external_deletes(seg: str) -> None:
    desired = desired_state()
    victim = remote_macs(5)[4]
    async with Reconciler(seg, desired) as rec:
        sh(seg, f"bridge fdb del {victim.mac} dev {VX} self")
        sh(seg, f"bridge fdb del 00:00:00:00:00:00 dev {VX} dst {VTEPS[1]} self")
        sh(seg, f"ip neigh del 10.100.0.10 dev {BR}")
        await wait_for(lambda: rec.stats.repairs >= 3)
        assert fdb_entry(seg, victim.mac)[0]["dst"] == str(victim.vtep)
        zero = {e["dst"] for e in fdb_entry(seg, "00:00:00:00:00:00")}
        assert zero == {str(v) for v in VTEPS[:3]}
        assert "10.100.0.10" in {e["dst"] for e in neigh_json(seg)}

        # Something deleted that we no longer want stays deleted.
        await rec.update(remove=[victim])
        repairs = rec.stats.repairs
        await asyncio.sleep(0.3)
        assert rec.stats.repairs == repairs
        assert not fdb_entry(seg, victim.mac)
        assert rec.stats.errors == 0
    assert writes_between(rec.desired, dump(seg).owned).count() == 0


async def test_admin_entries_are_never_touched(seg: str) -> None:
    admin_mac = "02:aa:00:00:00:01"
    clash = remote_macs(3)[2]  # a desired key an admin pins elsewhere
    sh(seg, f"bridge fdb add {admin_mac} dev {VX} dst 203.0.113.1 self")
    sh(seg, f"bridge fdb add {clash.mac} dev {VX} dst 203.0.113.2 self static")
    sh(seg, f"ip neigh add 10.100.0.10 lladdr 02:aa:00:00:00:10 dev {BR} nud permanent")
    sh(seg, f"ip neigh add 10.100.0.99 lladdr 02:aa:00:00:00:99 dev {BR} nud permanent")
    desired = desired_state()
    async with Reconciler(seg, desired) as rec:
        assert rec.conflicts == 2  # the clashing MAC and 10.100.0.10
        assert fdb_entry(seg, clash.mac)[0]["dst"] == "203.0.113.2"
        # The admin overwrites one of ours without extern_learn: it is theirs now.
        taken = remote_macs(4)[3]
        sh(seg, f"bridge fdb replace {taken.mac} dev {VX} dst 203.0.113.3 self")
        await wait_for(lambda: rec.stats.takeovers == 1)
        # The admin removes the pinned MAC: the desired one takes its place.
        sh(seg, f"bridge fdb del {clash.mac} dev {VX} self")
        await wait_for(lambda: bool(fdb_entry(seg, clash.mac)))
        assert fdb_entry(seg, clash.mac)[0]["dst"] == str(clash.vtep)
        await rec.set_desired(ForwardingState())
    tables = dump(seg)
    assert tables.owned.count() == 0
    assert {k[1] for k in tables.foreign_macs} == {admin_mac, taken.mac}
    assert fdb_entry(seg, taken.mac)[0]["dst"] == "203.0.113.3"
    neighs = {e["dst"]: e["lladdr"] for e in neigh_json(seg)}
    assert neighs["10.100.0.10"] == "02:aa:00:00:00:10"
    assert neighs["10.100.0.99"] == "02:aa:00:00:00:99"


async def test_admin_flood_remotes_survive(seg: str) -> None:
    """An admin's `bridge fdb append 00:00:00:00:00:00` remote is never removed."""
    admin = "203.0.113.50"
    sh(seg, f"bridge fdb append 00:00:00:00:00:00 dev {VX} dst {admin} self")
    floods = [FloodEntry(VX, v) for v in VTEPS[:2]]
    async with Reconciler(seg, state_of(floods)) as rec:
        zero = {e["dst"] for e in fdb_entry(seg, "00:00:00:00:00:00")}
        assert zero == {admin, *(str(v) for v in VTEPS[:2])}
        # The entry was the admin's, so the kernel keeps it unflagged for all
        # remotes; this run remembers which ones it appended.
        await rec.set_desired(state_of(floods[:1]))
        zero = {e["dst"] for e in fdb_entry(seg, "00:00:00:00:00:00")}
        assert zero == {admin, str(VTEPS[0])}
    # After a restart the remaining remote cannot be told from the admin's:
    # it is left alone rather than risk deleting the admin's configuration.
    async with Reconciler(seg, ForwardingState()) as rec:
        assert rec.stats.writes == 0
    zero = {e["dst"] for e in fdb_entry(seg, "00:00:00:00:00:00")}
    assert zero == {admin, str(VTEPS[0])}


async def test_flood_entry_created_by_evpnd_is_owned_until_an_admin_appends(seg: str) -> None:
    floods = [FloodEntry(VX, v) for v in VTEPS[:2]]
    async with Reconciler(seg, state_of(floods), monitor=False):
        pass
    assert dump(seg).owned.floods == set(floods)
    sh(seg, f"bridge fdb append 00:00:00:00:00:00 dev {VX} dst 203.0.113.50 self")
    tables = dump(seg)
    assert not tables.owned.floods
    assert {f.vtep for f in tables.foreign_floods} == {*VTEPS[:2], ip("203.0.113.50")}


async def test_lost_events_trigger_a_resync(seg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny monitor buffer overflows on a burst of external deletes (ENOBUFS).
    monkeypatch.setattr(reconciler_mod, "MONITOR_RCVBUF", 4096)
    macs = remote_macs(3000)
    async with Reconciler(seg, state_of(macs)) as rec:
        batch = "\n".join(f"fdb del {m.mac} dev {VX} self" for m in macs[:2000])
        netns.run(seg, ["sh", "-c", f"printf '{batch}\\n' | bridge -batch -"])
        await wait_for(lambda: rec.stats.resyncs >= 2 and len(dump(seg).owned.macs) == 3000)
        assert rec.stats.errors == 0
    assert dump(seg).owned.macs == {m.key: m for m in macs}


async def test_recreated_device_gets_its_entries_back(seg: str) -> None:
    macs = remote_macs(500)
    async with Reconciler(seg, state_of(macs, FloodEntry(VX, VTEPS[0]))) as rec:
        netns.run(seg, ["ip", "link", "del", VX])
        await wait_for(lambda: not rec.installed.macs)
        await asyncio.to_thread(make_segment_vxlan_only, seg)  # pyroute2 runs its own loop
        await wait_for(lambda: len(dump(seg).owned.macs) == 500)
        assert dump(seg).owned.floods == {FloodEntry(VX, VTEPS[0])}


def make_segment_vxlan_only(ns: str) -> None:
    with IPRoute(netns=ns) as ipr:
        ipr.link(
            "add",
            ifname=VX,
            kind="vxlan",
            vxlan_id=100,
            vxlan_local=LOCAL_VTEP,
            vxlan_port=4789,
            vxlan_learning=0,
        )
        vx = ipr.link_lookup(ifname=VX)[0]
        ipr.link("set", index=vx, master=ipr.link_lookup(ifname=BR)[0])
        ipr.link("set", index=vx, state="up")


async def test_restart_holds_previous_entries_until_release(seg: str) -> None:
    """A restarting daemon keeps what the last run installed until BGP has converged."""
    before = state_of(remote_macs(50), [FloodEntry(VX, v) for v in VTEPS[:3]])
    async with Reconciler(seg, before, monitor=False):
        pass
    # The new run knows only part of it so far: nothing may be deleted yet.
    partial = state_of(remote_macs(50)[:10])
    async with Reconciler(seg, partial, monitor=False, hold_removals=True) as rec:
        assert rec.stats.writes == 0
        assert dump(seg).owned.count() == before.count()
        # A route arriving during the hold is written as usual.
        moved = RemoteMac(VX, remote_macs(50)[3].mac, VTEPS[9])
        assert (await rec.update(put=[moved])).total == 1
        result = await rec.release()
        assert result.writes["mac_del"] == 40
        assert result.writes["flood_del"] == 3
    owned = dump(seg).owned
    assert len(owned.macs) == 10
    assert owned.macs[moved.key].vtep == VTEPS[9]


async def test_an_old_deletion_event_does_not_undo_a_later_write(seg: str) -> None:
    """The kernel's report of our own delete, read only after the same entry was
    written again, is older than that write: the entry is still in the kernel, and
    stays ours to delete. Chaos F7 (a busy event loop under route churn) left remote
    MACs and neighbours behind that way: taken for deleted by someone else, then
    withdrawn, and never deleted."""
    mac = remote_macs(1)[0]
    flood = FloodEntry(VX, VTEPS[5])
    neigh = NeighEntry(BR, ip("10.100.0.10"), mac.mac)
    async with Reconciler(seg, state_of(mac, flood, neigh)) as rec:
        monitor = rec._monitor
        assert monitor is not None
        loop = asyncio.get_running_loop()
        # A busy event loop: nothing reads the monitor socket during these writes.
        loop.remove_reader(monitor.fileno())
        try:
            await rec.update(remove=[mac, flood, neigh])  # the kernel reports the deletions
            await rec.update(put=[mac, flood, neigh])  # the same entries written again
            assert len(fdb_entry(seg, mac.mac)) == 1
            # Withdrawn again before the reports are read: deleted once they are.
            rec.tracker.unwant_mac(mac.key)
            rec.tracker.unwant_flood(flood)
            rec.tracker.unwant_neigh(neigh.key)
        finally:
            loop.add_reader(monitor.fileno(), rec._on_readable)
        rec._on_readable()
        rec.kick()
        await wait_for(lambda: not fdb_entry(seg, mac.mac))
        await wait_for(lambda: not fdb_entry(seg, "00:00:00:00:00:00"))
        await wait_for(lambda: "10.100.0.10" not in {e["dst"] for e in neigh_json(seg)})
        assert rec.stats.repairs == 0
    assert dump(seg).owned.count() == 0


async def test_an_old_device_deletion_does_not_undo_writes_to_the_new_device(seg: str) -> None:
    """vxlan100 deleted and created again by someone else while the event loop is
    busy: the entries written to the new device after that are in the kernel, though
    the old device's deletion is read only later. Withdrawn meanwhile, they go."""
    mac = remote_macs(1)[0]
    async with Reconciler(seg, state_of(mac)) as rec:
        monitor = rec._monitor
        assert monitor is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(monitor.fileno())  # a busy event loop, as above
        try:
            netns.run(seg, ["ip", "link", "del", VX])
            await asyncio.to_thread(make_segment_vxlan_only, seg)
            moved = RemoteMac(VX, mac.mac, VTEPS[9])
            await rec.update(put=[moved])  # written to the new device
            assert fdb_entry(seg, mac.mac)[0]["dst"] == str(VTEPS[9])
            rec.tracker.unwant_mac(moved.key)  # withdrawn before the reports are read
        finally:
            loop.add_reader(monitor.fileno(), rec._on_readable)
        rec._on_readable()
        rec.kick()
        await wait_for(lambda: not fdb_entry(seg, mac.mac))
    assert dump(seg).owned.count() == 0
