"""ExaBGP 5.0.15 JSON lines -> typed messages (see DESIGN.md section 2).

Pure: a line in, a list of `Message` values out. The decoder never raises:
anything malformed or unexpected becomes a `DecodeError` (or an `ignored`
count for input that is valid but not ours, such as other address families
or unknown EVPN route types) and decoding carries on with the rest.
One bad NLRI costs that NLRI, not the UPDATE it came in.

ExaBGP quirks handled here, all seen on routes captured from FRR 8.4.4:

* the VNI is the raw 24-bit label, element [1] of `label[0]`; ExaBGP leaves
  the raw value out when it is zero (`[[0]]`);
* the second Type-2 label (the L3VNI) is missing from the parsed fields, so
  it is read back from the NLRI's `raw` hex;
* extended communities without a registered class (router-MAC,
  default-gateway) only come as an integer `value`; every community is
  therefore decoded from its value, the string being a fallback;
* PMSI comes only as a string, `pmsi:NAME:FLAGS:LABEL(RAW):TUNNEL`, and an
  IPv6 tunnel is printed as hex;
* a withdrawal has no next hop and no attributes;
* in a received OPEN's graceful-restart capability ExaBGP swaps the flag
  names: a family whose Forwarding State (F) bit is set is listed with
  `["restart"]`, and the Restart State (R) bit shows as `"forwarding"` in
  `restart-flags` (`Graceful.json()` tests 0x80 for the one and 0x8 for the
  other); the bits are read here by what they are on the wire.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address, ip_network
from typing import Any

from evpnd import validate
from evpnd.model import (
    ZERO_ESI,
    EadKey,
    EadRoute,
    EsKey,
    EsRoute,
    ImetKey,
    ImetRoute,
    IPAddress,
    MacIpKey,
    MacIpRoute,
    PrefixKey,
    PrefixRoute,
    Route,
    RouteKey,
)
from evpnd.speaker.messages import (
    CommandAck,
    DecodeError,
    EndOfRib,
    GracefulRestart,
    Message,
    Notification,
    PeerOpen,
    PeerState,
    RouteRefresh,
    RouteUpdate,
    SpeakerShutdown,
)
from evpnd.speaker.usable import BAD_ROUTE, TREAT_AS_WITHDRAW, next_hop_problem, route_problem

EVPN_FAMILY = "l2vpn evpn"
VNI_MAX = (1 << 24) - 1
GRACEFUL_RESTART_CAPABILITY = 64  # RFC 4724: ExaBGP keys capabilities by code

_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
_ESI_RE = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){9}")
_PMSI_LABEL_RE = re.compile(r"([0-9]+)(?:\(([0-9]+)\))?")  # ASCII digits, not \d
_ENCAP_NAMES = {
    "VXLAN": 8,
    "NVGRE": 9,
    "MPLS": 10,
    "VXLAN-GPE": 12,
    "MPLS-in-UDP": 13,
    "GRE": 2,
    "IP-in-IP": 7,
    "L2TPv3": 1,
}
_PMSI_NAMES = {"ingressreplication": "ingress-replication", "notunnel": "no-tunnel"}


class _Malformed(Exception):
    """Internal: one piece of input is unusable; `reason` becomes DecodeError.reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class DecodeStats:
    """Running counters, exported as metrics and shown by `show`."""

    lines: int = 0
    frames: int = 0  # of the lines, raw UPDATE frames (wire.py); the rest were JSON
    messages: Counter[str] = field(default_factory=Counter)
    announced: int = 0
    withdrawn: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    errors_by_peer: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class _Attributes:
    """The path attributes of one UPDATE that matter for EVPN, decoded once for all its NLRIs."""

    route_targets: tuple[str, ...] = ()
    encapsulation: int | None = None
    mobility_seq: int = 0
    sticky: bool = False
    router_mac: str | None = None
    default_gateway: bool = False
    pmsi: _Pmsi | None = None


@dataclass(frozen=True, slots=True)
class _Pmsi:
    tunnel_type: str
    vni: int
    tunnel: IPAddress | None


@dataclass(slots=True)
class _UnusableRoutes:
    """What one UPDATE announced that cannot be used (usable.py)."""

    keys: list[RouteKey] = field(default_factory=list)  # withdrawn instead
    next_hops: list[str] = field(default_factory=list)  # treat-as-withdraw problems
    routes: list[str] = field(default_factory=list)  # bad-route problems


