"""A realistic daemon state for the control-socket tests and the README samples.

Received routes are the ExaBGP JSON lines captured from FRR 8.4.4
(tests/data/exabgp-samples), decoded by the real Decoder and fed to a real Rib
and PeerTracker in the order a session delivers them; a second peer's session
is torn down by the captured NOTIFICATION (readdressed to that peer).
"""

from __future__ import annotations

import json
from dataclasses import replace
from ipaddress import IPv4Address, ip_address
from types import MappingProxyType

from evpnd import config
from evpnd.control.peers import PeerTracker
from evpnd.control.snapshot import Snapshot, SpeakerStatus, out_routes
from evpnd.dataplane.events import LocalMac
from evpnd.dataplane.localtable import LocalSnapshot
from evpnd.dataplane.state import ForwardingState
from evpnd.derived import vni_devices, vni_policies
from evpnd.desired import desired_state
from evpnd.model import ENCAP_VXLAN, ImetKey, ImetRoute, MacIpKey, MacIpRoute
from evpnd.rib import Rib
from evpnd.speaker.decode import Decoder
from tests.conftest import SAMPLES, require

T0 = 1_795_320_000.0  # the samples' era
FRR = IPv4Address("10.99.0.2")  # FRR: BGP peer and VTEP of the samples
RR2 = IPv4Address("10.99.0.3")
VTEP4 = IPv4Address("10.99.0.4")  # a VTEP whose routes FRR reflects
STATIC = IPv4Address("10.99.0.7")

CONFIG = """
router_id: 10.99.0.1
asn: 65000
vtep: {address: 10.99.0.1, device: eth0}
bgp:
  peers:
    - {address: 10.99.0.2, remote_asn: 65000, description: frr1}
    - {address: 10.99.0.3, remote_asn: 65000, description: rr2}
vnis:
  - {vni: 100}
  - {vni: 200, flood: static, flood_peers: [10.99.0.7], arp_suppression: false}
"""

SESSION = [  # (sample, seconds after T0)
    ("state_connected", 10),
    ("state_up", 11),
    ("type3_imet_pmsi", 12),
    ("type2_mac_only", 12),
    ("type2_mac_ip_v4_v6_two_labels_rmac_L3VNI", 12),
    ("type2_default_gateway_from_frr", 12),
    ("type5_ip_prefix", 12),
    ("eor", 13),
    ("type2_mac_mobility_seq4_from_frr", 300),
]
RR2_DOWN = [("state_connected", 10), ("state_up", 11), ("bgp_notification_received", 200),
            ("state_down_notification_received", 200)]
NOW = T0 + 3723


def sample(name: str, peer: IPv4Address = FRR) -> str:
    path = SAMPLES / f"json_{name}.json"
    require(path.is_file(), f"{path} (captured ExaBGP JSON) is missing")
    doc = json.loads(path.read_text())
    if peer != FRR:
        doc["neighbor"]["address"]["peer"] = str(peer)
    return json.dumps(doc)


def build(*, installed_all: bool = False) -> Snapshot:
    cfg = config.parse(CONFIG, "test.yaml")
    rib = Rib(cfg.vtep.address, vni_policies(cfg))
    tracker = PeerTracker()
    decoder = Decoder()
    for peer, session in ((FRR, SESSION), (RR2, RR2_DOWN)):
        for name, at in session:
            for msg in decoder.decode(sample(name, peer)):
                tracker.observe(msg, now=T0 + at)
                announced = getattr(msg, "announced", None)
                if announced is not None:
                    rib.apply_update(msg.peer, msg.announced, msg.withdrawn)
    # A third VTEP, reflected by FRR.
    rib.announce(FRR, ImetRoute(ImetKey("10.99.0.4:100", 0, VTEP4), VTEP4, 100, VTEP4,
                                route_targets=("65000:100",), encapsulation=ENCAP_VXLAN))
    rib.announce(FRR, MacIpRoute(MacIpKey("10.99.0.4:100", 0, "02:00:00:00:04:01",
                                          ip_address("192.168.100.41")),
                                 VTEP4, 100, route_targets=("65000:100",),
                                 encapsulation=ENCAP_VXLAN, mobility_seq=1))
    rib.announce(FRR, MacIpRoute(MacIpKey("10.99.0.4:100", 0, "02:00:00:00:04:01"),
                                 VTEP4, 100, route_targets=("65000:100",),
                                 encapsulation=ENCAP_VXLAN, mobility_seq=1))
    # Local endpoints, as the netlink monitor reports them.
    local = {
        (100, "02:00:00:00:0a:01"): LocalMac(100, "br100", "veth-web1", "02:00:00:00:0a:01"),
        (100, "02:00:00:00:0a:02"): LocalMac(100, "br100", "veth-db1", "02:00:00:00:0a:02",
                                             static=True),
        (200, "02:00:00:00:0b:01"): LocalMac(200, "br200", "veth-mq1", "02:00:00:00:0b:01"),
    }
    rib.local_mac_added(100, "02:00:00:00:0a:01", ip_address("192.168.100.21"))
    rib.local_mac_added(100, "02:00:00:00:0a:02", sticky=True)
    rib.local_mac_added(200, "02:00:00:00:0b:01")
    desired = desired_state(rib, vni_devices(cfg))
    installed = ForwardingState(dict(desired.macs), set(desired.floods), dict(desired.neighs))
    if not installed_all:  # one write still in flight
        installed.macs.pop(("vxlan100", "02:00:00:00:04:01"), None)
    return Snapshot(
        cfg=cfg,
        rib=rib,
        now=NOW,
        started=T0,
        peers=tracker.records(),
        local=LocalSnapshot(MappingProxyType(local), MappingProxyType({})),
        desired=desired,
        installed=installed,
        out_routes=tuple(out_routes(cfg, rib)),
        mtus={"br100": 1450, "vxlan100": 1450, "br200": 1450, "vxlan200": 1450},
        speaker=SpeakerStatus(4242, True, {"restarts": 0, "announced": 5, "withdrawn": 0,
                                           "acks": 3, "errors": 0, "lines_sent": 3,
                                           "lines_received": 14}),
        pid=4200,
        config_path="/etc/evpnd/evpnd.yaml",
        converged_at=T0 + 13,
        daemon_counters={"local_events": 4, "updates": 7, "decode_errors": 0,
                         "peer_downs": 1, "speaker_restarts": 0},
        decoder_counters={"lines": 13, "announced": 8, "withdrawn": 0, "errors": {}},
        dataplane_counters={"writes": 9, "errors": 0, "repairs": 0, "resyncs": 1,
                            "takeovers": 0},
        learner_counters={"messages": 40, "events": 4, "resyncs": 1, "overruns": 0,
                          "parse_errors": 0, "dump_retries": 0},
    )


def with_now(snap: Snapshot, now: float) -> Snapshot:
    return replace(snap, now=now)
