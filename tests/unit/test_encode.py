"""The EVPN command syntax: model -> token (encode.py) -> ExaBGP objects (commands.py).

The expected NLRI bytes and community values are the ones FRR 8.4 itself put
on the wire for the same routes (tests/data/exabgp-samples/json_*.json), so a
match means FRR reads our routes exactly as it reads its own.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from exabgp.bgp.message import Action
from exabgp.bgp.message.update.attribute import Attribute
from exabgp.configuration.core.format import formated
from exabgp.reactor.api import API
from exabgp.reactor.api.command.command import Command
from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.model import (
    ZERO_ESI,
    ImetKey,
    ImetRoute,
    MacIpKey,
    MacIpRoute,
    PrefixKey,
    PrefixRoute,
)
from evpnd.speaker import commands, encode
from tests.conftest import SAMPLES

VTEP = ip_address("10.99.0.2")
RD = "10.99.0.2:2"
RT100 = 842122827661412  # target:65000:100 as FRR sent it
RT5000 = 842122827666312  # target:65000:5000
ENCAP_VXLAN = 219550481834311688
ROUTER_MAC_02_00_00_00_50_FE = 433192188180975870
DEFAULT_GW = 219831956811022336
MOBILITY_4 = 432345564227567620

commands.register()


def sample_raw(name: str, index: int = 0) -> str:
    path = SAMPLES / name
    update = json.loads(path.read_text())["neighbor"]["message"]["update"]
    if "announce" in update:
        routes = [r for rs in update["announce"]["l2vpn evpn"].values() for r in rs]
    else:
        routes = update["withdraw"]["l2vpn evpn"]
    return routes[index]["raw"]


def mac_route(**overrides: object) -> MacIpRoute:
    fields: dict[str, object] = {
        "key": MacIpKey(RD, 0, "02:00:00:00:01:11"),
        "nexthop": VTEP,
        "vni": 100,
        "route_targets": ("65000:100",),
    }
    fields.update(overrides)
    return MacIpRoute(**fields)  # type: ignore[arg-type]


def change_of(route: object, action: Action = Action.ANNOUNCE):
    token = encode.route_token(route)  # type: ignore[arg-type]
    return commands.parse_change(token, action)


def communities(change: object) -> set[int]:
    attributes = change.attributes  # type: ignore[attr-defined]
    extended = attributes[Attribute.CODE.EXTENDED_COMMUNITY]
    return {int.from_bytes(c.pack(), "big") for c in extended.communities}


def nlri_hex(change: object) -> str:
    return change.nlri.pack_nlri().hex().upper()  # type: ignore[attr-defined]


# --------------------------------------------------------------------- tokens


def test_type2_mac_only_token_and_bytes() -> None:
    route = mac_route()
    assert encode.route_token(route) == (
        "mac rd=10.99.0.2:2 etag=0 mac=02:00:00:00:01:11 label=100 nh=10.99.0.2 rt=65000:100"
    )
    change = change_of(route)
    assert nlri_hex(change) == sample_raw("json_type2_mac_only.json")
    assert str(change.nlri.nexthop) == "10.99.0.2"
    assert communities(change) == {RT100, ENCAP_VXLAN}


def test_type2_mac_ip_single_label() -> None:
    route = mac_route(key=MacIpKey(RD, 0, "02:00:00:00:01:11", ip_address("192.168.100.11")))
    token = encode.route_token(route)
    assert "ip=192.168.100.11 label=100 " in token
    assert nlri_hex(change_of(route)) == sample_raw("json_type2_mac_ipv4_single_label.json")


def test_type2_two_labels_router_mac_v4_and_v6() -> None:
    sample = "json_type2_mac_ip_v4_v6_two_labels_rmac_L3VNI.json"
    for index, ip in enumerate(("192.168.100.11", "2001:db8:100::11")):
        route = mac_route(
            key=MacIpKey(RD, 0, "02:00:00:00:01:11", ip_address(ip)),
            l3vni=5000,
            route_targets=("65000:100", "65000:5000"),
            router_mac="02:00:00:00:50:fe",
        )
        token = encode.route_token(route)
        assert "label=100/5000" in token and "rmac=02:00:00:00:50:fe" in token
        change = change_of(route)
        assert nlri_hex(change) == sample_raw(sample, index)
        assert communities(change) == {RT100, RT5000, ENCAP_VXLAN, ROUTER_MAC_02_00_00_00_50_FE}


def test_type2_mobility_sequence_and_sticky() -> None:
    route = mac_route(mobility_seq=4)
    assert encode.route_token(route).endswith("rt=65000:100 seq=4")
    change = change_of(route)
    assert nlri_hex(change) == sample_raw("json_type2_mac_mobility_seq4_from_frr.json")
    assert communities(change) == {RT100, ENCAP_VXLAN, MOBILITY_4}

    sticky = mac_route(sticky=True)
    assert encode.route_token(sticky).endswith("seq=0 sticky=1")
    mobility = [c for c in change_of(sticky).attributes[Attribute.CODE.EXTENDED_COMMUNITY]
                .communities if c.pack()[:2] == b"\x06\x00"]
    assert mobility[0].pack() == b"\x06\x00\x01\x00\x00\x00\x00\x00"


def test_type2_no_mobility_community_for_a_mac_that_never_moved() -> None:
    assert "seq=" not in encode.route_token(mac_route())
    assert MOBILITY_4 not in communities(change_of(mac_route()))


def test_type2_default_gateway() -> None:
    route = mac_route(
        key=MacIpKey(RD, 0, "02:00:00:00:02:fe", ip_address("192.168.100.2")),
        default_gateway=True,
    )
    assert encode.route_token(route).endswith(" gw=1")
    change = change_of(route)
    assert nlri_hex(change) == sample_raw("json_type2_default_gateway_from_frr.json")
    assert communities(change) == {RT100, ENCAP_VXLAN, DEFAULT_GW}


def test_type2_esi_is_written_only_when_not_zero() -> None:
    esi = "00:11:22:33:44:55:66:77:88:99"
    token = encode.route_token(mac_route(esi=esi))
    assert f"esi={esi}" in token
    assert bytes.fromhex(nlri_hex(change_of(mac_route(esi=esi)))[20:40]) == bytes.fromhex(
        esi.replace(":", "")
    )
    assert "esi=" not in encode.route_token(mac_route(esi=ZERO_ESI))


def test_type3_imet_with_pmsi() -> None:
    route = ImetRoute(ImetKey(RD, 0, VTEP), VTEP, 100, route_targets=("65000:100",))
    assert encode.route_token(route) == (
        "imet rd=10.99.0.2:2 etag=0 orig=10.99.0.2 label=100 nh=10.99.0.2 rt=65000:100"
    )
    change = change_of(route)
    assert nlri_hex(change) == sample_raw("json_type3_imet_pmsi.json")
    assert communities(change) == {RT100, ENCAP_VXLAN}
    pmsi = change.attributes[Attribute.CODE.PMSI_TUNNEL]
    assert repr(pmsi) == "pmsi:ingressreplication:0:6(100):10.99.0.2"


def test_type3_separate_tunnel_endpoint() -> None:
    route = ImetRoute(ImetKey(RD, 0, VTEP), VTEP, 100, tunnel=ip_address("10.99.0.9"))
    assert "tunnel=10.99.0.9" in encode.route_token(route)
    pmsi = change_of(route).attributes[Attribute.CODE.PMSI_TUNNEL]
    assert pmsi.tunnel == IPv4Address("10.99.0.9").packed


def test_type5_prefix() -> None:
    route = PrefixRoute(
        PrefixKey("10.99.0.2:1", 0, ip_network("10.99.0.0/24")),
        VTEP,
        5000,
        route_targets=("65000:5000",),
        router_mac="02:00:00:00:50:fe",
    )
    assert encode.route_token(route) == (
        "prefix rd=10.99.0.2:1 etag=0 net=10.99.0.0/24 gwip=0.0.0.0 label=5000 "
        "nh=10.99.0.2 rt=65000:5000 rmac=02:00:00:00:50:fe"
    )
    change = change_of(route)
    assert nlri_hex(change) == sample_raw("json_type5_ip_prefix.json")
    assert communities(change) == {RT5000, ENCAP_VXLAN, ROUTER_MAC_02_00_00_00_50_FE}


def test_route_target_and_rd_variants() -> None:
    route = mac_route(
        key=MacIpKey("4200000000:7", 0, "02:00:00:00:01:11"),
        route_targets=("65000:100", "192.0.2.1:5", "4200000000:9"),
    )
    change = change_of(route)
    assert change.nlri.rd.pack() == b"\x00\x02" + (4200000000).to_bytes(4, "big") + b"\x00\x07"
    packed = {c.pack() for c in change.attributes[Attribute.CODE.EXTENDED_COMMUNITY].communities}
    assert b"\x00\x02\xfd\xe8\x00\x00\x00\x64" in packed  # 2-byte ASN
    assert b"\x01\x02\xc0\x00\x02\x01\x00\x05" in packed  # IPv4 administrator
    assert b"\x02\x02\xfa\x56\xea\x00\x00\x09" in packed  # 4-byte ASN


def test_withdraw_repeats_the_announced_nlri_and_carries_no_attribute() -> None:
    route = mac_route(key=MacIpKey(RD, 0, "02:00:00:00:01:11", ip_address("192.168.100.11")),
                      mobility_seq=7)
    token = encode.route_token(route)
    announce = commands.parse_change(token, Action.ANNOUNCE)
    withdraw = commands.parse_change(token, Action.WITHDRAW)
    assert withdraw.nlri.pack_nlri() == announce.nlri.pack_nlri()
    assert withdraw.nlri.action == Action.WITHDRAW
    assert len(withdraw.attributes) == 0
    # What FRR sends when *it* withdraws has label 0: that is why we keep our tokens.
    assert nlri_hex(withdraw) != sample_raw("json_withdraw_type2_mac_ipv4.json")


def test_nlri_identity_ignores_attributes_only() -> None:
    base = mac_route()
    assert encode.nlri_identity(base) == encode.nlri_identity(mac_route(mobility_seq=5))
    assert encode.nlri_identity(base) != encode.nlri_identity(mac_route(vni=200))
    assert encode.nlri_identity(base) != encode.nlri_identity(mac_route(l3vni=5000))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key": MacIpKey("bad", 0, "02:00:00:00:01:11")}, "route distinguisher"),
        ({"key": MacIpKey("1.2.3.4:70000", 0, "02:00:00:00:01:11")}, "65535"),
        ({"key": MacIpKey(RD, 0, "02:00:00:00:01")}, "MAC"),
        ({"key": MacIpKey(RD, 0, "02:00:00:00:01:1z")}, "MAC"),
        ({"key": MacIpKey(RD, 0, "02:00:00:00:01:11\n")}, "MAC"),
        ({"vni": 1 << 24}, "VNI"),
        ({"route_targets": ("65000:100 reset",)}, "route target"),
        ({"router_mac": "help me"}, "MAC"),
        ({"esi": "00"}, "ESI"),
        ({"key": MacIpKey(RD, 1 << 32, "02:00:00:00:01:11")}, "ethernet tag"),
    ],
)
def test_encoder_rejects_what_it_cannot_express(overrides: dict, message: str) -> None:
    with pytest.raises(encode.EncodeError, match=message):
        encode.route_token(mac_route(**overrides))


# ---------------------------------------------------------------- lines


def dispatched_to(line: str) -> str | None:
    """The command ExaBGP's API would run for this line (API.response's rule)."""
    command = formated(line)
    for registered in Command.functions:
        if registered == command or command.endswith(" " + registered) or (
            registered + " " in command
        ):
            return registered
    return None


def test_batch_lines_round_trip() -> None:
    routes = [
        ImetRoute(ImetKey(RD, 0, VTEP), VTEP, 100),
        mac_route(),
        mac_route(key=MacIpKey(RD, 0, "02:00:00:00:01:12", ip_address("192.168.100.12"))),
    ]
    tokens = [encode.route_token(route) for route in routes]
    line = encode.announce_line(tokens)
    assert line.startswith("announce evpn batch imet ")
    assert commands.split_command(line) == (Action.ANNOUNCE, tokens)
    action, changes = commands.parse_command(encode.withdraw_line(tokens))
    assert action == Action.WITHDRAW and len(changes) == 3
    assert encode.announce_line(tokens[:1]) == f"announce evpn {tokens[0]}"
    assert encode.announce_lines(routes, batch=2) == [
        encode.announce_line(tokens[:2]), encode.announce_line(tokens[2:])
    ]


def test_registered_commands_are_covered_by_forbidden_list() -> None:
    assert "announce evpn" in Command.functions and "withdraw evpn" in Command.functions
    for name in Command.functions:
        if name in (encode.ANNOUNCE, encode.WITHDRAW):
            continue
        probe = f" {name} "
        assert any(bad in probe for bad in encode.FORBIDDEN), name


def test_one_bad_token_rejects_the_whole_batch() -> None:
    good = encode.route_token(mac_route())
    with pytest.raises(commands.CommandError):
        commands.parse_command(f"announce evpn batch {good};mac rd=1.2.3.4:1 etag=0")
    with pytest.raises(commands.CommandError, match="unknown field"):
        commands.parse_command(f"announce evpn {good} colour=blue")
    with pytest.raises(commands.CommandError, match="twice"):
        commands.parse_command(f"announce evpn {good} seq=1 seq=2")


def test_handler_is_wired_into_the_api() -> None:
    assert API.callback["text"][encode.ANNOUNCE].__name__ == "_announce_evpn"
    assert API.callback["text"][encode.WITHDRAW].__name__ == "_withdraw_evpn"


# ---------------------------------------------------------- property tests

octet = st.integers(0, 255)
rds = st.one_of(
    st.builds(lambda a, n: f"{a}:{n}", st.ip_addresses(v=4), st.integers(0, 0xFFFF)),
    st.builds(lambda a, n: f"{a}:{n}", st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)),
    st.builds(lambda a, n: f"{a}:{n}", st.integers(0x10000, 0xFFFFFFFF), st.integers(0, 0xFFFF)),
)
macs = st.lists(octet, min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
esis = st.one_of(
    st.just(ZERO_ESI),
    st.lists(octet, min_size=10, max_size=10).map(lambda b: ":".join(f"{x:02x}" for x in b)),
)
ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
vnis = st.integers(1, encode.VNI_MAX)
rt_lists = st.lists(rds, max_size=4).map(tuple)

mac_routes = st.builds(
    MacIpRoute,
    key=st.builds(MacIpKey, rds, st.integers(0, 0xFFFFFFFF), macs, st.none() | ips),
    nexthop=ips,
    vni=vnis,
    l3vni=st.none() | vnis,
    esi=esis,
    route_targets=rt_lists,
    mobility_seq=st.integers(0, 0xFFFFFFFF),
    sticky=st.booleans(),
    router_mac=st.none() | macs,
    default_gateway=st.booleans(),
)
imet_routes = st.builds(
    ImetRoute,
    key=st.builds(ImetKey, rds, st.integers(0, 0xFFFFFFFF), ips),
    nexthop=ips,
    vni=vnis,
    tunnel=st.none() | ips,
    route_targets=rt_lists,
)
prefix_routes = st.builds(
    lambda rd, etag, net, nh, vni, esi, rts, rmac: PrefixRoute(
        PrefixKey(rd, etag, net), nh, vni, esi=esi, route_targets=rts, router_mac=rmac
    ),
    rds, st.integers(0, 0xFFFFFFFF),
    st.one_of(
        st.builds(lambda a, n: ip_network(f"{a}/{n}", strict=False), st.ip_addresses(v=4),
                  st.integers(0, 32)),
        st.builds(lambda a, n: ip_network(f"{a}/{n}", strict=False), st.ip_addresses(v=6),
                  st.integers(0, 128)),
    ),
    ips, vnis, esis, rt_lists, st.none() | macs,
)
routes = st.one_of(mac_routes, imet_routes, prefix_routes)


@settings(max_examples=300, deadline=None)
@given(st.lists(routes, min_size=1, max_size=8))
def test_lines_never_trip_exabgp_dispatch(batch: list) -> None:
    tokens = [encode.route_token(route) for route in batch]
    for token in tokens:
        padded = f" {token} "
        assert not any(bad in padded for bad in encode.FORBIDDEN)
    for line, verb in ((encode.announce_line(tokens), encode.ANNOUNCE),
                       (encode.withdraw_line(tokens), encode.WITHDRAW)):
        assert formated(line) == line  # nothing for ExaBGP to pad or collapse
        assert dispatched_to(line) == verb
        assert "json" not in line.split(" ")  # would switch ExaBGP to JSON answers
        action, changes = commands.parse_command(line)
        assert len(changes) == len(batch)
        assert all(change.nlri.action == action for change in changes)


@settings(max_examples=300, deadline=None)
@given(mac_routes)
def test_type2_fields_survive_the_round_trip(route: MacIpRoute) -> None:
    nlri = change_of(route).nlri
    assert nlri.rd._str() == route.key.rd
    assert str(nlri.mac).lower() == route.key.mac
    assert nlri.etag.tag == route.key.etag
    assert nlri.label.raw_labels == [route.vni] + ([route.l3vni] if route.l3vni else [])
    if route.key.ip is None:
        assert nlri.ip is None
    else:
        assert ip_address(str(nlri.ip)) == route.key.ip
    assert ip_address(str(nlri.nexthop)) == route.nexthop
    assert isinstance(route.nexthop, IPv4Address | IPv6Address)
