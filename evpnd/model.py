"""EVPN routes as typed values (RFC 7432, RFC 8365, RFC 9136).

Shared by the decoder (ExaBGP JSON in), the encoder (ExaBGP commands out),
the RIB and `show`. Pure data: no I/O, hashable, comparable.

Values, never changed once made. They are hashable but not `frozen`: a frozen
dataclass's __init__ goes through object.__setattr__ once per field, five
times the cost of a plain one, and a 100k-route table builds several of
these per route (the same holds for the other per-route records:
dataplane/state.py, rib.py, speaker/messages.py).

The *key* of a route is what identifies it in BGP (the NLRI fields that
make it unique); a withdrawal carries only the key. Attributes
(next hop, communities, mobility) may change under the same key.

Also the one home of the address vocabulary every module shares: the
`IPAddress` alias, `address_order` (IPv4 before IPv6) and `normalize_mac`
(from evpnd/validate.py, where every kind of outside value is checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

# The canonical lower-case colon form; raises ValueError on anything else.
# Defined with the other validators (evpnd/validate.py), kept importable here.
from evpnd.validate import mac as normalize_mac  # noqa: F401

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ZERO_ESI = "00:00:00:00:00:00:00:00:00:00"

# Tunnel type of the BGP Encapsulation extended community (RFC 9012 / RFC 8365).
ENCAP_VXLAN = 8

# The MAC mobility sequence number is 32 bits on the wire (RFC 7432 section 7.7).
MOBILITY_SEQ_MAX = 0xFFFFFFFF


def address_order(address: IPAddress) -> tuple[int, int]:
    """Sort key putting IPv4 before IPv6, then by value.

    IPv4 and IPv6 addresses do not compare with each other, so every sort
    that may see both families uses this key.
    """
    return (address.version, int(address))


@dataclass(slots=True, order=True, unsafe_hash=True)
class MacIpKey:
    rd: str
    etag: int
    mac: str  # lower case, colon separated
    ip: IPAddress | None = None

    route_type = 2


@dataclass(slots=True, order=True, unsafe_hash=True)
class ImetKey:
    rd: str
    etag: int
    originator: IPAddress

    route_type = 3


@dataclass(slots=True, order=True, unsafe_hash=True)
class PrefixKey:
    rd: str
    etag: int
    prefix: IPNetwork

    route_type = 5


@dataclass(slots=True, order=True, unsafe_hash=True)
class EadKey:
    """Type-1 Ethernet auto-discovery (RFC 7432 7.1): per ES (tag 0xFFFFFFFF) or per EVI."""

    rd: str
    esi: str
    etag: int

    route_type = 1


@dataclass(slots=True, order=True, unsafe_hash=True)
class EsKey:
    """Type-4 Ethernet segment (RFC 7432 7.4)."""

    rd: str
    esi: str
    originator: IPAddress

    route_type = 4
    etag = 0  # the NLRI has no Ethernet tag; read like the other keys' field


RouteKey = MacIpKey | ImetKey | PrefixKey | EadKey | EsKey


@dataclass(slots=True, unsafe_hash=True)
class MacIpRoute:
    """Type-2 MAC/IP advertisement."""

    key: MacIpKey
    nexthop: IPAddress  # the VTEP
    vni: int  # L2VNI, label 1 raw (RFC 8365)
    l3vni: int | None = None  # label 2, symmetric IRB
    esi: str = ZERO_ESI
    route_targets: tuple[str, ...] = ()
    mobility_seq: int = 0
    sticky: bool = False
    router_mac: str | None = None
    default_gateway: bool = False
    # Encapsulation extended community tunnel type; None when the route has none.
    encapsulation: int | None = None

    @property
    def mac(self) -> str:
        return self.key.mac

    @property
    def ip(self) -> IPAddress | None:
        return self.key.ip


@dataclass(slots=True, unsafe_hash=True)
class ImetRoute:
    """Type-3 inclusive multicast Ethernet tag route with PMSI ingress replication."""

    key: ImetKey
    nexthop: IPAddress
    vni: int  # PMSI tunnel label, raw
    tunnel: IPAddress | None = None  # PMSI tunnel endpoint (usually == originator)
    # "ingress-replication", "none" when the route carries no PMSI attribute,
    # "no-tunnel", or ExaBGP's name for other tunnel types (e.g. "pim-ssmtree").
    tunnel_type: str = "ingress-replication"
    route_targets: tuple[str, ...] = ()
    encapsulation: int | None = None

    @property
    def vtep(self) -> IPAddress:
        return self.tunnel or self.key.originator


@dataclass(slots=True, unsafe_hash=True)
class PrefixRoute:
    """Type-5 IP prefix route (acted on by the L3VNI work; parsed today)."""

    key: PrefixKey
    nexthop: IPAddress
    vni: int
    gateway: IPAddress | None = None
    esi: str = ZERO_ESI
    route_targets: tuple[str, ...] = ()
    router_mac: str | None = None
    encapsulation: int | None = None


@dataclass(slots=True, unsafe_hash=True)
class EadRoute:
    """Type-1 Ethernet A-D route (multihoming): held, counted and shown, not acted on
    (no aliasing, no mass withdrawal: docs/interop.md, multihoming)."""

    key: EadKey
    nexthop: IPAddress
    vni: int  # the label, raw (RFC 8365 5.1.3; 0 in a per-ES route)
    route_targets: tuple[str, ...] = ()
    encapsulation: int | None = None

    @property
    def esi(self) -> str:
        return self.key.esi


@dataclass(slots=True, unsafe_hash=True)
class EsRoute:
    """Type-4 Ethernet segment route (DF election among multihoming VTEPs): held,
    counted and shown, not acted on."""

    key: EsKey
    nexthop: IPAddress
    route_targets: tuple[str, ...] = ()
    encapsulation: int | None = None

    vni = 0  # the NLRI carries no label

    @property
    def esi(self) -> str:
        return self.key.esi


Route = MacIpRoute | ImetRoute | PrefixRoute | EadRoute | EsRoute
# Route types held and shown but not acted on (multihoming, RFC 7432 8).
MULTIHOMING_TYPES = (1, 4)
