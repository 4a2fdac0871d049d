"""One validator per kind of value that comes from outside (pure, no I/O).

The config file, `docker network create -o` options and endpoints, MQTT
registrations and routes received from BGP peers all carry the same kinds of
values: route targets and distinguishers, MAC addresses, VTEP and endpoint
addresses, interface names, VNIs. Each kind is checked here, once, so a
value one boundary accepts is a value every other part (the encoder, the
kernel, ExaBGP) accepts too.

Rules every function keeps:

* ASCII only where digits are expected: `int()` and `str.isdigit()` also take
  `'\u0661\u0660\u0660'` (Arabic-Indic digits), `'²'`, `' 1'` or `'+1'`, none of which
  ExaBGP, the kernel or the encoder take;
* whole-string matches (`re.fullmatch`): `$` also matches before a trailing
  newline, so `'65001:100\\n'` would pass a `^...$` pattern;
* a `ValueError` whose message says what is wrong and shows the value
  (callers prefix the field's name);
* a canonical result: the value as the rest of evpnd compares and prints it
  (lower-case colon MACs, route targets without leading zeros).

No import from the rest of evpnd: `model.py` re-exports `mac` as
`normalize_mac`, and `speaker/commands.py` (inside ExaBGP) reaches this
module through `encode.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv6Address,
    IPv6Interface,
    ip_address,
    ip_interface,
)

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface

VNI_MAX = 16_777_215  # 24 bits (RFC 7348)
IFNAMSIZ = 15  # the kernel's limit on interface names, in bytes, without the NUL
ZERO_MAC = "00:00:00:00:00:00"
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
_ZERO_MAC_BYTES = bytes(6)
_BROADCAST_V4 = IPv4Address("255.255.255.255")

_DECIMAL = re.compile(r"[0-9]+")
# One separator throughout; one or two hex digits per byte (`2:0:0:0:0:a` is
# what some tools print).
_MAC = re.compile(r"[0-9A-Fa-f]{1,2}(?P<sep>[:-])[0-9A-Fa-f]{1,2}(?:(?P=sep)[0-9A-Fa-f]{1,2}){4}")
_CANONICAL_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_ADMIN_NUMBER = re.compile(r"(?P<admin>[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9]+):(?P<number>[0-9]+)")
# The kernel refuses '/', ':' and whitespace (dev_valid_name); evpnd also keeps
# to printable ASCII so names survive iproute2, logs and JSON unchanged.
_IFNAME = re.compile(rf"[!-.0-9;-~]{{1,{IFNAMSIZ}}}")


# ---------------------------------------------------------------------------
# Numbers


def decimal(text: str, what: str = "number") -> int:
    """ASCII digits only: no sign, no spaces, no other scripts' digits."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise ValueError(f"{what} {text!r} is not a decimal number (ASCII digits 0-9 only)")
    return int(text)


