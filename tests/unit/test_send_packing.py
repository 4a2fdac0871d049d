"""Local routes go out packed: the launcher's hook on ExaBGP 5.0.15's adj-rib-out.

ExaBGP packs IPv4 unicast routes that share their attributes into one UPDATE
but sends every EVPN route in an UPDATE of its own; the launcher merges them
(`launcher._evpn_updates_grouped`). These tests run ExaBGP's own OutgoingRIB
and Update encoder and read the UPDATEs back with evpnd's decoder: they fail
when the hook stops taking effect (an ExaBGP upgrade that changes
`OutgoingRIB.updates`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address

import pytest
from exabgp.bgp.message import Action
from exabgp.rib.outgoing import OutgoingRIB

from evpnd.model import ENCAP_VXLAN, MacIpKey, MacIpRoute
from evpnd.speaker import commands, encode, launcher
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import RouteUpdate
from evpnd.speaker.wire import WireDecoder
from tests.data import exabgp_reference as ref

VTEP = ip_address("10.99.0.2")
PEER = ip_address("192.0.2.2")
HEADER = 19

commands.register()


@pytest.fixture
def grouped(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Restored after the test: the hook replaces a method of ExaBGP's class.
    monkeypatch.setattr(OutgoingRIB, "updates", OutgoingRIB.updates)
    launcher._evpn_updates_grouped()
    yield


def routes(count: int, seq: int = 0) -> list[MacIpRoute]:
    return [MacIpRoute(MacIpKey(f"{VTEP}:2", 0, f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"),
                       VTEP, 100, route_targets=("65000:100",), mobility_seq=seq,
                       encapsulation=ENCAP_VXLAN) for i in range(count)]  # fmt: skip


def sent(rib: OutgoingRIB, negotiated: object) -> tuple[int, int, list[RouteUpdate]]:
    """(Update objects, BGP messages, what a receiver decodes) of what the RIB sends."""
    updates = list(rib.updates(True))
    messages = [m for u in updates for m in u.messages(negotiated)]
    decoder = WireDecoder(Decoder().stats)
    received = [x for m in messages for x in decoder.decode_update(PEER, m[HEADER:])
                if isinstance(x, RouteUpdate)]  # fmt: skip
    return len(updates), len(messages), received


def test_routes_sharing_their_attributes_go_out_in_few_updates(grouped: None) -> None:
    session = ref.session()
    rib = OutgoingRIB(True, [ref.EVPN])
    announced = routes(300)
    for route in announced:
        rib.add_to_rib(commands.parse_change(encode.route_token(route), Action.ANNOUNCE))
    updates, messages, received = sent(rib, session.sending)
    assert updates == 1
    assert messages < 10  # 300 one-route UPDATEs without the hook
    assert [r for u in received for r in u.announced] == announced

    for route in announced:
        rib.del_from_rib(commands.parse_change(encode.route_token(route), Action.WITHDRAW))
    updates, messages, received = sent(rib, session.sending)
    assert updates == 1 and messages < 10
    assert [k for u in received for k in u.withdrawn] == [r.key for r in announced]


def test_routes_with_other_attributes_stay_apart(grouped: None) -> None:
    session = ref.session()
    rib = OutgoingRIB(True, [ref.EVPN])
    first, moved = routes(3), [replace(r, mobility_seq=7) for r in routes(6)[3:]]
    for route in [*first, *moved]:
        rib.add_to_rib(commands.parse_change(encode.route_token(route), Action.ANNOUNCE))
    updates, _, received = sent(rib, session.sending)
    assert updates == 2
    assert sorted(r.key.mac for u in received for r in u.announced) == sorted(
        r.key.mac for r in [*first, *moved])  # fmt: skip
    seqs = {r.key.mac: r.mobility_seq for u in received for r in u.announced}
    assert {seqs[r.key.mac] for r in moved} == {7} and {seqs[r.key.mac] for r in first} == {0}
