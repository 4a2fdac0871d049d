"""Model routes -> ExaBGP command lines (pure; no state, no ExaBGP import).

ExaBGP cannot announce EVPN from its own text API, so the launcher registers
`announce evpn` / `withdraw evpn` (see `commands.py`, which parses what this
module writes). One route is one *token*:

    mac rd=192.0.2.1:100 etag=0 mac=aa:bb:cc:dd:ee:ff ip=10.1.1.1 label=100/5000
        nh=192.0.2.1 rt=65000:100/65000:200 seq=3 sticky=1 rmac=02:00:00:00:00:01 gw=1
    imet rd=192.0.2.1:100 etag=0 orig=192.0.2.1 label=100 nh=192.0.2.1 rt=65000:100
    prefix rd=192.0.2.1:5000 etag=0 net=10.1.0.0/24 gwip=0.0.0.0 label=5000
        nh=192.0.2.1 rt=65000:5000 rmac=02:00:00:00:00:01

(one line each; `esi=` appears only when the ESI is not zero). A command line
carries one or many tokens: `announce evpn <token>` or
`announce evpn batch <token>;<token>;...`, and the same with `withdraw`.

Why this shape: ExaBGP routes a command line by *substring* (`reset `,
`help `, `# `, ...; see FORBIDDEN) and `formated()` pads `[ ] ( ) ,` with
spaces, so the syntax uses only `key=value` words of hex digits, dots,
colons, `/` and `;`. Every token is checked against FORBIDDEN before it
leaves this module.

The token is deterministic: the same route always gives the same bytes, so
ExaBGP drops identical re-announcements and a withdrawal can repeat the
announced token (ExaBGP keys its adj-rib-out by the packed NLRI, labels and
ESI included; a withdraw that differs in one byte withdraws nothing and may
reset the session). The caller keeps the announced tokens (see outbox.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

from evpnd import validate
from evpnd.model import MOBILITY_SEQ_MAX, ZERO_ESI, ImetRoute, MacIpRoute, PrefixRoute, Route

ANNOUNCE = "announce evpn"
WITHDRAW = "withdraw evpn"
BATCH = "batch"
ROUTE_SEPARATOR = ";"
LIST_SEPARATOR = "/"

KIND_MAC = "mac"
KIND_IMET = "imet"
KIND_PREFIX = "prefix"

# Substrings that make ExaBGP dispatch a line to another command (any of its
# registered command names followed by a space, matched anywhere in the line)
# and the characters formated() rewrites or collapses.
FORBIDDEN: tuple[str, ...] = (
    # single-word commands
    "version ", "reset ", "reload ", "restart ", "shutdown ", "crash ", "teardown ",
    "help ", "debug ", "# ", "silence-ack ", "enable-ack ", "disable-ack ",
    # first words of every multi-word command (announce route, show neighbor, ...)
    "announce ", "withdraw ", "show ", "flush ", "clear ",
    # evpnd's own commands (commands.py)
    "evpnd ",
    # the API would split or pad these
    "[", "]", "(", ")", ",", "\t", "\n", "\r", "  ",
)

VNI_MAX = 0xFFFFFF
ETAG_MAX = 0xFFFFFFFF
SEQ_MAX = MOBILITY_SEQ_MAX

_HEX_BYTE = r"[0-9a-fA-F]{2}"
_ESI_RE = re.compile(rf"{_HEX_BYTE}(:{_HEX_BYTE}){{9}}")


class EncodeError(ValueError):
    """A route field cannot be expressed in the command syntax."""


# ---------------------------------------------------------------------------
# Field checks: the token must be parseable by commands.py and free of
# anything ExaBGP's dispatcher reacts to, whatever the caller hands in. RDs,
# route targets and MACs follow the rules the config and every other input
# are checked by (evpnd/validate.py), so what validates there encodes here.


# A host announces thousands of routes with a handful of RDs and route targets:
# each distinct string is checked once (a refused one raises every time).
@lru_cache(maxsize=4096)
def check_rd(value: str) -> str:
    """RD as `A.B.C.D:N` (type 1), `ASN2:N32` (type 0) or `ASN4:N16` (type 2)."""
    admin_number(value, what="route distinguisher")
    return value


@lru_cache(maxsize=4096)
def check_rt(value: str) -> str:
    admin_number(value, what="route target")
    return value


def admin_number(value: str, what: str) -> tuple[str | int, int]:
    """`A.B.C.D:N` -> ("A.B.C.D", N); `ASN:N` -> (ASN, N), range-checked (RFC 4360)."""
    try:
        admin, number = validate.admin_number(value, what)
    except ValueError as exc:
        raise EncodeError(str(exc)) from None
    return (str(admin) if isinstance(admin, IPv4Address) else admin), number


def check_mac(value: str) -> str:
    """The MAC in canonical form (lower case, colons): the token is deterministic."""
    try:
        return validate.mac(value)
    except ValueError as exc:
        raise EncodeError(str(exc)) from None


def check_esi(value: str) -> str:
    if not _ESI_RE.fullmatch(value):
        raise EncodeError(f"invalid ESI {value!r} (ten colon-separated hex bytes)")
    return value.lower()


def _check_vni(value: int, what: str = "VNI") -> int:
    if not 0 <= value <= VNI_MAX:
        raise EncodeError(f"{what} {value} out of range 0..{VNI_MAX}")
    return value


def _check_etag(value: int) -> int:
    if not 0 <= value <= ETAG_MAX:
        raise EncodeError(f"ethernet tag {value} out of range")
    return value


def _ip(value: object) -> str:
    if not isinstance(value, IPv4Address | IPv6Address):
        try:
            value = ip_address(str(value))
        except ValueError:
            raise EncodeError(f"invalid IP address {value!r}") from None
    return str(value)


def _labels(vni: int, l3vni: int | None) -> str:
    if l3vni is None:
        return str(_check_vni(vni))
    return f"{_check_vni(vni)}{LIST_SEPARATOR}{_check_vni(l3vni, 'L3VNI')}"


def _targets(route_targets: Iterable[str]) -> list[str]:
    targets = [check_rt(rt) for rt in route_targets]
    return [f"rt={LIST_SEPARATOR.join(targets)}"] if targets else []


def _esi(esi: str) -> list[str]:
    esi = check_esi(esi)
    return [] if esi == ZERO_ESI else [f"esi={esi}"]


# ---------------------------------------------------------------------------
# Tokens


def route_token(route: Route) -> str:
    """The command token announcing `route` (also the token that withdraws it)."""
    if isinstance(route, MacIpRoute):
        token = _mac_token(route)
    elif isinstance(route, ImetRoute):
        token = _imet_token(route)
    elif isinstance(route, PrefixRoute):
        token = _prefix_token(route)
    else:
        raise EncodeError(f"not an EVPN route: {route!r}")
    check_token(token)
    return token


def _mac_token(route: MacIpRoute) -> str:
    key = route.key
    words = [KIND_MAC, f"rd={check_rd(key.rd)}", *_esi(route.esi), f"etag={_check_etag(key.etag)}",
             f"mac={check_mac(key.mac)}"]
    if key.ip is not None:
        words.append(f"ip={_ip(key.ip)}")
    words.append(f"label={_labels(route.vni, route.l3vni)}")
    words.append(f"nh={_ip(route.nexthop)}")
    words.extend(_targets(route.route_targets))
    if not 0 <= route.mobility_seq <= SEQ_MAX:
        raise EncodeError(f"MAC mobility sequence {route.mobility_seq} out of range")
    # RFC 7432 15.1: a MAC that never moved carries no mobility community,
    # unless it is sticky (the community is where the sticky flag lives).
    if route.mobility_seq or route.sticky:
        words.append(f"seq={route.mobility_seq}")
    if route.sticky:
        words.append("sticky=1")
    if route.router_mac is not None:
        words.append(f"rmac={check_mac(route.router_mac)}")
    if route.default_gateway:
        words.append("gw=1")
    return " ".join(words)


def _imet_token(route: ImetRoute) -> str:
    key = route.key
    if route.tunnel_type != "ingress-replication":
        raise EncodeError(f"PMSI tunnel type {route.tunnel_type!r} is not supported")
    words = [KIND_IMET, f"rd={check_rd(key.rd)}", f"etag={_check_etag(key.etag)}",
             f"orig={_ip(key.originator)}", f"label={_check_vni(route.vni)}",
             f"nh={_ip(route.nexthop)}"]
    if route.tunnel is not None and route.tunnel != key.originator:
        words.append(f"tunnel={_ip(route.tunnel)}")
    words.extend(_targets(route.route_targets))
    return " ".join(words)


def _prefix_token(route: PrefixRoute) -> str:
    key = route.key
    prefix = key.prefix
    gateway = route.gateway if route.gateway is not None else ip_address(
        "::" if prefix.version == 6 else "0.0.0.0"
    )
    if gateway.version != prefix.version:
        raise EncodeError(f"gateway {gateway} and prefix {prefix} differ in address family")
    words = [KIND_PREFIX, f"rd={check_rd(key.rd)}", *_esi(route.esi),
             f"etag={_check_etag(key.etag)}", f"net={prefix.with_prefixlen}",
             f"gwip={gateway}", f"label={_check_vni(route.vni)}", f"nh={_ip(route.nexthop)}"]
    words.extend(_targets(route.route_targets))
    if route.router_mac is not None:
        words.append(f"rmac={check_mac(route.router_mac)}")
    return " ".join(words)


def nlri_identity(route: Route) -> tuple[object, ...]:
    """The fields that end up in the packed NLRI (what ExaBGP keys its RIB on).

    Two announcements of one route key with different identities are two
    different NLRIs to ExaBGP: the old one must be withdrawn explicitly.
    """
    if isinstance(route, MacIpRoute):
        return (2, route.key, route.esi.lower(), route.vni, route.l3vni)
    if isinstance(route, ImetRoute):
        return (3, route.key)
    return (5, route.key, route.esi.lower(), route.gateway, route.vni)


def check_token(token: str) -> str:
    if not token or ROUTE_SEPARATOR in token:
        raise EncodeError(f"bad token {token!r}")
    # Padded so a word at either end is caught as ExaBGP would see it mid-line.
    padded = f" {token} "
    for bad in FORBIDDEN:
        if bad in padded:
            raise EncodeError(f"token {token!r} contains {bad!r}, which ExaBGP reacts to")
    return token


# ---------------------------------------------------------------------------
# Command lines


def announce_line(tokens: Sequence[str]) -> str:
    return _line(ANNOUNCE, tokens)


def withdraw_line(tokens: Sequence[str]) -> str:
    return _line(WITHDRAW, tokens)


def _line(verb: str, tokens: Sequence[str]) -> str:
    if not tokens:
        raise EncodeError("a command line needs at least one route")
    if len(tokens) == 1:
        return f"{verb} {tokens[0]}"
    return f"{verb} {BATCH} {ROUTE_SEPARATOR.join(tokens)}"


def announce_lines(routes: Iterable[Route], batch: int = 100) -> list[str]:
    """Convenience for tests and one-shot use: routes -> batched announce lines."""
    tokens = [route_token(route) for route in routes]
    return [announce_line(tokens[i : i + batch]) for i in range(0, len(tokens), batch)]
