"""F1-F4, F6: fuzz and property tests of the codec, the RIB, the config and MQTT.

Counts: conftest.size (a few thousand inputs in CI, 10^6 mutated UPDATEs under
`make chaos`). The mutation loop of F1 is a seeded random loop rather than
hypothesis (hypothesis costs about 1 ms an example; the loop, the decoder's
own cost), with the mutation operators of tests/unit/test_wire.py's fuzz
test; the properties reuse the strategies of the unit tests.

- F1 mutated UPDATE bodies -> WireDecoder -> Rib.apply_updates, the RIB's
  local learning of what it holds, every advertisement encoded: nothing
  raises, every decoded route is usable, no sequence number past 2^32 - 1.
- F2 sequence-number boundaries: remote routes at and near 2^32 - 1 from
  several VTEPs, local learns and removals in any order: every advertisement
  encodes and the RIB's claims stay within 32 bits.
- F3 encoder round trip: a route -> evpnd's ExaBGP command token -> ExaBGP's
  command parser -> ExaBGP's UPDATE encoder -> evpnd's WireDecoder -> the
  same route.
- F4 every config that validates encodes (test_config_encodes' strategy).
- F6 MQTT topics and payloads: anything on the wire is a registration, an
  unregistration or a counted refusal, never an exception.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from ipaddress import ip_address

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evpnd import config, validate
from evpnd.config import Config
from evpnd.model import ENCAP_VXLAN, MOBILITY_SEQ_MAX, ImetRoute, MacIpRoute, PrefixRoute
from evpnd.mqtt import codec
from evpnd.originate import mac_route as originated
from evpnd.rib import LocalAdvert, Rib, VniPolicy
from evpnd.speaker import commands, encode
from evpnd.speaker.messages import RouteUpdate
from evpnd.speaker.wire import WireDecoder
from tests.chaos.conftest import size
from tests.chaos.tally import Tally
from tests.data import exabgp_reference as ref
from tests.unit import test_config_encodes, test_encode, test_rib, test_wire
from tests.unit.test_rib import RT100

SEED = int(os.environ.get("EVPND_CHAOS_SEED", "7"))
MUTATIONS = size(5_000, 1_000_000)
EXAMPLES = size(300, 20_000)
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                database=None)  # fmt: skip


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """1-3 of test_wire's operators: flip, truncate, insert, delete, rewrite a length."""
    encoded = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        operation = rng.choice(("flip", "truncate", "insert", "delete", "length"))
        at = rng.randrange(max(len(encoded), 1))
        if operation == "flip" and encoded:
            encoded[at] ^= rng.randint(1, 255)
        elif operation == "truncate":
            del encoded[at:]
        elif operation == "insert":
            encoded[at:at] = rng.randbytes(rng.randint(1, 8))
        elif operation == "delete":
            del encoded[at : at + rng.randint(1, 8)]
        elif operation == "length" and len(encoded) >= 4:
            fields = test_wire.length_fields(bytes(encoded)) if rng.random() < 0.5 else []
            offset, width = rng.choice(fields or [(at, 1)])
            value = rng.randrange(256**width)
            encoded[offset : offset + width] = value.to_bytes(width, "big")[: len(encoded) - offset]
    return bytes(encoded)


LOCAL = ip_address("192.0.2.250")  # the host's own VTEP: no route of the corpus is from it


def seed_targets() -> dict[int, frozenset[str]]:
    """VNI -> the route targets the seed corpus carries for it."""
    targets: dict[int, set[str]] = {}
    for seed in test_wire.SEEDS:
        for message in WireDecoder().decode_update(test_wire.PEER, seed):
            if isinstance(message, RouteUpdate):
                for route in message.announced:
                    targets.setdefault(route.vni, set()).update(route.route_targets)
    return {vni: frozenset(rts) for vni, rts in targets.items() if rts and vni >= 1}


TARGETS = seed_targets()
# The host: a VNI for each the corpus carries, so the RIB's adverts can be originated.
CFG = Config.model_validate({"router_id": str(LOCAL), "asn": 65000,
                             "vtep": {"address": str(LOCAL), "device": "eth0"},
                             "vnis": [{"vni": vni} for vni in sorted(TARGETS)]})  # fmt: skip


def rib_for_seeds() -> Rib:
    return Rib(LOCAL, [VniPolicy(vni, rts) for vni, rts in TARGETS.items()])


def encodes(advert: LocalAdvert) -> None:
    assert 0 <= advert.seq <= MOBILITY_SEQ_MAX, advert
    encode.route_token(originated(CFG, advert))


