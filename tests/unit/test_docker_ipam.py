"""The IPAM driver: which address a host hands out (pure), and the calls as dockerd makes them.

The pure part is checked for the property the issue asks for: two hosts that
know each other (their Type-3 routes) never hand out the same address, even
at the same instant (no claims seen yet); a host never takes an address
another VTEP advertises, and never a block another VTEP holds while others
are free.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from evpnd.config import parse
from evpnd.docker import ipam
from evpnd.docker import protocol as p
from evpnd.docker.driver import Driver
from evpnd.docker.fabric import Claim, conflicts
from evpnd.docker.server import dispatch
from evpnd.docker.state import PoolRecord, StateStore
from evpnd.model import IPAddress
from tests.unit.docker_fakes import HOST, FakeKernel, Recorder

POOL = ip_network("10.30.0.0/24")
ME = ip_address("192.0.2.11")  # docker_fakes.HOST's VTEP
OTHER = ip_address("192.0.2.22")
GW = ip_address("10.30.0.1")


def allocate(me: IPAddress, count: int, *, vteps: Sequence[IPAddress] = (),
             claims: Sequence[Claim] = (), pool: Any = POOL, subpool: Any = None,
             shared: frozenset[IPAddress] = frozenset({GW})) -> list[IPAddress]:
    """`count` addresses handed out one after the other by one host."""
    taken: set[IPAddress] = set(shared)
    out = []
    for _ in range(count):
        address = ipam.choose_address(pool, subpool, me=me, taken=taken, shared=shared,
                                      claims=claims, vteps=vteps)
        assert address is not None
        taken.add(address)
        out.append(address)
    return out


# ---------------------------------------------------------------------------
# Pure


def test_pool_ids_name_their_pool() -> None:
    sub = ip_network("10.30.0.128/25")
    assert ipam.pool_id("local", POOL) == "local/10.30.0.0/24"
    assert ipam.parse_pool_id("local/10.30.0.0/24") == ("local", POOL, None)
    assert ipam.parse_pool_id(ipam.pool_id("local", POOL, sub)) == ("local", POOL, sub)
    v6 = ip_network("fd00:30::/64")
    assert ipam.parse_pool_id(ipam.pool_id("local", v6)) == ("local", v6, None)
    for bad in ("s4pool:10.254.47.0/24", "local/10.30.0.0", "/10.30.0.0/24",
                "local/10.30.0.0/24/10.31.0.0/25", "local/x/24"):
        with pytest.raises(ipam.IpamError, match="not one of the evpn IPAM driver's"):
            ipam.parse_pool_id(bad)


def test_pools_need_a_subnet_and_a_range_inside_it() -> None:
    with pytest.raises(ipam.IpamError, match="needs --subnet"):
        ipam.parse_pool("", "", False)
    with pytest.raises(ipam.IpamError, match="--ip-range needs --subnet"):
        ipam.parse_pool("", "10.30.0.0/25", False)
    with pytest.raises(ipam.IpamError, match="not inside --subnet"):
        ipam.parse_pool("10.30.0.0/24", "10.31.0.0/25", False)
    with pytest.raises(ipam.IpamError, match="not a subnet"):
        ipam.parse_pool("10.30.0.300/24", "", False)
    with pytest.raises(ipam.IpamError, match="too small"):
        ipam.parse_pool("10.30.0.0/31", "", False)
    assert ipam.parse_pool("10.30.0.7/24", "", False) == (POOL, None)


def test_spans_and_blocks() -> None:
    assert ipam.first_host(POOL) == GW
    assert ipam.host_span(POOL) == (int(GW), int(ip_address("10.30.0.254")))
    layout = ipam.blocks(POOL)
    assert (layout.size, layout.count) == (16, 16)
    assert layout.of(ip_address("10.30.0.17")) == 1 and layout.of(ip_address("10.31.0.1")) is None
    assert list(layout.addresses(15))[-1] == int(ip_address("10.30.0.254"))  # no broadcast
    ranged = ipam.blocks(POOL, ip_network("10.30.0.128/25"))
    assert (ranged.first, ranged.count) == (int(ip_address("10.30.0.128")), 8)
    big = ipam.blocks(ip_network("10.0.0.0/8"))
    assert big.count <= ipam.MAX_BLOCKS and big.size == 2**24 // ipam.MAX_BLOCKS
    v6 = ipam.blocks(ip_network("fd00:30::/64"))
    assert v6.count == ipam.MAX_BLOCKS and v6.size == 2**64 // ipam.MAX_BLOCKS


def test_a_lone_host_fills_its_best_block_from_the_start() -> None:
    first, second = allocate(ME, 2)
    layout = ipam.blocks(POOL)
    block = layout.of(first)
    assert block is not None and int(first) == layout.first + block * layout.size
    assert int(second) == int(first) + 1
    # Its choice is its own: the block it scores highest.
    assert block == max(range(layout.count), key=lambda b: ipam.score(ME, layout.start(b)))


def test_two_hosts_that_know_each_other_never_collide_even_at_the_same_instant() -> None:
    """Each knows the other's VTEP (Type-3), neither has seen a claim: disjoint blocks."""
    for n in range(1, 40):
        a, b = ip_address(f"10.0.{n}.2"), ip_address(f"10.0.{n + 1}.2")
        mine = allocate(a, 30, vteps=[b])
        theirs = allocate(b, 30, vteps=[a])
        assert not set(mine) & set(theirs), (a, b)
        layout = ipam.blocks(POOL)
        assert not {layout.of(x) for x in mine} & {layout.of(x) for x in theirs}


