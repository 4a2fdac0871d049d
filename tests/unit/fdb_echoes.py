"""Real FDB notifications, captured on Linux 6.18 from an RTNLGRP_NEIGH socket in a
namespace with br100 (ifindex 2), vxlan100 (3, a port of br100) and a veth p0
(5, a port of br100), while DataplaneWriter installed and removed a remote MAC
and `bridge fdb` added and deleted local ones."""

from __future__ import annotations

from evpnd.dataplane.netlink.wire import iter_messages

_TAIL = "1400030000000000000000000000000000000000"
_TAIL_DEL = "1400030000000000460000004600000000000000"
_HDR_NEW, _HDR_DEL = "1c000000000000000000000007000000", "1d000000000000000000000007000000"
# (mac 0a) DataplaneWriter's remote MAC: the vxlan entry (NTF_SELF|NTF_EXT_LEARNED,
# NDA_DST, no NDA_MASTER), then the bridge entry on the vxlan port (NTF_EXT_LEARNED,
# NDA_MASTER); removal echoes both in reverse.
SELF_NEW = bytes.fromhex(
    "44000000" + _HDR_NEW + "03000000020012010a00020002000000000a000008000100c0000205" + _TAIL
)
MASTER_NEW = bytes.fromhex(
    "4c000000" + _HDR_NEW + "03000000020010000a00020002000000000a0000080009000200000008000f"
    "0000000000" + _TAIL
)
MASTER_DEL = bytes.fromhex(
    "4c000000" + _HDR_DEL + "03000000020010000a00020002000000000a0000080009000200000008000f"
    "0000000000" + _TAIL_DEL
)
SELF_DEL = bytes.fromhex(
    "44000000" + _HDR_DEL + "03000000020012010a00020002000000000a000008000100c0000205" + _TAIL_DEL
)
# (mac 0b) `bridge fdb add 02:00:00:00:00:0b dev p0 master dynamic`, then evpnd
# installs it as remote: the bridge entry moves to the vxlan port (a MAC move).
LOCAL_NEW = bytes.fromhex(
    "4c000000" + _HDR_NEW + "05000000020000000a00020002000000000b0000080009000200000008000f"
    "0000000000" + _TAIL
)
MOVE_SELF = bytes.fromhex(
    "44000000" + _HDR_NEW + "03000000020012010a00020002000000000b000008000100c0000205" + _TAIL
)
MOVE_MASTER = bytes.fromhex(
    "4c000000" + _HDR_NEW + "03000000020010000a00020002000000000b0000080009000200000008000f"
    "0000000000" + "1400030000000000460000000000000000000000"
)
LOCAL_DEL = bytes.fromhex(
    "4c000000" + _HDR_DEL + "05000000020000000a00020002000000000b0000080009000200000008000f"
    "0000000000" + _TAIL_DEL
)
ECHOES = {"self_new": SELF_NEW, "master_new": MASTER_NEW, "master_del": MASTER_DEL,
          "self_del": SELF_DEL}  # fmt: skip


def one(data: bytes) -> tuple[int, int, int]:
    ((mtype, _f, _s, _p, a, b),) = iter_messages(data)
    return mtype, a, b