class Decoder:
    """Stateless apart from its counters; one per ExaBGP process is the intended use."""

    def __init__(self) -> None:
        self.stats = DecodeStats()

    def decode(self, line: str | bytes) -> list[Message]:
        """One line of ExaBGP output (JSON, or a `done`/`error` ack) -> its messages."""
        self.stats.lines += 1
        try:
            out = self._decode(line)
        except _Malformed as exc:
            out = [DecodeError(exc.reason, None, exc.detail)]
        except Exception as exc:  # a daemon must survive any input; keep the evidence
            out = [DecodeError("internal-error", None, f"{type(exc).__name__}: {exc}"[:200])]
        for msg in out:
            self.stats.messages[type(msg).__name__] += 1
            if isinstance(msg, DecodeError):
                self.stats.errors[msg.reason] += 1
                if msg.peer is not None:
                    self.stats.errors_by_peer[str(msg.peer)] += 1
            elif isinstance(msg, RouteUpdate):
                self.stats.announced += len(msg.announced)
                self.stats.withdrawn += len(msg.withdrawn)
        return out

    def _decode(self, line: str | bytes) -> list[Message]:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                raise _Malformed("not-utf8") from None
        text = line.strip()
        if not text:
            self.stats.ignored["empty-line"] += 1
            return []
        if text in ("done", "error"):
            return [CommandAck(text == "done")]
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise _Malformed("bad-json", str(exc)[:200]) from None
        if not isinstance(doc, dict):
            raise _Malformed("bad-envelope", "not a JSON object")
        kind = doc.get("type")
        if kind == "notification" and doc.get("notification") == "shutdown":
            return [SpeakerShutdown()]
        if kind not in ("update", "state", "notification", "refresh", "open"):
            if not isinstance(kind, str):
                raise _Malformed("bad-envelope", "no message type")
            self.stats.ignored[f"type-{kind}"[:40]] += 1
            return []
        neighbor = _dict(doc.get("neighbor"), "neighbor")
        peer = _ip(_dict(neighbor.get("address"), "neighbor.address").get("peer"), "peer")
        try:
            if kind == "state":
                return [_state(peer, neighbor)]
            if kind == "notification":
                return [_notification(peer, neighbor)]
            if kind == "refresh":
                return [_refresh(peer, neighbor)]
            if kind == "open":
                if neighbor.get("direction", "receive") != "receive":
                    self.stats.ignored["sent-open"] += 1
                    return []
                return [_open(peer, neighbor)]
            if neighbor.get("direction", "receive") != "receive":
                # With `send { ... }` configured ExaBGP echoes what it sent: not routes we learned.
                self.stats.ignored["sent-update"] += 1
                return []
            return self._update(peer, _dict(neighbor.get("message"), "message"))
        except _Malformed as exc:
            return [DecodeError(exc.reason, peer, exc.detail)]

    def _update(self, peer: IPAddress, message: dict[str, Any]) -> list[Message]:
        if "eor" in message:
            eor = _dict(message["eor"], "eor")
            return [EndOfRib(peer, _str(eor, "afi"), _str(eor, "safi"))]
        update = _dict(message.get("update"), "update")
        out: list[Message] = []
        announced: list[Route] = []
        withdrawn: list[RouteKey] = []
        # Announced but unusable (usable.py): withdrawn after the UPDATE's own
        # withdrawals, as the raw decoder orders them.
        unusable = _UnusableRoutes()

        announce = _dict(update.get("announce", {}), "announce")
        evpn_announce = self._evpn_only(announce, _count_nested)
        if evpn_announce is not None:
            try:
                attrs = _attributes(_dict(update.get("attribute", {}), "attribute"))
            except _Malformed as exc:
                out.append(DecodeError(exc.reason, peer, exc.detail))
            else:
                for nexthop_text, nlris in _dict(evpn_announce, "announce").items():
                    self._announced(peer, nexthop_text, nlris, attrs, announced, out, unusable)

        withdraw = _dict(update.get("withdraw", {}), "withdraw")
        evpn_withdraw = self._evpn_only(withdraw, _count_list)
        if evpn_withdraw is not None:
            for nlri in _list(evpn_withdraw, "withdraw"):
                try:
                    key = self._key(nlri)
                except _Malformed as exc:
                    out.append(DecodeError(exc.reason, peer, exc.detail))
                    continue
                if key is not None:
                    withdrawn.append(key)

        withdrawn.extend(unusable.keys)
        if announced or withdrawn:
            out.insert(0, RouteUpdate(peer, tuple(announced), tuple(withdrawn)))
        if unusable.next_hops:
            out.append(DecodeError(TREAT_AS_WITHDRAW, peer, "; ".join(unusable.next_hops)[:300]))
        if unusable.routes:
            out.append(DecodeError(BAD_ROUTE, peer, "; ".join(unusable.routes)[:300]))
        return out

    def _evpn_only(self, families: dict[str, Any], count: Callable[[Any], int]) -> Any:
        for family, value in families.items():
            if family != EVPN_FAMILY:
                self.stats.ignored[f"family-{family}"[:40]] += count(value)
        return families.get(EVPN_FAMILY)

    def _announced(
        self,
        peer: IPAddress,
        nexthop_text: str,
        nlris: Any,
        attrs: _Attributes,
        announced: list[Route],
        out: list[Message],
        unusable: _UnusableRoutes,
    ) -> None:
        nlris = _list(nlris, "announce")
        try:
            nexthop = _ip(nexthop_text, "next-hop")
        except _Malformed as exc:
            out.append(DecodeError(exc.reason, peer, f"{exc.detail} ({len(nlris)} routes)"))
            return
        problem = next_hop_problem(nexthop)
        if problem is not None:
            # Every route of this next hop is withdrawn (treat-as-withdraw).
            unusable.next_hops.append(problem)
            for nlri in nlris:
                try:
                    key = self._key(nlri)
                except _Malformed as exc:
                    out.append(DecodeError(exc.reason, peer, exc.detail))
                    continue
                if key is not None:
                    unusable.keys.append(key)
            return
        for nlri in nlris:
            try:
                route = self._route(nlri, nexthop, attrs)
            except _Malformed as exc:
                out.append(DecodeError(exc.reason, peer, exc.detail))
                continue
            if route is None:
                continue
            problem = route_problem(route)
            if problem is None:
                announced.append(route)
            else:
                unusable.keys.append(route.key)
                unusable.routes.append(problem)

    def _supported(self, nlri: Any) -> int | None:
        """The route type when we act on it; None (and a count) for the others."""
        nlri = _dict(nlri, "nlri")
        code = _int(nlri, "code")
        if code in (1, 2, 3, 4, 5) and nlri.get("parsed") is True:
            return code
        # Unknown route types and anything ExaBGP could not parse.
        self.stats.ignored[f"evpn-type-{code}"] += 1
        return None

    def _route(self, nlri: Any, nexthop: IPAddress, attrs: _Attributes) -> Route | None:
        code = self._supported(nlri)
        if code == 2:
            return _mac_ip_route(nlri, nexthop, attrs)
        if code == 3:
            return _imet_route(nlri, nexthop, attrs)
        if code == 5:
            return _prefix_route(nlri, nexthop, attrs)
        if code == 1:
            return EadRoute(_ead_key(nlri), nexthop, _ead_label(nlri), attrs.route_targets,
                            attrs.encapsulation)  # fmt: skip
        if code == 4:
            return EsRoute(_es_key(nlri), nexthop, attrs.route_targets, attrs.encapsulation)
        return None

    def _key(self, nlri: Any) -> RouteKey | None:
        code = self._supported(nlri)
        if code == 2:
            return _mac_ip_key(nlri)
        if code == 3:
            return _imet_key(nlri)
        if code == 5:
            return _prefix_key(nlri)
        if code == 1:
            return _ead_key(nlri)
        if code == 4:
            return _es_key(nlri)
        return None