def test_f1_mutated_updates_through_decoder_and_rib(tally: Tally) -> None:
    row = tally.row("F1 codec + RIB fuzz")
    rng = random.Random(SEED)
    rib = rib_for_seeds()
    decoder = WireDecoder()
    started = time.monotonic()
    routes = 0
    for n in range(MUTATIONS):
        seed = rng.choice(test_wire.SEEDS)
        body = mutate(rng, seed)
        if n % 1000 == 0:
            decoder = WireDecoder()  # a cold decoder now and then, caches empty
        messages = decoder.decode_update(test_wire.PEER, body)
        test_wire.assert_valid(messages)
        updates = [(m.peer, m.announced, m.withdrawn) for m in messages
                   if isinstance(m, RouteUpdate)]  # fmt: skip
        routes += sum(len(a) for _, a, _ in updates)
        changes = rib.apply_updates(updates, now=float(n))
        for advert in changes.local_advertise:
            encodes(advert)
        if n % 97 == 0:  # this host learns a MAC the RIB holds as remote (issue 11, 1)
            for path in rib.remote_macs()[:3]:
                _, advert = rib.local_mac_added(path.vni, path.mac, now=float(n))
                if advert is not None:
                    encodes(advert)
        if n % 5000 == 4999:
            for path in rib.remote_macs():
                assert 0 <= path.seq <= MOBILITY_SEQ_MAX
            rib.peer_down(test_wire.PEER)
        row.faults += 1
    for advert in rib.advertisements():
        encodes(advert)
    row.rounds += 1
    row.notes.update(inputs=MUTATIONS, routes_decoded=routes,
                     inputs_per_s=round(MUTATIONS / (time.monotonic() - started)))


# ------------------------------------------------------------------------- F2

SEQS = st.sampled_from([0, 1, MOBILITY_SEQ_MAX - 2, MOBILITY_SEQ_MAX - 1, MOBILITY_SEQ_MAX])
F2_VTEPS = [ip_address(a) for a in ("10.0.0.2", "10.0.0.3", "10.0.0.9")]
F2_OPS = st.lists(st.one_of(
    st.tuples(st.just("remote"), st.sampled_from(F2_VTEPS), SEQS, st.booleans()),
    st.tuples(st.just("withdraw"), st.sampled_from(F2_VTEPS)),
    st.tuples(st.just("local"), st.booleans()),
    st.tuples(st.just("unlocal")),
), max_size=30)  # fmt: skip


@FAST
@given(F2_OPS)
def test_f2_sequence_numbers_at_the_32_bit_boundary(ops: list[tuple]) -> None:
    mac = "02:00:00:00:00:01"
    rib = Rib(ip_address("10.0.0.1"), [VniPolicy(100, frozenset({RT100}))])
    for n, op in enumerate(ops):
        now = float(n)
        match op:
            case ("remote", vtep, seq, sticky):
                route = test_rib.mac_route(mac, vtep, seq=seq, sticky=sticky)
                changes = rib.announce(vtep, route, now=now)
            case ("withdraw", vtep):
                changes = rib.withdraw(vtep, test_rib.mac_route(mac, vtep).key, now=now)
            case ("local", sticky):
                changes, advert = rib.local_mac_added(100, mac, sticky=sticky, now=now)
                if advert is not None:
                    encodes(advert)
            case _:
                changes = rib.local_mac_removed(100, mac, now=now)
        for advert in changes.local_advertise:
            encodes(advert)
    for advert in rib.advertisements():
        encodes(advert)


def test_f2_tally(tally: Tally) -> None:
    row = tally.row("F2 sequence boundaries")
    row.rounds += 1
    row.faults += EXAMPLES


# ------------------------------------------------------------------------- F3

SESSION = ref.session()
ROUND_TRIPS = {"checked": 0}


def as_sent(route: MacIpRoute | ImetRoute) -> MacIpRoute | ImetRoute:
    """What evpnd puts on the wire for a route: always the VXLAN encapsulation
    (RFC 8365), and a Type-3's tunnel endpoint its originator when none is given."""
    sent = dataclasses.replace(route, encapsulation=route.encapsulation or ENCAP_VXLAN)
    if isinstance(sent, ImetRoute) and sent.tunnel is None:
        sent = dataclasses.replace(sent, tunnel=sent.key.originator)
    return sent


def round_trip(route: MacIpRoute | ImetRoute | PrefixRoute) -> list[object]:
    token = encode.route_token(route)
    _, changes = commands.parse_command(encode.announce_line([token]))
    decoded = []
    for change in changes:
        for body in ref.encode([change.nlri], change.attributes, SESSION):
            decoded += WireDecoder().decode_update(test_wire.PEER, body)
    return decoded


