"""The Docker driver when its state file cannot be written (ENOSPC): the call fails with a
clear error and memory stays as the file has it (found by the chaos suite's C8)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from evpnd.docker.driver import Driver, DriverError
from evpnd.docker.state import DriverState, StateStore
from tests.unit.docker_fakes import FakeKernel, Recorder
from tests.unit.test_docker_driver import EP, EP2, NET, NET2, World, endpoint, network


class FullStore(StateStore):
    """A real store whose disk can be made full."""

    full = False

    def save(self, state: DriverState) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().save(state)


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World(tmp_path)
    world.store = FullStore(tmp_path, "evpn")
    world.driver = Driver(plugin="evpn", host=lambda: world.config, kernel=FakeKernel(),
                          store=world.store, listener=Recorder(), max_endpoints=1)
    return world


async def test_a_full_disk_refuses_the_call_clearly_and_changes_nothing(world: World) -> None:
    d, store = world.driver, world.store
    assert isinstance(store, FullStore)
    await d.create_network(network())
    store.full = True
    for attempt in (EP, EP2):  # dockerd retries with a new endpoint id each time
        with pytest.raises(DriverError, match=r"could not save the driver's state to .*"
                           r"docker-evpn\.json: No space left on device"):  # fmt: skip
            await d.create_endpoint(endpoint(attempt))
    assert d.state.endpoints == {}
    with pytest.raises(DriverError, match="No space left"):
        await d.create_network(network(NET2, pool="10.2.0.0/24", gw="10.2.0.1/24",
                                       VxlanId="200"))  # fmt: skip
    assert set(d.state.networks) == {NET}
    with pytest.raises(DriverError, match="No space left"):
        await d.delete_network(NET)
    assert set(d.state.networks) == {NET}  # dockerd will ask again
    # Space again: the cap of one endpoint is free, the retries work.
    store.full = False
    assert await d.create_endpoint(endpoint(EP2)) is not None
    assert set(d.state.endpoints) == {EP2}
    assert set(StateStore(store.path.parent, "evpn").load().endpoints) == {EP2}
