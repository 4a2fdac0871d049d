"""ExaBGP JSON decoding: the captured FRR samples, hostile input, and ExaBGP's own encoder."""

from __future__ import annotations

import copy
import json
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import pytest
from exabgp.bgp.message import Action
from exabgp.bgp.message.update import Update
from exabgp.bgp.message.update.attribute import Attributes
from exabgp.bgp.message.update.attribute.community.extended import (
    ExtendedCommunities,
    ExtendedCommunity,
    MacMobility,
    RouteTargetASN2Number,
)
from exabgp.bgp.message.update.nlri.evpn.mac import MAC
from exabgp.bgp.message.update.nlri.evpn.nlri import EVPN
from exabgp.bgp.message.update.nlri.qualifier import (
    ESI,
    EthernetTag,
    Labels,
    RouteDistinguisher,
)
from exabgp.bgp.message.update.nlri.qualifier import MAC as MACQUAL
from exabgp.protocol.family import AFI, SAFI
from exabgp.protocol.ip import IP
from exabgp.reactor.api.response.json import JSON
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evpnd import validate
from evpnd.model import (
    ENCAP_VXLAN,
    ZERO_ESI,
    EadKey,
    EadRoute,
    EsKey,
    ImetKey,
    MacIpKey,
    PrefixKey,
)
from evpnd.speaker.decode import Decoder, decode_line
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
from tests.conftest import SAMPLES, require

PEER = IPv4Address("10.99.0.2")
FRR_VTEP = IPv4Address("10.99.0.2")


def sample_text(name: str) -> str:
    path = SAMPLES / f"json_{name}.json"
    require(path.is_file(), f"{path} (captured ExaBGP JSON) is missing")
    return path.read_text()


def sample_doc(name: str) -> dict[str, Any]:
    return json.loads(sample_text(name))


def one_line(doc: dict[str, Any]) -> str:
    # ExaBGP writes one message per line; the captures are pretty-printed.
    return json.dumps(doc)


def decode_sample(name: str) -> list[Message]:
    pretty = decode_line(sample_text(name))
    assert decode_line(one_line(sample_doc(name))) == pretty
    assert decode_line(sample_text(name).encode()) == pretty
    return pretty


def only_update(messages: list[Message]) -> RouteUpdate:
    assert len(messages) == 1, messages
    (message,) = messages
    assert isinstance(message, RouteUpdate)
    assert message.peer == PEER
    return message


# ------------------------------------------------------------------ the samples


def test_type2_mac_only() -> None:
    update = only_update(decode_sample("type2_mac_only"))
    assert update.withdrawn == ()
    (route,) = update.announced
    assert route.key == MacIpKey("10.99.0.2:2", 0, "02:00:00:00:01:11", None)
    assert route.nexthop == FRR_VTEP
    assert route.vni == 100
    assert route.l3vni is None
    assert route.esi == ZERO_ESI
    assert route.route_targets == ("65000:100",)
    assert route.encapsulation == ENCAP_VXLAN
    assert (route.mobility_seq, route.sticky) == (0, False)
    assert route.router_mac is None
    assert route.default_gateway is False


def test_type2_mac_ipv4_single_label() -> None:
    (route,) = only_update(decode_sample("type2_mac_ipv4_single_label")).announced
    assert route.key == MacIpKey(
        "10.99.0.2:2", 0, "02:00:00:00:01:11", IPv4Address("192.168.100.11")
    )
    assert route.vni == 100
    assert route.l3vni is None
    assert route.route_targets == ("65000:100",)


def test_type2_two_labels_router_mac_and_l3vni_from_raw() -> None:
    v4, v6 = only_update(decode_sample("type2_mac_ip_v4_v6_two_labels_rmac_L3VNI")).announced
    assert v4.ip == IPv4Address("192.168.100.11")
    assert v6.ip == IPv6Address("2001:db8:100::11")
    for route in (v4, v6):
        assert route.mac == "02:00:00:00:01:11"
        assert route.vni == 100
        # The L3VNI is missing from ExaBGP's parsed labels; it comes from `raw`.
        assert route.l3vni == 5000
        assert route.route_targets == ("65000:100", "65000:5000")
        # 433192188180975870 = 0x0603_0200000050fe
        assert route.router_mac == "02:00:00:00:50:fe"
        assert route.nexthop == FRR_VTEP


