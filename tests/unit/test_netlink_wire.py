"""The netlink wire format (dataplane/netlink/wire.py): framing and decoders, without a kernel."""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    IFF_UP,
    NDA_DST,
    NDA_FLAGS_EXT,
    NDA_LLADDR,
    NDA_MASTER,
    NDA_PROTOCOL,
    NDA_VLAN,
    NTF_EXT_LEARNED,
    NTF_EXT_LOCKED,
    NTF_SELF,
    NTF_STICKY,
    NUD_NOARP,
    NUD_REACHABLE,
    NUD_STALE,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    LinkMsg,
    MalformedMessage,
    NeighMsg,
    decode,
    decode_link,
    decode_neigh,
    iter_messages,
)
from tests.unit.netlink_msgs import (
    BR,
    MAC_A,
    P1,
    ifinfomsg,
    ndmsg,
    nla,
    nlmsg,
    raw_mac,
)

NDA_CACHEINFO, NDA_VNI = 3, 7


def decode_all(data: bytes) -> list[object]:
    return [decode(t, data, a, b) for t, _f, _s, _p, a, b in iter_messages(data)]


def test_decodes_bridge_fdb_entry_and_link_in_one_datagram() -> None:
    data = nlmsg(
        RTM_NEWNEIGH,
        ndmsg(
            AF_BRIDGE,
            P1,
            NUD_NOARP,
            NTF_STICKY,
            nla(NDA_LLADDR, raw_mac(MAC_A)),
            nla(NDA_MASTER, struct.pack("=I", BR)),
            nla(NDA_VLAN, struct.pack("=H", 7)),
            nla(NDA_FLAGS_EXT, struct.pack("=I", NTF_EXT_LOCKED)),
            nla(99, b"unknown attributes are skipped"),
        ),
    ) + nlmsg(
        RTM_DELLINK,
        ifinfomsg(
            AF_UNSPEC,
            BR,
            IFF_UP,
            nla(3, b"br100\0"),
            nla(10, struct.pack("=I", 0)),
            nla(18, nla(1, b"bridge\0")),
        ),
    )
    fdb_msg, link_msg = decode_all(data)
    assert fdb_msg == NeighMsg(
        False,
        AF_BRIDGE,
        P1,
        NUD_NOARP,
        NTF_STICKY,
        raw_mac(MAC_A),
        None,
        BR,
        7,
        None,
        NTF_EXT_LOCKED,
    )
    assert link_msg == LinkMsg(True, AF_UNSPEC, BR, "br100", None, "bridge", IFF_UP)


def test_decodes_ipv6_neighbour_with_protocol() -> None:
    ip6 = IPv6Address("2001:db8::10")
    data = nlmsg(
        RTM_DELNEIGH,
        ndmsg(
            AF_INET6,
            BR,
            NUD_STALE,
            0,
            nla(NDA_DST, ip6.packed),
            nla(NDA_LLADDR, raw_mac(MAC_A)),
            nla(NDA_PROTOCOL, b"\xba"),
        ),
    )
    (msg,) = decode_all(data)
    assert isinstance(msg, NeighMsg)
    assert msg.deleted and msg.dst == ip6.packed and msg.protocol == 0xBA


