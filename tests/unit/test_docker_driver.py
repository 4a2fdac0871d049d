"""The driver's state machine on a fake kernel: sequences, conflicts, restarts, leaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evpnd.config import parse
from evpnd.docker import protocol as p
from evpnd.docker.driver import (
    Driver,
    DriverError,
    endpoint_alias,
    endpoint_mac,
    gateway_mac,
    host_if,
    peer_if,
)
from evpnd.docker.state import StateStore
from tests.unit.docker_fakes import HOST, FakeKernel, Recorder

NET = "a" * 64
NET2 = "b" * 64
EP = "e1" * 32
EP2 = "e2" * 32


def network(nid: str = NET, pool: str = "10.1.0.0/24", gw: str | None = "10.1.0.1/24",
            **options: str) -> p.CreateNetworkRequest:
    ipv4: dict[str, Any] = {"AddressSpace": "LocalDefault", "Pool": pool}
    if gw:
        ipv4["Gateway"] = gw
    return p.CreateNetworkRequest.model_validate({
        "NetworkID": nid,
        "Options": {p.GENERIC_OPTIONS: {"VxlanId": "100", **options}},
        "IPv4Data": [ipv4],
    })


def endpoint(eid: str = EP, nid: str = NET, address: str = "10.1.0.2/24",
             mac: str = "") -> p.CreateEndpointRequest:
    return p.CreateEndpointRequest.model_validate({
        "NetworkID": nid, "EndpointID": eid,
        "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": mac},
    })


class World:
    def __init__(self, tmp_path: Path, host: str = HOST) -> None:
        self.kernel = FakeKernel()
        self.store = StateStore(tmp_path, "evpn")
        self.config = parse(host)
        self.recorder = Recorder()
        self.driver = self.fresh()

    def fresh(self) -> Driver:
        return Driver(plugin="evpn", host=lambda: self.config, kernel=self.kernel,
                      store=self.store, listener=self.recorder)

    async def restart(self) -> list[str]:
        self.recorder.events.clear()
        self.driver = self.fresh()
        return await self.driver.recover()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_full_lifecycle(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network(vxlanMTU="1400"))
    assert k.table["br100"].mtu == 1400 and k.table["vxlan100"].master == "br100"
    iface = await d.create_endpoint(endpoint())
    assert iface is not None and iface.MacAddress == "02:42:0a:01:00:02"
    answer = await d.join(NET, EP)
    assert answer.body() == {"InterfaceName": {"SrcName": peer_if(EP), "DstPrefix": "eth"},
                             "Gateway": "10.1.0.1"}
    host = k.table[host_if(EP)]
    assert (host.master, host.mtu, host.alias) == ("br100", 1400, endpoint_alias("evpn", EP))
    assert k.table[peer_if(EP)].address == "02:42:0a:01:00:02"
    await d.leave(NET, EP)
    assert host_if(EP) not in k.table and peer_if(EP) not in k.table
    await d.delete_endpoint(NET, EP)
    await d.delete_network(NET)
    assert k.foreign() == set()
    kinds = world.recorder.kinds()
    assert kinds == ["vni_added", "endpoint_added", "endpoint_removed", "vni_removed"]
    added = world.recorder.events[1][1]
    assert (added.vni, added.mac, [str(i) for i in added.ips], added.port) == (
        100, "02:42:0a:01:00:02", ["10.1.0.2"], host_if(EP))


async def test_join_error_then_delete_endpoint_without_leave(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network())
    await d.create_endpoint(endpoint())
    k.fail["add_veth"] = "no veth for you"
    with pytest.raises(DriverError, match="no veth"):
        await d.join(NET, EP)
    assert k.foreign() == {"br100", "vxlan100"}
    await d.delete_endpoint(NET, EP)
    assert d.state.endpoints == {}
    assert "endpoint_added" not in world.recorder.kinds()


async def test_successful_join_then_delete_endpoint_without_leave(world: World) -> None:
    # dockerd does this when something after our Join fails (run5 of the recording).
    d, k = world.driver, world.kernel
    await d.create_network(network())
    await d.create_endpoint(endpoint())
    await d.join(NET, EP)
    await d.delete_endpoint(NET, EP)
    assert k.foreign() == {"br100", "vxlan100"}
    assert world.recorder.kinds()[-1] == "endpoint_removed"


async def test_unknown_ids_are_fine_where_dockerd_only_wants_them_gone(world: World) -> None:
    d = world.driver
    await d.delete_endpoint(NET, EP)
    await d.leave(NET, EP)
    await d.delete_network(NET)
    assert d.endpoint_oper_info(NET, EP) == {}
    with pytest.raises(DriverError, match="not known to evpnd"):
        await d.create_endpoint(endpoint())
    await d.create_network(network())
    with pytest.raises(DriverError, match=r"endpoint .* not known"):
        await d.join(NET, EP)


async def test_delete_network_removes_leftover_endpoints(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network())
    await d.create_endpoint(endpoint())
    await d.join(NET, EP)
    await d.delete_network(NET)
    assert k.foreign() == set() and d.state.endpoints == {}


async def test_mac_given_by_docker_is_used_and_not_echoed(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network())
    assert await d.create_endpoint(endpoint(mac="02:AA:bb:cc:dd:ee")) is None
    await d.join(NET, EP)
    assert k.table[peer_if(EP)].address == "02:aa:bb:cc:dd:ee"
    with pytest.raises(DriverError, match="invalid MAC"):
        await d.create_endpoint(endpoint(EP2, mac="zz"))


async def test_retries_answer_the_same(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network())
    await d.create_network(network())  # same request again: fine
    with pytest.raises(DriverError, match="already exists with other options"):
        await d.create_network(network(TTL="9"))
    first = await d.create_endpoint(endpoint())
    assert await d.create_endpoint(endpoint()) == first
    one = await d.join(NET, EP)
    writes = k.writes
    assert await d.join(NET, EP) == one and k.writes == writes


async def test_conflicts(tmp_path: Path) -> None:
    world = World(tmp_path, HOST + "vnis:\n  - {vni: 100}\n  - {vni: 7, bridge: brX}\n")
    d = world.driver
    with pytest.raises(DriverError, match="VNI 100 is configured in evpnd's config file"):
        await d.create_network(network())
    with pytest.raises(DriverError, match="'brX' is used by VNI 7"):
        await d.create_network(network(VxlanId="8", bridge="brX"))
    await d.create_network(network(VxlanId="9", gateway="local"))
    with pytest.raises(DriverError, match="VNI 9 is used by docker network aaaaaaaaaaaa"):
        await d.create_network(network(NET2, VxlanId="9"))
    with pytest.raises(DriverError, match="overlaps docker network"):
        await d.create_network(network(NET2, "10.1.0.0/16", "10.1.0.1/16", VxlanId="10",
                                       gateway="local"))
    with pytest.raises(DriverError, match="no gateway address"):
        await d.create_network(network(NET2, gw=None, VxlanId="11", gateway="local"))
    with pytest.raises(DriverError, match=r"vtep\.device eth0"):
        await d.create_network(network(NET2, VxlanId="12", VtepDev="lo"))
    assert world.kernel.foreign() == {"br9", "vxlan9"}
    assert list(world.store.load().networks) == [NET]


async def test_gateway_local(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network(gateway="local"))
    assert k.table["br100"].address == gateway_mac(100) == "02:ed:00:00:64:01"
    assert k.addresses["br100"] == {"10.1.0.1/24"}
    [(kind, info)] = world.recorder.events
    assert kind == "vni_added" and info.gateway.mac == gateway_mac(100)
    assert str(info.gateway.ipv4) == "10.1.0.1/24"


async def test_failed_device_creation_leaves_nothing(world: World) -> None:
    world.kernel.fail["ensure_vni"] = "kernel said no"
    with pytest.raises(DriverError, match="kernel said no"):
        await world.driver.create_network(network())
    assert world.kernel.foreign() == set() and world.store.load().networks == {}
    assert world.recorder.events == []


async def test_listener_failure_does_not_fail_the_call(world: World) -> None:
    class Broken(Recorder):
        async def vni_added(self, info: object) -> None:
            raise RuntimeError("daemon busy")

    world.driver.listener = Broken()
    await world.driver.create_network(network())
    assert "br100" in world.kernel.table


# ---------------------------------------------------------------------------
# Restarts


async def test_restart_keeps_running_containers_untouched(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network(gateway="local"))
    await d.create_endpoint(endpoint())
    await d.join(NET, EP)
    await d.create_endpoint(endpoint(EP2, address="10.1.0.3/24"))  # created, not joined
    before, writes = dict(k.table), k.writes
    assert await world.restart() == []
    assert k.table == before and k.writes == writes
    assert world.recorder.kinds() == ["vni_added", "endpoint_added"]
    # The new instance carries on where the old one stopped.
    await world.driver.join(NET, EP2)
    await world.driver.delete_endpoint(NET, EP)
    await world.driver.delete_endpoint(NET, EP2)
    await world.driver.delete_network(NET)
    assert k.foreign() == set()


async def test_restart_undoes_half_made_things(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network())
    # A crash after the network record but before "ready": simulate with a second network.
    rec = d.state.networks[NET].but(id=NET2, ready=False,
                                    vni=d.state.networks[NET].vni.model_copy(
                                        update={"vni": 200}))
    d._put_network(rec)
    await k.ensure_vni(world.config, rec.vni)
    # A stray veth of ours nobody knows about, and a joined endpoint whose veth vanished.
    await k.add_veth(host_if(EP2), peer_if(EP2), bridge="br100", mtu=1450, mac="02:00:00:00:00:01",
                     alias=endpoint_alias("evpn", EP2))
    await d.create_endpoint(endpoint())
    await d.join(NET, EP)
    await k.delete_links([host_if(EP)])  # the container's namespace went away
    # Someone else's veth with a similar name is not ours: left alone.
    await k.add_veth("evhforeign0000", "evcforeign0000", bridge="br100", mtu=1450,
                     mac="02:00:00:00:00:02", alias="not evpnd")
    done = await world.restart()
    assert any("unfinished create undone" in line for line in done)
    assert any("veth gone" in line for line in done)
    assert any(host_if(EP2) in line for line in done)
    assert k.foreign() == {"br100", "vxlan100", "evhforeign0000", "evcforeign0000"}
    assert not world.driver.state.endpoints[EP].joined
    assert world.recorder.kinds() == ["vni_added"]
    await world.driver.delete_endpoint(NET, EP)
    await world.driver.delete_network(NET)
    assert k.foreign() == {"evhforeign0000", "evcforeign0000"}


async def test_restart_recreates_missing_devices_and_reattaches(world: World) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network())
    await d.create_endpoint(endpoint())
    await d.join(NET, EP)
    await k.delete_links(["vxlan100", "br100"])  # e.g. an admin's `ip link del`
    done = await world.restart()
    assert {"br100", "vxlan100"} <= set(k.table)
    assert k.table[host_if(EP)].master == "br100"
    assert any("put back on br100" in line for line in done)


async def test_restart_with_lost_state_cleans_by_alias(world: World, tmp_path: Path) -> None:
    d, k = world.driver, world.kernel
    await d.create_network(network())
    await d.create_endpoint(endpoint())
    await d.join(NET, EP)
    world.store.path.unlink()
    await world.restart()
    assert host_if(EP) not in k.table  # our veth, by its alias


def test_state_file_is_plain_json(world: World, tmp_path: Path) -> None:
    assert not world.store.path.exists()
    world.store.save(world.driver.state)
    assert json.loads(world.store.path.read_text()) == {
        "version": 1, "networks": [], "endpoints": [], "pools": []}


def test_corrupt_state_is_moved_aside(tmp_path: Path) -> None:
    store = StateStore(tmp_path, "evpn")
    store.path.write_text("{not json")
    assert store.load().networks == {}
    assert store.path.with_suffix(".corrupt").exists() and not store.path.exists()


def test_helpers() -> None:
    assert len(host_if(EP)) == len(peer_if(EP)) == 15
    assert endpoint_mac("10.254.46.2/24") == "02:42:0a:fe:2e:02"
    random = endpoint_mac(None)
    assert random.startswith("02:") and random != endpoint_mac(None)
    assert endpoint_mac("2001:db8::2/64").startswith("02:")
    assert gateway_mac(16_777_215) == "02:ed:ff:ff:ff:01"


# ---------------------------------------------------------------------------
# What dockerd sends is checked before it is stored; caps


@pytest.mark.parametrize(
    ("address", "address6", "mac", "fragment"),
    [("10.1.0.300/24", "", "02:00:00:00:00:05", "Interface.Address: '10.1.0.300/24'"),
     ("nonsense", "", "", "Interface.Address: 'nonsense'"),
     ("2001:db8::2/64", "", "", "Interface.Address: '2001:db8::2/64' is not an IPv4"),
     ("224.0.0.5/24", "", "", "multicast"),
     ("10.1.0.2/24", "10.1.0.2/24", "", "Interface.AddressIPv6: '10.1.0.2/24'"),
     ("10.1.0.2/24", "", "ff:ff:ff:ff:ff:ff", "Interface.MacAddress: must be a unicast MAC "
                                              "address, not the broadcast MAC"),
     ("10.1.0.2/24", "", "00:00:00:00:00:00", "all-zero MAC"),
     ("10.1.0.2/24", "", "01:00:5e:00:00:01", "multicast"),
     ("10.1.0.2/24", "", "02:00:00:00:00:05\n", "Interface.MacAddress: invalid MAC")],
)  # fmt: skip
async def test_create_endpoint_refuses_bad_values_naming_field_and_value(
    world: World, address: str, address6: str, mac: str, fragment: str
) -> None:
    d = world.driver
    await d.create_network(network())
    request = p.CreateEndpointRequest.model_validate({
        "NetworkID": NET, "EndpointID": EP,
        "Interface": {"Address": address, "AddressIPv6": address6, "MacAddress": mac}})
    with pytest.raises(DriverError, match="CreateEndpoint") as caught:
        await d.create_endpoint(request)
    assert fragment in str(caught.value)
    assert d.state.endpoints == {} and d.counters.requests_refused_invalid == 1
    # Nothing was stored, so nothing later can trip on it.
    await d.leave(NET, EP)
    await d.delete_endpoint(NET, EP)
    await d.delete_network(NET)
    assert await world.restart() == []


async def test_create_network_refuses_a_bad_gateway(world: World) -> None:
    with pytest.raises(DriverError, match=r"IPv4Data\.Gateway: '10\.1\.0\.256/24'"):
        await world.driver.create_network(network(gw="10.1.0.256/24"))
    assert world.driver.state.networks == {} and world.kernel.foreign() == set()


def _saved_state(world: World) -> dict[str, Any]:
    return json.loads(world.store.path.read_text())


async def test_recovery_skips_records_an_older_evpnd_wrote_with_bad_values(world: World) -> None:
    """Values the old code stored unchecked: recovery, Leave, DeleteEndpoint and
    DeleteNetwork must not trip on them; every other record recovers."""
    d, k = world.driver, world.kernel
    await d.create_network(network())
    await d.create_network(network(NET2, pool="10.2.0.0/24", gw="10.2.0.1/24", VxlanId="200"))
    await d.create_endpoint(endpoint())
    await d.join(NET, EP)
    await d.create_endpoint(endpoint(EP2, address="10.1.0.3/24"))
    await d.join(NET, EP2)
    state = _saved_state(world)
    by_id = {e["id"]: e for e in state["endpoints"]}
    by_id[EP2]["ipv4"] = "10.1.0.300/24"  # what CreateEndpoint stored when a MAC was given
    net2 = next(n for n in state["networks"] if n["id"] == NET2)
    net2["vni"]["route_targets"]["import"] = ["65001:\u0661\u0660\u0660"]  # -o rt=... back then
    world.store.path.write_text(json.dumps(state))

    done = await world.restart()  # must not raise
    d = world.driver
    skipped = [line for line in done if line.startswith("skipped")]
    assert len(skipped) == 2 and d.counters.records_skipped == 2, done
    assert any(EP2[:12] in line and "10.1.0.300/24" in line for line in skipped)
    assert any(NET2[:12] in line and "65001:" in line for line in skipped)
    # The good network and endpoint are back and told to the daemon.
    assert set(d.state.networks) == {NET} and set(d.state.endpoints) == {EP}
    assert world.recorder.kinds() == ["vni_added", "endpoint_added"]
    assert host_if(EP) in k.table and host_if(EP2) not in k.table  # cleaned by its mark
    # dockerd's later calls for what was skipped succeed (it only wants them gone).
    await d.leave(NET, EP2)
    await d.delete_endpoint(NET, EP2)
    await d.delete_network(NET2)
    await d.leave(NET, EP)
    await d.delete_endpoint(NET, EP)
    await d.delete_network(NET)
    assert {"br200", "vxlan200"} >= k.foreign()  # the skipped network's devices: by hand


@pytest.mark.parametrize(
    ("field", "value"),
    [("mac", "ff:ff:ff:ff:ff:ff"), ("mac", "00:00:00:00:00:00"), ("mac", "02:AA:00:00:00:01"),
     ("ipv4", "nonsense"), ("ipv6", "10.1.0.2/24"), ("host_if", "evh/\n"), ("joined", None)],
)  # fmt: skip
async def test_any_bad_endpoint_record_is_skipped(world: World, field: str, value: Any) -> None:
    d = world.driver
    await d.create_network(network())
    await d.create_endpoint(endpoint())
    state = _saved_state(world)
    if value is None:
        state["endpoints"][0]["surprise"] = 1
    else:
        state["endpoints"][0][field] = value
    world.store.path.write_text(json.dumps(state))
    done = await world.restart()
    assert world.driver.counters.records_skipped == 1, done
    assert world.driver.state.endpoints == {} and set(world.driver.state.networks) == {NET}


async def test_endpoint_caps(tmp_path: Path) -> None:
    world = World(tmp_path)
    d = world.driver
    d.max_endpoints_per_network, d.max_endpoints = 2, 3
    await d.create_network(network())
    await d.create_network(network(NET2, pool="10.2.0.0/24", gw="10.2.0.1/24", VxlanId="200"))
    await d.create_endpoint(endpoint("a" * 64, address="10.1.0.2/24"))
    await d.create_endpoint(endpoint("b" * 64, address="10.1.0.3/24"))
    with pytest.raises(DriverError, match=r"network aaaaaaaaaaaa already has 2 endpoints.*"
                                          "docker.max_endpoints_per_network"):
        await d.create_endpoint(endpoint("c" * 64, address="10.1.0.4/24"))
    await d.create_endpoint(endpoint("a" * 64, address="10.1.0.2/24"))  # a retry: no new one
    await d.create_endpoint(endpoint("d" * 64, nid=NET2, address="10.2.0.2/24"))
    with pytest.raises(DriverError, match=r"3 Docker endpoints already.*docker\.max_endpoints"):
        await d.create_endpoint(endpoint("e" * 64, nid=NET2, address="10.2.0.3/24"))
    assert d.counters.endpoints_refused_cap == 2 and len(d.state.endpoints) == 3
    await d.delete_endpoint(NET, "a" * 64)
    await d.create_endpoint(endpoint("e" * 64, nid=NET2, address="10.2.0.3/24"))


def test_caps_come_from_the_docker_section(tmp_path: Path) -> None:
    from evpnd.docker.service import DockerPlugin
    from evpnd.docker.settings import DockerConfig

    settings = DockerConfig(state_dir=tmp_path, socket_dir=tmp_path,
                            max_endpoints_per_network=7, max_endpoints=9)
    plugin = DockerPlugin(settings, host=lambda: parse(HOST))
    assert (plugin.driver.max_endpoints_per_network, plugin.driver.max_endpoints) == (7, 9)
