"""`announce evpn` / `withdraw evpn`: EVPN commands added to ExaBGP's API.

Runs inside the ExaBGP process (imported by the launcher). ExaBGP 5.0.15 can
decode EVPN but its text API cannot announce it, so these handlers parse the
token syntax written by `encode.py` straight into ExaBGP NLRI and attribute
objects and inject them into the adj-rib-out, as ExaBGP's own
`announce route` handler does (exabgp/reactor/api/command/announce.py).

Every line is answered with exactly one `done` or `error`. A batch line is
all or nothing as far as parsing goes: one bad token rejects the whole line
before anything is injected, so the sender's bookkeeping stays simple.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from ipaddress import IPv4Address, ip_address
from struct import pack
from typing import Any

from exabgp.bgp.message import Action
from exabgp.bgp.message.update.attribute import PMSI, Attributes, Origin
from exabgp.bgp.message.update.attribute.community.extended import (
    Encapsulation,
    ExtendedCommunities,
    ExtendedCommunity,
    MacMobility,
    RouteTargetASN2Number,
    RouteTargetASN4Number,
    RouteTargetIPNumber,
)
from exabgp.bgp.message.update.attribute.pmsi import PMSIIngressReplication
from exabgp.bgp.message.update.nlri.evpn import MAC, Multicast, Prefix
from exabgp.bgp.message.update.nlri.qualifier import (
    ESI,
    EthernetTag,
    Labels,
    RouteDistinguisher,
)
from exabgp.bgp.message.update.nlri.qualifier import MAC as MACQUAL
from exabgp.logger import log
from exabgp.protocol.ip import IP
from exabgp.reactor.api.command.command import Command
from exabgp.reactor.api.command.limit import extract_neighbors, match_neighbors
from exabgp.rib.change import Change

from evpnd.speaker import encode

# Give the reactor back every so many routes: it must keep serving keepalives
# and reading the sockets while a 100-route batch is injected.
YIELD_EVERY = 50
# `evpnd retire`: withdraw everything we announce, answer once it is sent.
RETIRE = "evpnd retire"
RETIRE_TIMEOUT = 30.0

# RFC 9135 router's MAC (EVPN type 0x06, sub-type 0x03) and RFC 7432 default
# gateway (opaque type 0x03, sub-type 0x0d): ExaBGP has no class for either.
ROUTER_MAC_PREFIX = b"\x06\x03"
DEFAULT_GATEWAY = b"\x03\x0d" + b"\0" * 6

_FIELDS: dict[str, frozenset[str]] = {
    encode.KIND_MAC: frozenset(
        {"rd", "esi", "etag", "mac", "ip", "label", "nh", "rt", "seq", "sticky", "rmac", "gw"}
    ),
    encode.KIND_IMET: frozenset({"rd", "etag", "orig", "label", "nh", "tunnel", "rt"}),
    encode.KIND_PREFIX: frozenset(
        {"rd", "esi", "etag", "net", "gwip", "label", "nh", "rt", "rmac"}
    ),
}
_REQUIRED: dict[str, frozenset[str]] = {
    encode.KIND_MAC: frozenset({"rd", "etag", "mac", "label", "nh"}),
    encode.KIND_IMET: frozenset({"rd", "etag", "orig", "label", "nh"}),
    encode.KIND_PREFIX: frozenset({"rd", "etag", "net", "label", "nh"}),
}


class CommandError(ValueError):
    pass


# ---------------------------------------------------------------------------
# Parsing (no reactor needed: unit-testable)


def split_command(command: str) -> tuple[Action, list[str]]:
    """`announce evpn [batch] tok;tok` -> (Action, [token, ...])."""
    if command.startswith(encode.ANNOUNCE + " "):
        action, rest = Action.ANNOUNCE, command[len(encode.ANNOUNCE) + 1 :]
    elif command.startswith(encode.WITHDRAW + " "):
        action, rest = Action.WITHDRAW, command[len(encode.WITHDRAW) + 1 :]
    else:
        raise CommandError(f"not an evpn command: {command[:80]!r}")
    if rest.startswith(encode.BATCH + " "):
        rest = rest[len(encode.BATCH) + 1 :]
    tokens = [token.strip() for token in rest.split(encode.ROUTE_SEPARATOR)]
    tokens = [token for token in tokens if token]
    if not tokens:
        raise CommandError("no route in command")
    return action, tokens


def parse_fields(token: str) -> tuple[str, dict[str, str]]:
    kind, *words = token.split(" ")
    allowed = _FIELDS.get(kind)
    if allowed is None:
        raise CommandError(f"unknown route kind {kind!r}")
    fields: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not value:
            raise CommandError(f"{word!r} is not key=value")
        if name not in allowed:
            raise CommandError(f"unknown field {name!r} for {kind}")
        if name in fields:
            raise CommandError(f"field {name!r} given twice")
        fields[name] = value
    missing = _REQUIRED[kind] - fields.keys()
    if missing:
        raise CommandError(f"{kind} route lacks {', '.join(sorted(missing))}")
    return kind, fields


# Parsed values recur across thousands of routes (one RD and next hop per
# VNI); ExaBGP never mutates these objects, so they can be shared.
@lru_cache(maxsize=4096)
def route_distinguisher(value: str) -> RouteDistinguisher:
    admin, number = _admin_number(value)
    if isinstance(admin, IPv4Address):
        return RouteDistinguisher(b"\x00\x01" + admin.packed + pack("!H", number))
    if admin <= 0xFFFF:
        return RouteDistinguisher(b"\x00\x00" + pack("!HL", admin, number))
    return RouteDistinguisher(b"\x00\x02" + pack("!LH", admin, number))


@lru_cache(maxsize=4096)
def route_target(value: str) -> ExtendedCommunity:
    admin, number = _admin_number(value)
    if isinstance(admin, IPv4Address):
        return RouteTargetIPNumber(str(admin), number)
    if admin <= 0xFFFF:
        return RouteTargetASN2Number(admin, number)
    return RouteTargetASN4Number(admin, number)


def _admin_number(value: str) -> tuple[IPv4Address | int, int]:
    admin, number = encode.admin_number(value, what="RD/RT")
    if isinstance(admin, str):
        return IPv4Address(admin), number
    return admin, number


@lru_cache(maxsize=4096)
def _ip(value: str) -> Any:
    return IP.create(str(ip_address(value)))


def _mac(value: str) -> MACQUAL:
    return MACQUAL(encode.check_mac(value))


def _esi(fields: dict[str, str]) -> ESI:
    value = fields.get("esi")
    if value is None:
        return ESI()
    return ESI(bytes.fromhex(encode.check_esi(value).replace(":", "")))


def _uint(value: str, maximum: int, what: str) -> int:
    # int() would also take "+1", " 1" or non-ASCII digits.
    if not (value.isascii() and value.isdigit()) or int(value) > maximum:
        raise CommandError(f"bad {what} {value!r}")
    return int(value)


def _labels(value: str) -> Labels:
    # RFC 8365: the VNI sits raw in the 24-bit label field. Labels([vni])
    # would encode vni<<4|1, and NOLABEL would drop the field altogether.
    parts = value.split(encode.LIST_SEPARATOR)
    if not 1 <= len(parts) <= 2:
        raise CommandError(f"bad label {value!r}")
    return Labels([], raw_labels=[_uint(part, encode.VNI_MAX, "label") for part in parts])


def _flag(fields: dict[str, str], name: str) -> bool:
    value = fields.get(name, "0")
    if value not in ("0", "1"):
        raise CommandError(f"{name} must be 0 or 1")
    return value == "1"


class AttributeCache:
    """Shares one Attributes object among routes with identical attribute words.

    Building and indexing attributes is a good part of the per-route cost;
    10k MACs of one VNI usually share a single set. Bounded so a long-lived
    process does not accumulate every set it ever saw.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._cache: dict[tuple[str, ...], Attributes] = {}

    def get(self, key: tuple[str, ...], build: Callable[[], Attributes]) -> Attributes:
        attributes = self._cache.get(key)
        if attributes is None:
            if len(self._cache) >= self._size:
                self._cache.clear()
            attributes = build()
            attributes.index()  # ExaBGP caches it on the object: computed once per set
            self._cache[key] = attributes
        return attributes