@FAST
@given(st.one_of(test_encode.mac_routes, test_encode.imet_routes))
def test_f3_encoder_round_trip(route: MacIpRoute | ImetRoute) -> None:
    decoded = round_trip(route)
    announced = [r for m in decoded if isinstance(m, RouteUpdate) for r in m.announced]
    if not announced:
        return  # a route our own decoder refuses as unusable (a test value, e.g. a
        # multicast MAC): what it must say then is tested in test_wire
    [back] = announced
    ROUND_TRIPS["checked"] += 1
    sent = as_sent(route)
    # Route targets are a set on the wire (extended communities): order and repeats go.
    assert set(back.route_targets) == set(sent.route_targets)
    assert dataclasses.replace(back, route_targets=()) == dataclasses.replace(sent,
                                                                             route_targets=())
    assert back.vni == route.vni and back.nexthop == route.nexthop
    assert set(back.route_targets) == set(route.route_targets)
    if isinstance(route, MacIpRoute):
        assert (back.mobility_seq, back.sticky, back.l3vni, back.router_mac) == (
            route.mobility_seq, route.sticky, route.l3vni, route.router_mac)


def test_f3_tally(tally: Tally) -> None:
    row = tally.row("F3 encoder round trip")
    row.rounds += 1
    row.faults += EXAMPLES
    row.notes["round_trips_compared"] = ROUND_TRIPS["checked"]
    assert ROUND_TRIPS["checked"] > EXAMPLES // 4  # not vacuous


# ------------------------------------------------------------------------- F4


@FAST
@given(test_config_encodes.configs)
def test_f4_every_config_that_validates_encodes(data: dict) -> None:
    try:
        cfg = config.parse(yaml.safe_dump(data, allow_unicode=True))
    except config.ConfigError:
        return  # refused, with a report: fine
    test_config_encodes.everything_encodes(cfg)


def test_f4_tally(tally: Tally) -> None:
    tally.row("F4 configs encode").rounds += 1
    tally.row("F4 configs encode").faults += EXAMPLES


# ------------------------------------------------------------------------- F6

MQTT_PREFIX = "evpnd/host1"
SEGMENTS = st.one_of(
    st.integers(-5, 1 << 25).map(str),
    st.sampled_from(["100", "0100", "+100", "1e2", "\u0661\u0660\u0660", " 100", "100\n", "",
                     "#", "+"]),
    st.text(max_size=12),
)
MAC_TEXT = st.one_of(
    st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b)),
    st.binary(min_size=6, max_size=6).map(lambda b: "-".join(f"{x:02X}" for x in b)),
    st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:1", "0200.0000.0001",
                     "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "02:00:00:00:00:01\n"]),
    st.text(max_size=20),
)  # fmt: skip
TOPICS = st.one_of(
    st.builds(lambda v, m: f"{MQTT_PREFIX}/endpoints/{v}/{m}", SEGMENTS, MAC_TEXT),
    st.builds(lambda parts: "/".join(parts), st.lists(st.text(max_size=10), max_size=6)),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
PAYLOADS = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.builds(lambda mac, ip, sticky, extra: json.dumps(
        {k: v for k, v in (("mac", mac), ("ip", ip), ("sticky", sticky), *extra)
         if v is not None}).encode(), MAC_TEXT | JSON_VALUES,
        st.none() | st.ip_addresses().map(str) | JSON_VALUES, st.none() | JSON_VALUES,
        st.lists(st.tuples(st.sampled_from(["delete", "vni", "x"]), JSON_VALUES), max_size=2)),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
)  # fmt: skip


@FAST
@given(TOPICS, PAYLOADS, st.booleans())
def test_f6_mqtt_registrations_never_raise(topic: str, payload: bytes | None,
                                          known: bool) -> None:  # fmt: skip
    got = codec.parse_registration(MQTT_PREFIX, topic, payload,
                                   known_vnis={100, 200} if known else None)  # fmt: skip
    assert isinstance(got, codec.EndpointRegistered | codec.EndpointUnregistered
                      | codec.RegistrationError)  # fmt: skip
    if isinstance(got, codec.RegistrationError):
        assert got.payload is None or len(got.payload) <= codec.SHOWN_MAX
        return
    # One endpoint, one topic: what was taken names it exactly.
    assert topic == codec.endpoint_topic(MQTT_PREFIX, got.vni, got.mac)
    assert validate.unicast_mac(got.mac) == got.mac
    assert 1 <= got.vni < 1 << 24
    if isinstance(got, codec.EndpointRegistered) and got.ip is not None:
        assert validate.endpoint_ip(str(got.ip)) == got.ip


@FAST
@given(st.text(max_size=30), st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
                                             JSON_VALUES | st.ip_addresses(), max_size=4))
def test_f6_mqtt_events_are_json_on_a_plain_topic(name: str, fields: dict) -> None:
    try:
        event = codec.event(name, **fields)
    except ValueError:
        return  # a name that could escape the topic is refused
    topic = event.topic(MQTT_PREFIX)
    assert not {"+", "#", "\0"} & set(topic) and topic.startswith(f"{MQTT_PREFIX}/")
    assert isinstance(json.loads(event.payload()), dict)


def test_f6_tally(tally: Tally) -> None:
    row = tally.row("F6 MQTT topics and payloads")
    row.rounds += 1
    row.faults += 2 * EXAMPLES