def test_claimed_addresses_and_held_blocks_are_left_alone() -> None:
    layout = ipam.blocks(POOL)
    alone = allocate(ME, 1)[0]
    block = layout.of(alone)
    assert block is not None
    # Another VTEP holds my favourite block (it advertises an address in it).
    held = ipam.blocks(POOL).start(block)
    claim = Claim(OTHER, "02:42:0a:1e:00:99", ip_address(int(held) + 5))
    moved = allocate(ME, 1, claims=[claim])[0]
    assert layout.of(moved) != block
    # Only the gateway claimed (gateway=local: every host advertises it): no block held.
    gateway = Claim(OTHER, "02:ed:00:0b:b8:01", GW)
    assert allocate(ME, 1, claims=[gateway])[0] == alone
    # A claimed address is skipped in my own block.
    taken = Claim(OTHER, "02:42:0a:1e:00:98", alone)
    assert alone not in allocate(ME, 3, claims=[taken])


def test_a_full_range_falls_back_then_ends() -> None:
    small = ip_network("10.30.0.0/28")  # one block of 14 host addresses
    claims = [Claim(OTHER, "02:00:00:00:00:01", ip_address("10.30.0.2"))]
    got = allocate(ME, 12, pool=small, claims=claims)  # 14 - gateway - the claimed one
    assert ip_address("10.30.0.2") not in got and len(set(got)) == 12
    taken = {GW, *got}
    assert ipam.choose_address(small, None, me=ME, taken=taken, shared={GW},
                               claims=claims) is None


def test_ipv6_pools() -> None:
    pool = ip_network("fd00:30::/64")
    got = allocate(ME, 3, pool=pool, shared=frozenset({ipam.first_host(pool)}))
    assert all(a in pool for a in got) and len(set(got)) == 3
    assert ipam.first_host(pool) == ip_address("fd00:30::1")


def test_conflicts_match_ip_or_mac() -> None:
    mine = ip_address("10.30.0.5")
    claims = [Claim(OTHER, "02:00:00:00:00:01", mine), Claim(OTHER, "02:42:0a:1e:00:05"),
              Claim(OTHER, "02:00:00:00:00:02", ip_address("10.30.0.6"))]
    found = conflicts("02:42:0a:1e:00:05", [mine], claims)
    assert found == [claims[1], claims[0]]  # MAC-only claims first, then by address
    assert str(found[1]) == "10.30.0.5 (02:00:00:00:00:01) at VTEP 192.0.2.22"
    assert str(found[0]) == "MAC 02:42:0a:1e:00:05 at VTEP 192.0.2.22"


def test_pool_records_validate(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "evpn")
    good = PoolRecord(id="local/10.30.0.0/24", space="local", pool="10.30.0.0/24",
                      addresses={"10.30.0.1": "gateway", "10.30.0.9": "endpoint"})
    bad = {**good.to_json(), "id": "local/10.31.0.0/24"}
    outside = {**good.to_json(), "id": "local/10.32.0.0/24", "pool": "10.32.0.0/24"}
    store.path.write_text(json.dumps({"version": 1, "networks": [], "endpoints": [],
                                      "pools": [good.to_json(), bad, outside]}))
    state = store.load()
    assert state.pools == {good.id: good}
    assert len(state.skipped) == 2 and "does not match" in state.skipped[0]
    assert "not in the subnet" in state.skipped[1]