def _refresh(peer: IPAddress, neighbor: dict[str, Any]) -> RouteRefresh:
    body = _dict(neighbor.get("route-refresh"), "route-refresh")
    return RouteRefresh(peer, _str(body, "afi"), _str(body, "safi"), _str(body, "subtype"))


def _open(peer: IPAddress, neighbor: dict[str, Any]) -> PeerOpen:
    body = _dict(neighbor.get("open"), "open")
    capabilities = _dict(body.get("capabilities", {}), "capabilities")
    graceful = capabilities.get(str(GRACEFUL_RESTART_CAPABILITY))
    router_id = body.get("router_id")
    return PeerOpen(
        peer,
        _int(body, "asn"),
        _int(body, "hold_time"),
        router_id if isinstance(router_id, str) else "",
        None if graceful is None else _graceful_restart(graceful),
    )


def _graceful_restart(value: Any) -> GracefulRestart:
    """ExaBGP's rendering of the capability; see the module docstring for its flag names."""
    cap = _dict(value, "graceful restart")
    restart_time = _int(cap, "time")
    restart_flags = _list(cap.get("restart-flags", []), "restart-flags")
    families: list[tuple[str, str, bool]] = []
    for family, flags in _dict(cap.get("address-family-flags", {}), "address-family-flags").items():
        afi, slash, safi = family.partition("/")
        if not slash:
            raise _Malformed("bad-open", f"family {family[:40]!r}")
        families.append((afi, safi, "restart" in _list(flags, "address-family flags")))
    return GracefulRestart(restart_time, "forwarding" in restart_flags, tuple(families))


