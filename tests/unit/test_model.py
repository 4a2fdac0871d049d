"""The address vocabulary every module shares (evpnd/model.py)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from evpnd.model import address_order, normalize_mac


def test_address_order_puts_ipv4_first_then_by_value() -> None:
    addresses = [ip_address(a) for a in ("2001:db8::1", "10.0.0.10", "::1", "10.0.0.9")]
    assert [str(a) for a in sorted(addresses, key=address_order)] == [
        "10.0.0.9",
        "10.0.0.10",
        "::1",
        "2001:db8::1",
    ]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("02:00:00:00:00:0A", "02:00:00:00:00:0a"),
        ("2-0-0-0-0-a", "02:00:00:00:00:0a"),
        ("02:00:00:00:00:0a", "02:00:00:00:00:0a"),
    ],
)
def test_normalize_mac(given: str, canonical: str) -> None:
    assert normalize_mac(given) == canonical


@pytest.mark.parametrize("bad", ["", "02:00:00:00:00", "02:00:00:00:00:0g", "002:00:00:00:00:0a"])
def test_normalize_mac_refuses_anything_else(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid MAC address"):
        normalize_mac(bad)