def test_type2_mac_mobility_sequence() -> None:
    mac_only, mac_ip = only_update(decode_sample("type2_mac_mobility_seq4_from_frr")).announced
    assert mac_only.ip is None
    assert mac_ip.ip == IPv4Address("192.168.100.11")
    for route in (mac_only, mac_ip):
        assert (route.mobility_seq, route.sticky) == (4, False)


def test_type2_default_gateway() -> None:
    (route,) = only_update(decode_sample("type2_default_gateway_from_frr")).announced
    assert route.key == MacIpKey("10.99.0.2:2", 0, "02:00:00:00:02:fe", ip_address("192.168.100.2"))
    assert route.default_gateway is True
    assert route.router_mac is None
    assert route.vni == 100


def test_type3_pmsi_ingress_replication() -> None:
    (route,) = only_update(decode_sample("type3_imet_pmsi")).announced
    assert route.key == ImetKey("10.99.0.2:2", 0, FRR_VTEP)
    assert route.tunnel_type == "ingress-replication"
    assert route.vni == 100  # "6(100)": the raw label
    assert route.tunnel == FRR_VTEP
    assert route.vtep == FRR_VTEP
    assert route.route_targets == ("65000:100",)


def test_type5_prefix() -> None:
    (route,) = only_update(decode_sample("type5_ip_prefix")).announced
    assert route.key == PrefixKey("10.99.0.2:1", 0, ip_network("10.99.0.0/24"))
    assert route.vni == 5000
    assert route.gateway is None  # 0.0.0.0: no gateway overlay index
    assert route.router_mac == "02:00:00:00:50:fe"
    assert route.route_targets == ("65000:5000",)
    assert route.nexthop == FRR_VTEP


def test_withdraw_type2_mac_ipv4() -> None:
    update = only_update(decode_sample("withdraw_type2_mac_ipv4"))
    assert update.announced == ()
    assert update.withdrawn == (
        MacIpKey("10.99.0.2:2", 0, "02:00:00:00:01:11", IPv4Address("192.168.100.11")),
    )


def test_withdraw_type2_several() -> None:
    update = only_update(decode_sample("withdraw_type2_mac_only_and_mac_ipv6"))
    assert update.withdrawn == (
        MacIpKey("10.99.0.2:2", 0, "02:00:00:00:01:11", ip_address("2001:db8:100::11")),
        MacIpKey("10.99.0.2:2", 0, "02:00:00:00:01:11", ip_address("fe80::ff:fe00:111")),
        MacIpKey("10.99.0.2:2", 0, "02:00:00:00:01:11", None),
    )


def test_withdraw_type3_and_type5() -> None:
    update = only_update(decode_sample("withdraw_type3_and_type5"))
    assert update.withdrawn == (
        ImetKey("10.99.0.2:2", 0, FRR_VTEP),
        PrefixKey("10.99.0.2:1", 0, ip_network("192.168.100.0/24")),
    )


def test_withdrawn_key_matches_announced_key() -> None:
    (announced,) = only_update(decode_sample("type2_mac_ipv4_single_label")).announced
    (withdrawn,) = only_update(decode_sample("withdraw_type2_mac_ipv4")).withdrawn
    assert announced.key == withdrawn


def test_eor() -> None:
    assert decode_sample("eor") == [EndOfRib(PEER, "l2vpn", "evpn")]
    assert EndOfRib(PEER, "l2vpn", "evpn").is_evpn


@pytest.mark.parametrize(
    ("name", "state", "reason"),
    [
        ("state_connected", "connected", None),
        ("state_up", "up", None),
        ("state_down_connect_attempt_failed", "down", "closing connection"),
        ("state_down_exabgp_shutdown", "down", "stop, message [shutting down]"),
        ("state_down_notification_received", "down", "notification received (6,2)"),
    ],
)
def test_peer_state(name: str, state: str, reason: str | None) -> None:
    assert decode_sample(name) == [PeerState(PEER, state, reason)]


def test_notification_received() -> None:
    (message,) = decode_sample("bgp_notification_received")
    assert isinstance(message, Notification)
    assert (message.peer, message.code, message.subcode) == (PEER, 6, 2)
    assert message.data == b'Shutdown Communication: "maintenance-window"'
    assert message.direction == "receive"
    assert "maintenance-window" in message.message


