"""MQTT codec (topics, event payloads, registrations) and the registration mirror."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from ipaddress import IPv4Address, ip_address

import pytest

from evpnd.mqtt import codec
from evpnd.mqtt.codec import (
    EndpointRegistered,
    EndpointUnregistered,
    RegistrationError,
    parse_registration,
)
from evpnd.mqtt.registry import EndpointRegistry

P = "evpnd/host1"
MAC = "02:00:00:00:00:0a"
T = f"{P}/endpoints/100/{MAC}"
NOW = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)


def parse(payload: object, topic: str = T, **kwargs: object) -> object:
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    return parse_registration(P, topic, payload, **kwargs)  # type: ignore[arg-type]


def decoded(event: codec.Event) -> dict:
    return json.loads(event.payload())


# ------------------------------------------------------------------ topics


def test_topics() -> None:
    assert codec.event_topic(P, "peer_up") == "evpnd/host1/events/peer_up"
    assert codec.error_topic(P) == "evpnd/host1/events/error"
    assert codec.summary_topic(P, 100) == "evpnd/host1/summary/100"
    assert codec.status_topic(P) == "evpnd/host1/status"
    assert codec.endpoints_filter(P) == "evpnd/host1/endpoints/+/+"
    assert codec.endpoint_topic(P, 100, "02-00-00-00-00-0A") == T
    assert codec.peer_up("192.0.2.1").topic(P) == "evpnd/host1/events/peer_up"


def test_timestamp_is_utc_with_milliseconds() -> None:
    assert codec.timestamp(NOW) == "2026-11-22T10:00:00.123Z"
    assert codec.timestamp().endswith("Z")


# ------------------------------------------------------------------ events


def test_event_payloads() -> None:
    assert decoded(codec.peer_up(ip_address("192.0.2.1"), asn=65000, now=NOW)) == {
        "event": "peer_up", "time": "2026-11-22T10:00:00.123Z", "peer": "192.0.2.1",
        "asn": 65000}
    assert decoded(codec.peer_down("2001:db8::1", reason="hold timer expired", now=NOW)) == {
        "event": "peer_down", "time": "2026-11-22T10:00:00.123Z", "peer": "2001:db8::1",
        "reason": "hold timer expired"}
    assert decoded(codec.local_mac_learned(100, "02:AA:BB:CC:DD:EE", ip=ip_address("10.0.0.1"),
                                           port="veth0", sticky=True, seq=2, now=NOW)) == {
        "event": "local_mac_learned", "time": "2026-11-22T10:00:00.123Z", "vni": 100,
        "mac": "02:aa:bb:cc:dd:ee", "ip": "10.0.0.1", "port": "veth0", "sticky": True,
        "seq": 2, "source": "kernel"}
    assert decoded(codec.local_mac_removed(100, MAC, source="mqtt", now=NOW)) == {
        "event": "local_mac_removed", "time": "2026-11-22T10:00:00.123Z", "vni": 100,
        "mac": MAC, "ip": None, "port": None, "source": "mqtt"}
    assert decoded(codec.remote_mac_installed(
        200, MAC, vtep=ip_address("192.0.2.12"), peer=ip_address("192.0.2.1"), seq=4,
        sticky=False, ip=ip_address("2001:db8::5"), now=NOW)) == {
        "event": "remote_mac_installed", "time": "2026-11-22T10:00:00.123Z", "vni": 200,
        "mac": MAC, "ip": "2001:db8::5", "vtep": "192.0.2.12", "peer": "192.0.2.1", "seq": 4,
        "sticky": False}
    assert decoded(codec.remote_mac_removed(200, MAC, vtep="192.0.2.12", now=NOW)) == {
        "event": "remote_mac_removed", "time": "2026-11-22T10:00:00.123Z", "vni": 200,
        "mac": MAC, "ip": None, "vtep": "192.0.2.12", "peer": None}
    assert decoded(codec.remote_mac_moved(200, MAC, vtep="192.0.2.13", previous_vtep="local",
                                          seq=5, now=NOW)) == {
        "event": "remote_mac_moved", "time": "2026-11-22T10:00:00.123Z", "vni": 200,
        "mac": MAC, "vtep": "192.0.2.13", "previous_vtep": "local", "seq": 5, "peer": None}
    assert decoded(codec.exabgp_restarted(restarts=3, reason="exit 1", now=NOW)) == {
        "event": "exabgp_restarted", "time": "2026-11-22T10:00:00.123Z", "restarts": 3,
        "reason": "exit 1"}
    assert decoded(codec.error("reconcile_failed", "netlink said EBUSY", vni=100, now=NOW)) == {
        "event": "error", "time": "2026-11-22T10:00:00.123Z", "error": "reconcile_failed",
        "detail": "netlink said EBUSY", "vni": 100}


def test_registration_events() -> None:
    reg = EndpointRegistered(100, MAC, ip_address("10.0.0.5"), True)
    assert decoded(codec.endpoint_registered(reg, now=NOW)) == {
        "event": "endpoint_registered", "time": "2026-11-22T10:00:00.123Z", "vni": 100,
        "mac": MAC, "ip": "10.0.0.5", "sticky": True}
    assert decoded(codec.endpoint_unregistered(EndpointUnregistered(100, MAC), now=NOW)) == {
        "event": "endpoint_unregistered", "time": "2026-11-22T10:00:00.123Z", "vni": 100,
        "mac": MAC, "reason": "cleared"}
    err = parse(b"{oops")
    assert isinstance(err, RegistrationError)
    assert decoded(codec.invalid_registration(err, now=NOW)) == {
        "event": "error", "time": "2026-11-22T10:00:00.123Z", "error": "invalid_registration",
        "detail": err.detail, "reason": "not-json", "topic": T, "vni": 100, "mac": MAC,
        "payload": "{oops"}


def test_payload_is_compact_json_and_events_are_values() -> None:
    event = codec.peer_up("192.0.2.1", now=NOW)
    assert event.payload() == (b'{"event":"peer_up","time":"2026-11-22T10:00:00.123Z",'
                               b'"peer":"192.0.2.1","asn":null}')
    assert event == codec.peer_up("192.0.2.1", now=NOW)
    assert hash(event) == hash(codec.peer_up("192.0.2.1", now=NOW))


def test_summary_and_status_payloads() -> None:
    summary = json.loads(codec.summary_payload(
        100, {"local_macs": 2, "vteps": {ip_address("192.0.2.13"), ip_address("192.0.2.12")}},
        now=NOW))
    assert summary == {"local_macs": 2, "vteps": ["192.0.2.12", "192.0.2.13"], "vni": 100,
                       "time": "2026-11-22T10:00:00.123Z"}
    with pytest.raises(TypeError):
        codec.summary_payload(100, {"bad": object()})
    assert json.loads(codec.status_payload("online", "evpnd-h1", now=NOW)) == {
        "state": "online", "client_id": "evpnd-h1", "time": "2026-11-22T10:00:00.123Z"}
    assert json.loads(codec.status_payload("offline", "evpnd-h1", now=NOW,
                                           reason="stopped")) == {
        "state": "offline", "client_id": "evpnd-h1", "time": "2026-11-22T10:00:00.123Z",
        "reason": "stopped"}


def test_the_will_carries_no_time() -> None:
    # Handed to the broker at connect: a time in it would be the connect's, not the death's.
    assert json.loads(codec.will_payload("evpnd-h1")) == {
        "state": "offline", "client_id": "evpnd-h1", "reason": "connection-lost"}


def test_peer_state_topic_and_payload() -> None:
    assert codec.peer_topic(P, ip_address("192.0.2.9")) == "evpnd/host1/peers/192.0.2.9"
    assert codec.peer_topic(P, ip_address("2001:DB8::9")) == "evpnd/host1/peers/2001:db8::9"
    assert json.loads(codec.peer_state_payload(
        ip_address("192.0.2.9"), codec.SESSION_UP, NOW, asn=65000, description="rr1")) == {
        "peer": "192.0.2.9", "state": "up", "since": "2026-11-22T10:00:00.123Z", "asn": 65000,
        "description": "rr1", "reason": None, "adopted": False}


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", "x\0"])
def test_event_names_cannot_escape_the_topic(name: str) -> None:
    with pytest.raises(ValueError):
        codec.event(name)


# ----------------------------------------------------------- registrations


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        (T, {"mac": MAC}, EndpointRegistered(100, MAC)),
        (T, {"mac": MAC.upper()}, EndpointRegistered(100, MAC)),
        (T, {"mac": MAC, "ip": "10.0.0.5"}, EndpointRegistered(100, MAC, IPv4Address("10.0.0.5"))),
        (T, {"mac": MAC, "ip": "2001:db8::5", "sticky": True},
         EndpointRegistered(100, MAC, ip_address("2001:db8::5"), True)),
        (T, {"mac": MAC, "ip": None, "sticky": False}, EndpointRegistered(100, MAC)),
        (T, {"mac": MAC, "delete": False}, EndpointRegistered(100, MAC)),
        (T, {"mac": MAC, "ip": "fe80::1"}, EndpointRegistered(100, MAC, ip_address("fe80::1"))),
        # the payload's MAC may be spelt any way; the topic's may not (below)
        (T, {"mac": "02-00-00-00-00-0A"}, EndpointRegistered(100, MAC)),
        (f"{P}/endpoints/16777215/{MAC}", {"mac": MAC}, EndpointRegistered(16777215, MAC)),
        # unregister: an empty payload (a cleared retained message) or an explicit delete
        (T, b"", EndpointUnregistered(100, MAC)),
        (T, None, EndpointUnregistered(100, MAC)),
        (T, "", EndpointUnregistered(100, MAC)),
        (T, {"mac": MAC, "delete": True}, EndpointUnregistered(100, MAC)),
        (T, ' { "mac" : "02:00:00:00:00:0A" } \n', EndpointRegistered(100, MAC)),
        (T, bytearray(b'{"mac": "02:00:00:00:00:0a"}'), EndpointRegistered(100, MAC)),
    ],
)
def test_valid_registrations(topic: str, payload: object, expected: object) -> None:
    assert parse(payload, topic) == expected


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "fragment"),
    [
        (f"{P}/endpoints/100", {"mac": MAC}, "bad-topic", "is not"),
        (f"{P}/endpoints/100/{MAC}/x", {"mac": MAC}, "bad-topic", "is not"),
        (f"other/endpoints/100/{MAC}", {"mac": MAC}, "bad-topic", "is not"),
        (f"{P}/endpointsX/100/{MAC}", {"mac": MAC}, "bad-topic", "is not"),
        (f"{P}/endpoints/abc/{MAC}", {"mac": MAC}, "bad-vni", "not a decimal"),
        (f"{P}/endpoints/0100/{MAC}", {"mac": MAC}, "bad-vni", "leading zeros"),
        (f"{P}/endpoints/+100/{MAC}", {"mac": MAC}, "bad-vni", "not a decimal"),
        (f"{P}/endpoints/\uff10/{MAC}", {"mac": MAC}, "bad-vni", "not a decimal"),
        (f"{P}/endpoints/0/{MAC}", {"mac": MAC}, "bad-vni", "outside"),
        (f"{P}/endpoints/16777216/{MAC}", {"mac": MAC}, "bad-vni", "outside"),
        (f"{P}/endpoints/100/not-a-mac", {"mac": MAC}, "bad-mac", "MAC in the topic"),
        (f"{P}/endpoints/100/01:00:5e:00:00:01", {"mac": "01:00:5e:00:00:01"}, "bad-mac",
         "multicast"),
        (f"{P}/endpoints/100/ff:ff:ff:ff:ff:ff", b"", "bad-mac", "broadcast"),
        (f"{P}/endpoints/100/00:00:00:00:00:00", b"", "bad-mac", "all-zero"),
        # one endpoint, one topic: other spellings of the MAC are refused, registration
        # and clearing alike (the message names the topic to use)
        (f"{P}/endpoints/100/02-00-00-00-00-0A", {"mac": MAC}, "bad-mac", f"use {T}"),
        (f"{P}/endpoints/100/02:00:00:00:00:0A", {"mac": MAC}, "bad-mac", "canonical form"),
        (f"{P}/endpoints/100/2:0:0:0:0:a", {"mac": MAC}, "bad-mac", "canonical form"),
        (f"{P}/endpoints/100/02:00:00:00:00:0A", b"", "bad-mac", "canonical form"),
        (f"{P}/endpoints/100/\u0660\u0662:00:00:00:00:0a", b"", "bad-mac", "invalid MAC"),
        (f"{P}/endpoints/\u0661\u0660\u0660/{MAC}", {"mac": MAC}, "bad-vni", "not a decimal"),
        (f"{P}/endpoints/100 /{MAC}", {"mac": MAC}, "bad-vni", "not a decimal"),
        # nesting is bounded before the JSON parser recurses (RecursionError at ~1000 levels)
        (T, b"[" * 2000 + b"]" * 2000, "too-deep", "2000 levels"),
        (T, b"{" * 4000, "too-deep", "4000 levels"),
        (T, b'{"mac": [[[[{"a": 1}]]]]}', "too-deep", "6 levels"),
        (T, b"x" * 5000, "too-large", "5000 bytes"),
        (T, b"\xff\xfe{}", "not-utf8", "UTF-8"),
        (T, b"{not json", "not-json", "not JSON"),
        (T, b" ", "not-json", "not JSON"),
        (T, b"null", "not-object", "NoneType"),
        (T, b'["02:00:00:00:00:0a"]', "not-object", "list"),
        (T, b'"02:00:00:00:00:0a"', "not-object", "str"),
        (T, {}, "missing-mac", "no 'mac'"),
        (T, {"ip": "10.0.0.1"}, "missing-mac", "no 'mac'"),
        (T, {"mac": 5}, "bad-mac", "must be a string"),
        (T, {"mac": "zz:00:00:00:00:0a"}, "bad-mac", "in the payload"),
        (T, {"mac": "02:00:00:00:00:0b"}, "mac-mismatch", "differs"),
        (T, {"mac": MAC, "ip": "10.0.0.300"}, "bad-ip", "not an IPv4 or IPv6"),
        (T, {"mac": MAC, "ip": 167772161}, "bad-ip", "must be a string"),
        (T, {"mac": MAC, "ip": "10.0.0.0/24"}, "bad-ip", "not an IPv4 or IPv6"),
        (T, {"mac": MAC, "ip": "224.0.0.1"}, "bad-ip", "not a unicast"),
        (T, {"mac": MAC, "ip": "0.0.0.0"}, "bad-ip", "not a unicast"),
        (T, {"mac": MAC, "ip": "::1"}, "bad-ip", "not a unicast"),
        (T, {"mac": MAC, "ip": "fe80::1%eth0"}, "bad-ip", "scoped"),
        (T, {"mac": MAC, "sticky": "true"}, "bad-sticky", "JSON boolean"),
        (T, {"mac": MAC, "sticky": 1}, "bad-sticky", "JSON boolean"),
        (T, {"mac": MAC, "delete": "yes"}, "bad-delete", "true or false"),
        (T, {"mac": MAC, "delete": True, "ip": "10.0.0.1"}, "bad-delete", "no ip"),
        (T, {"mac": MAC, "delete": True, "sticky": False}, "bad-delete", "no sticky"),
        (T, {"mac": MAC, "stikcy": True}, "unknown-field", "'stikcy'"),
        (T, {"mac": MAC, "vni": 100}, "unknown-field", "'vni'"),
    ],
)
def test_invalid_registrations(topic: str, payload: object, reason: str, fragment: str) -> None:
    result = parse(payload, topic)
    assert isinstance(result, RegistrationError), result
    assert result.reason == reason, result
    assert fragment in result.detail, result.detail
    assert result.topic == topic


def test_error_context_and_payload_excerpt() -> None:
    result = parse(b"{" + b"x" * 300)
    assert isinstance(result, RegistrationError)
    assert (result.vni, result.mac) == (100, MAC)
    assert result.payload == "{" + "x" * (codec.SHOWN_MAX - 1)
    bad_vni = parse({"mac": MAC}, f"{P}/endpoints/0/{MAC}")
    assert isinstance(bad_vni, RegistrationError)
    assert (bad_vni.vni, bad_vni.mac) == (0, None)
    empty = parse(b"", f"{P}/endpoints/x/{MAC}")
    assert isinstance(empty, RegistrationError) and empty.payload is None


def test_unknown_vni_only_when_the_known_set_is_given() -> None:
    assert parse({"mac": MAC}, known_vnis={100}) == EndpointRegistered(100, MAC)
    refused = parse({"mac": MAC}, known_vnis={200})
    assert isinstance(refused, RegistrationError) and refused.reason == "unknown-vni"
    # an unregistration for an unknown VNI is refused too: nothing to withdraw
    assert isinstance(parse(b"", known_vnis=set()), RegistrationError)


def test_prefix_with_several_levels() -> None:
    prefix = "site/a/evpnd/h1"
    result = parse_registration(prefix, f"{prefix}/endpoints/7/{MAC}", b'{"mac":"' +
                                MAC.encode() + b'"}')
    assert result == EndpointRegistered(7, MAC)


# ----------------------------------------------------------------- registry


def test_registry_removes_repeats_and_passes_changes() -> None:
    reg = EndpointRegistry()
    a = EndpointRegistered(100, MAC)
    assert reg.apply(a) == a
    assert reg.apply(a) is None  # the same again: nothing to do
    a_ip = EndpointRegistered(100, MAC, ip_address("10.0.0.5"))
    assert reg.apply(a_ip) == a_ip  # a change replaces
    assert reg.endpoints() == {(100, MAC): a_ip}
    assert reg.apply(EndpointUnregistered(100, MAC)) == EndpointUnregistered(100, MAC)
    assert reg.apply(EndpointUnregistered(100, MAC)) is None  # unknown: nothing to withdraw
    assert len(reg) == 0


def test_registry_resync_unregisters_what_the_broker_lost() -> None:
    reg = EndpointRegistry()
    a, b, c = (EndpointRegistered(100, f"02:00:00:00:00:0{i}") for i in (1, 2, 3))
    for item in (a, b, c):
        reg.apply(item)
    assert reg.end_sync() == []  # not syncing: no-op
    reg.begin_sync()
    assert reg.syncing
    assert reg.apply(a) is None  # re-delivered retained message
    d = EndpointRegistered(200, "02:00:00:00:00:04")
    assert reg.apply(d) == d
    assert reg.apply(EndpointUnregistered(*c.key)) == EndpointUnregistered(*c.key)
    assert reg.end_sync() == [EndpointUnregistered(*b.key)]
    assert not reg.syncing
    assert set(reg.endpoints()) == {a.key, d.key}


def test_registry_aborted_sync_keeps_everything() -> None:
    reg = EndpointRegistry()
    a = EndpointRegistered(100, MAC)
    reg.apply(a)
    reg.begin_sync()
    reg.abort_sync()
    assert reg.end_sync() == []
    assert reg.endpoints() == {a.key: a}


def test_brackets_inside_strings_are_no_nesting() -> None:
    assert codec.json_depth('{"mac": "[[[[[[{{{{\\"[[[["}') == 1
    assert codec.json_depth('[[{"a": "]]]]"}]]') == 3
    result = parse('{"mac": "02:00:00:00:00:0a", "ip": "[[[[[[[[[[[[["}')
    assert isinstance(result, RegistrationError) and result.reason == "bad-ip"


@pytest.mark.parametrize("size", [900, 2000, codec.PAYLOAD_MAX])
def test_deep_payloads_are_refused_not_raised(size: int) -> None:
    for payload in (b"[" * size, b'{"a":' * (size // 5), b'[{"a":' * (size // 6)):
        result = parse(payload)
        assert isinstance(result, RegistrationError)
        assert result.reason in ("too-deep", "too-large"), result


def test_registration_and_removal_name_the_same_endpoint() -> None:
    """Only the canonical topic is accepted, so what registers is what a clear removes."""
    reg = EndpointRegistry()
    registered = parse({"mac": "02:00:00:00:00:0A"})
    assert reg.apply(registered) == registered  # type: ignore[arg-type]
    other = parse(b"", f"{P}/endpoints/100/02:00:00:00:00:0A")
    assert isinstance(other, RegistrationError)  # never reaches the registry
    removed = parse(b"")
    assert reg.apply(removed) == EndpointUnregistered(100, MAC)  # type: ignore[arg-type]
    assert len(reg) == 0
    assert codec.endpoint_topic(P, 100, "02-00-00-00-00-0A") == T
