"""RIB -> the kernel forwarding state evpnd wants (pure).

`desired_state` recomputes everything from the RIB: the reference, and what
a config change (other devices, other VNIs) starts from. `apply_rib_changes`
brings the wanted entries up to date with one `RibChanges` so the shell does
not rebuild 100k entries per batch of UPDATEs. Applying every RibChanges, in
order, to the result of the previous full computation gives the same result
as a new full computation (the unit tests hold the production path to that).

With an L3VNI (`L3Devices`), the RIB's L3 table maps to routes on the L3VNI
bridge and, per next-hop VTEP, a neighbour (VTEP -> router MAC) on that
bridge and the router MAC's FDB entry on the L3VNI vxlan device, as FRR
installs them (evpnd/l3/table.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from evpnd.dataplane.state import FloodEntry, ForwardingState, NeighEntry, RemoteMac, RouteEntry
from evpnd.l3.table import L3NextHop, RemotePrefix, mapped
from evpnd.model import IPAddress, IPNetwork
from evpnd.rib import RemoteMacPath, RemoteNeigh, Rib, RibChanges

FloodMode = Literal["evpn", "multicast", "static"]


@dataclass(frozen=True, slots=True)
class VniDevices:
    """The kernel side of one VNI, as the config names it."""

    vxlan_device: str
    bridge: str
    arp_suppression: bool = True
    # Only "evpn" takes its flood list from Type-3 routes; "static" floods to
    # the configured peers and "multicast" to the vxlan device's group.
    flood: FloodMode = "evpn"
    flood_peers: tuple[IPAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class L3Devices:
    """The kernel side of the L3VNI."""

    bridge: str
    vxlan_device: str


def desired_state(
    rib: Rib, vni_devices: Mapping[int, VniDevices], l3: L3Devices | None = None
) -> ForwardingState:
    """Everything evpnd should own in the kernel for the VNIs in `vni_devices` (and the
    L3VNI, when there is one)."""
    state = ForwardingState()
    if l3 is not None:
        for nexthop in rib.l3_nexthops():
            state.add_mac(_router_mac(l3, nexthop))
            for neigh in _nexthop_neighs(l3, nexthop):
                state.add_neigh(neigh)
        for prefix in rib.l3_prefixes():
            state.add_route(_route(l3, prefix))
    for path in rib.remote_macs():
        devices = vni_devices.get(path.vni)
        if devices is not None:
            state.add_mac(_remote_mac(devices, path))
    for vni, vteps in rib.vteps().items():
        devices = vni_devices.get(vni)
        if devices is not None and devices.flood == "evpn":
            for vtep in vteps:
                state.add_flood(FloodEntry(devices.vxlan_device, vtep))
    for devices in vni_devices.values():
        if devices.flood == "static":
            for vtep in devices.flood_peers:
                state.add_flood(FloodEntry(devices.vxlan_device, vtep))
    for neigh in rib.remote_neighs():
        devices = vni_devices.get(neigh.vni)
        if devices is not None and devices.arp_suppression:
            state.add_neigh(_neigh(devices, neigh))
    return state


class DesiredTables(Protocol):
    """Where RIB changes land: the reconciler's tracker (dataplane/tracker.py)."""

    def want(self, entry: RemoteMac | FloodEntry | NeighEntry | RouteEntry) -> None: ...
    def unwant_mac(self, key: tuple[str, str]) -> None: ...
    def unwant_flood(self, entry: FloodEntry) -> None: ...
    def unwant_neigh(self, key: tuple[str, IPAddress]) -> None: ...
    def unwant_route(self, key: IPNetwork) -> None: ...
    def probe_neigh(self, entry: NeighEntry) -> None: ...


def apply_rib_changes(
    tables: DesiredTables,
    changes: RibChanges,
    vni_devices: Mapping[int, VniDevices],
    l3: L3Devices | None = None,
) -> None:
    """Bring the wanted entries up to date with one RibChanges (same mapping as desired_state).

    Removals first: within one RibChanges each MAC, IP and VTEP appears once,
    but a removal and an addition may share a kernel key.
    """
    if l3 is not None:
        for prefix in changes.prefixes_removed:
            tables.unwant_route(prefix.prefix)
        for nexthop in changes.nexthops_removed:
            tables.unwant_mac((l3.vxlan_device, nexthop.router_mac))
            for neigh in _nexthop_neighs(l3, nexthop):
                tables.unwant_neigh(neigh.key)
    for vni, mac in changes.macs_removed:
        devices = vni_devices.get(vni)
        if devices is not None:
            tables.unwant_mac((devices.vxlan_device, mac))
    for vni, vtep in changes.vteps_removed:
        devices = vni_devices.get(vni)
        if devices is not None and devices.flood == "evpn":
            tables.unwant_flood(FloodEntry(devices.vxlan_device, vtep))
    for vni, ip in changes.neighs_removed:
        devices = vni_devices.get(vni)
        if devices is not None and devices.arp_suppression:
            tables.unwant_neigh((devices.bridge, ip))
    for path in changes.macs_installed:
        devices = vni_devices.get(path.vni)
        if devices is not None:
            tables.want(_remote_mac(devices, path))
    for vni, vtep in changes.vteps_added:
        devices = vni_devices.get(vni)
        if devices is not None and devices.flood == "evpn":
            tables.want(FloodEntry(devices.vxlan_device, vtep))
    for neigh in changes.neighs_installed:
        devices = vni_devices.get(neigh.vni)
        if devices is not None and devices.arp_suppression:
            tables.want(_neigh(devices, neigh))
    for probe in changes.neigh_probes:
        # Any VNI bridge: the answer is what the local learner needs, suppression or not.
        devices = vni_devices.get(probe.vni)
        if devices is not None:
            tables.probe_neigh(NeighEntry(devices.bridge, probe.ip, probe.mac))
    if l3 is not None:
        for nexthop in changes.nexthops_installed:
            tables.want(_router_mac(l3, nexthop))
            for entry in _nexthop_neighs(l3, nexthop):
                tables.want(entry)
        for prefix in changes.prefixes_installed:
            tables.want(_route(l3, prefix))


def _remote_mac(devices: VniDevices, path: RemoteMacPath) -> RemoteMac:
    # A default gateway MAC is pinned like a sticky one (see RemoteMac).
    return RemoteMac(
        devices.vxlan_device, path.mac, path.vtep, sticky=path.sticky or path.default_gateway
    )


def _neigh(devices: VniDevices, neigh: RemoteNeigh) -> NeighEntry:
    return NeighEntry(devices.bridge, neigh.ip, neigh.mac)


def _router_mac(l3: L3Devices, nexthop: L3NextHop) -> RemoteMac:
    # Routed frames to the VTEP carry its router MAC: the L3VNI's FDB sends them there.
    return RemoteMac(l3.vxlan_device, nexthop.router_mac, nexthop.vtep)


def _nexthop_neighs(l3: L3Devices, nexthop: L3NextHop) -> list[NeighEntry]:
    # The routes' gateway resolves to the router MAC, once per address family in use.
    return [
        NeighEntry(l3.bridge, mapped(nexthop.vtep, family), nexthop.router_mac)
        for family in nexthop.families
    ]


def _route(l3: L3Devices, prefix: RemotePrefix) -> RouteEntry:
    return RouteEntry(prefix.prefix, l3.bridge, mapped(prefix.vtep, prefix.prefix.version))