def test_process_shutdown() -> None:
    assert decode_sample("process_shutdown_notification") == [SpeakerShutdown()]


def test_negotiated_is_ignored_and_counted() -> None:
    decoder = Decoder()
    assert decoder.decode(sample_text("negotiated")) == []
    assert decoder.stats.ignored["type-negotiated"] == 1


def test_every_sample_decodes_without_error() -> None:
    require(SAMPLES.is_dir(), f"{SAMPLES} is missing")
    decoder = Decoder()
    files = sorted(SAMPLES.glob("json_*.json"))
    assert len(files) >= 19
    for path in files:
        for message in decoder.decode(path.read_text()):
            assert not isinstance(message, DecodeError), (path.name, message)
    assert decoder.stats.errors == {}
    assert decoder.stats.announced == 9
    assert decoder.stats.withdrawn == 6


# ------------------------------------------------------------- constructed input


def type2_doc() -> dict[str, Any]:
    return sample_doc("type2_mac_mobility_seq4_from_frr")


def nlris(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["neighbor"]["message"]["update"]["announce"]["l2vpn evpn"]["10.99.0.2"]


def communities(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["neighbor"]["message"]["update"]["attribute"]["extended-community"]


def test_one_bad_nlri_costs_only_itself() -> None:
    doc = type2_doc()
    nlris(doc)[0]["mac"] = "02:00:00:00:01"
    decoder = Decoder()
    update, error = decoder.decode(one_line(doc))
    assert isinstance(update, RouteUpdate)
    assert [r.ip for r in update.announced] == [IPv4Address("192.168.100.11")]
    assert error == DecodeError("bad-mac", PEER, "mac '02:00:00:00:01'")
    assert decoder.stats.errors["bad-mac"] == 1
    assert decoder.stats.errors_by_peer[str(PEER)] == 1


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("rd", None, "bad-rd"),
        ("ethernet-tag", "0", "missing-field"),
        ("ethernet-tag", True, "missing-field"),
        ("ip", "192.168.100.300", "bad-ip"),
        ("label", [], "bad-label"),
        ("label", [[6]], "bad-label"),
        ("label", [[6, -1]], "bad-label"),
        ("esi", "00:11", "bad-esi"),
        ("mac", 7, "bad-mac"),
    ],
)
def test_malformed_fields(field: str, value: Any, reason: str) -> None:
    doc = type2_doc()
    nlris(doc)[1][field] = value
    messages = decode_line(one_line(doc))
    assert isinstance(messages[0], RouteUpdate)
    assert len(messages[0].announced) == 1
    assert isinstance(messages[1], DecodeError)
    assert (messages[1].reason, messages[1].peer) == (reason, PEER)


def test_zero_label_without_raw_value_is_vni_zero() -> None:
    doc = type2_doc()
    nlris(doc)[0]["label"] = [[0]]
    update = decode_line(one_line(doc))[0]
    assert isinstance(update, RouteUpdate)
    assert update.announced[0].vni == 0


def test_bad_next_hop_costs_its_routes() -> None:
    doc = type2_doc()
    family = doc["neighbor"]["message"]["update"]["announce"]["l2vpn evpn"]
    family["not-an-ip"] = family.pop("10.99.0.2")
    (error,) = decode_line(one_line(doc))
    assert isinstance(error, DecodeError)
    assert error.reason == "bad-ip"
    assert "2 routes" in error.detail


def test_nonzero_esi_is_kept_lower_case() -> None:
    doc = type2_doc()
    nlris(doc)[0]["esi"] = "00:AA:BB:CC:DD:EE:FF:00:11:22"
    update = decode_line(one_line(doc))[0]
    assert isinstance(update, RouteUpdate)
    assert update.announced[0].esi == "00:aa:bb:cc:dd:ee:ff:00:11:22"


