"""The echo of evpnd's own FDB writes is dropped before decoding (learner,
reconciler) or in the kernel (socket filters), and nothing either needs is.

The messages are real, captured on Linux 6.18 (see tests/unit/fdb_echoes.py).
"""

from __future__ import annotations

import struct

import pytest

from evpnd.dataplane.events import LocalMacAdded, LocalMacRemoved, WatchedVni
from evpnd.dataplane.learner import LocalLearner
from evpnd.dataplane.localtable import LocalTable
from evpnd.dataplane.netlink.bpf import BpfInsn, learner_filter, reconciler_filter
from evpnd.dataplane.netlink.wire import (
    AF_UNSPEC,
    IFF_UP,
    LinkMsg,
    decode,
    device_fdb_entry,
    fdb_glance,
    learner_skips,
    reconciler_skips,
)
from tests.unit.fdb_echoes import (
    ECHOES,
    LOCAL_DEL,
    LOCAL_NEW,
    MASTER_DEL,
    MASTER_NEW,
    MOVE_MASTER,
    MOVE_SELF,
    SELF_DEL,
    SELF_NEW,
    one,
)

BR, VX, P0 = 2, 3, 5
W100 = WatchedVni(100, "br100", "vxlan100")


def table() -> LocalTable:
    t = LocalTable([W100])
    t.apply(LinkMsg(False, AF_UNSPEC, BR, "br100", None, "bridge", IFF_UP))
    t.apply(LinkMsg(False, AF_UNSPEC, VX, "vxlan100", BR, "vxlan", IFF_UP))
    t.apply(LinkMsg(False, AF_UNSPEC, P0, "p0", BR, "veth", IFF_UP))
    return t


def ignores(t: LocalTable, data: bytes) -> bool:
    mtype, a, b = one(data)
    return t.ignores(mtype, data, a, b)


def events_of(t: LocalTable, data: bytes) -> list[object]:
    mtype, a, b = one(data)
    msg = decode(mtype, data, a, b)
    assert msg is not None
    return list(t.apply(msg))


@pytest.mark.parametrize("name", sorted(ECHOES))
def test_echo_of_our_writes_is_ignored_and_would_have_made_no_event(name: str) -> None:
    data = ECHOES[name]
    t = table()
    assert ignores(t, data)
    assert events_of(t, data) == []  # what the full decoder would have concluded


def test_self_entries_are_device_entries_and_master_entries_are_not() -> None:
    for data, device in ((SELF_NEW, True), (SELF_DEL, True), (MASTER_NEW, False),
                         (LOCAL_NEW, False)):  # fmt: skip
        _, a, b = one(data)
        glance = fdb_glance(data, a, b)
        assert glance is not None and device_fdb_entry(glance) is device


def test_local_macs_are_not_ignored() -> None:
    t = table()
    assert not ignores(t, LOCAL_NEW)
    assert events_of(t, LOCAL_NEW)[0] == LocalMacAdded(100, "br100", "p0", "02:00:00:00:00:0b")
    assert not ignores(t, LOCAL_DEL)
    assert [type(e) for e in events_of(t, LOCAL_DEL)] == [LocalMacRemoved]


def test_remote_entry_taking_over_a_local_mac_is_not_ignored() -> None:
    t = table()
    events_of(t, LOCAL_NEW)
    assert ignores(t, MOVE_SELF)  # the vxlan device's own entry: never local
    assert not ignores(t, MOVE_MASTER)  # the MAC is local: this moves it away
    assert [type(e) for e in events_of(t, MOVE_MASTER)] == [LocalMacRemoved]
    # Once gone, the next echo for that MAC is ignored again.
    assert ignores(t, MOVE_MASTER)


def test_a_mac_local_in_two_vnis_stays_known_until_both_lose_it() -> None:
    w200 = WatchedVni(200, "br200", "vxlan200")
    t = LocalTable([W100, w200])
    for msg in (LinkMsg(False, AF_UNSPEC, BR, "br100", None, "bridge", IFF_UP),
                LinkMsg(False, AF_UNSPEC, P0, "p0", BR, "veth", IFF_UP),
                LinkMsg(False, AF_UNSPEC, 7, "br200", None, "bridge", IFF_UP),
                LinkMsg(False, AF_UNSPEC, 8, "p1", 7, "veth", IFF_UP)):  # fmt: skip
        t.apply(msg)
    events_of(t, LOCAL_NEW)
    other = bytearray(LOCAL_NEW)
    other[20:24] = struct.pack("=i", 8)  # ifindex p1
    other[44:48] = struct.pack("=I", 7)  # NDA_MASTER br200
    events_of(t, bytes(other))
    assert not ignores(t, MOVE_MASTER)
    events_of(t, LOCAL_DEL)
    assert not ignores(t, MOVE_MASTER)  # still local in VNI 200
    gone = bytearray(LOCAL_DEL)
    gone[20:24] = struct.pack("=i", 8)
    gone[44:48] = struct.pack("=I", 7)
    events_of(t, bytes(gone))
    assert ignores(t, MOVE_MASTER)