_ATTRIBUTES = AttributeCache()


def _communities(fields: dict[str, str]) -> ExtendedCommunities:
    communities = ExtendedCommunities()
    if "rt" in fields:
        for rt in fields["rt"].split(encode.LIST_SEPARATOR):
            communities.add(route_target(rt))
    communities.add(Encapsulation(Encapsulation.Type.VXLAN))
    if "seq" in fields or _flag(fields, "sticky"):
        seq = _uint(fields.get("seq", "0"), encode.SEQ_MAX, "mobility sequence")
        communities.add(MacMobility(seq, sticky=_flag(fields, "sticky")))
    if "rmac" in fields:
        communities.add(ExtendedCommunity(ROUTER_MAC_PREFIX + _mac(fields["rmac"]).pack()))
    if _flag(fields, "gw"):
        communities.add(ExtendedCommunity(DEFAULT_GATEWAY))
    return communities


# The words that end up in path attributes (the rest is NLRI or next hop).
_ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    encode.KIND_MAC: ("rt", "seq", "sticky", "rmac", "gw"),
    encode.KIND_IMET: ("rt", "label", "orig", "tunnel"),  # label and tunnel: PMSI
    encode.KIND_PREFIX: ("rt", "rmac"),
}


def _attributes(kind: str, fields: dict[str, str]) -> Attributes:
    key = (kind, *(fields.get(name, "") for name in _ATTRIBUTE_WORDS[kind]))

    def build() -> Attributes:
        attributes = Attributes()
        attributes.add(Origin(Origin.IGP))
        attributes.add(_communities(fields))
        if kind == encode.KIND_IMET:
            attributes.add(_pmsi(fields))
        return attributes

    return _ATTRIBUTES.get(key, build)


