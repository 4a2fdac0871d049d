"""The bridge-FDB companion of a remote MAC (what ARP suppression needs), without a kernel.

`bridge_fdb_request` builds the message; the netlink decoder reads it back,
and the local learner must treat the entry it creates as remote (never as a
local endpoint). The kernel side is in tests/netns/test_writer.py and
tests/netns/test_fabric_arp.py.
"""

from __future__ import annotations

import struct

from evpnd.dataplane.events import LocalMacAdded, LocalMacRemoved, WatchedVni
from evpnd.dataplane.localtable import LocalTable
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    AF_UNSPEC,
    IFF_UP,
    NDA_DST,
    NDA_LLADDR,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NTF_EXT_LEARNED,
    NTF_MASTER,
    NTF_SELF,
    NUD_REACHABLE,
    RTATTR,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    LinkMsg,
    NeighMsg,
    decode_neigh,
)
from evpnd.dataplane.writer import bridge_fdb_request

BR, VX, PORT = 10, 11, 12
MAC = "02:00:00:00:01:01"
RAW = bytes.fromhex(MAC.replace(":", ""))


def attributes(payload: bytes) -> dict[int, bytes]:
    found, pos = {}, 12  # after the ndmsg
    while pos + 4 <= len(payload):
        length, kind = RTATTR.unpack_from(payload, pos)
        found[kind] = payload[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return found


def test_put_is_an_extern_learn_master_entry_on_the_vxlan_port() -> None:
    mtype, flags, payload = bridge_fdb_request(True, VX, RAW)
    assert mtype == RTM_NEWNEIGH and flags == NLM_F_CREATE | NLM_F_REPLACE
    msg = decode_neigh(mtype, payload, 0, len(payload))
    assert msg is not None
    assert (msg.family, msg.ifindex, msg.lladdr) == (AF_BRIDGE, VX, RAW)
    assert msg.flags == NTF_MASTER | NTF_EXT_LEARNED  # not NTF_SELF: the bridge's table
    assert msg.state == NUD_REACHABLE
    assert NDA_DST not in attributes(payload)  # the bridge FDB has no remote VTEP
    assert attributes(payload)[NDA_LLADDR] == RAW


def test_delete_names_the_port_and_the_mac_only() -> None:
    mtype, flags, payload = bridge_fdb_request(False, VX, RAW)
    assert (mtype, flags) == (RTM_DELNEIGH, 0)
    msg = decode_neigh(mtype, payload, 0, len(payload))
    assert msg is not None and msg.deleted
    assert (msg.ifindex, msg.flags, msg.lladdr) == (VX, NTF_MASTER, RAW)
    assert not msg.flags & NTF_SELF and set(attributes(payload)) == {NDA_LLADDR}
    assert len(payload) == struct.calcsize("=BBHiHBB") + 12


def test_the_learner_sees_the_written_entry_as_remote_a_move_away() -> None:
    table = LocalTable([WatchedVni(100, "br100", "vxlan100")])
    for index, name, master, kind in ((BR, "br100", None, "bridge"),
                                      (VX, "vxlan100", BR, "vxlan"),
                                      (PORT, "eth2", BR, "veth")):  # fmt: skip
        table.apply(LinkMsg(False, AF_UNSPEC, index, name, master, kind, IFF_UP))
    local = NeighMsg(False, AF_BRIDGE, PORT, NUD_REACHABLE, NTF_MASTER, RAW, None, BR)
    assert [type(e) for e in table.apply(local)] == [LocalMacAdded]

    # The kernel's notification for evpnd's write (the bridge adds NDA_MASTER):
    # the same (mac, vlan) entry now sits behind the vxlan port, extern_learn.
    _, _, payload = bridge_fdb_request(True, VX, RAW)
    written = decode_neigh(RTM_NEWNEIGH, payload, 0, len(payload))
    assert written is not None
    notified = NeighMsg(False, written.family, written.ifindex, written.state, written.flags,
                        written.lladdr, None, BR)  # fmt: skip
    assert [type(e) for e in table.apply(notified)] == [LocalMacRemoved]
    assert table.apply(notified) == []  # and it never turns local again by itself
    assert table.snapshot().macs == {}