def test_learner_counts_ignored_echoes_and_still_learns() -> None:
    learner = LocalLearner([W100])
    learner._table = table()
    learner._handle(SELF_NEW + MASTER_NEW + LOCAL_NEW + MOVE_SELF + MOVE_MASTER)
    assert learner.counters.messages == 5
    assert learner.counters.ignored == 3  # SELF_NEW, MASTER_NEW, MOVE_SELF
    kinds = [type(learner._queue.get_nowait()) for _ in range(learner._queue.qsize())]
    assert kinds == [LocalMacAdded, LocalMacRemoved]


# --- the socket filters, run by a minimal classic-BPF interpreter (the opcodes
# the programs use, with the kernel's SKF_AD_NLATTR: nla_find from offset A).


def run_bpf(program: list[BpfInsn], packet: bytes) -> int:
    a = x = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x06:  # ret k
            return k
        if code == 0x00:  # ld #k
            a = k
        elif code == 0x01:  # ldx #k
            x = k
        elif code == 0x20 and k == 0xFFFFF000 + 12:  # ld nlattr
            a = nla_find(packet, a, x)
        elif code in (0x20, 0x28, 0x30):  # ld[w|h|b] [k], big-endian
            size = {0x20: 4, 0x28: 2, 0x30: 1}[code]
            if k + size > len(packet):
                return 0  # the kernel aborts: dropped
            a = int.from_bytes(packet[k : k + size], "big")
        elif code == 0x15:  # jeq #k
            pc += jt if a == k else jf
        elif code == 0x45:  # jset #k
            pc += jt if a & k else jf
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")


def nla_find(packet: bytes, off: int, atype: int) -> int:
    while off + 4 <= len(packet):
        length, t = struct.unpack_from("=HH", packet, off)
        if length < 4 or off + length > len(packet):
            return 0
        if t & 0x3FFF == atype:
            return off
        off += (length + 3) & ~3
    return 0


NEWLINK = struct.pack("=IHHII", 32, 16, 0, 0, 0) + struct.pack("=BxHiII", 0, 1, 2, 1, 0)


@pytest.mark.parametrize(
    ("packet", "kept"),
    [(SELF_NEW, False), (SELF_DEL, False), (MOVE_SELF, False), (MASTER_NEW, True),
     (MASTER_DEL, False), (LOCAL_NEW, True), (LOCAL_DEL, True), (MOVE_MASTER, True),
     (NEWLINK, True)],
)  # fmt: skip
def test_learner_filter_drops_device_entries_and_deleted_remote_entries(
    packet: bytes, kept: bool
) -> None:
    # MASTER_DEL: our remote MAC's bridge entry going away ends no local MAC;
    # LOCAL_DEL (no extern_learn) does, and MOVE_MASTER takes a local MAC away.
    assert (run_bpf(learner_filter(), packet) != 0) is kept


@pytest.mark.parametrize(
    ("packet", "kept"),
    [(SELF_NEW, False), (MASTER_NEW, False), (MOVE_MASTER, False), (MOVE_SELF, False),
     (SELF_DEL, True), (MASTER_DEL, False), (LOCAL_NEW, False), (LOCAL_DEL, False),
     (NEWLINK, True)],
)  # fmt: skip
def test_reconciler_filter_keeps_only_vxlan_entry_deletions_and_others_writes(
    packet: bytes, kept: bool
) -> None:
    # SELF_DEL: a remote MAC of ours deleted (by us, or by someone to repair);
    # bridge entries (MASTER_*, LOCAL_*) are never the reconciler's.
    assert (run_bpf(reconciler_filter(), packet) != 0) is kept


ALL = [SELF_NEW, MASTER_NEW, MASTER_DEL, SELF_DEL, LOCAL_NEW, MOVE_SELF, MOVE_MASTER, LOCAL_DEL]


@pytest.mark.parametrize("packet", ALL)
def test_each_filter_has_a_byte_level_twin_that_agrees(packet: bytes) -> None:
    # Where a filter cannot be attached, the reader's Python check must skip
    # exactly what the filter would have dropped.
    mtype, a, b = one(packet)
    glance = fdb_glance(packet, a, b)
    assert glance is not None
    assert learner_skips(mtype, glance) is (run_bpf(learner_filter(), packet) == 0)
    assert reconciler_skips(mtype, packet, a, b) is (run_bpf(reconciler_filter(), packet) == 0)
    link_type, start, end = one(NEWLINK)
    assert not reconciler_skips(link_type, NEWLINK, start, end)
