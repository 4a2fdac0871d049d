"""What the path attributes of a raw EVPN UPDATE mean, and when they are malformed.

The attribute half of wire.py (whose docstring says what each outcome is and
why): RFC 7606 section 7's rule for every attribute evpnd checks, the flags
each must carry (3c), the extended communities, PMSI tunnel and next hop as
evpnd's routes carry them. Pure functions of bytes; the caller caches.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from evpnd.model import IPAddress
from evpnd.speaker.usable import next_hop_problem

# Attribute type codes.
ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF = 1, 2, 3, 4, 5
ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITY, ORIGINATOR_ID, CLUSTER_LIST = 6, 7, 8, 9, 10
MP_REACH, MP_UNREACH, EXTENDED_COMMUNITY, AS4_PATH, AS4_AGGREGATOR = 14, 15, 16, 17, 18
PMSI_TUNNEL, IPV6_EXTENDED_COMMUNITY, LARGE_COMMUNITY = 22, 25, 32

NAMES = {
    ORIGIN: "ORIGIN", AS_PATH: "AS_PATH", NEXT_HOP: "NEXT_HOP", MED: "MULTI_EXIT_DISC",
    LOCAL_PREF: "LOCAL_PREF", ATOMIC_AGGREGATE: "ATOMIC_AGGREGATE", AGGREGATOR: "AGGREGATOR",
    COMMUNITY: "COMMUNITY", ORIGINATOR_ID: "ORIGINATOR_ID", CLUSTER_LIST: "CLUSTER_LIST",
    MP_REACH: "MP_REACH_NLRI", MP_UNREACH: "MP_UNREACH_NLRI",
    EXTENDED_COMMUNITY: "EXTENDED_COMMUNITIES", AS4_PATH: "AS4_PATH",
    AS4_AGGREGATOR: "AS4_AGGREGATOR", PMSI_TUNNEL: "PMSI_TUNNEL",
    IPV6_EXTENDED_COMMUNITY: "IPV6_EXTENDED_COMMUNITIES", LARGE_COMMUNITY: "LARGE_COMMUNITY",
}  # fmt: skip

# Flags octet (RFC 4271 4.3): Optional and Transitive say which kind of
# attribute this is; Partial must be 0 on a well-known one (ExaBGP and FRR
# refuse it there too), and says nothing on an optional one; Extended Length
# only sizes the length field.
OPTIONAL, TRANSITIVE, PARTIAL, EXTENDED = 0x80, 0x40, 0x20, 0x10
_OT = OPTIONAL | TRANSITIVE
_EXPECTED_FLAGS = {
    ORIGIN: TRANSITIVE, AS_PATH: TRANSITIVE, NEXT_HOP: TRANSITIVE, MED: OPTIONAL,
    LOCAL_PREF: TRANSITIVE, ATOMIC_AGGREGATE: TRANSITIVE, AGGREGATOR: _OT,
    COMMUNITY: _OT, ORIGINATOR_ID: OPTIONAL, CLUSTER_LIST: OPTIONAL, MP_REACH: OPTIONAL,
    MP_UNREACH: OPTIONAL, EXTENDED_COMMUNITY: _OT, AS4_PATH: _OT, AS4_AGGREGATOR: _OT,
    PMSI_TUNNEL: _OT, IPV6_EXTENDED_COMMUNITY: _OT, LARGE_COMMUNITY: _OT,
}  # fmt: skip
# Malformed copies of these are discarded (RFC 7606 7.6, 7.7; RFC 6793 6).
_DISCARDED = frozenset({ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH, AS4_AGGREGATOR})
# Fixed lengths (RFC 7606 7.1-7.5, 7.9), and attributes that are lists of fixed-size items.
_FIXED_LENGTH = {ORIGIN: 1, NEXT_HOP: 4, MED: 4, LOCAL_PREF: 4, ORIGINATOR_ID: 4}
_ITEM_SIZE = {
    COMMUNITY: 4, CLUSTER_LIST: 4, EXTENDED_COMMUNITY: 8, IPV6_EXTENDED_COMMUNITY: 20,
    LARGE_COMMUNITY: 12,
}  # fmt: skip

# PMSI tunnel types as decode.py names them from ExaBGP's string (RFC 6514 5).
_PMSI_TYPES = {
    0: "no-tunnel", 1: "rsvp-tep2mplsp", 2: "mldpp2mplsp", 3: "pim-ssmtree", 4: "pim-smtree",
    5: "bidir-pimtree", 6: "ingress-replication", 7: "mldpmp2mplsp",
}  # fmt: skip
_INGRESS_REPLICATION = 6


@dataclass(frozen=True, slots=True)
class Pmsi:
    tunnel_type: str
    vni: int
    tunnel: IPAddress | None


@dataclass(frozen=True, slots=True)
class PathAttributes:
    """What one attribute set (MP attributes aside) means for EVPN, decoded once."""

    problems: str | None = None  # treat-as-withdraw, when set
    missing: str | None = None  # absent well-known mandatory attributes
    route_targets: tuple[str, ...] = ()
    encapsulation: int | None = None
    mobility_seq: int = 0
    sticky: bool = False
    router_mac: str | None = None
    default_gateway: bool = False
    pmsi: Pmsi | None = None


def decode_attributes(data: bytes) -> PathAttributes:
    """Every attribute but MP_REACH/MP_UNREACH (a well-framed list) -> what it means."""
    problems: list[str] = []
    seen: set[int] = set()
    communities: list[bytes] = []
    pmsi: Pmsi | None = None
    pos, end = 0, len(data)
    while pos < end:
        flags, code = data[pos], data[pos + 1]
        if flags & EXTENDED:
            value, pos = pos + 4, pos + 4 + (data[pos + 2] << 8 | data[pos + 3])
        else:
            value, pos = pos + 3, pos + 3 + data[pos + 2]
        if code in seen:
            continue  # RFC 7606 3(g): the first copy counts
        seen.add(code)
        expected = _EXPECTED_FLAGS.get(code)
        if expected is None:
            continue  # not one we know: nothing evpnd reads
        if code in _DISCARDED:
            continue  # whether malformed or not, evpnd reads none of these
        name = NAMES[code]
        if flags & (_OT if expected & OPTIONAL else _OT | PARTIAL) != expected:
            problems.append(f"{name}: flags 0x{flags:02x}")  # RFC 7606 3(c)
            continue
        problem = _malformed(code, data[value:pos])
        if problem:
            problems.append(f"{name}: {problem}")
        elif code == EXTENDED_COMMUNITY:
            communities = [data[at : at + 8] for at in range(value, pos, 8)]
        elif code == PMSI_TUNNEL:
            pmsi = _pmsi(data[value:pos])
            if isinstance(pmsi, str):
                problems.append(f"{name}: {pmsi}")
                pmsi = None
    absent = [NAMES[code] for code in (ORIGIN, AS_PATH) if code not in seen]
    missing = " and ".join(absent) or None
    if problems:
        return PathAttributes(problems="; ".join(problems), missing=missing)
    return _communities(communities, pmsi, missing)


def _malformed(code: int, value: bytes) -> str:
    """What is wrong with one attribute's value by RFC 7606 section 7 ("" when nothing)."""
    size = len(value)
    fixed = _FIXED_LENGTH.get(code)
    if fixed is not None and size != fixed:
        return f"length {size}, expected {fixed}"
    item = _ITEM_SIZE.get(code)
    if item is not None and (size == 0 or size % item):
        return f"length {size} is not a non-zero multiple of {item}"
    if code == ORIGIN and value[0] > 2:
        return f"undefined value {value[0]}"
    if code == AS_PATH and not (_as_path_frames(value, 4) or _as_path_frames(value, 2)):
        return "segments do not frame the attribute"
    if code == PMSI_TUNNEL and size < 5:
        return f"length {size}, at least 5"
    return ""