def test_sticky_mobility_and_other_targets_from_values() -> None:
    doc = type2_doc()
    communities(doc)[:] = [
        {"value": 0x0600_01_00_0000_0009, "string": "mac-mobility:9:sticky"},
        {"value": 0x0102_01020304_0007, "string": "target:1.2.3.4:7"},
        {"value": 0x0202_FA56EA00_0009, "string": "target:4200000000:9"},
        {"value": 0x4002_FDE8_00000064, "string": ""},  # RT marked non-transitive (Quagga)
        {"value": 0x0303_0000_0000_0001, "string": ""},  # colour: not ours, ignored
    ]
    update = decode_line(one_line(doc))[0]
    assert isinstance(update, RouteUpdate)
    route = update.announced[0]
    assert (route.mobility_seq, route.sticky) == (9, True)
    assert route.route_targets == ("1.2.3.4:7", "4200000000:9", "65000:100")
    assert route.encapsulation is None


def test_communities_fall_back_to_strings() -> None:
    doc = type2_doc()
    communities(doc)[:] = [
        {"string": "target:65000:100"},
        {"string": "encap:VXLAN"},
        {"string": "mac-mobility:12:sticky"},
        {"value": "oops", "string": "origin:1:2"},
    ]
    route = decode_line(one_line(doc))[0].announced[0]  # type: ignore[union-attr]
    assert route.route_targets == ("65000:100",)
    assert route.encapsulation == ENCAP_VXLAN
    assert (route.mobility_seq, route.sticky) == (12, True)


def test_bad_attributes_cost_the_announcements_not_the_withdrawals() -> None:
    doc = type2_doc()
    communities(doc).append({"value": None, "string": None})
    doc["neighbor"]["message"]["update"]["withdraw"] = sample_doc("withdraw_type2_mac_ipv4")[
        "neighbor"
    ]["message"]["update"]["withdraw"]
    update, error = decode_line(one_line(doc))
    assert isinstance(update, RouteUpdate)
    assert update.announced == ()
    assert len(update.withdrawn) == 1
    assert isinstance(error, DecodeError)
    assert error.reason == "bad-community"


def pmsi_doc(pmsi: str) -> dict[str, Any]:
    doc = sample_doc("type3_imet_pmsi")
    doc["neighbor"]["message"]["update"]["attribute"]["pmsi"] = pmsi
    return doc


def test_pmsi_ipv6_tunnel_printed_in_hex() -> None:
    update = decode_line(
        one_line(pmsi_doc("pmsi:ingressreplication:0:6(100):0x20010DB8000000000000000000000002"))
    )[0]
    assert isinstance(update, RouteUpdate)
    assert update.announced[0].tunnel == IPv6Address("2001:db8::2")  # type: ignore[union-attr]


def test_pmsi_zero_label_and_other_tunnel_types() -> None:
    update = decode_line(one_line(pmsi_doc("pmsi:notunnel:0:0:")))[0]
    route = update.announced[0]  # type: ignore[union-attr]
    assert (route.tunnel_type, route.vni, route.tunnel) == ("no-tunnel", 0, None)


def test_type3_without_pmsi() -> None:
    doc = sample_doc("type3_imet_pmsi")
    del doc["neighbor"]["message"]["update"]["attribute"]["pmsi"]
    route = decode_line(one_line(doc))[0].announced[0]  # type: ignore[union-attr]
    assert (route.tunnel_type, route.tunnel, route.vtep) == ("none", None, FRR_VTEP)


@pytest.mark.parametrize(
    "pmsi", ["pmsi:x", "pmsi:ingressreplication:0:abc:1.2.3.4", "nope:a:b:c:d"]
)
def test_bad_pmsi(pmsi: str) -> None:
    (error,) = decode_line(one_line(pmsi_doc(pmsi)))
    assert isinstance(error, DecodeError)
    assert error.reason == "bad-pmsi"


def test_mixed_types_in_one_update() -> None:
    doc = type2_doc()
    imet = sample_doc("type3_imet_pmsi")
    prefix = sample_doc("type5_ip_prefix")
    nlris(doc).extend(nlris(imet) + nlris(prefix))
    update = decode_line(one_line(doc))[0]
    assert isinstance(update, RouteUpdate)
    assert [r.key.route_type for r in update.announced] == [2, 2, 3, 5]


