"""ExaBGP 5.0.15 as the reference for the raw UPDATE decoder (evpnd/speaker/wire.py).

Two directions, both with ExaBGP's own code and real session objects (a
`Neighbor` each side, OPENs from `Capabilities().new`, a `Negotiated` from
them):
- `corpus()`: UPDATE bodies encoded by ExaBGP (`Update(...).messages()`),
  the way evpnd's commands.py builds its routes, covering every route type
  and the attributes evpnd reads;
- `exabgp_json()`: a body parsed by ExaBGP (`Update.unpack_message`, with the
  treat-as-withdraw rule of `Protocol.read_message`) and printed by its JSON
  API encoder: the line `evpnd.speaker.decode.Decoder` would receive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import ip_address

from exabgp.bgp.message import Action
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.open import ASN, HoldTime, Open, RouterID, Version
from exabgp.bgp.message.open.capability import Capabilities
from exabgp.bgp.message.open.capability.negotiated import Negotiated
from exabgp.bgp.message.update import EOR, Update
from exabgp.bgp.message.update.attribute import (
    MED,
    PMSI,
    Attribute,
    Attributes,
    ClusterID,
    ClusterList,
    LocalPreference,
    Origin,
    OriginatorID,
)
from exabgp.bgp.message.update.attribute.aggregator import Aggregator
from exabgp.bgp.message.update.attribute.community import (
    Communities,
    Community,
    LargeCommunities,
    LargeCommunity,
)
from exabgp.bgp.message.update.attribute.community.extended import (
    Encapsulation,
    ExtendedCommunities,
    ExtendedCommunity,
    MacMobility,
    RouteTargetASN2Number,
    RouteTargetASN4Number,
    RouteTargetIPNumber,
)
from exabgp.bgp.message.update.attribute.pmsi import PMSIIngressReplication
from exabgp.bgp.message.update.nlri.evpn import (
    MAC,
    EthernetAD,
    EthernetSegment,
    Multicast,
    Prefix,
)
from exabgp.bgp.message.update.nlri.qualifier import (
    ESI,
    EthernetTag,
    Labels,
    RouteDistinguisher,
)
from exabgp.bgp.message.update.nlri.qualifier import MAC as MACQUAL
from exabgp.bgp.neighbor import Neighbor
from exabgp.environment import getenv
from exabgp.logger import log
from exabgp.protocol.family import AFI, SAFI, Family
from exabgp.protocol.ip import IP
from exabgp.reactor.api.response.json import JSON

# The parser logs (lazily, at debug level); its logger needs ExaBGP's settings.
log.init(getenv())

LOCAL = "10.99.0.1"  # evpnd's ExaBGP
PEER = "10.99.0.2"  # the sender
ASN_LOCAL = 65000
EVPN = (AFI.l2vpn, SAFI.evpn)
HEADER_LEN = 19


@dataclass(frozen=True)
class Session:
    """Our side (whose Neighbor the JSON encoder prints) and what both sides negotiated."""

    ours: Neighbor
    theirs: Neighbor
    negotiated: Negotiated  # as our ExaBGP sees it: parses what the peer sends
    sending: Negotiated  # as the peer sees it: encodes what it sends


def _neighbor(local: str, peer: str, local_as: int, peer_as: int, asn4: bool) -> Neighbor:
    neighbor = Neighbor()
    neighbor["local-address"] = IP.create(local)
    neighbor["peer-address"] = IP.create(peer)
    neighbor["router-id"] = RouterID(local)
    neighbor["local-as"] = ASN(local_as)
    neighbor["peer-as"] = ASN(peer_as)
    neighbor["hold-time"] = HoldTime(180)
    neighbor["capability"]["asn4"] = asn4
    neighbor.add_family(EVPN)
    return neighbor


def _open(neighbor: Neighbor) -> Open:
    capabilities = Capabilities().new(neighbor, False, local_as=neighbor["local-as"])
    return Open(
        Version(4), neighbor["local-as"], neighbor["hold-time"], neighbor["router-id"],
        capabilities,
    )  # fmt: skip


def session(asn4: bool = True, peer_as: int = ASN_LOCAL) -> Session:
    """An established session's negotiation, built from two real OPENs."""
    ours = _neighbor(LOCAL, PEER, ASN_LOCAL, peer_as, asn4)
    theirs = _neighbor(PEER, LOCAL, peer_as, ASN_LOCAL, asn4)
    negotiated = Negotiated(ours)
    negotiated.sent(_open(ours))
    negotiated.received(_open(theirs))
    sending = Negotiated(theirs)
    sending.sent(_open(theirs))
    sending.received(_open(ours))
    assert negotiated.families == [EVPN], negotiated.families
    return Session(ours, theirs, negotiated, sending)