# ---------------------------------------------------------------------------
# The calls, through the plugin's dispatch (as dockerd makes them)


class StaticFabric:
    """Claims and VTEPs a test sets: what the RIB would hold."""

    def __init__(self) -> None:
        self.by_vni: dict[int, list[Claim]] = {}
        self.vtep_list: list[IPAddress] = []

    def claims(self, vni: int) -> Sequence[Claim]:
        return self.by_vni.get(vni, [])

    def claims_on(self, vni: int, mac: str | None, ips: Sequence[IPAddress]) -> Sequence[Claim]:
        return conflicts(mac, ips, self.claims(vni))

    def vteps(self, vni: int) -> Sequence[IPAddress]:
        return self.vtep_list


class Host:
    def __init__(self, tmp_path: Path) -> None:
        self.kernel = FakeKernel()
        self.fabric = StaticFabric()
        self.store = StateStore(tmp_path, "evpn")
        self.driver = Driver(plugin="evpn", host=lambda: parse(HOST), kernel=self.kernel,
                             store=self.store, listener=Recorder(), fabric=self.fabric)

    async def call(self, call: str, body: Any = None) -> dict[str, Any]:
        path = f"/IpamDriver.{call}" if call in IPAM_CALLS else f"/NetworkDriver.{call}"
        status, answer = await dispatch(self.driver, path,
                                        None if body is None else json.dumps(body))
        assert status == 200, answer
        return answer

    async def network(self, pool_id: str, gateway: str, vni: int = 3000,
                      nid: str = "n" * 64) -> None:
        answer = await self.call("CreateNetwork", {
            "NetworkID": nid, "Options": {p.GENERIC_OPTIONS: {"VxlanId": str(vni)}},
            "IPv4Data": [{"AddressSpace": "local", "Pool": ipam.parse_pool_id(pool_id)[1]
                          .with_prefixlen, "Gateway": gateway}]})
        assert answer == {}


IPAM_CALLS = {"GetCapabilities", "GetDefaultAddressSpaces", "RequestPool", "ReleasePool",
              "RequestAddress", "ReleaseAddress"}


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