def decode_line(line: str | bytes) -> list[Message]:
    """Decode one line without keeping counters (tests, one-off tools)."""
    return Decoder().decode(line)


# --------------------------------------------------------------------- envelope


def _state(peer: IPAddress, neighbor: dict[str, Any]) -> PeerState:
    reason = neighbor.get("reason")
    return PeerState(peer, _str(neighbor, "state"), reason if isinstance(reason, str) else None)


def _notification(peer: IPAddress, neighbor: dict[str, Any]) -> Notification:
    body = _dict(neighbor.get("notification"), "notification")
    data = body.get("data", "")
    if not isinstance(data, str):
        raise _Malformed("bad-notification", "data is not a string")
    hexdata = data[2:] if data[:2].lower() == "0x" else data
    try:
        raw = bytes.fromhex(hexdata)
    except ValueError:
        raise _Malformed("bad-notification", "data is not hex") from None
    message = body.get("message", "")
    direction = neighbor.get("direction", "receive")
    return Notification(
        peer,
        _int(body, "code"),
        _int(body, "subcode"),
        raw,
        message if isinstance(message, str) else "",
        direction if isinstance(direction, str) else "receive",
    )


# ------------------------------------------------------------------- attributes


def _attributes(attribute: dict[str, Any]) -> _Attributes:
    communities = attribute.get("extended-community", [])
    targets: list[str] = []
    encapsulation: int | None = None
    seq: int | None = None
    sticky = False
    router_mac: str | None = None
    default_gateway = False
    for community in _list(communities, "extended-community"):
        community = _dict(community, "extended-community")
        value = community.get("value")
        if _is_int(value) and 0 <= value < 1 << 64:
            decoded = _community_from_value(value)
        else:
            decoded = _community_from_string(community.get("string"))
        match decoded:
            case ("target", str(target)):
                if target not in targets:
                    targets.append(target)
            case ("encap", int(tunnel)):
                encapsulation = tunnel
            case ("mobility", int(number), bool(flag)):
                # RFC 7432 7.7 allows one; if a peer sends more, the highest is the claim.
                seq = number if seq is None else max(seq, number)
                sticky = sticky or flag
            case ("router-mac", str(mac)):
                router_mac = mac
            case ("default-gateway",):
                default_gateway = True
            case _:
                pass  # communities we do not act on (SoO, ESI label, ...)
    pmsi = attribute.get("pmsi")
    return _Attributes(
        route_targets=tuple(targets),
        encapsulation=encapsulation,
        mobility_seq=seq or 0,
        sticky=sticky,
        router_mac=router_mac,
        default_gateway=default_gateway,
        pmsi=None if pmsi is None else _pmsi(pmsi),
    )


def _community_from_value(value: int) -> tuple[Any, ...]:
    kind, subtype = value >> 56, (value >> 48) & 0xFF
    if subtype == 0x02 and kind & ~0x40 in (0x00, 0x01, 0x02):
        # Route targets: the transitive bit is masked because some stacks
        # (Quagga) send them marked non-transitive.
        if kind & ~0x40 == 0x00:
            return ("target", f"{(value >> 32) & 0xFFFF}:{value & 0xFFFFFFFF}")
        if kind & ~0x40 == 0x01:
            return ("target", f"{IPv4Address((value >> 16) & 0xFFFFFFFF)}:{value & 0xFFFF}")
        return ("target", f"{(value >> 16) & 0xFFFFFFFF}:{value & 0xFFFF}")
    if kind == 0x03 and subtype == 0x0C:
        return ("encap", value & 0xFFFF)
    if kind == 0x03 and subtype == 0x0D:
        return ("default-gateway",)
    if kind == 0x06 and subtype == 0x00:
        return ("mobility", value & 0xFFFFFFFF, bool((value >> 40) & 0x01))
    if kind == 0x06 and subtype == 0x03:
        return ("router-mac", _mac_from_int(value & 0xFFFF_FFFF_FFFF))
    return ()