def _pmsi(fields: dict[str, str]) -> PMSI:
    vni = _uint(fields["label"], encode.VNI_MAX, "PMSI label")
    tunnel = ip_address(fields.get("tunnel", fields["orig"]))
    # The tunnel endpoint is the VTEP; label is the VNI raw (RFC 8365 5.1.3).
    return PMSIIngressReplication(
        str(tunnel), label=vni >> 4, flags=0, tunnel=tunnel.packed, raw_label=vni
    )


def parse_change(token: str, action: Action) -> Change:
    """One token -> an ExaBGP Change (NLRI with next hop, plus attributes)."""
    kind, fields = parse_fields(token)
    rd = route_distinguisher(fields["rd"])
    etag = EthernetTag(_uint(fields["etag"], encode.ETAG_MAX, "ethernet tag"))
    nexthop = _ip(fields["nh"])
    if kind == encode.KIND_MAC:
        ip = _ip(fields["ip"]) if "ip" in fields else None
        nlri = MAC(rd, _esi(fields), etag, _mac(fields["mac"]), 48, _labels(fields["label"]),
                   ip, nexthop=nexthop, action=action)
    elif kind == encode.KIND_IMET:
        nlri = Multicast(rd, etag, _ip(fields["orig"]), nexthop=nexthop, action=action)
    else:
        network = fields["net"]
        address, _, length = network.partition("/")
        plen = _uint(length, 128 if ":" in address else 32, "prefix length")
        gateway = fields.get("gwip", "::" if ":" in address else "0.0.0.0")
        if (":" in gateway) != (":" in address):
            raise CommandError(f"gateway {gateway} and prefix {network} differ in family")
        nlri = Prefix(rd, _esi(fields), etag, _labels(fields["label"]), _ip(address), plen,
                      _ip(gateway), nexthop=nexthop, action=action)
    if action == Action.WITHDRAW:
        # A withdraw-only UPDATE carries no path attribute (RFC 4760 3).
        return Change(nlri, Attributes())
    return Change(nlri, _attributes(kind, fields))


def parse_command(command: str) -> tuple[Action, list[Change]]:
    action, tokens = split_command(command)
    return action, [parse_change(token, action) for token in tokens]


# ---------------------------------------------------------------------------
# ExaBGP handlers


