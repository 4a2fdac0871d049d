"""What a handing-over daemon writes for the next one: exact round trips, clear refusals."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from evpnd.model import ImetKey, ImetRoute, MacIpKey, MacIpRoute, PrefixKey, PrefixRoute
from evpnd.speaker import encode, handoff

VTEP = ip_address("192.0.2.1")


def routes() -> list:
    return [
        MacIpRoute(MacIpKey("192.0.2.1:100", 0, "02:00:00:00:00:01"), VTEP, 100,
                   route_targets=("65000:100",), encapsulation=8),
        MacIpRoute(MacIpKey("192.0.2.1:100", 0, "02:00:00:00:00:02", ip_address("10.0.0.2")),
                   VTEP, 100, l3vni=5000, route_targets=("65000:100", "65000:5000"),
                   mobility_seq=3, sticky=True, router_mac="02:aa:bb:cc:dd:ee",
                   default_gateway=True),
        MacIpRoute(MacIpKey("192.0.2.1:100", 0, "02:00:00:00:00:03",
                            ip_address("2001:db8::3")), VTEP, 100),
        ImetRoute(ImetKey("192.0.2.1:100", 0, VTEP), VTEP, 100, tunnel=VTEP,
                  route_targets=("65000:100",), encapsulation=8),
        PrefixRoute(PrefixKey("192.0.2.1:5000", 0, ip_network("10.1.0.0/24")), VTEP, 5000,
                    gateway=ip_address("10.1.0.1"), router_mac="02:aa:bb:cc:dd:ee"),
    ]  # fmt: skip


def test_routes_round_trip_exactly() -> None:
    original = routes()
    loaded = handoff.routes_from_json(handoff.routes_to_json(original))
    assert loaded == original
    # What matters downstream: the next daemon withdraws with the same bytes.
    assert [encode.route_token(r) for r in loaded] == [encode.route_token(r) for r in original]


def test_record_round_trips() -> None:
    record = handoff.SpeakerRecord(1234, "ab" * 16, "/run/evpnd/exabgp.conf")
    assert handoff.record_from_json(handoff.record_to_json(record)) == record


@pytest.mark.parametrize("text", [
    "", "[]", "{}", '{"format": 99, "routes": []}', '{"format": 1}',
    '{"format": 1, "routes": [{"_": "Nope"}]}',
    '{"format": 1, "routes": [{"_": "MacIpKey", "rd": "1:1", "etag": 0, "mac": "x"}]}',
    '{"format": 1, "routes": [{"_": "ImetRoute", "bogus": 1}]}',
    '{"format": 1, "routes": [{"_": "ImetRoute", "key": {"what": 1}}]}',
])  # fmt: skip
def test_unreadable_route_lists_are_refused(text: str) -> None:
    with pytest.raises(handoff.HandoffError):
        handoff.routes_from_json(text)


@pytest.mark.parametrize("text", ["", "{}", '{"format": 1, "pid": "x", "token": "t"}',
                                  '{"format": 2, "pid": 1, "token": "t", "config": "c"}'])
def test_unreadable_records_are_refused(text: str) -> None:
    with pytest.raises(handoff.HandoffError):
        handoff.record_from_json(text)