def _community_from_string(text: Any) -> tuple[Any, ...]:
    """Fallback for an entry without a usable value: ExaBGP's own rendering."""
    if not isinstance(text, str):
        raise _Malformed("bad-community", "neither value nor string")
    head, _, rest = text.partition(":")
    if head == "target" and rest:
        return ("target", rest)
    if head == "encap" and rest in _ENCAP_NAMES:
        return ("encap", _ENCAP_NAMES[rest])
    if head == "mac-mobility":
        number, _, flag = rest.partition(":")
        if number.isascii() and number.isdigit() and flag in ("", "sticky"):
            return ("mobility", validate.decimal(number), flag == "sticky")
        raise _Malformed("bad-community", f"mac mobility {text[:60]!r}")
    return ()


def _pmsi(text: Any) -> _Pmsi:
    if not isinstance(text, str):
        raise _Malformed("bad-pmsi", "not a string")
    # The tunnel goes last and may itself hold colons (an IPv6 address).
    parts = text.split(":", 4)
    if len(parts) != 5 or parts[0] != "pmsi":
        raise _Malformed("bad-pmsi", text[:80])
    _, name, _flags, label, tunnel_text = parts
    match = _PMSI_LABEL_RE.fullmatch(label)
    if match is None:
        raise _Malformed("bad-pmsi", f"label {label[:40]!r}")
    # ExaBGP prints "LABEL(RAW)", or only "0" when the raw label is zero.
    vni = int(match[2]) if match[2] is not None else int(match[1])
    if vni > VNI_MAX:
        raise _Malformed("bad-pmsi", f"label {label[:40]!r}")
    tunnel: IPAddress | None = None
    if tunnel_text.startswith("0x"):
        # ExaBGP has no IPv6 ingress-replication class and prints the tunnel in hex.
        try:
            packed = bytes.fromhex(tunnel_text[2:])
            tunnel = ip_address(packed) if len(packed) in (4, 16) else None
        except ValueError:
            raise _Malformed("bad-pmsi", f"tunnel {tunnel_text[:40]!r}") from None
    elif tunnel_text:
        tunnel = _ip(tunnel_text, "pmsi tunnel", reason="bad-pmsi")
    return _Pmsi(_PMSI_NAMES.get(name, name), vni, tunnel)


# ----------------------------------------------------------------------- routes


def _mac_ip_key(nlri: dict[str, Any]) -> MacIpKey:
    ip_text = nlri.get("ip")
    return MacIpKey(
        rd=_rd(nlri),
        etag=_int(nlri, "ethernet-tag"),
        mac=_mac(nlri.get("mac")),
        ip=None if ip_text is None else _ip(ip_text, "ip"),
    )


def _mac_ip_route(nlri: dict[str, Any], nexthop: IPAddress, attrs: _Attributes) -> MacIpRoute:
    key = _mac_ip_key(nlri)
    return MacIpRoute(
        key=key,
        nexthop=nexthop,
        vni=_label_vni(nlri),
        l3vni=_type2_l3vni(nlri.get("raw")),
        esi=_esi(nlri),
        route_targets=attrs.route_targets,
        mobility_seq=attrs.mobility_seq,
        sticky=attrs.sticky,
        router_mac=attrs.router_mac,
        default_gateway=attrs.default_gateway,
        encapsulation=attrs.encapsulation,
    )


def _imet_key(nlri: dict[str, Any]) -> ImetKey:
    return ImetKey(_rd(nlri), _int(nlri, "ethernet-tag"), _ip(nlri.get("ip"), "originator"))


def _imet_route(nlri: dict[str, Any], nexthop: IPAddress, attrs: _Attributes) -> ImetRoute:
    key = _imet_key(nlri)
    pmsi = attrs.pmsi
    return ImetRoute(
        key=key,
        nexthop=nexthop,
        vni=pmsi.vni if pmsi else 0,
        tunnel=pmsi.tunnel if pmsi else None,
        tunnel_type=pmsi.tunnel_type if pmsi else "none",
        route_targets=attrs.route_targets,
        encapsulation=attrs.encapsulation,
    )