def inject(reactor: Any, peers: list[str], change: Change) -> bool:
    """`reactor.configuration.inject_change` without its per-peer deepcopy.

    ExaBGP deep-copies every change for every peer so that a `next-hop self`
    can be resolved per peer; that copy was half of ExaBGP's CPU time per
    announced route. Our changes are built fresh for each command, never
    mutated afterwards, and carry an explicit next hop, so the copy buys
    nothing; anything with `self` still takes ExaBGP's own path.
    """
    if change.nlri.nexthop.SELF:
        return bool(reactor.configuration.inject_change(peers, change))
    family = change.nlri.family().afi_safi()
    neighbors = reactor.configuration.neighbors
    injected = False
    for name in peers:
        neighbor = neighbors.get(name)
        if neighbor is None or family not in neighbor.families():
            continue
        neighbor.rib.outgoing.add_to_rib(change)
        injected = True
    return injected


def _handle(self: Any, reactor: Any, service: str, line: str, use_json: bool) -> bool:
    def callback() -> Iterator[bool]:
        try:
            descriptions, command = extract_neighbors(line)
            peers = match_neighbors(reactor.peers(service), descriptions)
            if not peers:
                log.error(lambda: f"evpn: no neighbor matches {line[:120]}", "api")
                reactor.processes.answer_error(service)
                yield True
                return
            action, tokens = split_command(command)
            changes = []
            for index, token in enumerate(tokens, 1):
                changes.append(parse_change(token, action))
                if index % YIELD_EVERY == 0:
                    yield False
            for index, change in enumerate(changes, 1):
                inject(reactor, peers, change)
                if index % YIELD_EVERY == 0:
                    yield False
            reactor.processes.answer_done(service)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            reason = f"evpn: rejected {line[:160]!r}: {exc}"
            log.error(lambda: reason, "api")
            reactor.processes.answer_error(service)
            yield True

    reactor.asynchronous.schedule(service, line, callback())
    return True


def _retire(self: Any, reactor: Any, service: str, line: str, use_json: bool) -> bool:
    """Withdraw every route of every adj-rib-out; `done` once the UPDATEs are out.

    What the relay says before it ends ExaBGP for good. Closing the sessions
    alone would leave it to each peer: one acting as graceful-restart helper
    for our families keeps our routes as stale for the restart time (RFC
    4724), pointing at a VTEP nobody serves any more.
    """

    def pending(name: str) -> bool:
        peer = reactor._peers.get(name)
        return peer is not None and peer.neighbor.rib.outgoing.pending()

    def withdraw(name: str, flood_lists: bool) -> None:
        peer = reactor._peers.get(name)
        if peer is None:
            return
        rib = peer.neighbor.rib.outgoing
        for change in list(rib.cached_changes(None, [Action.ANNOUNCE])):
            if (getattr(change.nlri, "CODE", None) == Multicast.CODE) == flood_lists:
                rib.del_from_rib(change)

    def callback() -> Iterator[bool]:
        names = list(reactor.peers())
        deadline = time.monotonic() + RETIRE_TIMEOUT
        # MACs before flood lists, as a daemon withdraws them: FRR's zebra
        # keeps remote MACs whose VTEP's Type-3 went first (for a while).
        for flood_lists in (False, True):
            for name in names:
                withdraw(name, flood_lists)
            while any(pending(name) for name in names) and time.monotonic() < deadline:
                yield False
        reactor.processes.answer_done(service)

    reactor.asynchronous.schedule(service, line, callback())
    return True


_registered = False


def register() -> None:
    """Add the EVPN commands to ExaBGP's command registry (idempotent)."""
    global _registered
    if _registered:
        return
    Command.register(encode.ANNOUNCE)(_announce_evpn)
    Command.register(encode.WITHDRAW)(_withdraw_evpn)
    Command.register(RETIRE, False)(_retire)
    _registered = True


# Two named functions: ExaBGP sets func_name on what it registers.
def _announce_evpn(self: Any, reactor: Any, service: str, line: str, use_json: bool) -> bool:
    return _handle(self, reactor, service, line, use_json)


def _withdraw_evpn(self: Any, reactor: Any, service: str, line: str, use_json: bool) -> bool:
    return _handle(self, reactor, service, line, use_json)