def vni(value: int) -> int:
    """A VXLAN network identifier, 1..16777215 (0 is no VNI)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"VNI {value!r} is not an integer")
    if not 1 <= value <= VNI_MAX:
        raise ValueError(f"VNI {value} is outside 1..{VNI_MAX}")
    return value


# ---------------------------------------------------------------------------
# Route targets and route distinguishers (RFC 4360 3, RFC 4364 4.2)


def admin_number(text: str, what: str) -> tuple[IPv4Address | int, int]:
    """`A.B.C.D:N` -> (IPv4Address, N); `ASN:N` -> (ASN, N), range-checked.

    The three forms: a 2-byte ASN with a 4-byte number, an IPv4 address with a
    2-byte number, a 4-byte ASN with a 2-byte number.
    """
    match = _ADMIN_NUMBER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{what} must be 'ASN:NN' or 'A.B.C.D:NN' in ASCII digits, not {text!r}"
        )
    admin, number = match["admin"], int(match["number"])
    if "." in admin:
        try:
            address = IPv4Address(admin)
        except ValueError:
            raise ValueError(f"{what} {text!r}: {admin!r} is not an IPv4 address") from None
        if number > 0xFFFF:
            raise ValueError(f"{what} {text!r}: A.B.C.D:NN needs NN <= 65535")
        return address, number
    asn = int(admin)
    if (asn <= 0xFFFF and number <= 0xFFFFFFFF) or (asn <= 0xFFFFFFFF and number <= 0xFFFF):
        return asn, number
    raise ValueError(
        f"{what} {text!r} out of range: ASN <= 65535 with NN <= 4294967295, "
        "or ASN <= 4294967295 with NN <= 65535"
    )


def route_target(text: str) -> str:
    """`ASN:NN` or `A.B.C.D:NN`, canonical (no leading zeros), as received routes print it."""
    admin, number = admin_number(text, "route target")
    return f"{admin}:{number}"


WILDCARD_ADMIN = "*"


def import_route_target(text: str) -> str:
    """An import route target: `ASN:NN`, `A.B.C.D:NN` or `*:NN`, canonical.

    `*:NN` matches a received route target of any of the three kinds whose local
    administrator is NN, whatever its ASN or address (as FRR's `route-target import
    *:NN`): hosts that each have their own ASN (eBGP fabrics) then share VNIs. NN up
    to 4294967295 (a 2-octet-ASN target's local administrator has 32 bits).
    """
    if isinstance(text, str) and text.startswith(f"{WILDCARD_ADMIN}:"):
        number = decimal(text[2:], "route target local administrator")
        if number > 0xFFFFFFFF:
            raise ValueError(f"route target {text!r}: *:NN needs NN <= 4294967295")
        return f"{WILDCARD_ADMIN}:{number}"
    return route_target(text)


def route_distinguisher(text: str) -> str:
    """`ASN:NN` or `A.B.C.D:NN` (RD types 0, 1 and 2), canonical."""
    admin, number = admin_number(text, "route distinguisher")
    return f"{admin}:{number}"


def auto_or(text: str, check: Callable[[str], str], hint: str) -> str:
    """A config value that may be `auto`: `auto` as it is, else `check(text)`; the error
    ends with `hint`, what else the field takes ("or 'auto' for ASN:VNI")."""
    if text == "auto":
        return text
    try:
        return check(text)
    except ValueError as exc:
        raise ValueError(f"{exc} ({hint})") from None


def route_distinguisher_setting(text: str, auto: str) -> str:
    """A config `rd:`: `auto` (`auto` says what it stands for) or a route distinguisher."""
    return auto_or(text, route_distinguisher, f"or 'auto' for {auto}")


# ---------------------------------------------------------------------------
# MAC addresses


def mac(text: str) -> str:
    """Any MAC spelling (upper case, `-`) -> lower-case colon form; format only."""
    if isinstance(text, str) and _CANONICAL_MAC.fullmatch(text):
        return text  # the common case, already canonical
    if not isinstance(text, str) or not _MAC.fullmatch(text):
        raise ValueError(
            f"invalid MAC address {text!r} (six hex bytes separated by ':' or '-')"
        )
    return ":".join(f"{int(part, 16):02x}" for part in re.split("[:-]", text))


def is_unicast_mac(packed: bytes) -> bool:
    """Six bytes that can name one host: group bit clear and not all zero (hot paths)."""
    return len(packed) == 6 and not packed[0] & 1 and packed != _ZERO_MAC_BYTES


def unicast_mac(value: str | bytes) -> str:
    """A MAC that can name one endpoint: not multicast, not broadcast, not all zero.

    The all-zero MAC is also the key of the kernel's flood entries; a group
    MAC is never a source address.
    """
    if isinstance(value, bytes | bytearray):
        if len(value) != 6:
            raise ValueError(f"invalid MAC address of {len(value)} bytes (6)")
        canonical = bytes(value).hex(":")
    else:
        canonical = mac(value)
    if canonical == ZERO_MAC:
        raise ValueError(f"must be a unicast MAC address, not the all-zero MAC {canonical}")
    if canonical == BROADCAST_MAC:
        raise ValueError(f"must be a unicast MAC address, not the broadcast MAC {canonical}")
    if int(canonical[:2], 16) & 1:
        raise ValueError(
            f"must be a unicast MAC address, not a multicast one "
            f"({canonical} has the group bit set)"
        )
    return canonical


# ---------------------------------------------------------------------------
# IP addresses


def _address(value: str | IPAddress, what: str) -> IPAddress:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if "%" in value:
        raise ValueError(f"{what} {value!r}: scoped addresses are not allowed")
    try:
        return ip_address(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IPv4 or IPv6 address") from None


def unicast_problem(address: IPAddress, *, loopback: bool = True) -> str | None:
    """Why `address` cannot be one host's address ("the unspecified address", ...),
    or None when it can; `loopback=False` lets loopback addresses pass."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address == _BROADCAST_V4:
        return "the broadcast address"
    if loopback and address.is_loopback:
        return "a loopback address"
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return unicast_problem(address.ipv4_mapped, loopback=loopback)
    return None


def usable_vtep(value: str | IPAddress, *, allow_loopback: bool = False) -> IPAddress:
    """An address VXLAN packets can be sent to: not unspecified, multicast, broadcast
    or (unless allowed, for single-host setups) loopback."""
    address = _address(value, "VTEP address")
    why = unicast_problem(address, loopback=not allow_loopback)
    if why is not None:
        raise ValueError(f"{address} is {why}, not a usable VTEP")
    return address


def router_id(value: object) -> IPv4Address:
    """A BGP identifier: a non-zero 32-bit number, written as an IPv4 address (RFC 6286),
    also in an IPv6-only fabric."""
    if isinstance(value, IPv6Address):
        value = str(value)
    if not isinstance(value, str | IPv4Address):
        raise ValueError(
            f"router id must be an IPv4 address (A.B.C.D), not {type(value).__name__}"
        )
    address = value if isinstance(value, IPv4Address) else None
    if address is None:
        try:
            parsed = _address(value, "router id")
        except ValueError:
            raise ValueError(f"router id {value!r} is not an IPv4 address (A.B.C.D)") from None
        if not isinstance(parsed, IPv4Address):
            raise ValueError(
                f"router id {value} must be an IPv4 address (A.B.C.D): a router id is a "
                "32-bit number written that way, also on an IPv6 underlay"
            )
        address = parsed
    if address.is_unspecified:
        raise ValueError("router id must not be 0.0.0.0 (RFC 6286: a non-zero number)")
    return address


def endpoint_ip(value: str | IPAddress) -> IPAddress:
    """One endpoint's unicast address (link-local is fine: it names one host)."""
    address = _address(value, "address")
    why = unicast_problem(address)
    if why is not None:
        raise ValueError(f"{str(value)!r} is {why}, not a unicast endpoint address")
    return address


def endpoint_interface(text: str, version: int) -> IPInterface:
    """An endpoint's address with its prefix length, as dockerd sends it: `10.0.0.2/24`."""
    if not isinstance(text, str) or "/" not in text or "%" in text:
        raise ValueError(f"{text!r} is not an IPv{version} address with a prefix length")
    try:
        interface = ip_interface(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IPv{version} address with a prefix length"
        ) from None
    if interface.version != version:
        raise ValueError(f"{text!r} is not an IPv{version} address")
    endpoint_ip(interface.ip)
    return interface


# ---------------------------------------------------------------------------
# Names


def interface_name(text: str) -> str:
    """A Linux interface name: 1-15 printable ASCII characters, no '/', ':' or spaces,
    not '.' or '..' (the kernel's dev_valid_name, limited to ASCII)."""
    if not isinstance(text, str) or not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise ValueError(
            f"{text!r} is not a valid interface name (1-{IFNAMSIZ} printable ASCII "
            "characters, no spaces, '/' or ':')"
        )
    return text


def printable_ascii(text: str, what: str) -> str:
    """Text that must pass through unchanged where only ASCII is safe (an MD5 key)."""
    if not isinstance(text, str) or not all(" " <= ch <= "~" for ch in text):
        raise ValueError(f"{what} must be printable ASCII (no control or non-ASCII characters)")
    return text
