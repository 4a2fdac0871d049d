"""What a handing-over daemon writes for the next one: exact round trips, clear refusals,
private files."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from evpnd.model import ImetKey, ImetRoute, MacIpKey, MacIpRoute, PrefixKey, PrefixRoute
from evpnd.speaker import encode, handover

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
    loaded = handover.routes_from_json(handover.routes_to_json(original))
    assert loaded == original
    # What matters downstream: the next daemon withdraws with the same bytes.
    assert [encode.route_token(r) for r in loaded] == [encode.route_token(r) for r in original]


def test_record_round_trips() -> None:
    record = handover.SpeakerRecord(1234, "ab" * 16, "/run/evpnd/exabgp.conf")
    assert handover.record_from_json(handover.record_to_json(record)) == record


@pytest.mark.parametrize("text", [
    "", "[]", "{}", '{"format": 99, "routes": []}', '{"format": 1}',
    '{"format": 1, "routes": [{"_": "Nope"}]}',
    '{"format": 1, "routes": [{"_": "MacIpKey", "rd": "1:1", "etag": 0, "mac": "x"}]}',
    '{"format": 1, "routes": [{"_": "ImetRoute", "bogus": 1}]}',
    '{"format": 1, "routes": [{"_": "ImetRoute", "key": {"what": 1}}]}',
])  # fmt: skip
def test_unreadable_route_lists_are_refused(text: str) -> None:
    with pytest.raises(handover.HandoverError):
        handover.routes_from_json(text)


@pytest.mark.parametrize("text", ["", "{}", '{"format": 1, "pid": "x", "token": "t"}',
                                  '{"format": 2, "pid": 1, "token": "t", "config": "c"}'])
def test_unreadable_records_are_refused(text: str) -> None:
    with pytest.raises(handover.HandoverError):
        handover.record_from_json(text)


def test_the_files_are_private_replaced_whole_and_forgotten(tmp_path: Path) -> None:
    handover.write_announced(tmp_path, routes())
    handover.write_record(tmp_path, handover.SpeakerRecord(42, "cd" * 16, "/x/exabgp.conf"))
    for name in (handover.ANNOUNCED_NAME, handover.RECORD_NAME):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert handover.read_announced(tmp_path) == routes()
    assert handover.read_record(tmp_path).pid == 42
    handover.write_announced(tmp_path, routes()[:1])
    assert handover.read_announced(tmp_path) == routes()[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [handover.ANNOUNCED_NAME, handover.RECORD_NAME]
    )  # no temporary file left behind
    handover.forget(tmp_path, handover.ANNOUNCED_NAME, handover.RECORD_NAME)
    handover.forget(tmp_path, handover.ANNOUNCED_NAME)  # already gone: fine
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError):
        handover.read_announced(tmp_path)


async def test_the_announced_record_follows_what_exabgp_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handover, "RECORD_DELAY", 0.01)
    held: list[list | None] = [routes()[:2]]  # what the attached ExaBGP holds; None: detached
    record = handover.AnnouncedRecord(tmp_path, lambda: held[0])

    async def recorded(expected: list) -> None:
        for _ in range(500):
            with contextlib.suppress(FileNotFoundError):
                if handover.read_announced(tmp_path) == expected:
                    return
            await asyncio.sleep(0.01)
        raise AssertionError(f"announced.json never held {expected}")

    record.start()
    try:
        record.changed()
        await recorded(routes()[:2])
        held[0] = None  # nothing attached: the file is left as it was
        record.changed()
        await asyncio.sleep(0.1)
        assert handover.read_announced(tmp_path) == routes()[:2]
        held[0] = routes()
        record.changed()
        await recorded(routes())
    finally:
        await record.stop()
    record.forget()
    assert not (tmp_path / handover.ANNOUNCED_NAME).exists()
