"""Retained state a late subscriber reads from a real mosquitto: every peer's session
state (through the daemon's MqttBridge and a real RIB), and the will's payload when
evpnd's connection dies (a process of ours killed)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from evpnd import config
from evpnd.derived import vni_policies
from evpnd.rib import Rib
from evpnd.services import MqttBridge
from tests.mqtt.conftest import Broker
from tests.mqtt.test_mqtt_broker import (
    PREFIX,
    WAIT,
    barrier,
    body,
    connected,
    make_config,
    mqtt_client,
    next_message,
    until,
)

pytestmark = pytest.mark.mqtt

P1, P2 = IPv4Address("10.255.0.1"), IPv4Address("10.255.0.2")


def bridge_config(broker: Broker) -> config.Config:
    return config.parse(f"""router_id: 10.0.0.5
asn: 65000
vtep: {{address: 10.0.0.5, device: eth0}}
bgp:
  peers:
    - {{address: {P1}, remote_asn: 65000, description: rr1}}
    - {{address: {P2}, remote_asn: 65000, description: rr2}}
vnis: [{{vni: 100}}]
mqtt: {{host: {broker.host}, port: {broker.port}, topic_prefix: {PREFIX}, client_id: evpnd-t,
        keepalive: 5, reconnect_min: 0.1, reconnect_max: 0.5}}
""")


async def retained_peers(broker: Broker, what: str, count: int) -> dict[str, dict]:
    """What a subscriber that comes now learns from `P/peers/+`: `count` retained messages."""
    states: dict[str, dict] = {}
    async with mqtt_client(broker, f"{PREFIX}/peers/+") as late:
        while len(states) < count:
            message = await next_message(late, f"{what} ({len(states)} of {count} so far)")
            assert message.retain, message.topic.value
            states[message.topic.value.rsplit("/", 1)[1]] = body(message)
        assert await barrier(late, f"the {count} retained peer states") == []
    return states


async def test_a_late_subscriber_learns_every_peer_state(broker: Broker) -> None:
    cfg = bridge_config(broker)
    glue = MqttBridge(lambda: cfg, Rib(cfg.vtep.address, vni_policies(cfg)), lambda _: None)
    await glue.start()
    try:
        await glue.service.wait_connected(WAIT)
        glue.speaker_attached({})  # a new ExaBGP: both sessions down
        glue.peer_state(P1, "up", None)
        await until(lambda: not glue.service._retained_dirty and glue.service.connected,
                    "the peer states to be sent", glue.service)
        states = await retained_peers(broker, "the retained peer states", 2)
        assert {p: (s["state"], s["description"], s["reason"]) for p, s in states.items()} == {
            str(P1): ("up", "rr1", None), str(P2): ("down", "rr2", "not established")}
        since = states[str(P1)]["since"]

        # A peer that goes down is down for the next subscriber; P1's `since` is kept.
        glue.peer_state(P2, "up", None)
        glue.peer_state(P2, "down", "hold timer expired")
        await until(lambda: not glue.service._retained_dirty, "the new states to be sent")
        states = await retained_peers(broker, "the retained states after a flap", 2)
        assert (states[str(P2)]["state"], states[str(P2)]["reason"]) == (
            "down", "hold timer expired")
        assert states[str(P1)]["since"] == since

        # A reload without P2 clears its topic: a late subscriber learns one peer.
        smaller = cfg.model_copy(update={"bgp": cfg.bgp.model_copy(
            update={"peers": cfg.bgp.peers[:1]})})
        await glue.reconfigure(cfg, smaller)
        await until(lambda: not glue.service._retained_dirty, "the cleared topic to be sent")
        assert set(await retained_peers(broker, "the remaining peer", 1)) == {str(P1)}
    finally:
        await glue.stop()


async def test_peer_states_are_sent_again_after_the_broker_lost_them(
    broker: Broker, tmp_path: Path
) -> None:
    async with connected(make_config(broker)) as service:
        from datetime import UTC, datetime

        since = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
        assert service.retain_peer_state(P1, "up", since, asn=65000)
        await until(lambda: not service._retained_dirty, "the peer state to be sent", service)
        broker.stop()
        for name in os.listdir(broker.workdir):  # a broker without its persistence file
            if name.endswith(".db"):
                os.unlink(broker.workdir / name)
        await until(lambda: not service.connected, "the service to notice the outage", service)
        broker.start()
        await until(lambda: service.connected and service.counters.resyncs >= 2,
                    "the service to reconnect", service)
        states = await retained_peers(broker, "the peer state re-published", 1)
        assert states[str(P1)]["since"] == "2026-12-05T10:00:00.000Z"  # the change's time


WILL_CLIENT = """
import asyncio, sys
from evpnd.mqtt.client import MqttService
from evpnd.mqtt.settings import MqttConfig

async def main() -> None:
    service = MqttService(MqttConfig.model_validate_json(sys.argv[1]))
    await service.start()
    await service.wait_connected(30)
    while service._retained_dirty or not service.synced.is_set():
        await asyncio.sleep(0.05)
    print("connected", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_the_will_says_offline_without_the_connect_time(broker: Broker) -> None:
    settings = make_config(broker, client_id="evpnd-will", keepalive=60)
    process = subprocess.Popen([sys.executable, "-c", WILL_CLIENT, settings.model_dump_json()],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None

    def wait_connected() -> None:  # the client's log lines come first
        for line in process.stdout:  # type: ignore[union-attr]
            if line == "connected\n":
                return
        raise AssertionError(f"the client ended: {process.stderr.read()}")  # type: ignore[union-attr]

    try:
        await asyncio.wait_for(asyncio.to_thread(wait_connected), WAIT)
        async with mqtt_client(broker, f"{PREFIX}/status") as late:
            online = await next_message(late, "the retained online status")
            assert body(online)["state"] == "online" and "time" in body(online)
            # The process dies without a DISCONNECT: the broker publishes the will.
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=WAIT)
            will = await next_message(late, "the will",
                                      lambda m: body(m)["state"] == "offline")
        assert json.loads(will.payload) == {  # type: ignore[arg-type]
            "state": "offline", "client_id": "evpnd-will", "reason": "connection-lost"}
        async with mqtt_client(broker, f"{PREFIX}/status") as later:
            retained = await next_message(later, "the retained will")
            assert retained.retain and "time" not in body(retained)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
