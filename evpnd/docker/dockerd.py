"""dockerd's own view of the driver's networks and endpoints: how a lost state file is rebuilt.

dockerd keeps every network it created with the driver (its options and its
IPAM configuration) and, for each running container, the endpoint (id, MAC,
addresses). When the driver's state file is gone (or unreadable), the driver
asks dockerd over its API socket (`docker.dockerd_socket`, default
`/run/docker.sock`) and rebuilds its records from the answer
(`Driver.recover`): the networks' VNIs and devices, the containers'
endpoints, whose veths are then found by name and alias, and the IPAM pools
with the addresses in use.

`DockerdClient` is the shell (GET /networks, GET /networks/<id>, GET
/containers/<id>/json, read only); `networks_of` and the `Dockerd*` values
are pure: they turn dockerd's JSON into what the driver's calls would have
received.

The gateway: dockerd's network shows it only when `--gateway` was given
(observed with 20.10: `IPAM.Config[].Gateway` is absent otherwise). A
running container on the network shows it (`NetworkSettings.Networks`);
without one, the IPAM's rule gives it: the evpn IPAM's is the subnet's first
host address, dockerd's default IPAM takes the first address of the
`--ip-range` (10.254.91.128 for 10.254.91.128/25, observed) or else of the
subnet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from evpnd.docker.ipam import (
    KIND_ENDPOINT,
    KIND_GATEWAY,
    KIND_RESERVED,
    LOCAL_SPACE,
    first_host,
    pool_id,
)

REQUEST_TIMEOUT = 5.0  # seconds for each API call: dockerd is local, or it is not answering


class DockerdUnavailable(Exception):
    """dockerd did not answer (not running yet, no socket, an error status)."""


@dataclass(frozen=True, slots=True)
class DockerdEndpoint:
    endpoint_id: str
    container: str  # the container's name, for logs
    mac: str
    ipv4: str  # "10.30.0.5/24" or ""
    ipv6: str


@dataclass(frozen=True, slots=True)
class DockerdPool:
    """One entry of the network's IPAM configuration."""

    subnet: str
    ip_range: str  # "" when none
    gateway: str  # bare address, "" when none
    aux: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return ip_network(self.subnet, strict=False).version

    @property
    def pool_id(self) -> str:
        """The id our IPAM gave dockerd for this pool (in its default address space)."""
        pool = ip_network(self.subnet, strict=False)
        sub = ip_network(self.ip_range, strict=False) if self.ip_range else None
        return pool_id(LOCAL_SPACE, pool, sub)

    def gateway_interface(self) -> str | None:
        """"10.30.0.1/24", as CreateNetwork's IPv4Data.Gateway has it."""
        if not self.gateway:
            return None
        return f"{self.gateway}/{ip_network(self.subnet, strict=False).prefixlen}"


@dataclass(frozen=True, slots=True)
class DockerdNetwork:
    id: str
    name: str
    ours: bool  # the driver is this plugin
    ipam_ours: bool  # the IPAM driver is this plugin
    options: dict[str, str]
    pools: tuple[DockerdPool, ...]
    endpoints: tuple[DockerdEndpoint, ...]

    def ip_data(self, version: int) -> list[dict[str, Any]]:
        """CreateNetwork's IPv4Data / IPv6Data for this network."""
        return [
            {"AddressSpace": LOCAL_SPACE, "Pool": p.subnet,
             **({"Gateway": gw} if (gw := p.gateway_interface()) else {})}
            for p in self.pools if p.version == version
        ]


class DockerdSource(Protocol):
    """Where the driver gets dockerd's view (a real client, or a test's fixed answer)."""

    async def networks(self, plugin: str) -> list[DockerdNetwork]: ...


def default_gateway(subnet: str, ip_range: str, ipam_ours: bool) -> str:
    """The gateway an IPAM chose when `--gateway` was not given (see the module docstring)."""
    network = ip_network(subnet, strict=False)
    if ipam_ours or not ip_range:
        return str(first_host(network))
    start = ip_network(ip_range, strict=False).network_address
    return str(start + 1 if start == network.network_address else start)