def test_unsupported_route_types_and_families_are_counted() -> None:
    doc = type2_doc()
    nlris(doc).append({"code": 1, "parsed": False, "raw": "0119"})  # ExaBGP could not parse it
    nlris(doc).append({"code": 9, "parsed": True, "name": "unknown"})
    doc["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"] = {
        "10.0.0.1": [{"nlri": "10.1.0.0/16"}]
    }
    decoder = Decoder()
    (update,) = decoder.decode(one_line(doc))
    assert isinstance(update, RouteUpdate)
    assert len(update.announced) == 2
    assert decoder.stats.ignored == {
        "evpn-type-1": 1,
        "evpn-type-9": 1,
        "family-ipv4 unicast": 1,
    }


def test_multihoming_routes_are_decoded_not_dropped() -> None:
    """Types 1 and 4 (RFC 7432 7.1, 7.4) come out as routes: the RIB holds and shows them."""
    doc = type2_doc()
    esi = "00:11:22:33:44:55:66:77:88:99"
    nlris(doc)[:] = [
        {"code": 1, "parsed": True, "raw": "", "name": "Ethernet Auto-Discovery",
         "rd": "10.99.0.2:1", "esi": esi, "ethernet-tag": 4294967295, "label": [[0]]},
        {"code": 4, "parsed": True, "raw": "", "name": "Ethernet Segment",
         "rd": "10.99.0.2:1", "esi": esi, "ip": "10.99.0.2"},
    ]  # fmt: skip
    decoder = Decoder()
    (update,) = decoder.decode(one_line(doc))
    assert isinstance(update, RouteUpdate)
    ead, es = update.announced
    assert ead == EadRoute(EadKey("10.99.0.2:1", esi, 0xFFFFFFFF), ead.nexthop, 0,
                           ead.route_targets, ead.encapsulation)  # fmt: skip
    assert es.key == EsKey("10.99.0.2:1", esi, ip_address("10.99.0.2"))
    assert decoder.stats.ignored == {}


def test_sent_updates_are_not_learned() -> None:
    doc = type2_doc()
    doc["neighbor"]["direction"] = "send"
    decoder = Decoder()
    assert decoder.decode(one_line(doc)) == []
    assert decoder.stats.ignored["sent-update"] == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("done", [CommandAck(True)]),
        ("error\n", [CommandAck(False)]),
        ("", []),
        ("  \n", []),
    ],
)
def test_plain_lines(line: str, expected: list[Message]) -> None:
    assert decode_line(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\xff\xfe{", "not-utf8"),
        ("{", "bad-json"),
        ("[1, 2]", "bad-envelope"),
        ('{"exabgp": "5.0.0"}', "bad-envelope"),
        ('{"type": "update"}', "missing-field"),
        ('{"type": "state", "neighbor": {"address": {"peer": "x"}}}', "bad-ip"),
        ("[" * 100_000, "bad-json"),
    ],
)
def test_garbage_lines(line: str | bytes, reason: str) -> None:
    decoder = Decoder()
    (error,) = decoder.decode(line)
    assert isinstance(error, DecodeError)
    assert error.reason == reason
    assert decoder.stats.errors[reason] == 1


def test_error_inside_a_peer_envelope_names_the_peer() -> None:
    doc = sample_doc("state_up")
    del doc["neighbor"]["state"]
    (error,) = decode_line(one_line(doc))
    assert error == DecodeError("missing-field", PEER, "state is not a string")


# ------------------------------------------------------------ hypothesis: fuzz


def all_sample_docs() -> list[dict[str, Any]]:
    if not SAMPLES.is_dir():
        return [{"type": "update"}]
    return [json.loads(p.read_text()) for p in sorted(SAMPLES.glob("json_*.json"))]


