"""Our own routes: what this host announces, built from the config and the RIB's adverts (pure).

The RIB decides *which* of our MACs and MAC/IPs are advertised (a remote route
with a higher mobility sequence number takes a MAC away); this module gives
each advert its route: RD, route targets, next hop and encapsulation from
the config. Type-3 routes (one per VNI that floods by EVPN) follow from the
config alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from evpnd.config import Config
from evpnd.model import ENCAP_VXLAN, ImetKey, ImetRoute, MacIpKey, MacIpRoute, RouteKey
from evpnd.rib import LocalAdvert


def mac_key(cfg: Config, advert: LocalAdvert) -> MacIpKey:
    return MacIpKey(cfg.rd_for(cfg.vni(advert.vni)), 0, advert.mac, advert.ip)


def mac_route(cfg: Config, advert: LocalAdvert) -> MacIpRoute:
    vni = cfg.vni(advert.vni)
    return MacIpRoute(
        key=mac_key(cfg, advert),
        nexthop=cfg.vtep.address,
        vni=advert.vni,
        route_targets=tuple(cfg.export_targets(vni)),
        mobility_seq=advert.seq,
        sticky=advert.sticky,
        encapsulation=ENCAP_VXLAN,
    )


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
