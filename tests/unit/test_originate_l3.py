"""Our routes with an L3VNI: MAC+IP routes with two labels and the router MAC, Type-5
prefixes, anycast gateways; down to the bytes ExaBGP packs and FRR decoded (the samples)."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network, IPv6Network, ip_address
from types import SimpleNamespace

from exabgp.bgp.message import Action
from exabgp.bgp.message.update.attribute import Attribute

from evpnd.config import Config, parse
from evpnd.derived import gateways, l3_policy
from evpnd.docker.driver import Gateway, gateway_mac
from evpnd.docker.glue import DockerGlue
from evpnd.l3.settings import anycast_mac, import_targets
from evpnd.l3.table import why_not
from evpnd.model import MacIpRoute, PrefixRoute
from evpnd.originate import gateway_routes, mac_route, prefix_routes, readvertised, static_routes
from evpnd.rib import LocalAdvert
from evpnd.speaker import commands, encode

commands.register()

HEAD = """
router_id: 10.0.1.2
asn: 65000
vtep: {address: 10.0.1.2, device: eth1}
vnis:
  - vni: 100
    gateway: {addresses: [10.100.0.1/24, "2001:db8:100::1/64"]}
  - vni: 200
"""
IRB = HEAD + """
l3vni: {vni: 5000, router_mac: "02:00:00:00:50:01", advertise: [connected, 203.0.113.0/24]}
"""
RMAC = 0x0603_0200_0000_5001  # router-MAC extended community, RFC 9135
DEFAULT_GW = 0x030D_0000_0000_0000
HOST = LocalAdvert(100, "02:00:00:00:01:01", ip_address("10.100.0.11"), 0, False)
MAC_ONLY = LocalAdvert(100, "02:00:00:00:01:01", None, 0, False)


def communities(route: object) -> set[int]:
    change = commands.parse_change(encode.route_token(route), Action.ANNOUNCE)  # type: ignore
    extended = change.attributes[Attribute.CODE.EXTENDED_COMMUNITY]
    return {int.from_bytes(c.pack(), "big") for c in extended.communities}


def labels_of(route: MacIpRoute) -> bytes:
    """The NLRI's label bytes, as ExaBGP packs them for the wire."""
    change = commands.parse_change(encode.route_token(route), Action.ANNOUNCE)
    return change.nlri.pack_nlri()[-6:]


def test_mac_ip_routes_carry_both_labels_the_router_mac_and_the_l3_target() -> None:
    cfg = parse(IRB)
    route = mac_route(cfg, HOST)
    assert (route.vni, route.l3vni, route.router_mac) == (100, 5000, "02:00:00:00:50:01")
    assert route.route_targets == ("65000:100", "65000:5000")
    assert labels_of(route) == (100).to_bytes(3, "big") + (5000).to_bytes(3, "big")
    found = communities(route)
    assert RMAC in found
    # As FRR sends them (json_type2_mac_ip_v4_v6_two_labels_rmac_L3VNI.json): both RTs.
    assert encode.route_token(route).count("rt=65000:100/65000:5000") == 1


def test_mac_only_routes_and_hosts_without_an_l3vni_stay_layer_2() -> None:
    route = mac_route(parse(IRB), MAC_ONLY)
    assert route.l3vni is None and route.router_mac is None
    assert route.route_targets == ("65000:100",)
    plain = mac_route(parse(HEAD), HOST)
    assert plain.l3vni is None and plain.router_mac is None
    # The router MAC not known yet (its bridge not read): layer 2 until it is.
    unknown = parse(HEAD + "l3vni: {vni: 5000}\n")
    assert mac_route(unknown, HOST).l3vni is None and prefix_routes(unknown) == []


def test_type5_routes_for_the_configured_prefixes_and_connected_gateway_subnets() -> None:
    cfg = parse(IRB)
    routes = prefix_routes(cfg)
    assert [r.key.prefix for r in routes] == [
        IPv4Network("203.0.113.0/24"), IPv4Network("10.100.0.0/24"),
        IPv6Network("2001:db8:100::/64")]  # fmt: skip
    for route in routes:
        assert isinstance(route, PrefixRoute)
        assert (route.key.rd, route.vni, route.router_mac) == ("10.0.1.2:5000", 5000,
                                                               "02:00:00:00:50:01")
        assert route.route_targets == ("65000:5000",)
        assert RMAC in communities(route)
    token = encode.route_token(routes[0])
    assert token == ("prefix rd=10.0.1.2:5000 etag=0 net=203.0.113.0/24 gwip=0.0.0.0 "
                     "label=5000 nh=10.0.1.2 rt=65000:5000 rmac=02:00:00:00:50:01")


