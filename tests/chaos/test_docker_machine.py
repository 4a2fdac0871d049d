"""F5: the Docker driver as a hypothesis state machine, with restarts and kernel failures.

Any sequence of libnetwork calls (CreateNetwork, CreateEndpoint, Join, Leave,
DeleteEndpoint, DeleteNetwork; repeated, out of order, for unknown ids), a
kernel call that fails once, and evpnd restarts (a new Driver on the same
state file and kernel, `recover()`), on tests/unit/docker_fakes.py's kernel.
After every step: the calls raise nothing but DriverError, the state file
says what memory says, every endpoint belongs to a known network, and the
kernel holds no device the state does not account for. At the end, deleting
everything leaves the kernel as it was.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from evpnd.config import parse
from evpnd.docker.driver import Driver, DriverError
from evpnd.docker.state import StateStore
from tests.chaos.conftest import size
from tests.chaos.tally import Tally
from tests.unit.docker_fakes import HOST, FakeKernel, Recorder
from tests.unit.test_docker_driver import endpoint, network

NETS = ["a" * 64, "b" * 64, "c" * 64]
EPS = [f"e{i}" * 32 for i in range(4)]
VNIS = ["100", "200", "300"]
RUNS = {"steps": 0, "restarts": 0, "refused": 0}


class DriverMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory(prefix="evpnd-f5-")
        self.kernel = FakeKernel()
        self.store = StateStore(Path(self.dir.name), "evpn")
        self.config = parse(HOST)
        self.driver = self.fresh()

    def fresh(self) -> Driver:
        return Driver(plugin="evpn", host=lambda: self.config, kernel=self.kernel,
                      store=self.store, listener=Recorder(), max_endpoints=3)  # fmt: skip

    def call(self, coro: Coroutine[Any, Any, Any]) -> None:
        RUNS["steps"] += 1
        try:
            self.loop.run_until_complete(coro)
        except DriverError:
            RUNS["refused"] += 1

    @rule(net=st.integers(0, 2), vni=st.sampled_from(VNIS), gateway=st.booleans())
    def create_network(self, net: int, vni: str, gateway: bool) -> None:
        pool = f"10.{net + 1}.0.0/24"
        self.call(self.driver.create_network(network(
            NETS[net], pool=pool, gw=f"10.{net + 1}.0.1/24" if gateway else None, VxlanId=vni)))

    @rule(net=st.integers(0, 2))
    def delete_network(self, net: int) -> None:
        self.call(self.driver.delete_network(NETS[net]))

    @rule(ep=st.integers(0, 3), net=st.integers(0, 2), host=st.integers(2, 5))
    def create_endpoint(self, ep: int, net: int, host: int) -> None:
        self.call(self.driver.create_endpoint(endpoint(EPS[ep], NETS[net],
                                                       f"10.{net + 1}.0.{host}/24")))

    @rule(ep=st.integers(0, 3), net=st.integers(0, 2))
    def join(self, ep: int, net: int) -> None:
        self.call(self.driver.join(NETS[net], EPS[ep]))

    @rule(ep=st.integers(0, 3), net=st.integers(0, 2))
    def leave(self, ep: int, net: int) -> None:
        self.call(self.driver.leave(NETS[net], EPS[ep]))

    @rule(ep=st.integers(0, 3), net=st.integers(0, 2))
    def delete_endpoint(self, ep: int, net: int) -> None:
        self.call(self.driver.delete_endpoint(NETS[net], EPS[ep]))

    @rule(method=st.sampled_from(["add_veth", "ensure_vni"]))
    def kernel_fails_once(self, method: str) -> None:
        self.kernel.fail[method] = f"injected {method} failure"

    @rule()
    def restart(self) -> None:
        RUNS["restarts"] += 1
        self.driver = self.fresh()
        self.call(self.driver.recover())

    @invariant()
    def the_file_says_what_memory_says(self) -> None:
        saved = StateStore(Path(self.dir.name), "evpn").load()
        assert saved.to_json() == self.driver.state.to_json()

    @invariant()
    def every_endpoint_has_its_network(self) -> None:
        state = self.driver.state
        assert {e.network_id for e in state.endpoints.values()} <= set(state.networks)

    @invariant()
    def the_kernel_holds_nothing_unaccounted_for(self) -> None:
        state = self.driver.state
        names = {n for r in state.networks.values()
                 for n in (r.vni.bridge_name, r.vni.vxlan_name)}  # fmt: skip
        names |= {n for e in state.endpoints.values() for n in (e.host_if, e.peer_if) if n}
        assert self.kernel.foreign() <= names, self.kernel.foreign() - names

    def teardown(self) -> None:
        try:
            self.kernel.fail.clear()
            for ep in list(self.driver.state.endpoints.values()):
                self.loop.run_until_complete(self.driver.leave(ep.network_id, ep.id))
                self.loop.run_until_complete(self.driver.delete_endpoint(ep.network_id, ep.id))
            for net in list(self.driver.state.networks):
                self.loop.run_until_complete(self.driver.delete_network(net))
            assert self.kernel.foreign() == set()
            assert self.driver.state.networks == {} and self.driver.state.endpoints == {}
        finally:
            self.loop.close()
            self.dir.cleanup()


DriverMachine.TestCase.settings = settings(
    max_examples=size(60, 2000), stateful_step_count=30, deadline=None, database=None,
    suppress_health_check=list(HealthCheck))
test_f5_docker_driver_state_machine = DriverMachine.TestCase


def test_f5_tally(tally: Tally) -> None:
    row = tally.row("F5 Docker driver machine")
    row.rounds += 1
    row.faults += RUNS["steps"]
    row.notes.update(restarts=RUNS["restarts"], refused=RUNS["refused"])
