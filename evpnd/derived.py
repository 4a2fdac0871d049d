"""What each part of the functional core takes from the config (pure).

The RIB imports by route target (`VniPolicy`), the desired-state mapping
needs each VNI's devices and flood mode (`VniDevices`), the local learner
watches each VNI's bridge and vxlan device (`WatchedVni`), the speaker
is restarted or reloaded when its identity changes, and routing between
segments needs the L3 table's policy, the L3VNI's devices and the gateways.
"""

from __future__ import annotations

from evpnd.config import Config
from evpnd.dataplane.events import WatchedVni
from evpnd.desired import L3Devices, VniDevices
from evpnd.l3 import settings as l3settings
from evpnd.l3.table import L3Policy
from evpnd.rib import VniPolicy


def vni_policies(cfg: Config) -> list[VniPolicy]:
    return [VniPolicy(v.vni, frozenset(cfg.import_targets(v)), v.accept_label_mismatch)
            for v in cfg.vnis]


def vni_devices(cfg: Config) -> dict[int, VniDevices]:
    return {
        v.vni: VniDevices(
            v.vxlan_name, v.bridge_name, v.arp_suppression, v.flood, tuple(v.flood_peers)
        )
        for v in cfg.vnis
    }


def watched_vnis(cfg: Config) -> list[WatchedVni]:
    return [WatchedVni(v.vni, v.bridge_name, v.vxlan_name) for v in cfg.vnis]


def speaker_identity(cfg: Config) -> tuple[object, ...]:
    """What ExaBGP's configuration is made of: a change here reloads the speaker."""
    return (cfg.router_id, cfg.asn, cfg.vtep.address, cfg.bgp)


# Routing between segments (evpnd/l3/).


def l3_policy(cfg: Config) -> L3Policy | None:
    """What the RIB's L3 table imports, and the prefixes that are ours (never taken from a
    peer: our gateway subnets and the prefixes we announce)."""
    l3 = cfg.l3vni
    if l3 is None:
        return None
    local = {*l3settings.advertised_prefixes(cfg), *l3settings.gateway_subnets(cfg.vnis)}
    return L3Policy(l3.vni, frozenset(l3settings.import_targets(cfg)), frozenset(local))


def l3_devices(cfg: Config) -> L3Devices | None:
    l3 = cfg.l3vni
    return None if l3 is None else L3Devices(l3.bridge_name, l3.vxlan_name)


def gateways(cfg: Config) -> set[tuple[int, str]]:
    """(VNI, MAC) of every anycast gateway: this host owns it too, a peer's route for it
    is never installed (configured VNIs and Docker `gateway=local` networks alike)."""
    return {(v.vni, v.gateway.mac_for(v.vni)) for v in cfg.vnis if v.gateway is not None}
