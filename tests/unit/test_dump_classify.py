"""Ownership classification (dataplane/dump.py) of decoded kernel messages, without a kernel.

The reconciler classifies its dump and its events with the same netlink
decoder the learner uses; the FDB messages here are real ones (fdb_echoes.py:
br100 is ifindex 2, vxlan100 3, the veth p0 5).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from evpnd.dataplane.dump import Classified, Classifier
from evpnd.dataplane.netlink.linkindex import LinkIndex
from evpnd.dataplane.netlink.wire import (
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    NTF_EXT_LEARNED,
    NUD_NOARP,
    NUD_REACHABLE,
    RTPROT_EVPND,
    LinkMsg,
    NeighMsg,
    decode_neigh,
)
from evpnd.dataplane.state import NeighEntry, RemoteMac
from tests.unit.fdb_echoes import LOCAL_NEW, MASTER_NEW, SELF_DEL, SELF_NEW, one

MAC = bytes.fromhex("02000000000a")


def classifier() -> Classifier:
    return Classifier(
        LinkIndex(
            LinkMsg(False, AF_UNSPEC, index, name)
            for index, name in ((2, "br100"), (3, "vxlan100"), (5, "p0"))
        )
    )


def decoded(packet: bytes) -> NeighMsg:
    mtype, a, b = one(packet)
    msg = decode_neigh(mtype, packet, a, b)
    assert msg is not None
    return msg


def test_evpnds_remote_mac_is_owned() -> None:
    entry = RemoteMac("vxlan100", "02:00:00:00:00:0a", IPv4Address("192.0.2.5"))
    assert classifier()(decoded(SELF_NEW)) == Classified(entry, owned=True, static=True)
    # Its deletion names the same entry (the reconciler re-adds it while desired).
    assert classifier()(decoded(SELF_DEL)) == Classified(entry, owned=True, static=True)


def test_bridge_entries_are_never_the_reconcilers() -> None:
    assert classifier()(decoded(MASTER_NEW)) is None  # the companion on the vxlan port
    assert classifier()(decoded(LOCAL_NEW)) is None  # a local MAC


def test_unknown_device_is_left_out() -> None:
    assert Classifier(LinkIndex())(decoded(SELF_NEW)) is None


def test_neighbours_are_owned_only_with_extern_learn_and_evpnds_tag() -> None:
    ip = IPv4Address("10.100.0.20")
    ours = NeighMsg(
        False, AF_INET, 2, NUD_NOARP, NTF_EXT_LEARNED, MAC, ip.packed, protocol=RTPROT_EVPND
    )
    entry = NeighEntry("br100", ip, "02:00:00:00:00:0a")
    assert classifier()(ours) == Classified(entry, owned=True, static=True)
    admins = ours._replace(flags=0, protocol=None)
    assert classifier()(admins) == Classified(entry, owned=False, static=True)
    learned = ours._replace(state=NUD_REACHABLE, flags=0, protocol=None)
    assert classifier()(learned) == Classified(entry, owned=False, static=False)


def test_a_deleted_neighbour_is_keyed_without_its_mac() -> None:
    ip6 = IPv6Address("2001:db8::20")
    gone = NeighMsg(True, AF_INET6, 2, 0, 0, None, ip6.packed)
    assert classifier()(gone) is None
    assert classifier().neigh_key(gone) == ("br100", ip6)
