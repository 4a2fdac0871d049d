"""Classic BPF socket filters for RTNLGRP_NEIGH sockets.

Our own FDB writes echo back on every RTNLGRP_NEIGH socket (two notifications
per remote MAC). A filter drops the ones a reader has no use for in the
kernel, before they take receive-buffer space (an overrun costs a full dump)
or a recv() and a Python loop turn. Each filter has a byte-level twin in
wire.py that readers apply in Python as well (a filter may fail to attach).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from collections.abc import Sequence

from evpnd.dataplane.netlink.wire import (
    NDA_MASTER,
    NTF_EXT_LEARNED,
    NTF_SELF,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
)

SO_ATTACH_FILTER = 26
_SKF_AD_NLATTR = 0xFFFFF000 + 12  # SKF_AD_OFF + SKF_AD_NLATTR: A = offset of attr X from A, or 0
_BPF_LD_W_ABS, _BPF_LD_H_ABS, _BPF_LD_B_ABS = 0x20, 0x28, 0x30
_BPF_LD_IMM, _BPF_LDX_IMM = 0x00, 0x01
_BPF_JEQ_K, _BPF_JSET_K, _BPF_RET_K = 0x15, 0x45, 0x06
# Offsets in one message: nlmsghdr (16) then ndmsg (12), then attributes.
_NLMSG_TYPE, _NDM_FAMILY, _NDM_FLAGS, _NDM_ATTRS = 4, 16, 26, 28
BpfInsn = tuple[int, int, int, int]  # (code, jump-if-true, jump-if-false, k)
_ACCEPT, _DROP = "accept", "drop"


def _host_u16(value: int) -> int:
    """What a BPF_H|BPF_ABS load (big-endian) reads where the kernel wrote `value` (host order)."""
    return int.from_bytes(value.to_bytes(2, sys.byteorder), "big")


def _assemble(program: Sequence[tuple[int, str | int, str | int, int]]) -> list[BpfInsn]:
    """Jump targets "accept" / "drop" / 0 (next) to offsets; both returns appended."""
    n = len(program)
    where = {_ACCEPT: n, _DROP: n + 1}
    out: list[BpfInsn] = []
    for i, (code, jt, jf, k) in enumerate(program):
        jumps = [where[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf)]
        out.append((code, jumps[0], jumps[1], k))
    return [*out, (_BPF_RET_K, 0, 0, 0xFFFFFFFF), (_BPF_RET_K, 0, 0, 0)]


def _neigh_prelude(types: Sequence[int]) -> list[tuple[int, str | int, str | int, int]]:
    """Accept anything but RTM_{NEW,DEL}NEIGH of `types` on AF_BRIDGE; then A = ndm_flags."""
    code: list[tuple[int, str | int, str | int, int]] = [(_BPF_LD_H_ABS, 0, 0, _NLMSG_TYPE)]
    for i, mtype in enumerate(types):
        last = i == len(types) - 1
        code.append((_BPF_JEQ_K, len(types) - 1 - i, _ACCEPT if last else 0, _host_u16(mtype)))
    return [
        *code,
        (_BPF_LD_B_ABS, 0, 0, _NDM_FAMILY),
        (_BPF_JEQ_K, 0, _ACCEPT, int(socket.AF_BRIDGE)),
        (_BPF_LD_B_ABS, 0, 0, _NDM_FLAGS),
    ]


def learner_filter() -> list[BpfInsn]:
    """Drop AF_BRIDGE RTM_NEWNEIGH/RTM_DELNEIGH with NTF_SELF and no NDA_MASTER, and
    AF_BRIDGE RTM_DELNEIGH with NTF_EXT_LEARNED.

    The first are a device's own table (a vxlan device's remote entries, as
    evpnd writes them), never a bridge's. The second are the deletion of a
    remote (extern_learn) bridge entry: a local MAC's entry is never
    extern_learn, so such a deletion never ends a local MAC. The local learner
    makes no event of either (`wire.learner_skips`).
    """
    return _assemble([
        *_neigh_prelude((RTM_NEWNEIGH, RTM_DELNEIGH)),
        (_BPF_JSET_K, 0, 4, NTF_SELF),
        # NTF_SELF: a device entry unless the bridge is named (NDA_MASTER)
        (_BPF_LD_IMM, 0, 0, _NDM_ATTRS),
        (_BPF_LDX_IMM, 0, 0, NDA_MASTER),
        (_BPF_LD_W_ABS, 0, 0, _SKF_AD_NLATTR),
        (_BPF_JEQ_K, _DROP, 0, 0),
        # a deletion of an extern_learn entry
        (_BPF_LD_H_ABS, 0, 0, _NLMSG_TYPE),
        (_BPF_JEQ_K, 0, _ACCEPT, _host_u16(RTM_DELNEIGH)),
        (_BPF_LD_B_ABS, 0, 0, _NDM_FLAGS),
        (_BPF_JSET_K, _DROP, _ACCEPT, NTF_EXT_LEARNED),
    ])  # fmt: skip


def reconciler_filter() -> list[BpfInsn]:
    """Drop AF_BRIDGE RTM_NEWNEIGH/RTM_DELNEIGH without NTF_SELF, and AF_BRIDGE
    RTM_NEWNEIGH with NTF_EXT_LEARNED (what the reconciler skips, `wire.reconciler_skips`).

    The first are a bridge's own entries, which the reconciler never owns
    (evpnd's remote MACs are the vxlan device's entries; the companion bridge
    entry is written and deleted with them): half the echo of every write, and
    of every deletion. The second are remote MACs written by evpnd (or another
    control plane), never something to repair.
    """
    return _assemble([
        *_neigh_prelude((RTM_NEWNEIGH, RTM_DELNEIGH)),
        (_BPF_JSET_K, 0, _DROP, NTF_SELF),
        (_BPF_JSET_K, 0, _ACCEPT, NTF_EXT_LEARNED),
        (_BPF_LD_H_ABS, 0, 0, _NLMSG_TYPE),
        (_BPF_JEQ_K, _DROP, _ACCEPT, _host_u16(RTM_NEWNEIGH)),
    ])  # fmt: skip


def attach_filter(sock: socket.socket, program: Sequence[BpfInsn]) -> None:
    """SO_ATTACH_FILTER (the kernel copies the program during the call)."""
    code = b"".join(struct.pack("=HBBI", c, jt, jf, k) for c, jt, jf, k in program)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HP", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