SAMPLE_DOCS = all_sample_docs()
SAMPLE_LINES = [one_line(d) for d in SAMPLE_DOCS]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(["-", "0", "10.99.0.2", "02:00:00:00:01:11", "pmsi:a:b:c:d", "0x"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(paths_of(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(paths_of(child, (*prefix, index)))
    return out


def assert_decodes(line: str | bytes) -> None:
    messages = Decoder().decode(line)
    assert isinstance(messages, list)
    for message in messages:
        assert isinstance(
            message,
            RouteUpdate
            | EndOfRib
            | PeerState
            | PeerOpen
            | Notification
            | SpeakerShutdown
            | CommandAck
            | DecodeError,
        )
        if isinstance(message, DecodeError):
            assert message.reason != "internal-error", message


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_byte_mutations_never_raise(data: st.DataObject) -> None:
    line = data.draw(st.sampled_from(SAMPLE_LINES)).encode()
    operation = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    at = data.draw(st.integers(min_value=0, max_value=len(line)))
    if operation == "truncate":
        mutated = line[:at]
    elif operation == "flip":
        mutated = line[:at] + bytes([data.draw(st.integers(0, 255))]) + line[at + 1 :]
    elif operation == "insert":
        mutated = line[:at] + data.draw(st.binary(min_size=1, max_size=8)) + line[at:]
    else:
        mutated = line[:at] + line[at + data.draw(st.integers(1, 16)) :]
    assert_decodes(mutated)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_structural_mutations_never_raise(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(SAMPLE_DOCS)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths_of(doc)))
        replacement = data.draw(json_values | st.just("__delete__"))
        if not path:
            doc = replacement
            break
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if replacement == "__delete__":
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
        if not isinstance(doc, dict):
            break
    assert_decodes(json.dumps(doc))


# ------------------------------------------- hypothesis: ExaBGP's own JSON encoder


class _Neighbor(dict[str, Any]):
    uid = "test"


NEIGHBOR = _Neighbor(
    {
        "local-address": "10.99.0.1",
        "peer-address": "10.99.0.2",
        "local-as": 65000,
        "peer-as": 65000,
        "router-id": "10.99.0.1",
    }
)

macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
ipv4s = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6s = st.integers(0, 2**128 - 1).map(IPv6Address)
vnis = st.integers(1, 2**24 - 1)
# What a usable route carries (evpnd/speaker/usable.py); the others are withdrawn (below).
unicast_macs = macs.filter(lambda m: validate.is_unicast_mac(bytes.fromhex(m.replace(":", ""))))
vteps = (ipv4s | ipv6s).filter(lambda a: validate.unicast_problem(a) is None)


def exabgp_received_json(
    rd: tuple[str, int],
    esi: bytes,
    etag: int,
    mac: str,
    ip: IPv4Address | IPv6Address | None,
    labels: list[int],
    nexthop: IPv4Address | IPv6Address,
    targets: list[tuple[int, int]],
    mobility: tuple[int, bool] | None,
    router_mac: str | None,
    default_gateway: bool,
) -> str:
    """A Type-2 route as ExaBGP prints it after receiving it: packed, unpacked, rendered."""
    sent = MAC(
        RouteDistinguisher.fromElements(*rd),
        ESI(esi),
        EthernetTag(etag),
        MACQUAL(mac),
        48,
        Labels([], raw_labels=labels),
        None if ip is None else IP.create(str(ip)),
    )
    received, _ = EVPN.unpack_nlri(AFI.l2vpn, SAFI.evpn, sent.pack_nlri(), Action.ANNOUNCE, None)
    received.nexthop = IP.create(str(nexthop))
    wire: list[bytes] = [RouteTargetASN2Number(asn, number).pack() for asn, number in targets]
    if mobility is not None:
        wire.append(MacMobility(mobility[0], sticky=mobility[1]).pack())
    if router_mac is not None:
        wire.append(b"\x06\x03" + bytes.fromhex(router_mac.replace(":", "")))
    if default_gateway:
        wire.append(b"\x03\x0d" + bytes(6))
    attributes = Attributes()
    if wire:
        extended = ExtendedCommunities()
        for packed in wire:
            extended.communities.append(ExtendedCommunity.unpack(packed))
        attributes.add(extended)
    return JSON("5.0.0").update(NEIGHBOR, "receive", Update([received], attributes), None, b"", b"")


@settings(max_examples=150, deadline=None)
@given(
    rd=st.tuples(st.sampled_from(["10.99.0.2", "192.0.2.1"]), st.integers(0, 65535))
    | st.tuples(st.integers(0, 65535).map(str), st.integers(0, 2**32 - 1)),
    esi=st.binary(min_size=10, max_size=10),
    etag=st.integers(0, 2**32 - 1),
    mac=unicast_macs,
    ip=st.none() | ipv4s | ipv6s,
    labels=st.lists(vnis, min_size=1, max_size=2),
    nexthop=vteps,
    targets=st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 2**32 - 1)), max_size=3),
    mobility=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.booleans()),
    router_mac=st.none() | macs,
    default_gateway=st.booleans(),
)
def test_type2_round_trips_through_exabgp(
    rd: tuple[str, int],
    esi: bytes,
    etag: int,
    mac: str,
    ip: IPv4Address | IPv6Address | None,
    labels: list[int],
    nexthop: IPv4Address | IPv6Address,
    targets: list[tuple[int, int]],
    mobility: tuple[int, bool] | None,
    router_mac: str | None,
    default_gateway: bool,
) -> None:
    line = exabgp_received_json(
        rd, esi, etag, mac, ip, labels, nexthop, targets, mobility, router_mac, default_gateway
    )
    (update,) = decode_line(line)
    assert isinstance(update, RouteUpdate)
    (route,) = update.announced
    assert route.key == MacIpKey(f"{rd[0]}:{rd[1]}", etag, mac, ip)
    assert route.nexthop == nexthop
    assert route.vni == labels[0]
    assert route.l3vni == (labels[1] if len(labels) == 2 else None)
    assert route.esi == (ZERO_ESI if esi == bytes(10) else ":".join(f"{b:02x}" for b in esi))
    assert route.route_targets == tuple(dict.fromkeys(f"{a}:{n}" for a, n in targets))
    assert (route.mobility_seq, route.sticky) == (mobility or (0, False))
    assert route.router_mac == router_mac
    assert route.default_gateway is default_gateway


