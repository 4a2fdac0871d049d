"""The libnetwork remote IPAM driver: `docker network create --ipam-driver evpn`.

Served on the network driver's socket (`Plugin.Activate` lists both) and
sharing its lock and state file: a pool is linked to the network created on
it by its subnet (`Driver.network_of_pool`), whose VNI is the part of the
fabric an allocation is checked against. Which address to hand out is
decided by `evpnd.docker.ipam` (per-host blocks derived from the fabric, then
claim-and-check against the received MAC+IP routes); this module only
carries the calls, in the order dockerd 20.10 makes them
(shared/libnetwork/, run 4):

    network create: RequestPool -> RequestAddress(gateway) [-> RequestAddress(aux)...]
                    -> NetworkDriver.CreateNetwork
    docker run:     RequestAddress -> NetworkDriver.CreateEndpoint -> Join ...
    docker rm:      ... DeleteEndpoint -> ReleaseAddress
    network rm:     ReleaseAddress(gateway) -> ReleasePool -> NetworkDriver.DeleteNetwork

An address asked for by hand (`--ip`) that another VTEP advertises is
refused here already (counted with the driver's other collision refusals);
the network driver checks again at CreateEndpoint and Join, for networks
that use another IPAM driver too.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import structlog

from evpnd.docker import ipam
from evpnd.docker import protocol as p
from evpnd.docker.driver import Driver
from evpnd.docker.fabric import describe
from evpnd.docker.ipam import IpamError, IPNetwork
from evpnd.docker.state import NetworkRecord, PoolRecord
from evpnd.model import IPAddress

log = structlog.get_logger(__name__)


class IpamDriver:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    # -- handshake ------------------------------------------------------------------

    def capabilities(self) -> p.IpamCapabilitiesResponse:
        return p.IpamCapabilitiesResponse()

    def address_spaces(self) -> p.AddressSpacesResponse:
        return p.AddressSpacesResponse(LocalDefaultAddressSpace=ipam.LOCAL_SPACE,
                                       GlobalDefaultAddressSpace=ipam.GLOBAL_SPACE)

    # -- pools ----------------------------------------------------------------------

    async def request_pool(self, request: p.RequestPoolRequest) -> p.RequestPoolResponse:
        async with self.driver.lock:
            for name in sorted(request.Options or {}):
                raise IpamError(f"evpnd: --ipam-opt {name}: unknown option (the evpn IPAM "
                                "driver takes none)")
            network, sub = ipam.parse_pool(request.Pool, request.SubPool, request.V6)
            space = request.AddressSpace or ipam.LOCAL_SPACE
            ident = ipam.pool_id(space, network, sub)
            pools = self.driver.state.pools
            existing = pools.get(ident)
            if existing is not None:  # the same pool again: counted, like libnetwork's own
                self.driver.put_pool(existing.but(refs=existing.refs + 1))
            else:
                other = ipam.overlap(network, [(q.id, ip_network(q.pool)) for q in
                                               pools.values() if q.space == space])
                if other is not None:
                    raise IpamError(f"evpnd: --subnet {network} overlaps pool {other} of "
                                    "another network on this host")
                self.driver.put_pool(PoolRecord(id=ident, space=space, pool=str(network),
                                                subpool=None if sub is None else str(sub)))
                log.info("docker IPAM pool", pool=ident)
            return p.RequestPoolResponse(PoolID=ident, Pool=str(network))

    async def release_pool(self, pool_id: str) -> None:
        async with self.driver.lock:
            pool = self.driver.state.pools.get(pool_id)
            if pool is None:
                return  # unknown or gone: dockerd only wants it gone
            if pool.refs > 1:
                self.driver.put_pool(pool.but(refs=pool.refs - 1))
                return
            self.driver.drop_pool(pool_id)
            log.info("docker IPAM pool released", pool=pool_id)

    # -- addresses ------------------------------------------------------------------

    async def request_address(self, request: p.RequestAddressRequest) -> p.RequestAddressResponse:
        async with self.driver.lock:
            pool = self._pool(request.PoolID)
            network = ip_network(pool.pool)
            sub = ip_network(pool.subpool) if pool.subpool else None
            gateway = (request.Options or {}).get(ipam.GATEWAY_OPTION) == ipam.GATEWAY_TYPE
            net = self.driver.network_of_pool(network)
            # Before CreateNetwork (the gateway, aux addresses) an address is the network's.
            kind = ipam.KIND_GATEWAY if gateway else \
                ipam.KIND_ENDPOINT if net is not None else ipam.KIND_RESERVED
            taken = {ip_address(a) for a in pool.addresses} | {
                a for a in self.driver.endpoint_addresses() if a in network}
            if request.Address:
                address = ipam.checked_address(network, request.Address)
                if pool.addresses.get(str(address)) == kind == ipam.KIND_GATEWAY:
                    pass  # the same gateway again (a retried network create)
                elif address in taken:
                    raise IpamError(f"evpnd: {address} is already in use on this host")
                elif kind == ipam.KIND_ENDPOINT and net is not None:
                    self._check_fabric(net.vni.vni, address)
            elif gateway:
                address = ipam.first_host(network)  # the same on every host
                if address in taken:
                    raise IpamError(f"evpnd: the default gateway {address} of {network} is in "
                                    "use on this host: give --gateway")
            else:
                address = self._choose(pool, network, sub, taken, net)
            self.driver.put_pool(pool.but(addresses={**pool.addresses, str(address): kind}))
            log.info("docker IPAM address", pool=pool.id, address=str(address), kind=kind)
            return p.RequestAddressResponse(Address=ipam.with_prefix(address, network))

    async def release_address(self, pool_id: str, address: str) -> None:
        async with self.driver.lock:
            pool = self.driver.state.pools.get(pool_id)
            if pool is None or not address:
                return
            try:
                key = str(ip_address(address))
            except ValueError:
                return  # nothing of ours has that name
            if key in pool.addresses:
                self.driver.put_pool(pool.but(addresses={
                    a: k for a, k in pool.addresses.items() if a != key}))
                log.info("docker IPAM address released", pool=pool_id, address=key)

    # -- internals ------------------------------------------------------------------

    def _pool(self, pool_id: str) -> PoolRecord:
        pool = self.driver.state.pools.get(pool_id)
        if pool is not None:
            return pool
        # The id names its pool: known again after a lost state file, before any rebuild.
        space, network, sub = ipam.parse_pool_id(pool_id)
        pool = PoolRecord(id=pool_id, space=space, pool=str(network),
                          subpool=None if sub is None else str(sub))
        log.warning("docker IPAM pool not in the state file: re-made from its id", pool=pool_id)
        self.driver.put_pool(pool)
        return pool

    def _choose(self, pool: PoolRecord, network: IPNetwork, sub: IPNetwork | None,
                taken: set[IPAddress], net: NetworkRecord | None) -> IPAddress:
        fabric = self.driver.fabric
        vni = None if net is None else net.vni.vni
        address = ipam.choose_address(
            network, sub,
            me=self.driver.host().vtep.address,
            taken=taken,
            shared={ip_address(a) for a, k in pool.addresses.items() if k != ipam.KIND_ENDPOINT},
            claims=fabric.claims(vni) if vni is not None else (),
            vteps=fabric.vteps(vni) if vni is not None else (),
        )
        if address is None:
            where = f"--ip-range {sub}" if sub is not None else f"--subnet {network}"
            raise IpamError(f"evpnd: no free address in {where} (on this host and in the "
                            "fabric)")
        return address

    def _check_fabric(self, vni: int, address: IPAddress) -> None:
        claims = self.driver.fabric.claims_on(vni, None, [address])
        claims = [c for c in claims if c.ip == address]
        if not claims:
            return
        self.driver.counters.refused_collision += 1
        text = describe(claims)
        log.error("docker IPAM refused an address: it is in use in the fabric", vni=vni,
                  address=str(address), claimed_by=text)
        raise IpamError(f"evpnd: {address} is in use on VNI {vni}: {text} (a received EVPN "
                        "route); evpnd does not hand out an address twice: choose another --ip")
