"""Addresses for containers across Docker hosts, without per-host ranges. Pure.

`docker network create --ipam-driver evpn --subnet S` on every host gives
each host's dockerd the same pool; this module decides which address of it a
host hands out, so that two hosts never hand out the same one. The method is
both of these, in this order:

1. **Per-host blocks derived from the fabric.** The pool's range (its
   `--ip-range`, else the subnet) is cut into at most `MAX_BLOCKS` aligned
   blocks of at least `MIN_BLOCK` addresses. The VTEPs that carry the VNI are
   known on every host (their Type-3 routes, and the Type-2 routes they
   send). Each block has one owner among them by rendezvous hashing (the
   VTEP with the highest `score(vtep, block)`), which every host computes
   alike with no coordination. A block another VTEP already holds (it
   advertises an address in it) is never taken, whatever the hash says; a
   block we hold stays ours. So a host fills its held blocks, then the free
   blocks it owns, and only when those are full the free blocks other VTEPs
   own (then blocks others hold, as a last resort, address by address).
   Two hosts starting containers at the same instant, each knowing the
   other, allocate in disjoint blocks.
2. **Claim-and-check against the MAC+IP routes EVPN carries.** No address
   that a received Type-2 route claims is handed out, in any block; and the
   network driver refuses, at CreateEndpoint and Join, a container whose
   address or MAC another VTEP claims (an address given by hand with
   `--ip`, or a race the blocks did not prevent: a host that did not yet
   know the other).

The gateway (and `--aux-address`es) are the network's, the same on every
host: they hold no block and are never a collision. Without `--gateway`
the IPAM answers the subnet's first host address, so every host agrees.

Pool ids describe their pool (`local/10.30.0.0/24`, `local/10.30.0.0/24/10.30.0.128/25`):
dockerd keeps the id, so a pool whose record was lost (a lost state
directory) is known again from the id alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_address, ip_network

from evpnd.docker.fabric import Claim
from evpnd.model import IPAddress

IPNetwork = IPv4Network | IPv6Network

LOCAL_SPACE = "local"  # GetDefaultAddressSpaces: what dockerd passes back in RequestPool
GLOBAL_SPACE = "global"
GATEWAY_OPTION = "RequestAddressType"  # RequestAddress's Options key for the gateway
GATEWAY_TYPE = "com.docker.network.gateway"
MIN_BLOCK = 16  # addresses per block at least (a /28 of IPv4)
MAX_BLOCKS = 1024  # a big range gets bigger blocks, not more of them

# What an address of a pool is for: the network's gateway, an --aux-address or an
# address taken before the network existed (no block, no collision), or a container's.
KIND_GATEWAY, KIND_RESERVED, KIND_ENDPOINT = "gateway", "reserved", "endpoint"
KINDS = (KIND_GATEWAY, KIND_RESERVED, KIND_ENDPOINT)


class IpamError(ValueError):
    """A request the IPAM refuses; str() is what `docker` prints."""


# ---------------------------------------------------------------------------
# Pools and their ids


def pool_id(space: str, pool: IPNetwork, subpool: IPNetwork | None = None) -> str:
    return f"{space}/{pool}" + (f"/{subpool}" if subpool is not None else "")


def parse_pool_id(text: str) -> tuple[str, IPNetwork, IPNetwork | None]:
    """`pool_id`'s inverse; IpamError when `text` is no pool id of ours."""
    parts = text.split("/") if isinstance(text, str) else []
    try:
        if len(parts) == 3 and parts[0]:
            return parts[0], ip_network(f"{parts[1]}/{parts[2]}"), None
        if len(parts) == 5 and parts[0]:
            pool = ip_network(f"{parts[1]}/{parts[2]}")
            subpool = ip_network(f"{parts[3]}/{parts[4]}")
            if subpool.version == pool.version and subpool.subnet_of(pool):  # type: ignore[arg-type]
                return parts[0], pool, subpool
    except ValueError:
        pass
    raise IpamError(f"evpnd: pool id {text!r} is not one of the evpn IPAM driver's")


def parse_pool(pool: str, subpool: str, v6: bool) -> tuple[IPNetwork, IPNetwork | None]:
    """RequestPool's Pool and SubPool, checked (`--subnet`, `--ip-range`)."""
    if not pool:
        if subpool:
            raise IpamError("evpnd: --ip-range needs --subnet")
        family = "IPv6 " if v6 else ""
        raise IpamError(f"evpnd: the evpn IPAM driver needs --subnet for the {family}pool: "
                        "the same subnet on every host of the segment")
    network = _network("--subnet", pool)
    if network.num_addresses < 4:
        raise IpamError(f"evpnd: --subnet {pool}: too small (fewer than 4 addresses)")
    if not subpool:
        return network, None
    sub = _network("--ip-range", subpool)
    if sub.version != network.version or not sub.subnet_of(network):  # type: ignore[arg-type]
        raise IpamError(f"evpnd: --ip-range {subpool} is not inside --subnet {network}")
    return network, sub


def _network(option: str, text: str) -> IPNetwork:
    try:
        return ip_network(text, strict=False)
    except ValueError:
        raise IpamError(f"evpnd: {option} {text!r} is not a subnet (address/length)") from None


def overlap(pool: IPNetwork, others: Iterable[tuple[str, IPNetwork]]) -> str | None:
    """The id of the first of `others` (id, network) that overlaps `pool`, if any."""
    for other_id, network in others:
        if network.version == pool.version and network.overlaps(pool):  # type: ignore[arg-type]
            return other_id
    return None


# ---------------------------------------------------------------------------
# Single addresses