# -- well-formed but unusable routes: withdrawn like the raw decoder does (usable.py)


def _announce_of(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["neighbor"]["message"]["update"]["announce"]["l2vpn evpn"]


@pytest.mark.parametrize(
    ("mac", "fragment"),
    [("00:00:00:00:00:00", "all-zero MAC"), ("FF:FF:FF:FF:FF:FF", "broadcast MAC"),
     ("01:00:5E:00:00:01", "01:00:5e:00:00:01 has the group bit set")],
)  # fmt: skip
def test_an_unusable_mac_in_exabgp_json_is_withdrawn(mac: str, fragment: str) -> None:
    doc = sample_doc("type2_mac_only")
    (nlris,) = _announce_of(doc).values()
    nlris[0]["mac"] = mac
    decoder = Decoder()
    update, error = decoder.decode(one_line(doc))
    assert isinstance(update, RouteUpdate) and update.announced == ()
    assert [k.mac for k in update.withdrawn] == [mac.lower()]  # type: ignore[union-attr]
    assert isinstance(error, DecodeError) and error.reason == "bad-route"
    assert fragment in error.detail and error.peer == PEER
    assert decoder.stats.errors == {"bad-route": 1}


@pytest.mark.parametrize("nexthop", ["0.0.0.0", "127.0.0.1", "224.0.0.9", "255.255.255.255",
                                     "::", "::1", "ff02::1"])
def test_a_next_hop_in_exabgp_json_that_is_no_vtep_withdraws(nexthop: str) -> None:
    doc = sample_doc("type2_mac_only")
    announce = _announce_of(doc)
    (nlris,) = announce.values()
    announce.clear()
    announce[nexthop] = nlris
    update, error = Decoder().decode(one_line(doc))
    assert isinstance(update, RouteUpdate) and update.announced == ()
    assert len(update.withdrawn) == len(nlris)
    assert isinstance(error, DecodeError) and error.reason == "treat-as-withdraw"
    assert error.detail.startswith(f"MP_REACH_NLRI next hop {nexthop} is no VTEP (")


@pytest.mark.parametrize(
    "tunnel", ["0.0.0.0", "127.0.0.1", "239.1.1.1", "0x" + IPv6Address("ff02::1").packed.hex()])
def test_a_pmsi_tunnel_in_exabgp_json_that_is_no_vtep_withdraws(tunnel: str) -> None:
    doc = sample_doc("type3_imet_pmsi")
    doc["neighbor"]["message"]["update"]["attribute"]["pmsi"] = (
        f"pmsi:ingressreplication:0:6(100):{tunnel}")
    update, error = Decoder().decode(one_line(doc))
    assert isinstance(update, RouteUpdate) and update.announced == ()
    assert isinstance(update.withdrawn[0], ImetKey)
    assert isinstance(error, DecodeError) and error.reason == "bad-route"
    assert "PMSI tunnel" in error.detail and "is no VTEP" in error.detail


def test_exabgp_round_trip_agrees_with_the_frr_capture() -> None:
    """The generator above prints what FRR's route printed (modulo the envelope)."""
    line = exabgp_received_json(
        ("10.99.0.2", 2),
        bytes(10),
        0,
        "02:00:00:00:01:11",
        IPv4Address("192.168.100.11"),
        [100, 5000],
        FRR_VTEP,
        [(65000, 100), (65000, 5000)],
        None,
        "02:00:00:00:50:fe",
        False,
    )
    generated = json.loads(line)["neighbor"]["message"]["update"]["announce"]
    captured = sample_doc("type2_mac_ip_v4_v6_two_labels_rmac_L3VNI")["neighbor"]["message"][
        "update"
    ]["announce"]
    assert generated["l2vpn evpn"]["10.99.0.2"][0] == captured["l2vpn evpn"]["10.99.0.2"][0]


@pytest.mark.parametrize(("reserved", "subtype"), [(0, "query"), (1, "begin"), (2, "end")])
def test_route_refresh_markers_from_exabgps_own_encoder(reserved: int, subtype: str) -> None:
    from exabgp.bgp.message.refresh import RouteRefresh as ExaRefresh

    line = JSON("5.0.0").refresh(NEIGHBOR, "receive", ExaRefresh(AFI.l2vpn, SAFI.evpn, reserved),
                                 None, b"", b"")
    (message,) = decode_line(line)
    assert message == RouteRefresh(ip_address("10.99.0.2"), "l2vpn", "evpn", subtype)
    assert message.is_evpn


# ------------------------------------------------- OPEN: graceful-restart capability


def test_received_open_gives_the_graceful_restart_capability_with_the_f_bit() -> None:
    # Captured from FRR 8.4.4 with `bgp graceful-restart` and `preserve-fw-state`:
    # ExaBGP lists the family with ["restart"] for the F bit and shows the R bit as
    # "forwarding" (its Graceful.json() swaps the names).
    [message] = Decoder().decode(sample_text("open_frr_graceful_restart_preserve_fw"))
    assert message == PeerOpen(
        IPv4Address("192.0.2.2"), 65000, 9, "192.0.2.2",
        GracefulRestart(120, restarting=True, families=(("l2vpn", "evpn", True),)),
    )  # fmt: skip
    assert message.graceful_restart is not None and message.graceful_restart.evpn is True


def test_received_open_without_preserve_fw_state_has_the_f_bit_clear() -> None:
    [message] = Decoder().decode(sample_text("open_frr_graceful_restart"))
    assert isinstance(message, PeerOpen) and message.graceful_restart is not None
    assert message.graceful_restart.evpn is False
    assert message.graceful_restart.restart_time == 120


def test_open_without_the_capability_or_the_family() -> None:
    doc = sample_doc("open_frr_graceful_restart_preserve_fw")
    del doc["neighbor"]["open"]["capabilities"]["64"]
    [message] = Decoder().decode(one_line(doc))
    assert isinstance(message, PeerOpen) and message.graceful_restart is None

    doc = sample_doc("open_frr_graceful_restart_preserve_fw")
    doc["neighbor"]["open"]["capabilities"]["64"]["address-family-flags"] = {
        "ipv4/unicast": ["restart"]
    }
    [message] = Decoder().decode(one_line(doc))
    assert isinstance(message, PeerOpen) and message.graceful_restart is not None
    assert message.graceful_restart.evpn is None  # L2VPN/EVPN not in the capability
    assert message.graceful_restart.preserved("ipv4", "unicast") is True


def test_sent_open_is_ignored_and_a_bad_capability_is_a_decode_error() -> None:
    decoder = Decoder()
    doc = sample_doc("open_frr_graceful_restart_preserve_fw")
    doc["neighbor"]["direction"] = "send"
    assert decoder.decode(one_line(doc)) == []
    assert decoder.stats.ignored["sent-open"] == 1

    doc = sample_doc("open_frr_graceful_restart_preserve_fw")
    doc["neighbor"]["open"]["capabilities"]["64"]["time"] = "soon"
    [error] = decoder.decode(one_line(doc))
    assert isinstance(error, DecodeError) and error.peer == IPv4Address("192.0.2.2")