async def test_a_network_on_the_evpn_ipam_end_to_end(host: Host) -> None:
    assert await host.call("GetCapabilities") == {"RequiresMACAddress": False,
                                                  "RequiresRequestReplay": False}
    assert await host.call("GetDefaultAddressSpaces") == {
        "LocalDefaultAddressSpace": "local", "GlobalDefaultAddressSpace": "global"}
    pool = await host.call("RequestPool", {"AddressSpace": "local", "Pool": "10.30.0.0/24",
                                           "SubPool": "", "Options": {}, "V6": False})
    assert pool == {"PoolID": "local/10.30.0.0/24", "Pool": "10.30.0.0/24", "Data": {}}
    gateway = {"RequestAddressType": ipam.GATEWAY_TYPE}
    # No --gateway: the subnet's first host address, the same on every host.
    assert (await host.call("RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                               "Options": gateway}))["Address"] == "10.30.0.1/24"
    await host.network(pool["PoolID"], "10.30.0.1/24")
    # A container: the first address of this host's best block unless the fabric claims
    # something there (another VTEP holds that block then).
    expected = ipam.choose_address(POOL, None, me=ME, taken={GW}, shared={GW}, claims=())
    assert expected is not None
    host.fabric.by_vni[3000] = [Claim(OTHER, "02:00:00:00:00:01", expected)]
    answer = await host.call("RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                                "Options": None})
    got = ip_address(answer["Address"].split("/")[0])
    layout = ipam.blocks(POOL)
    assert answer["Address"].endswith("/24") and layout.of(got) != layout.of(expected)
    assert got == ipam.choose_address(POOL, None, me=ME, taken={GW}, shared={GW},
                                      claims=host.fabric.by_vni[3000])
    state = host.store.load().pools[pool["PoolID"]]
    assert state.addresses == {"10.30.0.1": "gateway", str(got): "endpoint"}
    # docker rm, docker network rm: released, pool gone.
    assert await host.call("ReleaseAddress", {"PoolID": pool["PoolID"], "Address": str(got)}) \
        == {}
    assert await host.call("ReleaseAddress", {"PoolID": pool["PoolID"],
                                              "Address": "10.30.0.1"}) == {}
    assert await host.call("ReleasePool", {"PoolID": pool["PoolID"]}) == {}
    assert host.store.load().pools == {}
    assert await host.call("ReleasePool", {"PoolID": pool["PoolID"]}) == {}  # unknown: fine


async def test_an_address_given_by_hand_that_another_vtep_advertises_is_refused(
    host: Host
) -> None:
    pool = (await host.call("RequestPool", {"Pool": "10.30.0.0/24",
                                            "AddressSpace": "local"}))["PoolID"]
    await host.call("RequestAddress", {"PoolID": pool, "Address": "10.30.0.1",
                                       "Options": {"RequestAddressType": ipam.GATEWAY_TYPE}})
    await host.network(pool, "10.30.0.1/24")
    host.fabric.by_vni[3000] = [Claim(OTHER, "02:42:0a:1e:00:07", ip_address("10.30.0.7"))]
    answer = await host.call("RequestAddress", {"PoolID": pool, "Address": "10.30.0.7"})
    assert answer == {"Error": "evpnd: 10.30.0.7 is in use on VNI 3000: 10.30.0.7 "
                               "(02:42:0a:1e:00:07) at VTEP 192.0.2.22 (a received EVPN route); "
                               "evpnd does not hand out an address twice: choose another --ip"}
    assert host.driver.counters.refused_collision == 1
    ok = await host.call("RequestAddress", {"PoolID": pool, "Address": "10.30.0.8"})
    assert ok == {"Address": "10.30.0.8/24", "Data": {}}
    again = await host.call("RequestAddress", {"PoolID": pool, "Address": "10.30.0.8"})
    assert again == {"Error": "evpnd: 10.30.0.8 is already in use on this host"}
    outside = await host.call("RequestAddress", {"PoolID": pool, "Address": "10.31.0.8"})
    assert "not in the subnet" in outside["Error"]


async def test_pool_requests_checked(host: Host) -> None:
    first = await host.call("RequestPool", {"Pool": "10.30.0.0/24", "AddressSpace": "local"})
    again = await host.call("RequestPool", {"Pool": "10.30.0.0/24", "AddressSpace": "local"})
    assert first == again and host.store.load().pools[first["PoolID"]].refs == 2
    overlap = await host.call("RequestPool", {"Pool": "10.30.0.0/16", "AddressSpace": "local"})
    assert overlap == {"Error": "evpnd: --subnet 10.30.0.0/16 overlaps pool local/10.30.0.0/24 "
                                "of another network on this host"}
    option = await host.call("RequestPool", {"Pool": "10.40.0.0/24", "Options": {"x": "1"}})
    assert "--ipam-opt x: unknown option" in option["Error"]
    await host.call("ReleasePool", {"PoolID": first["PoolID"]})
    assert host.store.load().pools[first["PoolID"]].refs == 1


async def test_a_pool_lost_with_the_state_file_is_known_from_its_id(host: Host) -> None:
    """dockerd keeps the pool id; after a lost state directory it still works."""
    answer = await host.call("RequestAddress", {"PoolID": "local/10.30.0.0/24/10.30.0.128/25",
                                                "Address": ""})
    address = ip_address(answer["Address"].split("/")[0])
    assert address in ip_network("10.30.0.128/25")
    assert "local/10.30.0.0/24/10.30.0.128/25" in host.store.load().pools
    assert "Error" in await host.call("RequestAddress", {"PoolID": "s4pool:10.0.0.0/24"})


async def test_the_ipam_never_hands_out_an_address_a_local_endpoint_has(host: Host) -> None:
    """After a lost state file the pool knows nothing; the driver's endpoints still count."""
    await host.network("local/10.30.0.0/24", "10.30.0.1/24")
    expected = ipam.choose_address(POOL, None, me=ME, taken={GW}, shared={GW}, claims=())
    assert isinstance(expected, IPv4Address)
    await host.call("CreateEndpoint", {"NetworkID": "n" * 64, "EndpointID": "e" * 64,
                                       "Interface": {"Address": f"{expected}/24"}})
    answer = await host.call("RequestAddress", {"PoolID": "local/10.30.0.0/24", "Address": ""})
    assert answer["Address"] != f"{expected}/24"
