"""Kernel forwarding state evpnd owns, as plain values.

This is the vocabulary shared by the functional core (desired-state
computation, reconciliation diff) and the netlink shell (dump, writer,
monitor). Devices are named, not indexed: ifindexes change when a device is
recreated, names are what the config and the operator speak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from evpnd.model import IPAddress, IPNetwork

FLOOD_MAC = "00:00:00:00:00:00"


@dataclass(slots=True, order=True, unsafe_hash=True)  # a value: see model.py
class RemoteMac:
    """A remote MAC in a vxlan device's FDB: frames to `mac` are tunnelled to `vtep`."""

    device: str
    mac: str
    vtep: IPAddress
    # Sticky and default-gateway MACs are installed static so the bridge never
    # lets a local frame move them (RFC 7432 section 15.2).
    sticky: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.mac)


@dataclass(slots=True, order=True, unsafe_hash=True)  # a value: see model.py
class FloodEntry:
    """One head-end replication target: BUM frames on `device` are copied to `vtep`."""

    device: str
    vtep: IPAddress

    @property
    def key(self) -> tuple[str, IPAddress]:
        return (self.device, self.vtep)


@dataclass(slots=True, order=True, unsafe_hash=True)  # a value: see model.py
class NeighEntry:
    """A remote IP -> MAC binding on a bridge (or SVI), used for ARP/ND suppression."""

    device: str
    ip: IPAddress
    mac: str

    @property
    def key(self) -> tuple[str, IPAddress]:
        return (self.device, self.ip)


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class RouteEntry:
    """A route into the L3VNI in the main table: `prefix via gateway dev device onlink`,
    protocol RTPROT_EVPND, metric ROUTE_METRIC (writer.py). Keyed by the prefix: evpnd
    holds one route per prefix."""

    prefix: IPNetwork
    device: str  # the L3VNI bridge
    gateway: IPAddress  # the VTEP (or, for an IPv6 prefix behind an IPv4 VTEP, ::ffff:VTEP)

    @property
    def key(self) -> IPNetwork:
        return self.prefix


@dataclass(slots=True)
class ForwardingState:
    """A full picture of owned entries: either what we want or what the kernel holds."""

    macs: dict[tuple[str, str], RemoteMac] = field(default_factory=dict)
    floods: set[FloodEntry] = field(default_factory=set)
    neighs: dict[tuple[str, IPAddress], NeighEntry] = field(default_factory=dict)
    routes: dict[IPNetwork, RouteEntry] = field(default_factory=dict)

    def add_mac(self, entry: RemoteMac) -> None:
        self.macs[entry.key] = entry

    def add_flood(self, entry: FloodEntry) -> None:
        self.floods.add(entry)

    def add_neigh(self, entry: NeighEntry) -> None:
        self.neighs[entry.key] = entry

    def add_route(self, entry: RouteEntry) -> None:
        self.routes[entry.key] = entry

    def devices(self) -> set[str]:
        return (
            {k[0] for k in self.macs}
            | {f.device for f in self.floods}
            | {k[0] for k in self.neighs}
            | {r.device for r in self.routes.values()}
        )

    def count(self) -> int:
        return len(self.macs) + len(self.floods) + len(self.neighs) + len(self.routes)


def ip(value: str | IPAddress) -> IPAddress:
    return value if isinstance(value, IPv4Address | IPv6Address) else ip_address(value)