def networks_of(
    inspected: Iterable[Mapping[str, Any]],
    plugin: str,
    gateways: Mapping[str, Mapping[int, str]] | None = None,
) -> list[DockerdNetwork]:
    """dockerd's `GET /networks/<id>` answers -> the networks that use `plugin` as their
    driver or IPAM driver; `gateways`: network id -> {IP version: gateway} as a running
    container shows it. A malformed entry raises ValueError naming it."""
    gateways = gateways or {}
    found = []
    for body in inspected:
        ours = body.get("Driver") == plugin
        ipam = body.get("IPAM") or {}
        ipam_ours = ipam.get("Driver") == plugin
        if not (ours or ipam_ours):
            continue
        ident = body.get("Id")
        if not isinstance(ident, str) or not ident:
            raise ValueError(f"dockerd network without an Id: {str(body)[:200]}")
        seen = gateways.get(ident, {})
        pools = []
        for c in ipam.get("Config") or []:
            subnet, ip_range = str(c.get("Subnet") or ""), str(c.get("IPRange") or "")
            if not subnet:
                continue
            version = ip_network(subnet, strict=False).version
            gateway = str(c.get("Gateway") or seen.get(version) or
                          default_gateway(subnet, ip_range, ipam_ours))
            pools.append(DockerdPool(subnet, ip_range, gateway, aux={
                str(k): str(v) for k, v in (c.get("AuxiliaryAddresses") or {}).items()}))
        endpoints = tuple(
            DockerdEndpoint(endpoint_id=str(c.get("EndpointID", "")), container=str(c.get(
                "Name", cid))[:64], mac=str(c.get("MacAddress") or ""),
                ipv4=str(c.get("IPv4Address") or ""), ipv6=str(c.get("IPv6Address") or ""))
            for cid, c in sorted((body.get("Containers") or {}).items())
            # dockerd lists load-balancer and other sandboxes too; a container has an id
            if c.get("EndpointID") and not str(cid).startswith(("lb-", "ep-"))
        )  # fmt: skip
        options = {str(k): str(v) for k, v in (body.get("Options") or {}).items()}
        found.append(DockerdNetwork(ident, str(body.get("Name", "")), ours, ipam_ours,
                                    options, tuple(pools), endpoints))
    return found


def addresses_in(pool: DockerdPool, network: DockerdNetwork) -> dict[str, str]:
    """The addresses dockerd holds in `pool`: gateway, aux addresses, containers'."""
    subnet = ip_network(pool.subnet, strict=False)
    held: dict[str, str] = {}
    for address in pool.aux.values():
        held[str(ip_address(address))] = KIND_RESERVED
    for endpoint in network.endpoints:
        for text in (endpoint.ipv4, endpoint.ipv6):
            if text and (ip := ip_address(text.split("/")[0])) in subnet:
                held[str(ip)] = KIND_ENDPOINT
    if pool.gateway:
        held[str(ip_address(pool.gateway))] = KIND_GATEWAY
    return held


class DockerdClient:
    """Reads dockerd's API on a unix socket; never changes anything there."""

    def __init__(self, socket_path: Path | str, timeout: float = REQUEST_TIMEOUT) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    async def networks(self, plugin: str) -> list[DockerdNetwork]:
        """Every network of `plugin` (driver or IPAM driver), inspected; DockerdUnavailable
        when dockerd does not answer."""
        if not self.socket_path.exists():
            raise DockerdUnavailable(f"no dockerd socket at {self.socket_path}")
        try:
            connector = aiohttp.UnixConnector(path=str(self.socket_path))
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                listed = await self._get(session, "/networks")
                wanted = [n["Id"] for n in listed if isinstance(n, dict) and (
                    n.get("Driver") == plugin or (n.get("IPAM") or {}).get("Driver") == plugin)]
                inspected = [await self._get(session, f"/networks/{ident}")
                             for ident in wanted]
                gateways = {}
                for body in inspected:
                    if any(not c.get("Gateway") for c in (body.get("IPAM") or {}).get(
                            "Config") or []) and body.get("Containers"):
                        gateways[body["Id"]] = await self._gateways(session, body)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = str(exc) or type(exc).__name__
            raise DockerdUnavailable(f"dockerd at {self.socket_path}: {why}") from None
        try:
            return networks_of(inspected, plugin, gateways)
        except (ValueError, TypeError, AttributeError) as exc:
            raise DockerdUnavailable(f"dockerd at {self.socket_path}: unexpected answer: {exc}") \
                from None

    async def _gateways(self, session: aiohttp.ClientSession,
                        network: Mapping[str, Any]) -> dict[int, str]:
        """The network's gateways as its first running container has them."""
        container = sorted(network["Containers"])[0]
        try:
            body = await self._get(session, f"/containers/{container}/json")
        except DockerdUnavailable:
            return {}  # gone meanwhile: the IPAM's rule gives the gateway
        settings = ((body.get("NetworkSettings") or {}).get("Networks") or {}).get(
            network.get("Name", ""), {})
        found = {4: settings.get("Gateway") or "", 6: settings.get("IPv6Gateway") or ""}
        return {v: g for v, g in found.items() if g}

    async def _get(self, session: aiohttp.ClientSession, path: str) -> Any:
        async with session.get(f"http://docker{path}") as response:
            text = await response.text()
            if response.status != 200:
                raise DockerdUnavailable(f"GET {path}: HTTP {response.status}: {text[:200]}")
            try:
                return json.loads(text)
            except ValueError:
                raise DockerdUnavailable(f"GET {path}: not JSON: {text[:200]}") from None
