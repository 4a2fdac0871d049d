"""Reconciler bookkeeping without a kernel: what a write result does to the stats."""

from __future__ import annotations

import errno
import json
from collections import Counter
from dataclasses import asdict
from ipaddress import IPv4Address

from evpnd.dataplane.reconciler import Reconciler
from evpnd.dataplane.state import FloodEntry, NeighEntry, RemoteMac
from evpnd.dataplane.tracker import Changes
from evpnd.dataplane.writer import EntryError, WriteResult

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
