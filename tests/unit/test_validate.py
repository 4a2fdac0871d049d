"""The shared validators (evpnd/validate.py): ASCII digits, whole strings, canonical values."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evpnd import validate

ARABIC_100 = "\u0661\u0660\u0660"  # Arabic-Indic 100: str.isdigit() and int() take it


# ------------------------------------------------------------ numbers


@pytest.mark.parametrize("text", ["0", "7", "0100", "16777215"])
def test_decimal_takes_ascii_digits(text: str) -> None:
    assert validate.decimal(text) == int(text)


@pytest.mark.parametrize("text", ["", " 1", "1 ", "+1", "-1", "1_0", "1\n", ARABIC_100, "\u00b2",
                                  "\uff11", "0x10", "1.0"])
def test_decimal_refuses_what_int_would_take(text: str) -> None:
    with pytest.raises(ValueError, match="not a decimal number"):
        validate.decimal(text, "VNI")


def test_vni_range_and_type() -> None:
    assert validate.vni(1) == 1 and validate.vni(validate.VNI_MAX) == validate.VNI_MAX
    for bad in (0, validate.VNI_MAX + 1, -1):
        with pytest.raises(ValueError, match=r"outside 1\.\.16777215"):
            validate.vni(bad)
    for bad in (True, "100", 1.0):
        with pytest.raises(ValueError, match="not an integer"):
            validate.vni(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------ route targets and RDs


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("65000:100", "65000:100"), ("0:0", "0:0"), ("65535:4294967295", "65535:4294967295"),
     ("4294967295:65535", "4294967295:65535"), ("192.0.2.1:65535", "192.0.2.1:65535"),
     ("065000:0100", "65000:100")],
)  # fmt: skip
def test_route_target_and_rd_forms(text: str, canonical: str) -> None:
    assert validate.route_target(text) == canonical
    assert validate.route_distinguisher(text) == canonical


@pytest.mark.parametrize(
    ("text", "fragment"),
    [(f"65001:{ARABIC_100}", "ASCII digits"), ("65001:100\n", "ASCII digits"),
     ("\n65001:100", "ASCII digits"), (" 65001:100", "ASCII digits"), ("65001:+1", "ASCII"),
     ("65001:", "ASCII"), (":1", "ASCII"), ("x:y", "ASCII"), ("1:2:3", "ASCII"),
     ("65536:65536", "out of range"), ("4294967296:1", "out of range"),
     ("192.0.2.1:65536", "NN <= 65535"), ("192.0.2.300:1", "not an IPv4 address"),
     ("192.0.02.1:1", "not an IPv4 address"), ("1.2.3:4", "ASCII"), ("", "ASCII")],
)  # fmt: skip
def test_route_target_refusals(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        validate.route_target(text)
    assert "route target" in str(caught.value)
    with pytest.raises(ValueError, match="route distinguisher"):
        validate.route_distinguisher(text)


def test_admin_number_types() -> None:
    assert validate.admin_number("192.0.2.1:7", "x") == (IPv4Address("192.0.2.1"), 7)
    assert validate.admin_number("100000:7", "x") == (100000, 7)


# ------------------------------------------------------------ MACs


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("02:00:00:00:00:0a", "02:00:00:00:00:0a"), ("02:00:00:00:00:0A", "02:00:00:00:00:0a"),
     ("02-00-00-00-00-0a", "02:00:00:00:00:0a"), ("2:0:0:0:0:a", "02:00:00:00:00:0a")],
)  # fmt: skip
def test_mac_canonical_form(text: str, canonical: str) -> None:
    assert validate.mac(text) == canonical


@pytest.mark.parametrize(
    "text",
    ["", "02:00:00:00:00", "02:00:00:00:00:0g", "002:00:00:00:00:0a", "02:00:00:00:00:0a\n",
     "02:00:00:00:00: a", "02:00:00:00:00:+a", "\u0662:0:0:0:0:a", "02:00-00:00:00:0a",
     "0200.0000.000a"],
)  # fmt: skip
def test_mac_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="invalid MAC address"):
        validate.mac(text)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("00:00:00:00:00:00", "all-zero"), (bytes(6), "all-zero"),
     ("ff:ff:ff:ff:ff:ff", "broadcast"), (b"\xff" * 6, "broadcast"),
     ("01:00:5e:00:00:01", "multicast"), ("33:33:00:00:00:01", "multicast"),
     (b"\x01\x80\xc2\x00\x00\x0e", "multicast")],
)  # fmt: skip
def test_unicast_mac_refuses_group_and_zero(value: str | bytes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        validate.unicast_mac(value)
    if isinstance(value, bytes):
        assert not validate.is_unicast_mac(value)


@given(st.binary(min_size=6, max_size=6))
def test_the_fast_predicate_agrees_with_the_validator(packed: bytes) -> None:
    try:
        validate.unicast_mac(packed)
    except ValueError:
        assert not validate.is_unicast_mac(packed)
    else:
        assert validate.is_unicast_mac(packed)
        assert validate.unicast_mac(packed.hex(":").upper()) == packed.hex(":")


# ------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    ("address", "fragment"),
    [("0.0.0.0", "unspecified"), ("::", "unspecified"), ("127.0.0.1", "loopback"),
     ("::1", "loopback"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
     ("255.255.255.255", "broadcast"), ("::ffff:127.0.0.1", "loopback")],
)  # fmt: skip
def test_usable_vtep(address: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=f"{fragment}.*not a usable VTEP"):
        validate.usable_vtep(address)
    with pytest.raises(ValueError, match=fragment):
        validate.usable_vtep(ip_address(address))


def test_usable_vtep_loopback_when_allowed() -> None:
    assert validate.usable_vtep("127.0.0.1", allow_loopback=True) == IPv4Address("127.0.0.1")
    assert validate.usable_vtep("192.0.2.1") == IPv4Address("192.0.2.1")
    with pytest.raises(ValueError, match="unspecified"):
        validate.usable_vtep("0.0.0.0", allow_loopback=True)


def test_endpoint_interface() -> None:
    assert validate.endpoint_interface("10.0.0.2/24", 4) == IPv4Interface("10.0.0.2/24")
    for text, version, fragment in [
        ("10.0.0.2", 4, "prefix length"), ("10.0.0.300/24", 4, "prefix length"),
        ("2001:db8::2/64", 4, "not an IPv4 address"), ("10.0.0.2/24", 6, "not an IPv6"),
        ("224.0.0.1/4", 4, "multicast"), ("0.0.0.0/0", 4, "unspecified"),
        ("fe80::1%eth0/64", 6, "prefix length"), ("\u0661.0.0.2/8", 4, "prefix length"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=fragment):
            validate.endpoint_interface(text, version)


# ------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["br100", "vxlan16777215", "br-5f3a9c1d2e4b", "a", "x" * 15,
                                  "eth0.100", "br_a@b"])
def test_interface_names_the_kernel_takes(name: str) -> None:
    assert validate.interface_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 16, "br100\n", "br 100", "br/1", "br:1",
                                  "br\t1", "br\u00e9", "\u0661\u0660"])
def test_interface_names_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid interface name"):
        validate.interface_name(name)


def test_printable_ascii_never_shows_the_value() -> None:
    with pytest.raises(ValueError) as caught:
        validate.printable_ascii("s\u00e9cret", "md5_password")
    assert "cret" not in str(caught.value)
    assert validate.printable_ascii("a b~!", "x") == "a b~!"
