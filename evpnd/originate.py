"""Our own routes: what this host announces, built from the config and the RIB's adverts (pure).

The RIB decides *which* of our MACs and MAC/IPs are advertised (a remote route
with a higher mobility sequence number takes a MAC away); this module gives
each advert its route: RD, route targets, next hop and encapsulation from
the config. Type-3 routes (one per VNI that floods by EVPN) follow from the
config alone.

Routing between segments (README "Routing between segments"): with an L3VNI
whose router MAC is known, a MAC+IP route also carries the L3VNI as its
second label, the router-MAC extended community and the L3VNI's export
route targets (symmetric IRB, RFC 9135), as FRR's do; MAC-only routes stay
layer 2. The configured prefixes go out as Type-5 routes (RFC 9136) with the
L3VNI label and the router MAC. A VNI's anycast gateway is announced as
MAC+IP routes with the default-gateway community and layer-2 labels only:
every host owns those addresses, so nobody may route to them through us.
"""

from __future__ import annotations

from collections.abc import Iterable

from evpnd.config import Config
from evpnd.l3 import settings as l3settings
from evpnd.model import (
    ENCAP_VXLAN,
    ImetKey,
    ImetRoute,
    MacIpKey,
    MacIpRoute,
    PrefixKey,
    PrefixRoute,
    Route,
    RouteKey,
)
from evpnd.rib import LocalAdvert


def mac_key(cfg: Config, advert: LocalAdvert) -> MacIpKey:
    return MacIpKey(cfg.rd_for(cfg.vni(advert.vni)), 0, advert.mac, advert.ip)


def mac_route(cfg: Config, advert: LocalAdvert) -> MacIpRoute:
    vni = cfg.vni(advert.vni)
    targets = cfg.export_targets(vni)
    l3 = cfg.l3vni
    routed = l3 is not None and l3.router_mac is not None and advert.ip is not None
    if routed:
        targets = list(dict.fromkeys([*targets, *l3settings.export_targets(cfg)]))
    return MacIpRoute(
        key=mac_key(cfg, advert),
        nexthop=cfg.vtep.address,
        vni=advert.vni,
        l3vni=l3.vni if routed and l3 is not None else None,
        route_targets=tuple(targets),
        mobility_seq=advert.seq,
        sticky=advert.sticky,
        router_mac=l3.router_mac if routed and l3 is not None else None,
        encapsulation=ENCAP_VXLAN,
    )


def prefix_routes(cfg: Config) -> list[PrefixRoute]:
    """Our Type-5 routes: each advertised prefix, with the L3VNI label and router MAC
    (none until the router MAC is known)."""
    l3 = cfg.l3vni
    if l3 is None or l3.router_mac is None:
        return []
    rd = l3settings.route_distinguisher(cfg)
    targets = tuple(l3settings.export_targets(cfg))
    return [
        PrefixRoute(
            key=PrefixKey(rd, 0, prefix),
            nexthop=cfg.vtep.address,
            vni=l3.vni,
            route_targets=targets,
            router_mac=l3.router_mac,
            encapsulation=ENCAP_VXLAN,
        )
        for prefix in l3settings.advertised_prefixes(cfg)
    ]


def gateway_routes(cfg: Config) -> list[MacIpRoute]:
    """Each anycast gateway address as a MAC+IP route with the default-gateway community."""
    routes = []
    for vni in cfg.vnis:
        gateway = vni.gateway
        if gateway is None:
            continue
        mac = gateway.mac_for(vni.vni)
        for iface in gateway.addresses:
            routes.append(MacIpRoute(
                key=MacIpKey(cfg.rd_for(vni), 0, mac, iface.ip),
                nexthop=cfg.vtep.address,
                vni=vni.vni,
                route_targets=tuple(cfg.export_targets(vni)),
                default_gateway=True,
                encapsulation=ENCAP_VXLAN,
            ))  # fmt: skip
    return routes


def static_routes(cfg: Config) -> list[Route]:
    """The routes that follow from the config alone: Type-3s, gateways, Type-5s."""
    return [*imet_routes(cfg), *gateway_routes(cfg), *prefix_routes(cfg)]


def imet_routes(cfg: Config) -> list[ImetRoute]:
    """One Type-3 per VNI that floods by EVPN: 'send me your BUM traffic'."""
    return [
        ImetRoute(
            key=ImetKey(cfg.rd_for(v), 0, cfg.vtep.address),
            nexthop=cfg.vtep.address,
            vni=v.vni,
            tunnel=cfg.vtep.address,
            route_targets=tuple(cfg.export_targets(v)),
            encapsulation=ENCAP_VXLAN,
        )
        for v in cfg.vnis
        if v.flood == "evpn"
    ]


def readvertised(
    old: Config, new: Config, adverts: Iterable[LocalAdvert]
) -> tuple[list[RouteKey], list[MacIpRoute]]:
    """Our Type-2s whose route changes with the config (RD or route targets; a large
    VNI's RD number depends on the other VNIs): (keys to withdraw, routes to announce).

    Only VNIs in both configs: a removed VNI's routes are withdrawn by the RIB.
    """
    kept = {v.vni for v in new.vnis} & {v.vni for v in old.vnis}
    withdraw: list[RouteKey] = []
    announce: list[MacIpRoute] = []
    for advert in adverts:
        if advert.vni not in kept:
            continue
        before, after = mac_route(old, advert), mac_route(new, advert)
        if before == after:
            continue
        if before.key != after.key:
            withdraw.append(before.key)
        announce.append(after)
    return withdraw, announce
