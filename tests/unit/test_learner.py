"""The learner's message path (evpnd/dataplane/learner.py), without a socket or a kernel."""

from __future__ import annotations

import struct

from evpnd.dataplane.learner import LocalLearner
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    NDA_LLADDR,
    NDA_MASTER,
    NUD_REACHABLE,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
)
from tests.unit.netlink_msgs import BR, MAC_A, P1, W100, ndmsg, nla, nlmsg, raw_mac, topology


def test_learner_counts_and_skips_malformed_messages() -> None:
    learner = LocalLearner([W100])  # not started: no socket, just the message path
    for msg in topology():
        learner._table.apply(msg)
    good = nlmsg(
        RTM_NEWNEIGH,
        ndmsg(
            AF_BRIDGE,
            P1,
            NUD_REACHABLE,
            0,
            nla(NDA_LLADDR, raw_mac(MAC_A)),
            nla(NDA_MASTER, struct.pack("=I", BR)),
        ),
    )
    no_lladdr = nlmsg(RTM_NEWNEIGH, ndmsg(AF_BRIDGE, P1, NUD_REACHABLE, 0))
    learner._handle(no_lladdr + good)  # one bad message does not cost its neighbours
    learner._handle(good + b"\1\2\3")  # stray bytes after a good message
    learner._handle(struct.pack("=IHHII", 999, RTM_NEWNEIGH, 0, 0, 0))  # lying header
    assert learner.counters.parse_errors == 3
    assert learner.counters.events == 1
    assert learner.pending() == 1
    assert list(learner.snapshot().macs) == [(100, MAC_A)]


def test_learner_counts_events_by_kind() -> None:
    learner = LocalLearner([W100])  # not started: no socket, just the message path
    for msg in topology():
        learner._table.apply(msg)
    mac = nlmsg(
        RTM_NEWNEIGH,
        ndmsg(AF_BRIDGE, P1, NUD_REACHABLE, 0, nla(NDA_LLADDR, raw_mac(MAC_A)),
              nla(NDA_MASTER, struct.pack("=I", BR))),
    )  # fmt: skip
    learner._handle(mac)
    learner._handle(mac)  # a refresh of the same entry is no new event
    learner._handle(nlmsg(RTM_DELNEIGH, mac[16:]))
    assert dict(learner.counters.by_event) == {"LocalMacAdded": 1, "LocalMacRemoved": 1}
    assert learner.counters.events == 2
