"""The network driver: a small state machine over Docker networks and endpoints.

A network is one evpnd VNI (bridge + vxlan device, planned by
`evpnd.dataplane.linkplan` like a configured VNI); an endpoint is one veth
pair, the host end on the VNI's bridge, the other end handed to dockerd by
Join (`InterfaceName`), which moves it into the container and names it
`eth<N>`. The kernel is reached only through `Kernel` (real one:
`evpnd.docker.kernel.NetlinkKernel`; unit tests use a fake), the daemon only
through `DriverListener`, the disk only through `StateStore`.

Robust to what dockerd really does (recorded in shared/libnetwork/):

* calls arrive concurrently: they are serialized by one lock;
* a failed Join is followed by DeleteEndpoint without Leave;
* DeleteEndpoint, Leave and DeleteNetwork for unknown ids succeed (dockerd
  retries them after its own restarts);
* `docker restart` gives the container a new endpoint id each time;
* evpnd may restart between any two calls: state is written before the kernel
  is changed and `recover()` finishes or undoes what was under way;
* what dockerd sends is checked before it is stored (addresses, MAC: see
  `options.endpoint_addresses`), and a saved record that no longer validates
  is skipped at recovery (`DriverState.skipped`), so no stored value can make
  a later call or a restart fail;
* the number of endpoints is capped per network and in all
  (`docker.max_endpoints_per_network`, `docker.max_endpoints`); refusals are
  counted in `Driver.counters`;
* a container whose address or MAC another VTEP already advertises (a
  received Type-2 route, `fabric.FabricView`) is refused at CreateEndpoint
  and again at Join, so an address is never installed on two hosts in
  silence;
* a lost (or unreadable) state file is rebuilt from dockerd's own view
  (`dockerd.DockerdSource`: its networks of this driver, their options and
  IPAM configuration, the running containers' endpoints); while dockerd does
  not answer, nothing is removed from the kernel and `rebuild_pending` says
  a rebuild is due (`DockerPlugin` retries).

Every veth the driver creates carries the alias `evpnd:docker=<plugin>:ep=<id>`
and every device the VNI alias `evpnd:vni=N`, so recovery finds leftovers even
when the state file was lost, and never touches anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Interface,
    IPv6Network,
    ip_interface,
    ip_network,
)
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from evpnd.config import Config, Vni
from evpnd.dataplane.linkplan import LinkInfo, alias_vni
from evpnd.docker import ipam
from evpnd.docker import options as docker_options
from evpnd.docker.dockerd import DockerdNetwork, DockerdSource, DockerdUnavailable, addresses_in
from evpnd.docker.fabric import FabricView, NoFabric, conflicts, describe
from evpnd.docker.protocol import (
    GENERIC_OPTIONS,
    CreateEndpointRequest,
    CreateNetworkRequest,
    IfaceName,
    InterfaceResponse,
    JoinResponse,
)
from evpnd.docker.settings import MAX_ENDPOINTS, MAX_ENDPOINTS_PER_NETWORK
from evpnd.docker.state import DriverState, EndpointRecord, NetworkRecord, PoolRecord, StateStore
from evpnd.model import IPAddress

log = structlog.get_logger(__name__)

HOST_PREFIX = "evh"  # + 12 hex digits of the endpoint id = 15 characters (IFNAMSIZ)
PEER_PREFIX = "evc"
ID_CHARS = 12
DST_PREFIX = "eth"


class DriverError(Exception):
    """A refusal with a message for the docker user; becomes {"Err": message}."""


@dataclass(slots=True)
class DriverCounters:
    """Refusals and skips since start, for `show status` and metrics."""

    # CreateEndpoint past docker.max_endpoints_per_network / docker.max_endpoints
    endpoints_refused_cap: int = 0
    # CreateEndpoint (or CreateNetwork) with an address or MAC that does not validate
    requests_refused_invalid: int = 0
    # saved networks and endpoints left out at recovery: they no longer validate
    records_skipped: int = 0
    # an address or MAC another VTEP advertises: RequestAddress (--ip), CreateEndpoint, Join
    refused_collision: int = 0
    # a running container's address or MAC that another VTEP began to advertise
    collisions_detected: int = 0
    # networks and endpoints rebuilt from dockerd's view (the state file was lost)
    records_rebuilt: int = 0
    skipped: list[str] = field(default_factory=list)  # what and why, the last few

    def as_dict(self) -> dict[str, int]:
        return {"endpoints_refused_cap": self.endpoints_refused_cap,
                "requests_refused_invalid": self.requests_refused_invalid,
                "records_skipped": self.records_skipped,
                "refused_collision": self.refused_collision,
                "collisions_detected": self.collisions_detected,
                "records_rebuilt": self.records_rebuilt}


# ---------------------------------------------------------------------------
# What the daemon is told


@dataclass(frozen=True, slots=True)
class Gateway:
    """The distributed gateway of a `gateway=local` network: same IP and MAC on every host."""

    mac: str
    ipv4: IPv4Interface | None = None
    ipv6: IPv6Interface | None = None


@dataclass(frozen=True, slots=True)
class VniInfo:
    network_id: str
    vni: Vni  # the same model as a configured VNI: RD, route targets, flood mode...
    mtu: int
    gateway: Gateway | None  # None unless gateway=local

    @property
    def bridge(self) -> str:
        return self.vni.bridge_name

    @property
    def vxlan(self) -> str:
        return self.vni.vxlan_name


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    network_id: str
    endpoint_id: str
    vni: int
    mac: str
    ips: tuple[IPAddress, ...]
    port: str  # the host end of the veth, a port of the VNI's bridge


class DriverListener(Protocol):
    """How the daemon hears about Docker networks and containers.

    Called on the event loop, one call at a time, after the kernel change and
    before dockerd gets its answer: `endpoint_added` comes during Join, before
    the container's process starts, so its MAC/IP can be advertised before it
    sends anything. An exception is logged and does not fail the Docker call.
    After a restart, `Driver.recover()` calls `vni_added` and `endpoint_added`
    again for everything still there.
    """

    async def vni_added(self, info: VniInfo) -> None: ...

    async def vni_removed(self, info: VniInfo) -> None: ...

    async def endpoint_added(self, info: EndpointInfo) -> None: ...

    async def endpoint_removed(self, info: EndpointInfo) -> None: ...


class NullListener:
    async def vni_added(self, info: VniInfo) -> None:
        pass

    async def vni_removed(self, info: VniInfo) -> None:
        pass

    async def endpoint_added(self, info: EndpointInfo) -> None:
        pass

    async def endpoint_removed(self, info: EndpointInfo) -> None:
        pass


# ---------------------------------------------------------------------------
# What the driver needs from the kernel


class Kernel(Protocol):
    async def links(self) -> Mapping[str, LinkInfo]:
        """Every link of the namespace, by name."""
        ...

    async def ensure_vni(self, config: Config, vni: Vni) -> None:
        """Create or fix the VNI's bridge and vxlan device; DriverError on a problem."""
        ...

    async def set_gateway(self, bridge: str, mac: str, addresses: Sequence[str]) -> None:
        """Give the bridge this MAC and these addresses (idempotent)."""
        ...

    async def add_veth(
        self, host: str, peer: str, *, bridge: str, mtu: int, mac: str, alias: str
    ) -> None:
        """A veth pair: `host` up on `bridge`, `peer` (down, MAC `mac`) left for dockerd."""
        ...

    async def set_master(self, name: str, bridge: str) -> None: ...

    async def delete_links(self, names: Sequence[str]) -> None:
        """Delete these links; missing ones are fine."""
        ...