def test_other_families_and_message_types_are_ignored_not_errors() -> None:
    data = nlmsg(RTM_NEWNEIGH, ndmsg(28, 1, 0, 0)) + nlmsg(24, b"\0" * 12)  # AF_MPLS, RTM_NEWROUTE
    assert decode_all(data) == [None, None]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\0" * 8, id="short-ndmsg"),
        pytest.param(ndmsg(AF_BRIDGE, P1, NUD_REACHABLE, 0), id="fdb-without-lladdr"),
        pytest.param(
            ndmsg(AF_BRIDGE, P1, NUD_REACHABLE, 0, nla(NDA_LLADDR, b"\1\2\3")), id="short-lladdr"
        ),
        pytest.param(ndmsg(AF_INET, BR, NUD_REACHABLE, 0, nla(NDA_DST, b"\1" * 16)), id="bad-dst"),
        pytest.param(ndmsg(AF_INET, BR, NUD_REACHABLE, 0), id="no-dst"),
        pytest.param(
            ndmsg(AF_BRIDGE, P1, 0, 0, nla(NDA_LLADDR, raw_mac(MAC_A)), nla(NDA_MASTER, b"\1\2")),
            id="short-u32",
        ),
        pytest.param(
            ndmsg(AF_BRIDGE, P1, 0, 0, struct.pack("=HH", 40, NDA_LLADDR) + b"\0" * 8),
            id="attribute-overruns-message",
        ),
        pytest.param(
            ndmsg(AF_BRIDGE, P1, 0, 0, struct.pack("=HH", 2, NDA_LLADDR)), id="attribute-len-2"
        ),
    ],
)
def test_malformed_neighbour_messages_raise_malformed(body: bytes) -> None:
    data = nlmsg(RTM_NEWNEIGH, body)
    ((mtype, _f, _s, _p, a, b),) = iter_messages(data)
    with pytest.raises(MalformedMessage):
        decode_neigh(mtype, data, a, b)


def test_malformed_link_messages_raise_malformed() -> None:
    for body in (b"\0" * 4, ifinfomsg(AF_UNSPEC, 3, 0, nla(10, struct.pack("=I", 1)))):
        data = nlmsg(RTM_NEWLINK, body)
        ((mtype, _f, _s, _p, a, b),) = iter_messages(data)
        with pytest.raises(MalformedMessage):
            decode_link(mtype, data, a, b)


def test_lying_netlink_header_is_malformed() -> None:
    good = nlmsg(RTM_NEWNEIGH, ndmsg(AF_BRIDGE, P1, 0, 0, nla(NDA_LLADDR, raw_mac(MAC_A))))
    bad = struct.pack("=IHHII", 4096, RTM_NEWNEIGH, 0, 0, 0) + b"\0" * 12
    seen = []
    with pytest.raises(MalformedMessage):
        for item in iter_messages(good + bad):
            seen.append(item)
    assert len(seen) == 1  # messages before the broken header are still delivered


@given(st.binary(max_size=256))
def test_decoder_never_raises_anything_but_malformed(blob: bytes) -> None:
    for mtype in (RTM_NEWNEIGH, RTM_NEWLINK):
        data = nlmsg(mtype, blob)
        with contextlib.suppress(MalformedMessage):
            decode_all(data)


@pytest.mark.parametrize("deleted", [False, True])
def test_vxlan_entry_layout_decodes_as_any_other_attribute_order(deleted: bool) -> None:
    # vxlan_fdb_info() writes NDA_LLADDR then an IPv4 NDA_DST first (decoded in
    # one unpack); the same entry with its attributes in another order takes
    # the generic loop, and both must agree.
    mtype = RTM_DELNEIGH if deleted else RTM_NEWNEIGH
    lladdr, dst = raw_mac(MAC_A), bytes([192, 0, 2, 5])
    rest = (nla(NDA_VNI, struct.pack("=I", 100)), nla(NDA_CACHEINFO, b"\0" * 16))
    flags = NTF_SELF | NTF_EXT_LEARNED
    kernel_order = nlmsg(
        mtype,
        ndmsg(
            AF_BRIDGE, 11, NUD_REACHABLE, flags, nla(NDA_LLADDR, lladdr), nla(NDA_DST, dst), *rest
        ),
    )
    other_order = nlmsg(
        mtype,
        ndmsg(
            AF_BRIDGE, 11, NUD_REACHABLE, flags, nla(NDA_DST, dst), nla(NDA_LLADDR, lladdr), *rest
        ),
    )
    (fast,) = decode_all(kernel_order)
    (generic,) = decode_all(other_order)
    assert fast == generic == NeighMsg(deleted, AF_BRIDGE, 11, NUD_REACHABLE, flags, lladdr, dst)
    assert type(fast.lladdr) is bytes and type(fast.dst) is bytes
