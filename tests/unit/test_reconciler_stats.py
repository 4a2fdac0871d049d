"""Reconciler bookkeeping without a kernel: what a write result does to the stats, and
what link events do to the entries the kernel refused."""

from __future__ import annotations

import asyncio
import errno
import json
from collections import Counter
from dataclasses import asdict
from ipaddress import IPv4Address, ip_address
from typing import Any

from evpnd.dataplane import reconciler as reconciler_mod
from evpnd.dataplane.netlink.wire import (
    AF_UNSPEC,
    IFF_UP,
    IFLA_IFNAME,
    RTM_NEWLINK,
    LinkMsg,
    iter_messages,
)
from evpnd.dataplane.recentputs import RecentPuts
from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import FloodEntry, NeighEntry, RemoteMac
from evpnd.dataplane.tracker import Changes
from evpnd.dataplane.writer import EntryError, WriteResult
from tests.unit.netlink_msgs import ifinfomsg, nla, nlmsg

VTEP = IPv4Address("10.0.0.2")
MAC_A = RemoteMac("vxlan100", "02:00:00:00:00:0a", VTEP)
MAC_B = RemoteMac("vxlan100", "02:00:00:00:00:0b", VTEP)
FLOOD = FloodEntry("vxlan100", VTEP)
NEIGH = NeighEntry("br100", IPv4Address("10.100.0.10"), "02:00:00:00:00:0a")


def test_writes_and_refusals_are_counted_by_op_and_errno() -> None:
    rec = Reconciler(monitor=False)  # never started: no socket
    changes = Changes(macs_put=[MAC_A, MAC_B], floods_add=[FLOOD], neighs_put=[NEIGH])
    result = WriteResult(
        writes=Counter({"mac_put": 1, "flood_add": 1}),
        errors=[
            EntryError("mac_put", MAC_B, errno.ENODEV, "unknown device"),
            EntryError("neigh_put", NEIGH, errno.EINVAL, "Invalid argument"),
        ],
    )
    rec._record(changes, result)
    assert rec.stats.writes == 2 and rec.stats.errors == 2
    assert rec.stats.writes_by_op == {"mac_put": 1, "flood_add": 1}
    assert rec.stats.errors_by_kind == {"mac_put:ENODEV": 1, "neigh_put:EINVAL": 1}
    assert set(rec.installed.macs.values()) == {MAC_A}

    rec._record(Changes(macs_del=[MAC_A]), WriteResult(writes=Counter({"mac_del": 1})))
    assert rec.stats.writes_by_op == {"mac_put": 1, "flood_add": 1, "mac_del": 1}
    assert rec.stats.writes == 3
    unknown = WriteResult(errors=[EntryError("flood_add", FLOOD, 9999, "strange")])
    rec._record(Changes(floods_add=[FLOOD]), unknown)
    assert rec.stats.errors_by_kind["flood_add:9999"] == 1
    # Counters stay JSON-friendly for `show` (string or int keys only).
    json.dumps(asdict(rec.stats))


def test_a_device_the_writer_found_first_is_still_new_to_the_reconciler() -> None:
    # Chaos C7: vxlan100 deleted and re-created under route churn. A write naming
    # vxlan100 before the reconciler had read the RTM_NEWLINK made the writer re-read
    # the links; sharing its index, the reconciler then took the event for a known
    # device and never wrote again the entries refused while it was gone.
    rec = Reconciler(monitor=False)  # never started: its writer alone, nothing written
    rec._writer = rec._open_writer()
    try:
        rec.tracker.want(MAC_A)
        refused = EntryError("mac_put", MAC_A, errno.ENODEV, "unknown device 'vxlan100'")
        rec._record(Changes(macs_put=[MAC_A]), WriteResult(errors=[refused]))
        assert rec.pending == 0  # parked until the device is back
        back = LinkMsg(False, AF_UNSPEC, 4242, "vxlan100", None, "vxlan", IFF_UP)
        rec._writer.links.put(back)  # what the writer's own re-read found
        data = nlmsg(RTM_NEWLINK, ifinfomsg(AF_UNSPEC, 4242, IFF_UP,
                                            nla(IFLA_IFNAME, b"vxlan100\0")))  # fmt: skip
        events = [(mtype, data, start, end, 0) for mtype, *_, start, end in iter_messages(data)]
        assert rec._interpret(events) is False
        assert rec.pending == 1
    finally:
        rec._writer.close()


async def test_a_burst_of_kernel_events_is_interpreted_in_parts_with_turns_between() -> None:
    # A 100k-route withdrawal echoes 200k deletions: interpreted in one go they held
    # the event loop for up to a second (chaos C3 at full counts).
    rec = Reconciler(monitor=False)
    parts: list[int] = []
    turns: list[int] = []

    def interpret(events: list[Any]) -> bool:
        parts.append(len(events))
        return False

    async def write_pending() -> WriteResult:
        return WriteResult()

    async def other_task() -> None:
        while len(parts) < 3:
            turns.append(len(parts))
            await asyncio.sleep(0)

    rec._interpret = interpret  # type: ignore[method-assign]
    rec._write_pending = write_pending  # type: ignore[method-assign]
    rec._started = True
    rec._pending = [(0, b"", 0, 0, 0)] * (2 * reconciler_mod.DRAIN_PART + 7)  # type: ignore[list-item]
    other = asyncio.create_task(other_task())
    await rec._drain_locked()
    await other
    assert parts == [reconciler_mod.DRAIN_PART, reconciler_mod.DRAIN_PART, 7]
    assert {1, 2} <= set(turns)  # the other task ran between the parts


def test_recent_puts_tell_an_old_deletion_report_from_a_new_one() -> None:
    puts = RecentPuts()
    neigh = NeighEntry("br100", ip_address("10.100.0.10"), MAC_A.mac)
    puts.add(1, Changes(macs_put=[MAC_A]))
    puts.add(2, Changes(macs_del=[MAC_A]))  # no put: nothing to remember
    puts.add(3, Changes(neighs_put=[neigh]))
    assert puts.put_after(0, "mac", MAC_A.key)  # read before write 1 ended
    assert not puts.put_after(1, "mac", MAC_A.key)  # read after it
    assert puts.put_after(2, "neigh", neigh.key)
    assert not puts.put_after(0, "flood", MAC_A.key)
    puts.forget_through(1)  # no report from before write 1's end is left
    assert not puts.put_after(0, "mac", MAC_A.key)
    assert puts.put_after(0, "neigh", neigh.key)