# ---------------------------------------------------------------------------
# Pure helpers


def host_if(endpoint_id: str) -> str:
    return HOST_PREFIX + endpoint_id[:ID_CHARS]


def peer_if(endpoint_id: str) -> str:
    return PEER_PREFIX + endpoint_id[:ID_CHARS]


def endpoint_alias(plugin: str, endpoint_id: str) -> str:
    return f"evpnd:docker={plugin}:ep={endpoint_id}"


def alias_endpoint(plugin: str, alias: str | None) -> str | None:
    prefix = f"evpnd:docker={plugin}:ep="
    return alias.removeprefix(prefix) if alias and alias.startswith(prefix) else None


def endpoint_mac(ipv4: str | None) -> str:
    """02:42 + the IPv4 address (Docker's bridge driver does the same): stable across
    container restarts (a new endpoint, the same IP), so neighbours' ARP caches stay
    right. Without IPv4: a random locally administered unicast MAC."""
    if ipv4:
        packed = ip_interface(ipv4).ip.packed
        if len(packed) == 4:
            return "02:42:" + ":".join(f"{b:02x}" for b in packed)
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def gateway_mac(vni: int) -> str:
    """The distributed gateway MAC of a VNI: 02:ed:<VNI, 3 bytes>:01, the same on every host."""
    return "02:ed:" + ":".join(f"{(vni >> s) & 0xFF:02x}" for s in (16, 8, 0)) + ":01"


