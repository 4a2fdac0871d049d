"""What each part of the functional core takes from the config (pure).

The RIB imports by route target (`VniPolicy`), the desired-state mapping
needs each VNI's devices and flood mode (`VniDevices`), the local learner
watches each VNI's bridge and vxlan device (`WatchedVni`), and the speaker
is restarted or reloaded when its identity changes.
"""

from __future__ import annotations

from evpnd.config import Config
from evpnd.dataplane.events import WatchedVni
from evpnd.desired import VniDevices
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