def test_gateways_go_out_as_default_gateways_with_layer_2_labels_only() -> None:
    cfg = parse(IRB)
    routes = gateway_routes(cfg)
    assert [(r.mac, str(r.ip)) for r in routes] == [
        (anycast_mac(100), "10.100.0.1"), (anycast_mac(100), "2001:db8:100::1")]
    for route in routes:
        assert route.default_gateway and route.l3vni is None and route.router_mac is None
        assert route.route_targets == ("65000:100",)
        assert DEFAULT_GW in communities(route)
        assert RMAC not in communities(route)
    assert gateways(cfg) == {(100, anycast_mac(100))}
    kinds = [type(r).__name__ for r in static_routes(cfg)]
    assert kinds == ["ImetRoute", "ImetRoute", "MacIpRoute", "MacIpRoute",
                     "PrefixRoute", "PrefixRoute", "PrefixRoute"]  # fmt: skip


def test_adding_the_l3vni_re_announces_mac_ip_routes_as_another_nlri() -> None:
    """Two labels are another NLRI to ExaBGP: the outbox withdraws the old one first."""
    old, new = parse(HEAD), parse(IRB)
    withdraw, announce = readvertised(old, new, [MAC_ONLY, HOST])
    assert withdraw == [] and [r.key.ip for r in announce] == [HOST.ip]
    assert encode.nlri_identity(announce[0]) != encode.nlri_identity(mac_route(old, HOST))


def test_the_l3_policy_imports_by_the_l3vni_target_and_knows_our_prefixes() -> None:
    cfg = parse(IRB)
    policy = l3_policy(cfg)
    assert policy is not None
    # `auto` imports as the VNIs do (bgp.auto_route_targets): <asn>:5000, or *:5000.
    assert policy.vni == 5000 and policy.import_rts == frozenset(import_targets(cfg))
    assert policy.import_rts in ({"65000:5000"}, {"*:5000"})
    other = IRB.replace("10.0.1.2", "10.0.3.2").replace("203.0.113.0/24", "198.51.100.0/24")
    theirs = prefix_routes(parse(other))[0]  # another VTEP's Type-5, 198.51.100.0/24
    assert why_not(policy, theirs, frozenset({cfg.vtep.address})) == (theirs.key.prefix, None)
    assert IPv4Network("10.100.0.0/24") in policy.local_prefixes
    assert IPv4Network("203.0.113.0/24") in policy.local_prefixes
    assert l3_policy(parse(HEAD)) is None


def test_a_docker_gateway_local_network_is_a_vni_with_an_anycast_gateway() -> None:
    """The same mechanism on every host: the glue hands the daemon a VNI with `gateway:`."""
    cfg: Config = parse(HEAD)
    vni = parse(HEAD.replace("vni: 200", "vni: 300")).vni(300)
    glue = DockerGlue(SimpleNamespace())  # type: ignore[arg-type]
    gw = Gateway(gateway_mac(300), IPv4Interface("10.30.0.1/24"))
    glue._networks["n1"] = SimpleNamespace(network_id="n1" * 32, vni=vni, gateway=gw)
    effective = glue.effective(cfg)
    docker_vni = effective.vni(300)
    assert docker_vni.gateway is not None
    assert docker_vni.gateway.mac_for(300) == gateway_mac(300) == anycast_mac(300)
    assert [str(a) for a in docker_vni.gateway.addresses] == ["10.30.0.1/24"]
    assert (300, gateway_mac(300)) in gateways(effective)
    assert any(r.default_gateway and r.vni == 300 for r in gateway_routes(effective))


def test_the_anycast_mac_default_is_the_docker_drivers() -> None:
    for vni in (1, 100, 5000, 16777215):
        assert anycast_mac(vni) == gateway_mac(vni)