def _prefix_key(nlri: dict[str, Any]) -> PrefixKey:
    address = _ip(nlri.get("ip"), "prefix")
    length = _int(nlri, "iplen")
    try:
        prefix = ip_network(f"{address}/{length}", strict=False)
    except ValueError:
        raise _Malformed("bad-prefix", f"{address}/{length}") from None
    return PrefixKey(_rd(nlri), _int(nlri, "ethernet-tag"), prefix)


def _prefix_route(nlri: dict[str, Any], nexthop: IPAddress, attrs: _Attributes) -> PrefixRoute:
    key = _prefix_key(nlri)
    gateway_text = nlri.get("gateway")
    gateway = None if gateway_text is None else _ip(gateway_text, "gateway")
    return PrefixRoute(
        key=key,
        nexthop=nexthop,
        vni=_label_vni(nlri),
        # An all-zero gateway IP overlay index means "no gateway" (RFC 9136 3.1).
        gateway=gateway if gateway is not None and not gateway.is_unspecified else None,
        esi=_esi(nlri),
        route_targets=attrs.route_targets,
        router_mac=attrs.router_mac,
        encapsulation=attrs.encapsulation,
    )


def _ead_key(nlri: dict[str, Any]) -> EadKey:
    return EadKey(_rd(nlri), _esi(nlri), _int(nlri, "ethernet-tag"))


def _ead_label(nlri: dict[str, Any]) -> int:
    # ExaBGP leaves the label out of a Type-1 NLRI that has none.
    return _label_vni(nlri) if "label" in nlri else 0


def _es_key(nlri: dict[str, Any]) -> EsKey:
    return EsKey(_rd(nlri), _esi(nlri), _ip(nlri.get("ip"), "originator"))


# ----------------------------------------------------------------------- fields


def _label_vni(nlri: dict[str, Any]) -> int:
    labels = nlri.get("label")
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], list):
        raise _Malformed("bad-label", "no label")
    first = labels[0]
    if len(first) >= 2 and _is_int(first[1]) and 0 <= first[1] <= VNI_MAX:
        return first[1]
    if first == [0]:
        return 0  # ExaBGP omits a zero raw label
    raise _Malformed("bad-label", f"label {str(first)[:40]} has no raw value")


def _type2_l3vni(raw: Any) -> int | None:
    """The second label of a Type-2 NLRI, read from its wire form; None when absent."""
    if not isinstance(raw, str):
        return None
    try:
        data = bytes.fromhex(raw)
    except ValueError:
        return None
    # type(1) length(1) | RD 8, ESI 10, tag 4, MAC length 1, MAC 6, IP length 1, IP, labels
    if len(data) < 32 or data[0] != 2 or data[1] != len(data) - 2:
        return None
    labels = data[32 + data[31] // 8 :]
    if len(labels) != 6:
        return None
    return int.from_bytes(labels[3:6], "big")


def _rd(nlri: dict[str, Any]) -> str:
    rd = nlri.get("rd")
    if not isinstance(rd, str) or not rd:
        raise _Malformed("bad-rd", "missing route distinguisher")
    return rd


def _esi(nlri: dict[str, Any]) -> str:
    esi = nlri.get("esi", "-")
    if esi == "-":
        return ZERO_ESI
    if not isinstance(esi, str) or not _ESI_RE.fullmatch(esi):
        raise _Malformed("bad-esi", f"esi {str(esi)[:40]!r}")
    return esi.lower()


def _mac(value: Any) -> str:
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value):
        raise _Malformed("bad-mac", f"mac {str(value)[:40]!r}")
    return value.lower()


def _mac_from_int(value: int) -> str:
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def _ip(value: Any, what: str, reason: str = "bad-ip") -> IPAddress:
    if not isinstance(value, str):
        raise _Malformed(reason, f"{what}: missing")
    try:
        return ip_address(value)
    except ValueError:
        raise _Malformed(reason, f"{what}: {value[:60]!r}") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not _is_int(value) or value < 0:
        raise _Malformed("missing-field", f"{key} is not a non-negative integer")
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _Malformed("missing-field", f"{key} is not a string")
    return value


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed("missing-field", f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Malformed("missing-field", f"{what} is not a list")
    return value


def _count_nested(value: Any) -> int:
    if isinstance(value, dict):
        return sum(len(v) if isinstance(v, list) else 1 for v in value.values())
    return 1


def _count_list(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1