def encode(nlris: Sequence[object], attributes: Attributes, sess: Session) -> list[bytes]:
    """ExaBGP's encoding of one change set: UPDATE bodies, headers stripped."""
    update = Update(list(nlris), attributes)
    return [message[HEADER_LEN:] for message in update.messages(sess.sending)]


def exabgp_json(body: bytes, sess: Session) -> str:
    """What ExaBGP would print for a received body (raises Notify where it resets)."""
    message = Update.unpack_message(body, Direction.IN, sess.negotiated)
    if Attribute.CODE.INTERNAL_TREAT_AS_WITHDRAW in message.attributes:
        for nlri in message.nlris:  # as Protocol.read_message does
            nlri.action = Action.WITHDRAW
    return JSON("5.0.0").update(sess.ours, "receive", message, None, b"", b"")


@contextlib.contextmanager
def ipv6_evpn_next_hops() -> Iterator[None]:
    """Let ExaBGP's parser take a 16-byte EVPN next hop (it accepts only 4 octets)."""
    saved = Family.size[EVPN]
    Family.size[EVPN] = ((4, 16), 0)
    try:
        yield
    finally:
        Family.size[EVPN] = saved


# ------------------------------------------------------------------ route builders


def rd(text: str) -> RouteDistinguisher:
    admin, number = text.rsplit(":", 1)
    return RouteDistinguisher.fromElements(admin, int(number))


def esi(text: str | None) -> ESI:
    return ESI() if text is None else ESI(bytes.fromhex(text.replace(":", "")))


def ip(text: str) -> IP:
    return IP.create(str(ip_address(text)))


def labels(*values: int) -> Labels:
    return Labels([], raw_labels=list(values))  # RFC 8365: the VNI raw, as commands.py


def mac(
    rd_text: str, mac_text: str, ip_text: str | None = None, vni: Sequence[int] = (100,),
    nexthop: str = PEER, esi_text: str | None = None, etag: int = 0,
    action: Action = Action.ANNOUNCE,
) -> MAC:  # fmt: skip
    return MAC(
        rd(rd_text), esi(esi_text), EthernetTag(etag), MACQUAL(mac_text), 48, labels(*vni),
        None if ip_text is None else ip(ip_text), nexthop=ip(nexthop), action=action,
    )  # fmt: skip


def imet(
    rd_text: str, originator: str, nexthop: str = PEER, etag: int = 0,
    action: Action = Action.ANNOUNCE,
) -> Multicast:  # fmt: skip
    return Multicast(rd(rd_text), EthernetTag(etag), ip(originator), nexthop=ip(nexthop),
                     action=action)  # fmt: skip


def prefix(
    rd_text: str, network: str, vni: int = 5000, gateway: str | None = None,
    nexthop: str = PEER, esi_text: str | None = None, etag: int = 0,
    action: Action = Action.ANNOUNCE,
) -> Prefix:  # fmt: skip
    address, length = network.split("/")
    if gateway is None:
        gateway = "::" if ":" in address else "0.0.0.0"
    return Prefix(
        rd(rd_text), esi(esi_text), EthernetTag(etag), labels(vni), ip(address), int(length),
        ip(gateway), nexthop=ip(nexthop), action=action,
    )  # fmt: skip


def ethernet_ad(rd_text: str, esi_text: str, action: Action = Action.ANNOUNCE) -> EthernetAD:
    return EthernetAD(rd(rd_text), esi(esi_text), EthernetTag(0), labels(100), nexthop=ip(PEER),
                      action=action)  # fmt: skip