def _as_path_frames(value: bytes, asn_size: int) -> bool:
    """RFC 7606 7.2: known segment types, no empty segment, no overrun or underrun."""
    pos, end = 0, len(value)
    while pos < end:
        if pos + 2 > end or value[pos] not in (1, 2, 3, 4) or value[pos + 1] == 0:
            return False
        pos += 2 + value[pos + 1] * asn_size
    return pos == end


def _pmsi(value: bytes) -> Pmsi | str:
    """RFC 6514 5: flags 1, tunnel type 1, label 3, tunnel identifier."""
    tunnel_type, tunnel_id = value[1], value[5:]
    if len(tunnel_id) in (4, 16):
        tunnel: IPAddress | None = ip_address(tunnel_id)
    elif tunnel_type == _INGRESS_REPLICATION:
        # RFC 6514 5: the tunnel identifier of ingress replication is an address.
        return f"ingress replication tunnel identifier of {len(tunnel_id)} bytes"
    else:
        tunnel = None
    name = _PMSI_TYPES.get(tunnel_type, "unknown")
    return Pmsi(name, int.from_bytes(value[2:5]), tunnel)


def _communities(
    communities: list[bytes], pmsi: Pmsi | None, missing: str | None
) -> PathAttributes:
    """The extended communities evpnd acts on, as decode.py reads them from ExaBGP.

    ExaBGP keeps communities sorted by their bytes; decode.py keeps the first
    of equal route targets, the last encapsulation and router MAC, the highest
    mobility sequence (sticky if any is).
    """
    targets: list[str] = []
    encapsulation: int | None = None
    seq: int | None = None
    sticky = False
    router_mac: str | None = None
    default_gateway = False
    for c in sorted(communities):
        kind, subtype = c[0], c[1]
        if subtype == 0x02 and kind & ~0x40 in (0x00, 0x01, 0x02):
            # Route targets, the transitive bit masked (some stacks send them non-transitive).
            if kind & ~0x40 == 0x00:
                target = f"{c[2] << 8 | c[3]}:{int.from_bytes(c[4:8])}"
            elif kind & ~0x40 == 0x01:
                target = f"{c[2]}.{c[3]}.{c[4]}.{c[5]}:{c[6] << 8 | c[7]}"
            else:
                target = f"{int.from_bytes(c[2:6])}:{c[6] << 8 | c[7]}"
            if target not in targets:
                targets.append(target)
        elif kind == 0x03 and subtype == 0x0C:
            encapsulation = c[6] << 8 | c[7]  # RFC 9012 4.1
        elif kind == 0x03 and subtype == 0x0D:
            default_gateway = True  # RFC 7432 7.8
        elif kind == 0x06 and subtype == 0x00:
            number = int.from_bytes(c[4:8])  # RFC 7432 7.7
            seq = number if seq is None else max(seq, number)
            sticky = sticky or bool(c[2] & 0x01)
        elif kind == 0x06 and subtype == 0x03:
            router_mac = c[2:8].hex(":")  # RFC 9135 8.1
    return PathAttributes(
        None, missing, tuple(targets), encapsulation, seq or 0, sticky, router_mac,
        default_gateway, pmsi,
    )  # fmt: skip


EVPN_NEXT_HOP_LENGTHS = (4, 16, 32)  # IPv4, IPv6, IPv6 global + link-local (RFC 2545 3)


def evpn_next_hop(packed: bytes) -> IPAddress | str:
    """An EVPN MP_REACH next hop of one of EVPN_NEXT_HOP_LENGTHS: the VTEP, or what is
    wrong with it (usable.py: unspecified, loopback, multicast, broadcast)."""
    if len(packed) == 4:
        address: IPAddress = IPv4Address(packed)
    else:
        address = IPv6Address(packed[:16])  # global, then (32 octets) link-local
    return next_hop_problem(address) or address
