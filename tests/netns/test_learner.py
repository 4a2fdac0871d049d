"""Local endpoint learning against a real kernel, in throwaway namespaces."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from evpnd import netns
from evpnd.dataplane.events import (
    LocalEvent,
    LocalIpLearned,
    LocalIpRemoved,
    LocalMacAdded,
    LocalMacRemoved,
    Resynced,
    WatchedVni,
)
from evpnd.dataplane.learner import LocalLearner
from evpnd.dataplane.state import RemoteMac
from evpnd.dataplane.tracker import Changes
from evpnd.dataplane.writer import DataplaneWriter

pytestmark = pytest.mark.netns

W100 = WatchedVni(100, "br100", "vxlan100")
EP_MAC = "02:00:5e:00:64:0a"
EP_IP = IPv4Address("10.100.0.10")
SVI_IP = "10.100.0.1"
TIMEOUT = 5.0


def sh(ns: str, *cmds: str) -> None:
    for cmd in cmds:
        netns.run(ns, cmd.split())


def make_segment(ns: str) -> None:
    """br100 (SVI 10.100.0.1/24) with vxlan100 sourced from 192.0.2.1 on an underlay bridge."""
    sh(
        ns,
        "ip link add br-ul type bridge",
        "ip addr add 192.0.2.1/32 dev br-ul",
        "ip link set br-ul up",
        "ip link add br100 type bridge",
        "ip link add vxlan100 type vxlan id 100 dstport 4789 local 192.0.2.1 nolearning",
        "ip link set vxlan100 master br100 addrgenmode none",
        "ip link set vxlan100 type bridge_slave learning off",
        "ip link set vxlan100 up",
        f"ip addr add {SVI_IP}/24 dev br100",
        "ip link set br100 up",
    )


def attach_endpoint(ns: str, ep: str, port: str = "vep1", mac: str = EP_MAC) -> None:
    sh(
        ns,
        f"ip link add {port} type veth peer name eth0 netns {ep}",
        f"ip link set {port} master br100",
        f"ip link set {port} up",
    )
    sh(
        ep,
        # No IPv6 on the endpoint: no DAD/RS chatter, so it is silent until pinged.
        "sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1",
        f"ip link set eth0 address {mac}",
        f"ip addr add {EP_IP}/24 dev eth0",
        "ip link set eth0 up",
    )


def ping_svi(ep: str) -> None:
    netns.run(ep, ["ping", "-c1", "-W2", SVI_IP])


async def collect_until(
    events: AsyncIterator[LocalEvent],
    done: Callable[[LocalEvent], bool],
    timeout: float = TIMEOUT,
) -> list[LocalEvent]:
    """Events up to and including the first for which `done` holds; fails on timeout."""
    seen: list[LocalEvent] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                seen.append(event)
                if done(event):
                    return seen
    except TimeoutError:
        pass
    raise AssertionError(f"expected event did not arrive within {timeout}s; saw {seen}")


def is_resynced(reason: str) -> Callable[[LocalEvent], bool]:
    return lambda e: isinstance(e, Resynced) and e.reason == reason


async def test_endpoint_traffic_is_learned_and_veth_delete_unlearns(
    ns: str, ns_factory: Callable[[], str]
) -> None:
    ep = ns_factory()
    make_segment(ns)
    async with LocalLearner([W100], netns=ns) as learner:
        events = learner.events()
        initial = await collect_until(events, is_resynced("initial"))
        assert initial == [Resynced("initial", 0, 0)]  # the bridge's own MACs are not endpoints

        attach_endpoint(ns, ep)
        ping_svi(ep)
        seen = await collect_until(events, lambda e: isinstance(e, LocalIpLearned))
        assert seen.count(LocalMacAdded(100, "br100", "vep1", EP_MAC)) == 1
        assert seen[-1] == LocalIpLearned(100, "br100", EP_MAC, EP_IP)
        assert seen.index(LocalMacAdded(100, "br100", "vep1", EP_MAC)) < len(seen) - 1

        sh(ns, "ip link del vep1")
        gone = await collect_until(events, lambda e: isinstance(e, LocalMacRemoved))
        assert gone == [
            LocalIpRemoved(100, "br100", EP_MAC, EP_IP),
            LocalMacRemoved(100, "br100", "vep1", EP_MAC),
        ]
        assert learner.snapshot().macs == {}
        assert learner.counters.parse_errors == 0


async def test_remote_extern_learn_and_permanent_entries_produce_no_event(
    ns: str, ns_factory: Callable[[], str]
) -> None:
    ep = ns_factory()
    make_segment(ns)
    attach_endpoint(ns, ep)
    async with LocalLearner([W100], netns=ns) as learner:
        events = learner.events()
        await collect_until(events, is_resynced("initial"))
        sh(
            ns,
            # Flood list and remote MACs on the vxlan device, as evpnd's writer installs them.
            "bridge fdb append 00:00:00:00:00:00 dev vxlan100 dst 192.0.2.9",
            "bridge fdb add 02:00:00:00:00:99 dev vxlan100 dst 192.0.2.9 self extern_learn",
            "bridge fdb add 02:00:00:00:00:98 dev vxlan100 master extern_learn",
            # extern_learn on a local port is still someone else's entry.
            "bridge fdb add 02:00:00:00:00:97 dev vep1 master extern_learn",
            # Permanent = the host's own address; changing the bridge MAC re-adds one.
            "bridge fdb add 02:00:00:00:00:96 dev vep1 master permanent",
            "ip link set br100 address 02:00:00:00:00:95",
            # A remote MAC/IP binding on the SVI.
            "ip neigh add 10.100.0.99 lladdr 02:00:00:00:00:98 dev br100 extern_learn nud noarp",
            # Sentinel: an admin-pinned endpoint, which IS local.
            "bridge fdb add 02:00:00:00:00:42 dev vep1 master static",
        )
        seen = await collect_until(events, lambda e: isinstance(e, LocalMacAdded))
        assert seen == [LocalMacAdded(100, "br100", "vep1", "02:00:00:00:00:42", static=True)]
        assert set(learner.snapshot().macs) == {(100, "02:00:00:00:00:42")}

        # A static entry moved to another local port is one LocalMacAdded with the new port.
        sh(
            ns,
            "ip link add vep2 type veth peer name vep2-peer",
            "ip link set vep2 master br100",
            "ip link set vep2 up",
            "bridge fdb replace 02:00:00:00:00:42 dev vep2 master static",
        )
        seen = await collect_until(events, lambda e: isinstance(e, LocalMacAdded))
        assert seen == [LocalMacAdded(100, "br100", "vep2", "02:00:00:00:00:42", static=True)]


async def test_echo_of_our_remote_macs_is_dropped_early_and_a_move_still_seen(ns: str) -> None:
    make_segment(ns)
    remote = [RemoteMac("vxlan100", f"02:00:00:00:01:{i:02x}", IPv4Address("192.0.2.9"))
              for i in range(50)]  # fmt: skip
    async with LocalLearner([W100], netns=ns) as learner:
        events = learner.events()
        await collect_until(events, is_resynced("initial"))
        before = learner.counters.messages
        with DataplaneWriter(ns) as writer:
            assert writer.apply(Changes(macs_put=remote)).ok
            # A local MAC (also the sentinel), then evpnd's writer takes it over (a MAC move).
            sh(ns, "ip link add vep9 type veth peer name vep9-peer",
               "ip link set vep9 master br100",
               "bridge fdb add 02:00:00:00:02:01 dev vep9 master static")
            seen = await collect_until(events, lambda e: isinstance(e, LocalMacAdded))
            assert seen == [LocalMacAdded(100, "br100", "vep9", "02:00:00:00:02:01", static=True)]
            # The vxlan entries' echoes never reached the socket (kernel filter);
            # the bridge entries' echoes were skipped before decoding.
            assert learner.counters.ignored == len(remote)
            assert learner.counters.messages - before < 2 * len(remote)
            moved = RemoteMac("vxlan100", "02:00:00:00:02:01", IPv4Address("192.0.2.9"))
            assert writer.apply(Changes(macs_put=[moved])).ok
            seen = await collect_until(events, lambda e: isinstance(e, LocalMacRemoved))
            assert seen == [LocalMacRemoved(100, "br100", "vep9", "02:00:00:00:02:01")]
        assert learner.counters.parse_errors == 0


async def test_restart_reports_existing_endpoint(ns: str, ns_factory: Callable[[], str]) -> None:
    ep = ns_factory()
    make_segment(ns)
    attach_endpoint(ns, ep)
    ping_svi(ep)
    for _ in range(2):  # a first start and a restart see the same thing
        async with LocalLearner([W100], netns=ns) as learner:
            initial = await collect_until(learner.events(), is_resynced("initial"))
            assert initial == [
                LocalMacAdded(100, "br100", "vep1", EP_MAC),
                LocalIpLearned(100, "br100", EP_MAC, EP_IP),
                Resynced("initial", 1, 1),
            ]


async def test_bridge_and_port_created_after_start_are_picked_up(
    ns: str, ns_factory: Callable[[], str]
) -> None:
    ep = ns_factory()
    async with LocalLearner([W100], netns=ns) as learner:
        events = learner.events()
        await collect_until(events, is_resynced("initial"))
        assert learner.resolved() == {100: (None, None)}
        make_segment(ns)
        attach_endpoint(ns, ep)
        ping_svi(ep)
        seen = await collect_until(events, lambda e: isinstance(e, LocalIpLearned))
        assert LocalMacAdded(100, "br100", "vep1", EP_MAC) in seen
        bridge_index, vxlan_index = learner.resolved()[100]
        assert bridge_index is not None and vxlan_index is not None


async def test_update_vnis_at_run_time(ns: str, ns_factory: Callable[[], str]) -> None:
    ep = ns_factory()
    make_segment(ns)
    attach_endpoint(ns, ep)
    ping_svi(ep)
    async with LocalLearner([], netns=ns) as learner:
        events = learner.events()
        assert await collect_until(events, is_resynced("initial")) == [Resynced("initial", 0, 0)]
        await learner.update_vnis([W100])
        assert await collect_until(events, is_resynced("config")) == [
            LocalMacAdded(100, "br100", "vep1", EP_MAC),
            LocalIpLearned(100, "br100", EP_MAC, EP_IP),
            Resynced("config", 1, 1),
        ]
        await learner.update_vnis([])
        assert await collect_until(events, is_resynced("config")) == [
            LocalIpRemoved(100, "br100", EP_MAC, EP_IP),
            LocalMacRemoved(100, "br100", "vep1", EP_MAC),
            Resynced("config", 0, 0),
        ]


def batch_file(tmp_path: Path, verb: str, count: int, name: str) -> Path:
    path = tmp_path / name
    lines = [
        f"fdb {verb} 02:aa:00:00:{i >> 8:02x}:{i & 0xFF:02x} dev vep1 master static"
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_overrun_resyncs_and_emits_only_the_differences(ns: str, tmp_path: Path) -> None:
    make_segment(ns)
    # A port whose peer stays down: static entries only, no traffic.
    sh(ns, "ip link add vep1 type veth peer name vep1-peer", "ip link set vep1 master br100")
    count = 2000
    adds = batch_file(tmp_path, "add", count, "add.batch")
    dels = batch_file(tmp_path, "del", count // 2, "del.batch")
    # A receive buffer of a few messages: any burst we do not read at once overruns it.
    async with LocalLearner([W100], netns=ns, rcvbuf=4096) as learner:
        events = learner.events()
        await collect_until(events, is_resynced("initial"))
        model: dict[str, str] = {}

        for batch, expected in ((adds, count), (dels, count - count // 2)):
            # Deliberately blocking: the event loop cannot read while the burst happens.
            subprocess.run(
                ["ip", "netns", "exec", ns, "bridge", "-batch", str(batch)],
                check=True,
                capture_output=True,
                timeout=30,
            )
            seen = await collect_until(events, is_resynced("overrun"), timeout=8)
            for event in seen:
                if isinstance(event, LocalMacAdded):
                    assert event.mac not in model or model[event.mac] != event.port
                    model[event.mac] = event.port
                elif isinstance(event, LocalMacRemoved):
                    del model[event.mac]
            assert seen[-1] == Resynced("overrun", expected, 0)
            assert set(model) == {mac for _vni, mac in learner.snapshot().macs}
            assert len(model) == expected
        assert learner.counters.overruns >= 2
        assert learner.counters.resyncs >= 3
        assert learner.counters.parse_errors == 0


async def take_until_quiet(
    events: AsyncIterator[LocalEvent], quiet: float = 1.0
) -> list[LocalEvent]:
    """Every event until none has come for `quiet` seconds."""
    seen: list[LocalEvent] = []
    iterator = aiter(events)
    while True:
        try:
            seen.append(await asyncio.wait_for(anext(iterator), quiet))
        except TimeoutError:
            return seen


@pytest.mark.parametrize("rcvbuf", [64 << 20, 4096], ids=["kernel-holds", "kernel-overruns"])
async def test_a_consumer_that_falls_behind_pauses_the_reader_and_loses_nothing(
    ns: str, tmp_path: Path, rcvbuf: int
) -> None:
    """The queue of events stays at its bound; what the kernel reports meanwhile waits in
    the socket, or (when even that overruns) comes back through a resync."""
    make_segment(ns)
    sh(ns, "ip link add vep1 type veth peer name vep1-peer", "ip link set vep1 master br100")
    count, bound = 2000, 50
    adds = batch_file(tmp_path, "add", count, "add.batch")
    async with LocalLearner([W100], netns=ns, rcvbuf=rcvbuf, queue_max=bound) as learner:
        events = learner.events()
        await collect_until(events, is_resynced("initial"))
        await asyncio.to_thread(
            subprocess.run, ["ip", "netns", "exec", ns, "bridge", "-batch", str(adds)],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        await asyncio.sleep(1.0)  # the reader's turn: it stops at the bound
        if rcvbuf == 4096:
            # The socket overran at once; a resync's events may pass the bound
            # (they are bounded by the table), then reading pauses.
            assert learner.pending() >= bound and learner.counters.queue_full >= 1
        else:
            assert bound <= learner.pending() <= bound + 4
            assert learner.counters.queue_full == 1
        seen = await take_until_quiet(events)
        macs: set[str] = set()
        for event in seen:
            if isinstance(event, LocalMacAdded):
                macs.add(event.mac)
            elif isinstance(event, LocalMacRemoved):
                macs.discard(event.mac)
        assert len(macs) == count
        assert macs == {mac for _vni, mac in learner.snapshot().macs}
        if rcvbuf == 4096:
            assert learner.counters.overruns >= 1 and seen[-1] == Resynced("overrun", count, 0)
        else:
            assert learner.counters.overruns == 0 and learner.counters.resyncs == 1