def ethernet_segment(rd_text: str, esi_text: str, originator: str = PEER) -> EthernetSegment:
    return EthernetSegment(rd(rd_text), esi(esi_text), ip(originator), nexthop=ip(PEER),
                           action=Action.ANNOUNCE)  # fmt: skip


def withdrawn(*nlris: object) -> list[object]:
    for nlri in nlris:
        nlri.action = Action.WITHDRAW  # type: ignore[attr-defined]
    return list(nlris)


# -------------------------------------------------------------- attribute builders

VXLAN = Encapsulation.Type.VXLAN


def attributes(
    targets: Sequence[ExtendedCommunity] = (), encapsulation: int | None = VXLAN,
    mobility: tuple[int, bool] | None = None, router_mac: str | None = None,
    default_gateway: bool = False, pmsi: PMSI | None = None,
    extra: Sequence[object] = (), extra_communities: Sequence[bytes] = (),
) -> Attributes:  # fmt: skip
    """As commands.py builds them (Origin IGP, extended communities, PMSI), plus extras."""
    result = Attributes()
    result.add(Origin(Origin.IGP))
    communities = ExtendedCommunities()
    for target in targets:
        communities.add(target)
    if encapsulation is not None:
        communities.add(Encapsulation(encapsulation))
    if mobility is not None:
        communities.add(MacMobility(mobility[0], sticky=mobility[1]))
    if router_mac is not None:
        communities.add(ExtendedCommunity(b"\x06\x03" + bytes.fromhex(router_mac.replace(":", ""))))
    if default_gateway:
        communities.add(ExtendedCommunity(b"\x03\x0d" + bytes(6)))
    for packed in extra_communities:
        communities.add(ExtendedCommunity(packed))
    if communities.communities:
        result.add(communities)
    if pmsi is not None:
        result.add(pmsi)
    for attribute in extra:
        result.add(attribute)
    return result


def rt2(asn: int, number: int) -> ExtendedCommunity:
    return RouteTargetASN2Number(asn, number)


def rt4(asn: int, number: int) -> ExtendedCommunity:
    return RouteTargetASN4Number(asn, number)


def rt_ip(address: str, number: int) -> ExtendedCommunity:
    return RouteTargetIPNumber(address, number)


def ingress_replication(tunnel: str, vni: int) -> PMSI:
    return PMSIIngressReplication(tunnel, label=vni >> 4, flags=0, tunnel=ip_address(tunnel).packed,
                                  raw_label=vni)  # fmt: skip


# ---------------------------------------------------------------------- the corpus


