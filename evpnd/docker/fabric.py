"""What the Docker side needs to know about the rest of the fabric: who claims which address.

Every other host's MAC+IP bindings reach evpnd as Type-2 routes; a route
received for an address is another VTEP's claim on it. The IPAM driver
(`evpnd/docker/ipamdriver.py`) hands out no claimed address, and the network
driver refuses a container whose MAC or IP another VTEP claims
(CreateEndpoint, Join), so an address is never installed on two hosts in
silence. The daemon's glue answers from the RIB (`DockerGlue`); without a
daemon (`NoFabric`) nothing is claimed.

Pure: `Claim`, `conflicts` and `describe` are values and functions; the
`FabricView` protocol is what the driver calls, synchronously (a RIB lookup).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from evpnd.model import IPAddress, address_order


@dataclass(frozen=True, slots=True)
class Claim:
    """Another VTEP advertises `mac` (with `ip`, or MAC-only when None) in a VNI."""

    vtep: IPAddress
    mac: str
    ip: IPAddress | None = None

    def __str__(self) -> str:
        what = f"{self.ip} ({self.mac})" if self.ip is not None else f"MAC {self.mac}"
        return f"{what} at VTEP {self.vtep}"


class FabricView(Protocol):
    """Received Type-2 routes (other VTEPs' claims) and the VTEPs of a VNI."""

    def claims(self, vni: int) -> Sequence[Claim]:
        """Every MAC+IP claim in `vni` (an IPAM allocation reads them all)."""
        ...

    def claims_on(self, vni: int, mac: str | None, ips: Sequence[IPAddress]) -> Sequence[Claim]:
        """The claims on `mac` (any IP, MAC-only too) or on one of `ips` (any MAC)."""
        ...

    def vteps(self, vni: int) -> Sequence[IPAddress]:
        """The other VTEPs that carry `vni` (their Type-3 routes)."""
        ...


class NoFabric:
    """No daemon, no routes: nothing is claimed (the driver's own tests, a lone host)."""

    def claims(self, vni: int) -> Sequence[Claim]:
        return ()

    def claims_on(self, vni: int, mac: str | None, ips: Sequence[IPAddress]) -> Sequence[Claim]:
        return ()

    def vteps(self, vni: int) -> Sequence[IPAddress]:
        return ()


def conflicts(mac: str | None, ips: Iterable[IPAddress], claims: Iterable[Claim]) -> list[Claim]:
    """The claims that collide with an endpoint of `mac` and `ips`, sorted, once each."""
    wanted = set(ips)
    found = {c for c in claims if (mac is not None and c.mac == mac) or
             (c.ip is not None and c.ip in wanted)}
    return sorted(found, key=_claim_order)


def describe(claims: Iterable[Claim]) -> str:
    return "; ".join(str(c) for c in sorted(claims, key=_claim_order))


def _claim_order(claim: Claim) -> tuple[tuple[int, int], str, tuple[int, int]]:
    ip = (0, 0) if claim.ip is None else address_order(claim.ip)
    return (ip, claim.mac, address_order(claim.vtep))
