"""MQTT topics, event payloads and endpoint registrations (pure: no I/O).

Topics under the configured prefix `P` (default `evpnd/<hostname>`):

    P/events/<event>           JSON events, not retained (`P/events/error` = errors)
    P/summary/<vni>            retained per-VNI summary (empty payload = VNI gone)
    P/peers/<address>          retained per-peer BGP session state (empty = peer gone)
    P/status                   retained {"state": "online"|"offline"} (offline = will)
    P/endpoints/<vni>/<mac>    registrations from orchestrators (evpnd subscribes)

Registration payloads on `P/endpoints/<vni>/<mac>`. The topic is the
endpoint's identity, so it has exactly one spelling: the VNI in decimal
without leading zeros, the MAC in lower-case colon form
(`02:00:00:00:00:0a`). Any other spelling (`02-00-...`, upper case) is
refused (`bad-mac`, the message names the canonical topic): were
`.../02:00:00:00:00:0A` and `.../02:00:00:00:00:0a` one endpoint, clearing
one retained message would unregister an endpoint whose other retained
message the broker still holds, and it would come back at the next
reconnect. The `mac` inside the payload may be spelt either way.

    {"mac": "02:00:00:00:00:01"}                              register the MAC
    {"mac": "02:00:00:00:00:01", "ip": "10.0.0.5", "sticky": true}
    (empty payload, e.g. clearing the retained message)       unregister
    {"mac": "02:00:00:00:00:01", "delete": true}              unregister

`mac` is required in every JSON payload and must equal the topic's; `ip`
(one IPv4 or IPv6 unicast address, or null) and `sticky` (a JSON boolean,
default false) are optional; any other key is an error, so that a typo like
`stikcy` is reported instead of ignored. Anything that does not parse becomes
a `RegistrationError` with a stable `reason` code and a readable `detail`.
A payload is at most PAYLOAD_MAX bytes and DEPTH_MAX levels of JSON nesting
(a registration is one flat object); both are checked before the JSON parser
runs, which would otherwise recurse once per level and raise RecursionError
on a few kilobytes of brackets. MACs, VNIs and addresses are checked by
evpnd/validate.py, like everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from evpnd import validate
from evpnd.model import IPAddress, normalize_mac

VNI_MAX = validate.VNI_MAX
PAYLOAD_MAX = 4096  # bytes; a registration is a few dozen
DEPTH_MAX = 4  # JSON nesting levels; a registration has one
SHOWN_MAX = 200  # characters of a bad payload repeated in the error event

EVENTS = "events"
SUMMARY = "summary"
PEERS = "peers"
STATUS = "status"
ENDPOINTS = "endpoints"
ERROR_EVENT = "error"

# Event names (the last topic level and the payload's "event" field).
PEER_UP = "peer_up"
PEER_DOWN = "peer_down"
LOCAL_MAC_LEARNED = "local_mac_learned"
LOCAL_MAC_REMOVED = "local_mac_removed"
REMOTE_MAC_INSTALLED = "remote_mac_installed"
REMOTE_MAC_REMOVED = "remote_mac_removed"
REMOTE_MAC_MOVED = "remote_mac_moved"
EXABGP_RESTARTED = "exabgp_restarted"
ENDPOINT_REGISTERED = "endpoint_registered"
ENDPOINT_UNREGISTERED = "endpoint_unregistered"
MAC_DUPLICATE = "mac_duplicate"
MAC_DUPLICATE_CLEARED = "mac_duplicate_cleared"
ROUTE_LIMIT = "route_limit"


# ---------------------------------------------------------------------------
# Topics


def event_topic(prefix: str, name: str) -> str:
    return f"{prefix}/{EVENTS}/{name}"


def error_topic(prefix: str) -> str:
    return event_topic(prefix, ERROR_EVENT)


def summary_topic(prefix: str, vni: int) -> str:
    return f"{prefix}/{SUMMARY}/{vni}"


def status_topic(prefix: str) -> str:
    return f"{prefix}/{STATUS}"


def peer_topic(prefix: str, peer: IPAddress | str) -> str:
    """`P/peers/<address>`: the address as Python prints it (IPv6 compressed, lower case)."""
    return f"{prefix}/{PEERS}/{peer}"


def endpoints_filter(prefix: str) -> str:
    """The subscription: every `<vni>/<mac>` registration under the prefix."""
    return f"{prefix}/{ENDPOINTS}/+/+"


def endpoint_topic(prefix: str, vni: int, mac: str) -> str:
    return f"{prefix}/{ENDPOINTS}/{vni}/{normalize_mac(mac)}"


# ---------------------------------------------------------------------------
# Events


def timestamp(now: datetime | None = None) -> str:
    """ISO 8601 UTC with milliseconds: 2026-11-22T10:00:00.123Z."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> Any:
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        items = [_json(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """One event: published as JSON on `P/events/<name>`, never retained."""

    name: str
    time: str
    fields: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.name, "time": self.time, **dict(self.fields)}

    def payload(self) -> bytes:
        return encode_json(self.as_dict())

    def topic(self, prefix: str) -> str:
        return event_topic(prefix, self.name)


def encode_json(data: Mapping[str, Any]) -> bytes:
    """Compact JSON; IP addresses as strings, sets sorted. Raises TypeError on others."""
    return json.dumps(_json(data), separators=(",", ":"), allow_nan=False).encode()


def event(name: str, now: datetime | None = None, **fields: Any) -> Event:
    """A generic event; the named builders below fix each event's fields."""
    if not name or any(c in name for c in "/+#\0"):
        raise ValueError(f"invalid event name {name!r}")
    return Event(name, timestamp(now), tuple((k, _json(v)) for k, v in fields.items()))


def peer_up(peer: IPAddress | str, *, asn: int | None = None,
            now: datetime | None = None) -> Event:
    return event(PEER_UP, now, peer=str(peer), asn=asn)


def peer_down(peer: IPAddress | str, *, reason: str | None = None,
              now: datetime | None = None) -> Event:
    return event(PEER_DOWN, now, peer=str(peer), reason=reason)


def local_mac_learned(vni: int, mac: str, *, ip: IPAddress | None = None,
                      port: str | None = None, sticky: bool = False, seq: int | None = None,
                      source: str = "kernel", now: datetime | None = None) -> Event:
    """`source`: "kernel" (the bridge learned it) or "mqtt" (a registration)."""
    return event(LOCAL_MAC_LEARNED, now, vni=vni, mac=normalize_mac(mac), ip=ip, port=port,
                 sticky=sticky, seq=seq, source=source)


def local_mac_removed(vni: int, mac: str, *, ip: IPAddress | None = None,
                      port: str | None = None, source: str = "kernel",
                      now: datetime | None = None) -> Event:
    return event(LOCAL_MAC_REMOVED, now, vni=vni, mac=normalize_mac(mac), ip=ip, port=port,
                 source=source)


def remote_mac_installed(vni: int, mac: str, *, vtep: IPAddress | str,
                         peer: IPAddress | str | None = None, seq: int = 0,
                         sticky: bool = False, ip: IPAddress | None = None,
                         now: datetime | None = None) -> Event:
    return event(REMOTE_MAC_INSTALLED, now, vni=vni, mac=normalize_mac(mac), ip=ip,
                 vtep=str(vtep), peer=None if peer is None else str(peer), seq=seq,
                 sticky=sticky)


def remote_mac_removed(vni: int, mac: str, *, vtep: IPAddress | str | None = None,
                       peer: IPAddress | str | None = None, ip: IPAddress | None = None,
                       now: datetime | None = None) -> Event:
    return event(REMOTE_MAC_REMOVED, now, vni=vni, mac=normalize_mac(mac), ip=ip,
                 vtep=None if vtep is None else str(vtep),
                 peer=None if peer is None else str(peer))


def remote_mac_moved(vni: int, mac: str, *, vtep: IPAddress | str,
                     previous_vtep: IPAddress | str, seq: int,
                     peer: IPAddress | str | None = None,
                     now: datetime | None = None) -> Event:
    """A MAC now behind `vtep` was behind `previous_vtep` ("local" = this host)."""
    return event(REMOTE_MAC_MOVED, now, vni=vni, mac=normalize_mac(mac), vtep=str(vtep),
                 previous_vtep=str(previous_vtep), seq=seq,
                 peer=None if peer is None else str(peer))


def exabgp_restarted(*, restarts: int, reason: str, now: datetime | None = None) -> Event:
    return event(EXABGP_RESTARTED, now, restarts=restarts, reason=reason)


def mac_duplicate(vni: int, mac: str, *, moves: int, window: float,
                  vtep: IPAddress | str | None, frozen: bool, freeze: float | None,
                  now: datetime | None = None) -> Event:
    """A MAC moved `moves` times within `window` seconds (RFC 7432 15.1); `frozen`: not
    advertised, no move accepted, for `freeze` seconds (None: until cleared)."""
    return event(MAC_DUPLICATE, now, vni=vni, mac=normalize_mac(mac), moves=moves,
                 window=window, vtep=None if vtep is None else str(vtep), frozen=frozen,
                 freeze=freeze)


def mac_duplicate_cleared(vni: int, mac: str, *, reason: str,
                          now: datetime | None = None) -> Event:
    """`reason`: cleared (by the operator), freeze-ended, gone, policy."""
    return event(MAC_DUPLICATE_CLEARED, now, vni=vni, mac=normalize_mac(mac), reason=reason)


def route_limit(peer: IPAddress | str, *, level: str, routes: int, max_routes: int,
                warning_at: int, action: str, now: datetime | None = None) -> Event:
    """A peer's level against its route limit changed: warning, exceeded or ok."""
    return event(ROUTE_LIMIT, now, peer=str(peer), level=level, routes=routes,
                 max_routes=max_routes, warning_at=warning_at, action=action)


def endpoint_registered(reg: EndpointRegistered, now: datetime | None = None) -> Event:
    return event(ENDPOINT_REGISTERED, now, vni=reg.vni, mac=reg.mac, ip=reg.ip,
                 sticky=reg.sticky)


def endpoint_unregistered(unreg: EndpointUnregistered, *, reason: str = "cleared",
                          now: datetime | None = None) -> Event:
    return event(ENDPOINT_UNREGISTERED, now, vni=unreg.vni, mac=unreg.mac, reason=reason)


def error(error: str, detail: str, *, now: datetime | None = None, **context: Any) -> Event:
    """An error event on `P/events/error`: `error` is a short stable code."""
    return event(ERROR_EVENT, now, error=error, detail=detail, **context)


def invalid_registration(err: RegistrationError, now: datetime | None = None) -> Event:
    return error("invalid_registration", err.detail, now=now, reason=err.reason,
                 topic=err.topic, vni=err.vni, mac=err.mac, payload=err.payload)


def summary_payload(vni: int, summary: Mapping[str, Any], now: datetime | None = None) -> bytes:
    """The retained `P/summary/<vni>` payload: the caller's fields plus vni and time."""
    return encode_json({**summary, "vni": vni, "time": timestamp(now)})


def status_payload(state: str, client_id: str, now: datetime | None = None, *,
                   reason: str | None = None) -> bytes:
    """`online` at connect, `offline` with reason `stopped` at a clean stop: each with the
    time it was published."""
    data: dict[str, Any] = {"state": state, "client_id": client_id, "time": timestamp(now)}
    if reason is not None:
        data["reason"] = reason
    return encode_json(data)


def will_payload(client_id: str) -> bytes:
    """The MQTT will: `offline`, published by the broker when the connection dies. It has
    no time: the will is handed over at connect, and any time in it would be that
    connect's, not the moment evpnd went away (the broker's own receive time is)."""
    return encode_json({"state": "offline", "client_id": client_id,
                        "reason": "connection-lost"})


# Session states of the retained per-peer topic.
SESSION_UP = "up"
SESSION_DOWN = "down"


def peer_state_payload(peer: IPAddress | str, state: str, since: datetime, *,
                       asn: int | None = None, description: str | None = None,
                       reason: str | None = None, adopted: bool = False) -> bytes:
    """The retained `P/peers/<address>`: the session's state and `since` when (the change's
    own time, kept when the state is re-published at a reconnect). `adopted`: taken over
    established from a previous evpnd, so the session is older than `since`."""
    return encode_json({"peer": str(peer), "state": state, "since": timestamp(since),
                        "asn": asn, "description": description, "reason": reason,
                        "adopted": adopted})  # fmt: skip


# ---------------------------------------------------------------------------
# Registrations


@dataclass(frozen=True, slots=True)
class EndpointRegistered:
    """Advertise this MAC (and IP) as if the local bridge had learned it."""

    vni: int
    mac: str
    ip: IPAddress | None = None
    sticky: bool = False

    @property
    def key(self) -> tuple[int, str]:
        return (self.vni, self.mac)


@dataclass(frozen=True, slots=True)
class EndpointUnregistered:
    vni: int
    mac: str

    @property
    def key(self) -> tuple[int, str]:
        return (self.vni, self.mac)


Registration = EndpointRegistered | EndpointUnregistered


@dataclass(frozen=True, slots=True)
class RegistrationError:
    """Why a message on the endpoints topic was refused.

    `reason` is one of: bad-topic, bad-vni, unknown-vni, bad-mac, too-large,
    too-deep, not-utf8, not-json, not-object, missing-mac, mac-mismatch,
    bad-ip, bad-sticky, bad-delete, unknown-field.
    """

    topic: str
    reason: str
    detail: str
    vni: int | None = None
    mac: str | None = None
    payload: str | None = None  # the start of the payload, for the error event


def _endpoint_ip(value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    return validate.endpoint_ip(value)


def json_depth(text: str) -> int:
    """The deepest nesting of JSON arrays and objects in `text` (brackets inside
    strings do not count); cheap enough to run before the recursive parser."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


_ALLOWED = frozenset({"mac", "ip", "sticky", "delete"})


def parse_registration(
    prefix: str,
    topic: str,
    payload: bytes | bytearray | str | None,
    *,
    known_vnis: Container[int] | None = None,
) -> Registration | RegistrationError:
    """One message received on `<prefix>/endpoints/+/+` -> what it asks for.

    Never raises. `known_vnis` (when given) refuses VNIs this host does not serve.
    """
    raw = b"" if payload is None else payload.encode() if isinstance(payload, str) else payload
    shown = bytes(raw[:SHOWN_MAX]).decode("utf-8", "replace") if raw else None

    def fail(reason: str, detail: str, vni: int | None = None,
             mac: str | None = None) -> RegistrationError:
        return RegistrationError(topic, reason, detail, vni, mac, shown)

    base = f"{prefix}/{ENDPOINTS}/"
    rest = topic[len(base):].split("/") if topic.startswith(base) else []
    if len(rest) != 2:
        return fail("bad-topic", f"topic {topic!r} is not {base}<vni>/<mac>")
    vni_text, mac_text = rest
    try:
        vni = validate.decimal(vni_text, "VNI")
    except ValueError:
        vni = None
    if vni is None or str(vni) != vni_text:
        return fail("bad-vni", f"VNI {vni_text!r} in the topic is not a decimal number "
                               "(no sign, no leading zeros)")
    try:
        validate.vni(vni)
    except ValueError as exc:
        return fail("bad-vni", f"in the topic: {exc}", vni)
    if known_vnis is not None and vni not in known_vnis:
        return fail("unknown-vni", f"VNI {vni} is not configured on this host", vni)
    try:
        mac = validate.unicast_mac(mac_text)
    except ValueError as exc:
        return fail("bad-mac", f"MAC in the topic: {exc}", vni)
    if mac != mac_text:
        # One endpoint, one topic: see the module docstring.
        return fail("bad-mac", f"MAC in the topic: {mac_text!r} is not in canonical form; "
                               f"use {base}{vni}/{mac}", vni, mac)

    if not raw:
        return EndpointUnregistered(vni, mac)
    if len(raw) > PAYLOAD_MAX:
        return fail("too-large", f"payload of {len(raw)} bytes (at most {PAYLOAD_MAX})", vni, mac)
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return fail("not-utf8", "payload is not UTF-8 text", vni, mac)
    depth = json_depth(text)
    if depth > DEPTH_MAX:
        return fail("too-deep", f"payload nests {depth} levels deep (at most {DEPTH_MAX})",
                    vni, mac)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return fail("not-json", f"payload is not JSON: {exc}", vni, mac)
    if not isinstance(data, dict):
        return fail("not-object", f"payload must be a JSON object, got {type(data).__name__}",
                    vni, mac)
    unknown = sorted(set(data) - _ALLOWED)
    if unknown:
        return fail("unknown-field", f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                     f"allowed: {', '.join(sorted(_ALLOWED))}", vni, mac)
    if "mac" not in data:
        return fail("missing-mac", "payload has no 'mac' field", vni, mac)
    if not isinstance(data["mac"], str):
        return fail("bad-mac", "'mac' must be a string", vni, mac)
    try:
        payload_mac = validate.unicast_mac(data["mac"])
    except ValueError as exc:
        return fail("bad-mac", f"'mac' in the payload: {exc}", vni, mac)
    if payload_mac != mac:
        return fail("mac-mismatch", f"payload MAC {payload_mac} differs from topic MAC {mac}",
                    vni, mac)

    delete = data.get("delete", False)
    if not isinstance(delete, bool):
        return fail("bad-delete", "'delete' must be true or false", vni, mac)
    if delete:
        extra = sorted(k for k in ("ip", "sticky") if k in data)
        if extra:
            return fail("bad-delete", f"a delete carries no {' or '.join(extra)}", vni, mac)
        return EndpointUnregistered(vni, mac)

    ip: IPAddress | None = None
    if data.get("ip") is not None:
        try:
            ip = _endpoint_ip(data["ip"])
        except ValueError as exc:
            return fail("bad-ip", f"'ip': {exc}", vni, mac)
    sticky = data.get("sticky", False)
    if not isinstance(sticky, bool):
        return fail("bad-sticky", "'sticky' must be true or false (a JSON boolean)", vni, mac)
    return EndpointRegistered(vni, mac, ip, sticky)