def host_span(pool: IPNetwork) -> tuple[int, int]:
    """First and last address a host may have: not the network address (nor, for IPv4,
    the broadcast address) unless the subnet is a /31 or /32 (/127, /128)."""
    first, last = int(pool.network_address), int(pool.broadcast_address)
    if pool.num_addresses <= 2:
        return first, last
    if pool.version == 4:
        return first + 1, last - 1
    return first + 1, last  # IPv6: the subnet-router anycast address is the first


def first_host(pool: IPNetwork) -> IPAddress:
    """The default gateway of a pool: its first host address, the same on every host."""
    return ip_address(host_span(pool)[0])


def checked_address(pool: IPNetwork, text: str) -> IPAddress:
    """An address asked for by hand (`--ip`, `--gateway`, `--aux-address`), checked."""
    try:
        address = ip_address(text)
    except ValueError:
        raise IpamError(f"evpnd: {text!r} is not an IP address") from None
    if address.version != pool.version or address not in pool:
        raise IpamError(f"evpnd: {address} is not in the subnet {pool}")
    first, last = host_span(pool)
    if not first <= int(address) <= last:
        raise IpamError(f"evpnd: {address} is the network or broadcast address of {pool}")
    return address


def with_prefix(address: IPAddress, pool: IPNetwork) -> str:
    """RequestAddress's answer: the address with the pool's prefix length."""
    return f"{address}/{pool.prefixlen}"


# ---------------------------------------------------------------------------
# Blocks and the choice


@dataclass(frozen=True, slots=True)
class Blocks:
    """The range addresses are handed out from (`first`..`last`), cut into blocks."""

    first: int
    last: int
    size: int  # addresses per block (a power of two)
    version: int

    @property
    def count(self) -> int:
        return (self.last - self.first) // self.size + 1

    def of(self, address: IPAddress) -> int | None:
        value = int(address)
        if address.version != self.version or not self.first <= value <= self.last:
            return None
        return (value - self.first) // self.size

    def addresses(self, block: int) -> range:
        start = self.first + block * self.size
        return range(start, min(start + self.size, self.last + 1))

    def start(self, block: int) -> IPAddress:
        return _address(self.first + block * self.size, self.version)


def blocks(pool: IPNetwork, subpool: IPNetwork | None = None) -> Blocks:
    """The blocks of a pool's range: `--ip-range` when given, else the subnet's host span."""
    first, last = host_span(pool)
    if subpool is not None:
        first = max(first, int(subpool.network_address))
        last = min(last, int(subpool.broadcast_address))
    count = last - first + 1
    size = MIN_BLOCK
    while size * MAX_BLOCKS < count:
        size *= 2
    return Blocks(first, last, size, pool.version)


def score(vtep: IPAddress, start: IPAddress) -> int:
    """Rendezvous hash of a VTEP and a block (named by its first address); the block's
    owner is the VTEP with the highest score. Stable across hosts, versions and runs."""
    digest = hashlib.blake2b(vtep.packed + b"|" + start.packed, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(vteps: Collection[IPAddress], start: IPAddress) -> IPAddress:
    return max(vteps, key=lambda v: (score(v, start), int(v)))


# Preference groups of a block, lower first (see the module docstring).
HELD, OWNED, FREE, TAKEN_ELSEWHERE = 0, 1, 2, 3


def block_order(
    layout: Blocks,
    me: IPAddress,
    vteps: Iterable[IPAddress],
    held_here: Collection[int],
    held_elsewhere: Mapping[int, Collection[IPAddress]],
) -> list[int]:
    """Blocks in the order this host (VTEP `me`) fills them."""
    everyone = {me, *vteps}
    ranked = []
    for block in range(layout.count):
        start = layout.start(block)
        if block in held_elsewhere:
            group = TAKEN_ELSEWHERE
        elif block in held_here:
            group = HELD
        elif owner(everyone, start) == me:
            group = OWNED
        else:
            group = FREE
        ranked.append((group, -score(me, start), block))
    return [block for _, _, block in sorted(ranked)]


def choose_address(
    pool: IPNetwork,
    subpool: IPNetwork | None,
    *,
    me: IPAddress,
    taken: Collection[IPAddress],
    shared: Collection[IPAddress],
    claims: Iterable[Claim],
    vteps: Iterable[IPAddress] = (),
) -> IPAddress | None:
    """The address to hand out next, or None when the range is full.

    `taken`: every address in use on this host (the pool's allocations and
    the driver's endpoints); `shared`: those of them that are the network's
    (gateway, aux addresses: every host has them, they hold no block);
    `claims`: other VTEPs' MAC+IP routes in the network's VNI; `vteps`: the
    other VTEPs that carry the VNI.
    """
    layout = blocks(pool, subpool)
    claimed: set[IPAddress] = set()
    held_elsewhere: dict[int, set[IPAddress]] = {}
    others = set(vteps)
    for claim in claims:
        if claim.ip is None or claim.vtep == me:
            continue
        claimed.add(claim.ip)
        others.add(claim.vtep)
        if claim.ip in shared:
            continue  # the gateway everyone advertises (gateway=local) holds nothing
        block = layout.of(claim.ip)
        if block is not None:
            held_elsewhere.setdefault(block, set()).add(claim.vtep)
    held_here = {b for a in taken if a not in shared and (b := layout.of(a)) is not None}
    others.discard(me)
    busy = {int(a) for a in (*taken, *claimed) if a.version == layout.version}
    for block in block_order(layout, me, others, held_here, held_elsewhere):
        for value in layout.addresses(block):
            if value not in busy:
                return _address(value, layout.version)
    return None


def _address(value: int, version: int) -> IPAddress:
    return IPv4Address(value) if version == 4 else ip_address(value.to_bytes(16, "big"))