def _bare(address: str | None) -> str | None:
    return str(ip_interface(address).ip) if address else None


def _endpoint_ips(record: EndpointRecord) -> tuple[IPAddress, ...]:
    return tuple(ip_interface(a).ip for a in (record.ipv4, record.ipv6) if a)


# ---------------------------------------------------------------------------
# The driver


class Driver:
    """libnetwork's NetworkDriver calls, applied to the kernel and reported to a listener.

    `host` returns evpnd's current config: the VTEP, the ASN and router id a
    network's VNI inherits, and the configured VNIs a network must not clash with.
    """

    def __init__(
        self,
        *,
        plugin: str,
        host: Callable[[], Config],
        kernel: Kernel,
        store: StateStore | None = None,
        listener: DriverListener | None = None,
        max_endpoints_per_network: int = MAX_ENDPOINTS_PER_NETWORK,
        max_endpoints: int = MAX_ENDPOINTS,
        fabric: FabricView | None = None,
        dockerd: DockerdSource | None = None,
    ) -> None:
        self.plugin = plugin
        self.host = host
        self.kernel = kernel
        self.store = store
        self.listener: DriverListener = listener or NullListener()
        self.max_endpoints_per_network = max_endpoints_per_network
        self.max_endpoints = max_endpoints
        self.counters = DriverCounters()
        self.state = DriverState()
        self.fabric: FabricView = fabric or NoFabric()
        self.dockerd = dockerd
        # The state file was lost and dockerd did not answer yet: rebuild_from_dockerd()
        # is due, and no veth is removed as a stray meanwhile.
        self.rebuild_pending = False
        self._lock = asyncio.Lock()

    @property
    def lock(self) -> asyncio.Lock:
        """Held during every call (and recovery): the daemon takes it to keep calls out."""
        return self._lock

    # -- views ------------------------------------------------------------------

    def networks(self) -> list[VniInfo]:
        return [self._vni_info(n) for n in self.state.networks.values() if n.ready]

    def endpoints(self) -> list[EndpointInfo]:
        return [
            info
            for e in self.state.endpoints.values()
            if e.joined and (info := self._endpoint_info(e)) is not None
        ]

    def _vni_info(self, net: NetworkRecord) -> VniInfo:
        gateway = None
        if net.gateway_mode == "local" and net.gateway_mac:
            gateway = Gateway(
                mac=net.gateway_mac,
                ipv4=IPv4Interface(net.ipv4_gateway) if net.ipv4_gateway else None,
                ipv6=IPv6Interface(net.ipv6_gateway) if net.ipv6_gateway else None,
            )
        return VniInfo(net.id, net.vni, net.mtu or 0, gateway)

    def _endpoint_info(self, ep: EndpointRecord) -> EndpointInfo | None:
        net = self.state.networks.get(ep.network_id)
        if net is None:
            return None
        return EndpointInfo(ep.network_id, ep.id, net.vni.vni, ep.mac, _endpoint_ips(ep),
                            ep.host_if)

    # -- NetworkDriver calls ------------------------------------------------------

    async def create_network(self, request: CreateNetworkRequest) -> None:
        async with self._lock:
            config = self.host()
            parsed = self._parse_options(request, config)
            existing = self.state.networks.get(request.NetworkID)
            if existing is not None and existing.ready:
                if existing.vni == parsed.vni:
                    return  # a retry of a call that worked
                raise DriverError(f"network {request.NetworkID[:12]} already exists "
                                  "with other options")
            record = self._network_record(request, parsed, config)
            # Written before the devices exist: a restart in between removes them.
            self._put_network(record)
            try:
                mtu = await self._realize(record, config)
            except DriverError:
                await self._remove_devices(record)
                self._drop_network(record.id)
                raise
            record = record.but(mtu=mtu, ready=True)
            self._put_network(record)
            log.info("docker network created", network=record.id[:12], vni=record.vni.vni,
                     bridge=record.vni.bridge_name, mtu=mtu, gateway=record.gateway_mode)
            await self._tell("vni_added", self._vni_info(record))

    def _network_record(self, request: CreateNetworkRequest,
                        parsed: docker_options.NetworkOptions, config: Config) -> NetworkRecord:
        """CreateNetwork's request -> the record, checked against the host's other VNIs."""
        v4 = request.IPv4Data[0] if request.IPv4Data else None
        v6 = request.IPv6Data[0] if request.IPv6Data else None
        try:
            ipv4_gateway = docker_options.gateway_interface(
                "IPv4Data.Gateway", v4.Gateway if v4 else None, 4)
            ipv6_gateway = docker_options.gateway_interface(
                "IPv6Data.Gateway", v6.Gateway if v6 else None, 6)
        except ValueError as exc:
            self.counters.requests_refused_invalid += 1
            raise DriverError(f"evpnd: CreateNetwork: {exc}") from None
        record = NetworkRecord(
            id=request.NetworkID,
            vni=parsed.vni,
            gateway_mode=parsed.gateway,
            ipv4_gateway=ipv4_gateway,
            ipv6_gateway=ipv6_gateway,
            ipv4_pool=v4.Pool if v4 else None,
            gateway_mac=gateway_mac(parsed.vni.vni) if parsed.gateway == "local" else None,
        )
        self._check_conflicts(record, config)
        if record.gateway_mode == "local" and not (record.ipv4_gateway or record.ipv6_gateway):
            raise DriverError("-o gateway=local: the network has no gateway address "
                              "(give --subnet and --gateway)")
        return record

    async def delete_network(self, network_id: str) -> None:
        async with self._lock:
            record = self.state.networks.get(network_id)
            if record is None:
                return
            for ep in [e for e in self.state.endpoints.values() if e.network_id == network_id]:
                await self._unplug(ep)
                self._drop_endpoint(ep.id)
            await self._remove_devices(record)
            self._drop_network(network_id)
            log.info("docker network deleted", network=network_id[:12], vni=record.vni.vni)
            if record.ready:
                await self._tell("vni_removed", self._vni_info(record))

    async def create_endpoint(self, request: CreateEndpointRequest) -> InterfaceResponse | None:
        async with self._lock:
            net = self._network(request.NetworkID)
            iface = request.Interface
            try:
                given = docker_options.endpoint_addresses(
                    iface.Address if iface else "", iface.AddressIPv6 if iface else "",
                    iface.MacAddress if iface else "")
            except ValueError as exc:
                self.counters.requests_refused_invalid += 1
                raise DriverError(f"evpnd: CreateEndpoint: {exc}") from None
            ipv4, ipv6 = given.ipv4, given.ipv6
            mac = given.mac or endpoint_mac(ipv4)
            existing = self.state.endpoints.get(request.EndpointID)
            if existing is not None:
                mac = existing.mac  # a retry: answer the same
            else:
                self._check_caps(net)
                self._check_fabric("CreateEndpoint", net, mac, (ipv4, ipv6))
                self._put_endpoint(EndpointRecord(
                    id=request.EndpointID, network_id=net.id, mac=mac, ipv4=ipv4, ipv6=ipv6,
                    host_if=host_if(request.EndpointID), peer_if=peer_if(request.EndpointID),
                ))
            log.info("docker endpoint created", network=net.id[:12],
                     endpoint=request.EndpointID[:12], mac=mac, ipv4=ipv4, ipv6=ipv6)
            # Answer only what dockerd left to us: it refuses to have a value replaced.
            return None if given.mac else InterfaceResponse(MacAddress=mac)

    async def join(self, network_id: str, endpoint_id: str) -> JoinResponse:
        async with self._lock:
            net = self._network(network_id)
            ep = self.state.endpoints.get(endpoint_id)
            if ep is None or ep.network_id != network_id:
                raise DriverError(f"endpoint {endpoint_id[:12]} is not known to evpnd")
            links = await self.kernel.links()
            if ep.joined and ep.host_if in links:
                # A retry after the veth was made (a pair is created whole; its other
                # end may already be in the container): reuse it, never tear it down.
                pass
            else:
                for name in (ep.host_if, ep.peer_if):
                    link = links.get(name)
                    if link is not None and alias_endpoint(self.plugin, link.alias) != ep.id:
                        raise DriverError(f"interface {name} already exists and is not evpnd's")
                # Again: a route may have come since CreateEndpoint (dockerd answers a
                # Join error with DeleteEndpoint, which releases the address).
                self._check_fabric("Join", net, ep.mac, (ep.ipv4, ep.ipv6))
                ep = ep.but(joined=True)
                self._put_endpoint(ep)  # before the veth exists: recovery knows its name
                try:
                    await self.kernel.delete_links([ep.host_if])  # half a pair from a crash
                    await self.kernel.add_veth(
                        ep.host_if, ep.peer_if, bridge=net.vni.bridge_name, mtu=net.mtu or 1500,
                        mac=ep.mac, alias=endpoint_alias(self.plugin, ep.id),
                    )
                except DriverError:
                    await self.kernel.delete_links([ep.host_if])
                    self._put_endpoint(ep.but(joined=False))
                    raise
            log.info("docker endpoint joined", network=network_id[:12], endpoint=endpoint_id[:12],
                     port=ep.host_if, mac=ep.mac, ipv4=ep.ipv4)
            info = self._endpoint_info(ep)
            assert info is not None
            await self._tell("endpoint_added", info)
            return JoinResponse(
                InterfaceName=IfaceName(SrcName=ep.peer_if, DstPrefix=DST_PREFIX),
                Gateway=_bare(net.ipv4_gateway),
                GatewayIPv6=_bare(net.ipv6_gateway),
            )

    async def leave(self, network_id: str, endpoint_id: str) -> None:
        async with self._lock:
            ep = self.state.endpoints.get(endpoint_id)
            if ep is None:
                return
            await self._unplug(ep)
            self._put_endpoint(ep.but(joined=False))

    async def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        async with self._lock:
            ep = self.state.endpoints.get(endpoint_id)
            if ep is None:
                return  # unknown (or already gone): dockerd only wants it gone
            await self._unplug(ep)  # after a failed Join there was no Leave
            self._drop_endpoint(endpoint_id)
            log.info("docker endpoint deleted", endpoint=endpoint_id[:12])

    def endpoint_oper_info(self, network_id: str, endpoint_id: str) -> dict[str, Any]:
        ep = self.state.endpoints.get(endpoint_id)
        net = self.state.networks.get(network_id)
        if ep is None or net is None:
            return {}
        return {"evpnd.vni": net.vni.vni, "evpnd.port": ep.host_if, "evpnd.mac": ep.mac}

    # -- restart ------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Load the saved state and square it with the kernel; returns what was done.

        Devices of ready networks are re-planned (no change when they are as
        they should be); veths of joined endpoints are left alone, so running
        containers keep their connectivity; whatever a crash left half-made is
        removed. Without a state file (lost, or unreadable) the records are
        rebuilt from dockerd's view first. The listener then hears about every
        network and endpoint.
        """
        async with self._lock:
            lost = False
            if self.store is not None:
                self.state = self.store.load()
                lost = not self.store.found
            config = self.host()
            done: list[str] = []
            for line in self.state.skipped:
                # Written by an older evpnd that took a value this one refuses.
                done.append(f"skipped {self._skip(line)}")
            self.state.skipped.clear()
            self.rebuild_pending = False
            if lost and self.dockerd is not None:
                done += await self._rebuild(config)
            done += await self._square_with_kernel(config)
            self._save()
            for info in self.networks():
                await self._tell("vni_added", info)
            for ep_info in self.endpoints():
                await self._tell("endpoint_added", ep_info)
            for line in done:
                log.info("docker state recovered", step=line)
            return done

    async def rebuild_from_dockerd(self) -> list[str] | None:
        """The rebuild `recover` could not do (dockerd did not answer then): what was done,
        or None while dockerd still does not answer. The listener hears about the
        networks and endpoints that were rebuilt."""
        async with self._lock:
            if not self.rebuild_pending or self.dockerd is None:
                return []
            networks_before = {n.network_id for n in self.networks()}
            endpoints_before = {e.endpoint_id for e in self.endpoints()}
            config = self.host()
            done = await self._rebuild(config)
            if self.rebuild_pending:
                return None
            done += await self._square_with_kernel(config)
            self._save()
            for info in self.networks():
                if info.network_id not in networks_before:
                    await self._tell("vni_added", info)
            for ep_info in self.endpoints():
                if ep_info.endpoint_id not in endpoints_before:
                    await self._tell("endpoint_added", ep_info)
            for line in done:
                log.info("docker state rebuilt from dockerd", step=line)
            return done

    async def _rebuild(self, config: Config) -> list[str]:
        assert self.dockerd is not None
        try:
            view = await self.dockerd.networks(self.plugin)
        except DockerdUnavailable as exc:
            self.rebuild_pending = True
            log.warning("docker state file lost and dockerd not answering: networks and "
                        "endpoints are rebuilt once it does; no veth is removed meanwhile",
                        error=str(exc))
            return [f"state file lost, dockerd not answering ({exc}): rebuild pending"]
        self.rebuild_pending = False
        done = self._adopt(view, config)
        if not done:
            done.append("state file lost: dockerd has no network of this driver")
        return done

    def _adopt(self, view: Sequence[DockerdNetwork], config: Config) -> list[str]:
        """Records for what dockerd has and the state lacks, checked as the calls would be."""
        done: list[str] = []
        for net in view:
            name = f"network {net.id[:12]} ({net.name})"
            if net.ours and net.id not in self.state.networks:
                try:
                    request = CreateNetworkRequest.model_validate({
                        "NetworkID": net.id, "Options": {GENERIC_OPTIONS: net.options},
                        "IPv4Data": net.ip_data(4), "IPv6Data": net.ip_data(6)})
                    record = self._network_record(
                        request, self._parse_options(request, config), config)
                except (DriverError, ValidationError, ValueError) as exc:
                    done.append(f"skipped {self._skip(f'{name} from dockerd: {exc}')}")
                    continue
                self.state.networks[record.id] = record.but(ready=True)
                self.counters.records_rebuilt += 1
                done.append(f"{name}: rebuilt from dockerd (VNI {record.vni.vni})")
            if net.ours and net.id in self.state.networks:
                for ep in net.endpoints:
                    if ep.endpoint_id in self.state.endpoints:
                        continue
                    what = f"endpoint {ep.endpoint_id[:12]} ({ep.container})"
                    try:
                        given = docker_options.endpoint_addresses(ep.ipv4, ep.ipv6, ep.mac)
                    except ValueError as exc:
                        done.append(f"skipped {self._skip(f'{what} from dockerd: {exc}')}")
                        continue
                    # joined: its veth is looked for next (_square_with_kernel)
                    self.state.endpoints[ep.endpoint_id] = EndpointRecord(
                        id=ep.endpoint_id, network_id=net.id,
                        mac=given.mac or endpoint_mac(given.ipv4), ipv4=given.ipv4,
                        ipv6=given.ipv6, host_if=host_if(ep.endpoint_id),
                        peer_if=peer_if(ep.endpoint_id), joined=True)
                    self.counters.records_rebuilt += 1
                    done.append(f"{what}: rebuilt from dockerd ({ep.mac} {ep.ipv4})")
            if net.ipam_ours:
                for pool in net.pools:
                    if pool.pool_id in self.state.pools:
                        continue
                    try:
                        space, network, sub = ipam.parse_pool_id(pool.pool_id)
                        record = PoolRecord.from_json(PoolRecord(
                            id=pool.pool_id, space=space, pool=str(network),
                            subpool=None if sub is None else str(sub),
                            addresses=addresses_in(pool, net)).to_json())
                    except ValueError as exc:
                        done.append(f"skipped {self._skip(f'pool of {name}: {exc}')}")
                        continue
                    self.state.pools[record.id] = record
                    done.append(f"IPAM pool {record.id} of {name}: rebuilt from dockerd "
                                f"({len(record.addresses)} addresses in use)")
        return done

    async def _square_with_kernel(self, config: Config) -> list[str]:
        done: list[str] = []
        for net in list(self.state.networks.values()):
            if not net.ready:
                await self._remove_devices(net)
                self._drop_network(net.id)
                done.append(f"network {net.id[:12]}: unfinished create undone")
                continue
            try:
                mtu = await self._realize(net, config)
            except DriverError as exc:
                done.append(f"network {net.id[:12]}: devices not restored: {exc}")
                log.error("docker network not restored", network=net.id[:12], error=str(exc))
                continue
            if mtu != net.mtu:
                self._put_network(net.but(mtu=mtu))
        links = await self.kernel.links()
        for ep in list(self.state.endpoints.values()):
            net = self.state.networks.get(ep.network_id)
            if net is None:
                await self.kernel.delete_links([ep.host_if])
                self._drop_endpoint(ep.id)
                done.append(f"endpoint {ep.id[:12]}: network gone, removed")
            elif ep.joined and ep.host_if not in links:
                self._put_endpoint(ep.but(joined=False))
                done.append(f"endpoint {ep.id[:12]}: veth gone (container stopped)")
            elif ep.joined and links[ep.host_if].master != net.vni.bridge_name:
                await self.kernel.set_master(ep.host_if, net.vni.bridge_name)
                done.append(f"endpoint {ep.id[:12]}: {ep.host_if} put back on "
                            f"{net.vni.bridge_name}")
        if self.rebuild_pending:
            return done  # a running container's veth must not look like a stray one
        joined = {e.host_if for e in self.state.endpoints.values() if e.joined}
        stray = sorted(
            name for name, link in links.items()
            if alias_endpoint(self.plugin, link.alias) is not None and name not in joined
        )
        if stray:
            await self.kernel.delete_links(stray)
            done.append(f"removed stray veths {', '.join(stray)}")
        return done

    def _skip(self, line: str) -> str:
        self.counters.records_skipped += 1
        self.counters.skipped = [*self.counters.skipped, line][-10:]
        log.error("docker record skipped: it does not validate", record=line)
        return line

    # -- the IPAM driver's access (evpnd/docker/ipamdriver.py) ----------------------

    def put_pool(self, record: PoolRecord) -> None:
        self.state.pools[record.id] = record
        self._save()

    def drop_pool(self, pool_id: str) -> None:
        self.state.pools.pop(pool_id, None)
        self._save()

    def network_of_pool(self, pool: IPv4Network | IPv6Network) -> NetworkRecord | None:
        """The ready network of this driver whose subnet is `pool` (its VNI is the
        fabric an IPAM allocation is checked against)."""
        for net in self.state.networks.values():
            if not net.ready:
                continue
            subnets = [ip_interface(g).network for g in (net.ipv4_gateway, net.ipv6_gateway) if g]
            if net.ipv4_pool:
                with contextlib.suppress(ValueError):
                    subnets.append(ip_network(net.ipv4_pool, strict=False))
            if pool in subnets:
                return net
        return None

    def endpoint_addresses(self) -> list[IPAddress]:
        """Every address of this host's endpoints."""
        return [ip for e in self.state.endpoints.values() for ip in _endpoint_ips(e)]

    def _check_fabric(self, call: str, net: NetworkRecord, mac: str,
                      addresses: Sequence[str | None]) -> None:
        """Refuse an endpoint whose MAC or address another VTEP advertises."""
        ips = [ip_interface(a).ip for a in addresses if a]
        found = conflicts(mac, ips, self.fabric.claims_on(net.vni.vni, mac, ips))
        if not found:
            return
        self.counters.refused_collision += 1
        text = describe(found)
        log.error("docker endpoint refused: its address is in use in the fabric", call=call,
                  network=net.id[:12], vni=net.vni.vni, mac=mac, ips=[str(i) for i in ips],
                  claimed_by=text)
        raise DriverError(
            f"evpnd: {call}: address in use on VNI {net.vni.vni}: {text} (a received EVPN "
            "route); evpnd does not install an address twice: choose another --ip "
            "(or --mac-address), or remove it there"
        )

    # -- internals ----------------------------------------------------------------

    def _parse_options(
        self, request: CreateNetworkRequest, config: Config
    ) -> docker_options.NetworkOptions:
        try:
            return docker_options.parse(
                request.generic_options(), str(config.vtep.address), config.vtep.device
            )
        except docker_options.OptionsError as exc:
            raise DriverError(f"evpnd: {exc}") from None

    def _check_caps(self, net: NetworkRecord) -> None:
        in_network = sum(1 for e in self.state.endpoints.values() if e.network_id == net.id)
        if in_network >= self.max_endpoints_per_network:
            self.counters.endpoints_refused_cap += 1
            raise DriverError(
                f"evpnd: network {net.id[:12]} already has {in_network} endpoints, the most "
                "docker.max_endpoints_per_network allows"
            )
        if len(self.state.endpoints) >= self.max_endpoints:
            self.counters.endpoints_refused_cap += 1
            raise DriverError(
                f"evpnd: {len(self.state.endpoints)} Docker endpoints already, the most "
                "docker.max_endpoints allows"
            )

    def _check_conflicts(self, record: NetworkRecord, config: Config) -> None:
        vni = record.vni
        others = [n for n in self.state.networks.values() if n.id != record.id]
        for configured in config.vnis:
            if configured.vni == vni.vni:
                raise DriverError(f"evpnd: -o VxlanId={vni.vni}: VNI {vni.vni} is configured "
                                  "in evpnd's config file")
        for other in others:
            if other.vni.vni == vni.vni:
                raise DriverError(f"evpnd: -o VxlanId={vni.vni}: VNI {vni.vni} is used by "
                                  f"docker network {other.id[:12]}")
        try:
            # The config's own cross-checks (device names, gbp per port, address
            # families) over every VNI this host would then have.
            Config.model_validate({
                "router_id": config.router_id,
                "asn": config.asn,
                "vtep": config.vtep,
                "vnis": [*config.vnis, *(o.vni for o in others), vni],
            })
        except ValidationError as exc:
            messages = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise DriverError(f"evpnd: {messages}") from None
        if record.gateway_mode == "local" and record.ipv4_gateway:
            mine = ip_interface(record.ipv4_gateway).network
            for other in others:
                if other.gateway_mode == "local" and other.ipv4_gateway and \
                        ip_network(ip_interface(other.ipv4_gateway).network).overlaps(mine):
                    raise DriverError(
                        f"evpnd: -o gateway=local: subnet {mine} overlaps docker network "
                        f"{other.id[:12]} ({ip_interface(other.ipv4_gateway).network}), which "
                        "also has its gateway on this host"
                    )

    async def _realize(self, net: NetworkRecord, config: Config) -> int:
        """Devices of `net` as they should be; returns their MTU."""
        single = config.model_copy(update={"vnis": [net.vni]})
        await self.kernel.ensure_vni(single, net.vni)
        if net.gateway_mode == "local" and net.gateway_mac:
            addresses = [a for a in (net.ipv4_gateway, net.ipv6_gateway) if a]
            await self.kernel.set_gateway(net.vni.bridge_name, net.gateway_mac, addresses)
        bridge = (await self.kernel.links()).get(net.vni.bridge_name)
        if bridge is None:
            raise DriverError(f"bridge {net.vni.bridge_name} missing after creation")
        return bridge.mtu

    async def _remove_devices(self, net: NetworkRecord) -> None:
        links = await self.kernel.links()
        ours = [
            name for name in (net.vni.vxlan_name, net.vni.bridge_name)
            if name in links and alias_vni(links[name].alias) == net.vni.vni
        ]
        await self.kernel.delete_links(ours)

    async def _unplug(self, ep: EndpointRecord) -> None:
        if not ep.joined:
            return
        await self.kernel.delete_links([ep.host_if])
        info = self._endpoint_info(ep)
        log.info("docker endpoint left", endpoint=ep.id[:12], port=ep.host_if)
        if info is not None:
            await self._tell("endpoint_removed", info)

    def _network(self, network_id: str) -> NetworkRecord:
        net = self.state.networks.get(network_id)
        if net is None or not net.ready:
            raise DriverError(
                f"network {network_id[:12]} is not known to evpnd (was evpnd's state "
                "directory lost?); remove and recreate the network"
            )
        return net

    def _put_network(self, record: NetworkRecord) -> None:
        self._change(self.state.networks, record.id, record)

    def _drop_network(self, network_id: str) -> None:
        self._change(self.state.networks, network_id, None)

    def _put_endpoint(self, record: EndpointRecord) -> None:
        self._change(self.state.endpoints, record.id, record)

    def _drop_endpoint(self, endpoint_id: str) -> None:
        self._change(self.state.endpoints, endpoint_id, None)

    def _change(self, table: dict[str, Any], key: str, record: Any | None) -> None:
        """Put (None: drop) one record and save. A state that cannot be saved (a full
        disk) leaves memory as the file still has it and fails the call with a clear
        error: a refused CreateEndpoint must not hold a place under the caps."""
        before = table.get(key)
        if record is None:
            table.pop(key, None)
        else:
            table[key] = record
        try:
            self._save()
        except OSError as exc:
            if before is None:
                table.pop(key, None)
            else:
                table[key] = before
            path = self.store.path if self.store is not None else None
            log.error("docker driver state not saved", path=str(path), error=str(exc))
            raise DriverError(f"evpnd: could not save the driver's state to {path}: "
                              f"{exc.strerror or exc}") from exc

    def _save(self) -> None:
        if self.store is not None:
            self.store.save(self.state)

    async def _tell(self, event: str, info: Any) -> None:
        try:
            await getattr(self.listener, event)(info)
        except Exception as exc:  # the daemon's problem must not fail dockerd's call
            log.exception("docker driver listener failed", call=event, error=str(exc))


def ipv4_of(info: EndpointInfo) -> IPv4Address | None:
    return next((ip for ip in info.ips if isinstance(ip, IPv4Address)), None)
