"""C9: the MQTT broker cut off from evpnd for a while, as registrations change.

A real mosquitto (tests/mqtt's Broker) stays up; evpnd's MqttService reaches
it through a TCP relay of the test's own that can cut the path: while cut,
bytes are neither passed nor refused (a partition, not a closed port), so only
MQTT's keepalive can tell. Meanwhile an orchestrator, connected directly,
registers new endpoints and clears others (retained messages). When the path
is back, the stalled connections are dropped, the service reconnects, and its
registrations must equal the broker's retained ones. Rounds and the length
of the cut: conftest.size (a few seconds in CI, 30 s under `make chaos`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from evpnd.mqtt.client import MqttService
from evpnd.mqtt.settings import MqttConfig
from tests.chaos.conftest import size
from tests.chaos.tally import Tally
from tests.conftest import require_program
from tests.mqtt.conftest import Broker, free_port

pytestmark = pytest.mark.mqtt

PREFIX = "evpnd/chaos-host"
ROUNDS = size(2, 5)
CUT = size(4, 30)  # seconds the path stays cut
WAIT = 60.0


class Relay:
    """127.0.0.1:port -> the broker; `cut()` stalls every byte until `mend()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.open = asyncio.Event()
        self.open.set()
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.stalled: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.open.wait()  # a connection attempt during the cut hangs, unanswered
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        link = (writer, up_writer)
        self.links.add(link)
        try:
            await asyncio.gather(self._pump(reader, up_writer, link),
                                 self._pump(up_reader, writer, link))  # fmt: skip
        finally:
            self.links.discard(link)
            for w in link:
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    link: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:  # fmt: skip
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if not self.open.is_set():
                    self.stalled.add(link)
                    await self.open.wait()
                if link in self.stalled:
                    return  # the partition outlived this connection
                writer.write(data)
                await writer.drain()
        for w in link:
            w.close()

    def cut(self) -> None:
        self.open.clear()
        self.stalled |= self.links  # nothing they carry from now on gets through

    def mend(self) -> None:
        for link in self.stalled:
            for w in link:
                w.close()
        self.open.set()

    async def close(self) -> None:
        self.mend()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Broker]:
    program = require_program("mosquitto", "mosquitto")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(program, workdir)
    broker.start()
    yield broker
    broker.stop()


@contextlib.asynccontextmanager
async def orchestrator(broker: Broker) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=None, timeout=WAIT) as client:
        yield client


async def until(check: object, what: str, service: MqttService) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not check():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {service.status().as_dict()}")
        await asyncio.sleep(0.05)


async def test_c9_broker_partitioned_while_registrations_change(
    mqtt_broker: Broker, tally: Tally
) -> None:
    row = tally.row("C9 MQTT broker partitioned")
    rng = random.Random(9)
    relay = Relay((mqtt_broker.host, mqtt_broker.port))
    await relay.start()
    config = MqttConfig(host="127.0.0.1", port=relay.port, client_id="evpnd-chaos",
                        topic_prefix=PREFIX, qos=1, keepalive=5, reconnect_min=0.1,
                        reconnect_max=1.0)  # fmt: skip
    service = MqttService(config)
    await service.start()
    wanted: set[tuple[int, str]] = set()
    try:
        await until(lambda: service.connected and service.counters.resyncs >= 1,
                    "the first connection", service)  # fmt: skip
        async with orchestrator(mqtt_broker) as orch:

            async def change(count: int) -> None:
                for _ in range(count):
                    vni = rng.choice((100, 200))
                    mac = f"02:c9:00:00:{vni // 100:02x}:{rng.randrange(40):02x}"
                    topic = f"{PREFIX}/endpoints/{vni}/{mac}"
                    if (vni, mac) in wanted:
                        await orch.publish(topic, b"", qos=1, retain=True)
                        wanted.discard((vni, mac))
                    else:
                        await orch.publish(topic, json.dumps({"mac": mac}).encode(), qos=1,
                                           retain=True)  # fmt: skip
                        wanted.add((vni, mac))

            await change(20)
            await until(lambda: set(service.registered()) == wanted, "the first registrations",
                        service)  # fmt: skip
            for _ in range(ROUNDS):
                resyncs = service.counters.resyncs
                relay.cut()
                row.faults += 1
                loop = asyncio.get_running_loop()
                end = loop.time() + CUT
                while loop.time() < end:  # registrations change during the cut
                    await change(3)
                    await asyncio.sleep(min(1.0, max(0.0, end - loop.time())))
                relay.mend()
                await until(lambda r=resyncs: service.connected and service.counters.resyncs > r,
                            "the reconnection and its resync", service)  # fmt: skip
                await until(lambda: set(service.registered()) == wanted,
                            "the registrations to equal the broker's", service)  # fmt: skip
                row.rounds += 1
    finally:
        await service.stop()
        await relay.close()
    left = set(service.registered()) ^ wanted
    row.stale += len(set(service.registered()) - wanted)
    row.missing += len(wanted - set(service.registered()))
    row.notes.update(cut_s=CUT, registered=len(wanted), reconnects=service.counters.reconnects)
    assert not left