def corpus(sess: Session) -> list[tuple[str, bytes]]:
    """Named UPDATE bodies, each as ExaBGP encodes it for `sess` (IPv4 next hops)."""
    rt = [rt2(65000, 100)]
    l3 = [rt2(65000, 100), rt2(65000, 5000)]
    many = [rt4(4200000000, 7), rt2(65000, 100), rt_ip("192.0.2.9", 42), rt2(64512, 4294967295),
            rt_ip("10.99.0.2", 100), rt4(70000, 100), rt2(65000, 100), rt4(65536, 1)]  # fmt: skip
    cases: list[tuple[str, list[object], Attributes]] = [
        ("type2 mac only", [mac("10.99.0.2:2", "02:00:00:00:01:11")], attributes(rt)),
        ("type2 mac ipv4 one label",
         [mac("10.99.0.2:2", "02:00:00:00:01:11", "192.168.100.11")], attributes(rt)),
        ("type2 mac ipv6 two labels router mac",
         [mac("10.99.0.2:2", "02:00:00:00:01:11", "2001:db8:100::11", (100, 5000))],
         attributes(l3, router_mac="02:00:00:00:50:fe")),
        ("type2 mac ipv4 two labels router mac",
         [mac("10.99.0.2:2", "02:00:00:00:01:11", "192.168.100.11", (100, 5000))],
         attributes(l3, router_mac="02:00:00:00:50:FE")),
        ("type2 second label zero",
         [mac("10.99.0.2:2", "02:00:00:00:01:12", "192.168.100.12", (100, 0))], attributes(l3)),
        ("type2 label zero", [mac("10.99.0.2:2", "02:00:00:00:01:13", vni=(0,))], attributes(rt)),
        ("type2 largest vni", [mac("10.99.0.2:2", "02:00:00:00:01:14", vni=(16777215,))],
         attributes(rt)),
        ("type2 default gateway",
         [mac("10.99.0.2:2", "02:00:00:00:02:fe", "192.168.100.2")],
         attributes(rt, default_gateway=True)),
        ("type2 mobility", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, mobility=(4, False))),
        ("type2 mobility sticky", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, mobility=(0, True))),
        ("type2 mobility largest sticky", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, mobility=(4294967295, True))),
        ("type2 two mobility communities", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, extra_communities=[bytes.fromhex("0600000000000009"),
                                           bytes.fromhex("0600010000000003")])),
        ("type2 many route targets of each kind",
         [mac("10.99.0.2:2", "02:00:00:00:01:11", "192.168.100.11")], attributes(many)),
        ("type2 non-transitive route target",
         [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(extra_communities=[bytes.fromhex("4002fde800000064")])),
        ("type2 no encapsulation", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, encapsulation=None)),
        ("type2 mpls encapsulation", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, encapsulation=Encapsulation.Type.MPLS)),
        ("type2 vxlan-gpe encapsulation", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, encapsulation=Encapsulation.Type.VXLAN_GPE)),
        ("type2 no communities", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(encapsulation=None)),
        ("type2 other communities",
         [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, extra_communities=[bytes.fromhex("0303000000000001"),  # colour
                                           bytes.fromhex("0003fde800000064"),  # SoO
                                           bytes.fromhex("0601000000000000")])),  # ESI label
        ("type2 esi and ethernet tag",
         [mac("10.99.0.2:2", "02:00:00:00:01:11", "192.168.100.11",
              esi_text="00:11:22:33:44:55:66:77:88:99", etag=4294967295)], attributes(rt)),
        ("type2 rd 2-octet as", [mac("65000:4294967295", "02:00:00:00:01:11")], attributes(rt)),
        ("type2 rd 4-octet as", [mac("4200000000:65535", "02:00:00:00:01:11")], attributes(rt)),
        ("type2 rd ipv4", [mac("192.0.2.1:0", "aa:bb:cc:dd:ee:ff")], attributes(rt)),
        ("type2 ipv4-mapped ipv6",
         [mac("10.99.0.2:2", "02:00:00:00:01:11", "::ffff:192.168.100.11")], attributes(rt)),
        ("type2 ten macs", [mac("10.99.0.2:2", f"02:00:00:00:02:{i:02x}", f"192.168.100.{i}")
                            for i in range(10)], attributes(rt)),
        ("type2 extra attributes", [mac("10.99.0.2:2", "02:00:00:00:01:11")],
         attributes(rt, extra=[
             MED(20), LocalPreference(200), OriginatorID("10.99.0.9"),
             ClusterList([ClusterID("10.99.0.7"), ClusterID("10.99.0.8")]),
             Communities([Community(bytes.fromhex("fde80064"))]),
             LargeCommunities([LargeCommunity(bytes.fromhex("0000fde80000000100000002"))]),
             Aggregator(ASN(65000), IP.create("10.99.0.2")),
         ])),
        ("type3 ingress replication", [imet("10.99.0.2:2", "10.99.0.2")],
         attributes(rt, pmsi=ingress_replication("10.99.0.2", 100))),
        ("type3 ingress replication other tunnel",
         [imet("10.99.0.2:2", "10.99.0.2", etag=7)],
         attributes(rt, pmsi=ingress_replication("10.99.0.20", 16777215))),
        ("type3 ingress replication label zero", [imet("10.99.0.2:2", "10.99.0.2")],
         attributes(rt, pmsi=ingress_replication("10.99.0.2", 0))),
        ("type3 no pmsi", [imet("10.99.0.2:2", "10.99.0.2")], attributes(rt)),
        ("type3 ipv6 originator", [imet("10.99.0.2:2", "fd99::2")],
         attributes(rt, pmsi=ingress_replication("10.99.0.2", 100))),
        ("type5 ipv4", [prefix("10.99.0.2:1", "10.99.0.0/24")],
         attributes([rt2(65000, 5000)], router_mac="02:00:00:00:50:fe")),
        ("type5 ipv4 host bits and gateway",
         [prefix("10.99.0.2:1", "10.50.1.7/16", gateway="10.99.0.1", etag=3,
                 esi_text="01:02:03:04:05:06:07:08:09:0a")], attributes([rt2(65000, 5000)])),
        ("type5 ipv4 default route", [prefix("10.99.0.2:1", "0.0.0.0/0")],
         attributes([rt2(65000, 5000)])),
        ("type5 ipv6", [prefix("10.99.0.2:1", "2001:db8:50::/48")],
         attributes([rt2(65000, 5000)], router_mac="02:00:00:00:50:fe")),
        ("type5 ipv6 gateway", [prefix("10.99.0.2:1", "2001:db8:50::/64", gateway="fd99::1")],
         attributes([rt2(65000, 5000)])),
        ("type1 ethernet ad", [ethernet_ad("10.99.0.2:1", "00:11:22:33:44:55:66:77:88:99")],
         attributes(rt)),
        ("type4 ethernet segment",
         [ethernet_segment("10.99.0.2:1", "00:11:22:33:44:55:66:77:88:99")], attributes(rt)),
        ("mixed types", [
            mac("10.99.0.2:2", "02:00:00:00:01:11"),
            mac("10.99.0.2:2", "02:00:00:00:01:11", "192.168.100.11"),
            imet("10.99.0.2:2", "10.99.0.2"),
            prefix("10.99.0.2:1", "10.99.0.0/24"),
            ethernet_ad("10.99.0.2:1", "00:11:22:33:44:55:66:77:88:99"),
        ], attributes(rt, pmsi=ingress_replication("10.99.0.2", 100))),
        ("withdraw type2", withdrawn(mac("10.99.0.2:2", "02:00:00:00:01:11", "192.168.100.11")),
         Attributes()),
        ("withdraw several", withdrawn(
            mac("10.99.0.2:2", "02:00:00:00:01:11"),
            mac("10.99.0.2:2", "02:00:00:00:01:11", "2001:db8:100::11", (100, 5000)),
            imet("10.99.0.2:2", "10.99.0.2"),
            prefix("10.99.0.2:1", "10.99.0.0/24"),
            prefix("10.99.0.2:1", "2001:db8:50::/48"),
            ethernet_ad("10.99.0.2:1", "00:11:22:33:44:55:66:77:88:99"),
        ), Attributes()),
    ]  # fmt: skip
    out: list[tuple[str, bytes]] = []
    for name, nlris, attrs in cases:
        bodies = encode(nlris, attrs, sess)
        assert bodies, name
        out.extend((name if len(bodies) == 1 else f"{name} #{i}", body)
                   for i, body in enumerate(bodies))  # fmt: skip
    out.append(("eor", EOR(AFI.l2vpn, SAFI.evpn).message(sess.sending)[HEADER_LEN:]))
    return out


def ipv6_next_hop_corpus(sess: Session) -> list[tuple[str, bytes]]:
    """Bodies with a 16-byte EVPN next hop (parse them under `ipv6_evpn_next_hops()`)."""
    cases = [
        ("type2 ipv6 next hop",
         [mac("10.99.0.2:2", "02:00:00:00:01:11", "2001:db8::11", nexthop="fd99::2")],
         attributes([rt2(65000, 100)])),
        ("type3 ipv6 next hop and originator", [imet("10.99.0.2:2", "fd99::2", "fd99::2")],
         attributes([rt2(65000, 100)])),
        ("type5 ipv6 next hop", [prefix("10.99.0.2:1", "2001:db8:50::/48", nexthop="fd99::2")],
         attributes([rt2(65000, 5000)], router_mac="02:00:00:00:50:fe")),
    ]  # fmt: skip
    return [(name, body) for name, nlris, attrs in cases for body in encode(nlris, attrs, sess)]

