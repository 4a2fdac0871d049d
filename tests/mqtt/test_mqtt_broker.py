"""MqttService against a real mosquitto on a loopback port (test tier 5).

No timing assertions: every wait is bounded and says what it waited for.
"Nothing arrived" is shown with a barrier instead of a sleep: a marker
message published after the action must arrive first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from evpnd.mqtt import codec
from evpnd.mqtt.client import CONNECTED, MqttService, tls_context
from evpnd.mqtt.codec import EndpointRegistered, EndpointUnregistered
from evpnd.mqtt.settings import MqttConfig, MqttTls
from tests.conftest import require_program
from tests.mqtt.conftest import Broker

PREFIX = "evpnd/test-host"
WAIT = 15.0  # seconds; a bound, not an expectation

pytestmark = pytest.mark.mqtt


# ---------------------------------------------------------------- helpers


def make_config(broker: Broker, **overrides: Any) -> MqttConfig:
    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": "evpnd-test",
        "topic_prefix": PREFIX,
        "qos": 1,
        "keepalive": 5,
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
    }
    values.update(overrides)
    return MqttConfig(**values)


async def until(predicate: Callable[[], bool], what: str, service: MqttService | None = None,
                timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            state = service.status().as_dict() if service is not None else None
            pytest.fail(f"timed out after {timeout}s waiting for {what}; service: {state}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(config: MqttConfig, **kwargs: Any) -> AsyncIterator[MqttService]:
    service = MqttService(config, **kwargs)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def connected(config: MqttConfig, **kwargs: Any) -> AsyncIterator[MqttService]:
    async with running(config, **kwargs) as service:
        await until(lambda: service.connected and service.counters.resyncs >= 1,
                    "the service to connect and read the retained registrations", service)
        yield service


class Changes:
    """The service's registrations() stream, read by a background task."""

    def __init__(self, service: MqttService) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(service))

    async def _pump(self, service: MqttService) -> None:
        async for change in service.registrations():
            self.queue.put_nowait(change)

    async def next(self, what: str) -> object:
        try:
            return await asyncio.wait_for(self.queue.get(), WAIT)
        except TimeoutError:
            pytest.fail(f"timed out after {WAIT}s waiting for {what}")

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def changes_of(service: MqttService) -> AsyncIterator[Changes]:
    changes = Changes(service)
    try:
        yield changes
    finally:
        await changes.close()


@contextlib.asynccontextmanager
async def mqtt_client(broker: Broker, *topics: str, **kwargs: Any) -> AsyncIterator[
    aiomqtt.Client
]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=None, timeout=WAIT,
                              **kwargs) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, what: str,
                       accept: Callable[[aiomqtt.Message], bool] = lambda m: True
                       ) -> aiomqtt.Message:
    async def first() -> aiomqtt.Message:
        async for message in client.messages:
            if accept(message):
                return message
        raise AssertionError("message stream ended")

    try:
        return await asyncio.wait_for(first(), WAIT)
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT}s waiting for {what}")


async def register(client: aiomqtt.Client, vni: int, mac: str, payload: dict | bytes | None,
                   *, retain: bool = True) -> None:
    body = payload if isinstance(payload, bytes) else (
        b"" if payload is None else json.dumps(payload).encode())
    await client.publish(f"{PREFIX}/endpoints/{vni}/{mac}", body, qos=1, retain=retain)


async def barrier(client: aiomqtt.Client, what: str) -> list[aiomqtt.Message]:
    """Publish a marker to ourselves; return every message that arrived before it."""
    topic = f"test/barrier/{id(client)}"
    await client.subscribe(topic, qos=1)
    await client.publish(topic, b"marker", qos=1)
    before: list[aiomqtt.Message] = []

    async def drain() -> None:
        async for message in client.messages:
            if message.topic.value == topic:
                return
            before.append(message)

    try:
        await asyncio.wait_for(drain(), WAIT)
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT}s waiting for the barrier after {what}")
    await client.unsubscribe(topic)
    return before


def body(message: aiomqtt.Message) -> dict[str, Any]:
    assert isinstance(message.payload, bytes | bytearray), message.payload
    return json.loads(message.payload)


# ------------------------------------------------------------------ events


async def test_events_arrive_with_their_json(broker: Broker) -> None:
    async with mqtt_client(broker, f"{PREFIX}/events/#") as sub, \
            connected(make_config(broker)) as service:
        assert service.publish(codec.peer_up("192.0.2.1", asn=65000))
        assert service.publish(codec.local_mac_learned(100, "02:AA:00:00:00:01", port="veth1"))
        assert service.publish(codec.remote_mac_moved(
            100, "02:aa:00:00:00:02", vtep=ip_address("192.0.2.12"),
            previous_vtep="192.0.2.13", seq=3, peer="192.0.2.1"))
        assert service.publish(codec.exabgp_restarted(restarts=2, reason="exited with 1"))

        got = [await next_message(sub, f"event {i}") for i in range(4)]
        assert [m.topic.value for m in got] == [
            f"{PREFIX}/events/peer_up", f"{PREFIX}/events/local_mac_learned",
            f"{PREFIX}/events/remote_mac_moved", f"{PREFIX}/events/exabgp_restarted"]
        assert not any(m.retain for m in got)
        up, learned, moved, restarted = (body(m) for m in got)
        assert up["event"] == "peer_up" and up["peer"] == "192.0.2.1" and up["asn"] == 65000
        assert up["time"].endswith("Z")
        assert learned == {**learned, "event": "local_mac_learned", "vni": 100,
                           "mac": "02:aa:00:00:00:01", "port": "veth1", "ip": None,
                           "source": "kernel"}
        assert moved == {**moved, "vtep": "192.0.2.12", "previous_vtep": "192.0.2.13",
                         "seq": 3, "peer": "192.0.2.1"}
        assert restarted["restarts"] == 2
        await until(lambda: service.counters.published >= 5, "the publish counter", service)
        assert service.counters.dropped == 0


async def test_a_burst_beyond_the_queue_drops_the_oldest_and_counts_them(
    broker: Broker,
) -> None:
    async with mqtt_client(broker, f"{PREFIX}/events/#") as sub, \
            connected(make_config(broker, queue_size=5)) as service:
        # No await between the calls: the writer cannot run, the queue fills.
        accepted = [service.publish(codec.peer_up(f"192.0.2.{i}")) for i in range(1, 101)]
        assert accepted == [True] * 100
        assert service.counters.dropped == 95 and service.counters.overflowed == 95
        assert service.status().queued == 5
        # A summary is state, not an event: it is never pushed out.
        assert service.retain_summary(100, {"local_macs": 7})
        got = [body(await next_message(sub, f"queued event {i}"))["peer"] for i in range(5)]
        assert got == [f"192.0.2.{i}" for i in range(96, 101)]  # the newest five
        assert await barrier(sub, "the five queued events") == []
        async with mqtt_client(broker, f"{PREFIX}/summary/100") as late:
            summary = await next_message(late, "the retained summary")
            assert body(summary)["local_macs"] == 7


async def test_endpoints_past_the_limit_are_refused_and_reported(broker: Broker) -> None:
    macs = [f"02:00:00:00:03:{i:02x}" for i in range(4)]
    async with connected(make_config(broker, max_endpoints=2)) as service, \
            changes_of(service) as changes, \
            mqtt_client(broker, f"{PREFIX}/events/error") as orch:
        for mac in macs:
            await register(orch, 100, mac, {"mac": mac}, retain=False)
        assert await changes.next("the first") == EndpointRegistered(100, macs[0])
        assert await changes.next("the second") == EndpointRegistered(100, macs[1])
        errors = [body(await next_message(orch, f"limit error {i}")) for i in range(2)]
        assert [(e["error"], e["mac"], e["max_endpoints"]) for e in errors] == [
            ("endpoint_limit", macs[2], 2), ("endpoint_limit", macs[3], 2)]
        assert service.counters.refused_endpoints == 2
        assert set(service.registered()) == {(100, macs[0]), (100, macs[1])}
        # A change to a registered endpoint still fits; once one goes, a new one fits.
        await register(orch, 100, macs[0], {"mac": macs[0], "sticky": True}, retain=False)
        assert await changes.next("the change") == EndpointRegistered(100, macs[0], None, True)
        await register(orch, 100, macs[1], {"mac": macs[1], "delete": True}, retain=False)
        assert await changes.next("the delete") == EndpointUnregistered(100, macs[1])
        await register(orch, 100, macs[2], {"mac": macs[2]}, retain=False)
        assert await changes.next("the third, now") == EndpointRegistered(100, macs[2])
        assert service.counters.refused_endpoints == 2


async def test_summary_and_status_are_retained(broker: Broker) -> None:
    async with connected(make_config(broker)) as service:
        assert service.retain_summary(100, {"local_macs": 2, "remote_macs": 5,
                                            "vteps": [ip_address("192.0.2.12")]})
        assert service.retain_summary(200, {"local_macs": 0})
        service.clear_summary(200)
        assert service.retain_summary(100, {"local_macs": 3, "remote_macs": 5,
                                            "vteps": ["192.0.2.12"]})
        # Once the broker has the last summary (a witness sees it, retained or live:
        # the service sends it on its own time), a late subscriber gets it retained.
        async with mqtt_client(broker) as witness:
            await witness.subscribe(f"{PREFIX}/summary/100", qos=1)
            await next_message(witness, "the last summary of VNI 100 on the broker",
                               lambda m: body(m)["local_macs"] == 3)
        async with mqtt_client(broker) as late:
            await late.subscribe(f"{PREFIX}/summary/100", qos=1)
            message = await next_message(late, "the retained summary of VNI 100",
                                         lambda m: body(m)["local_macs"] == 3)
            assert message.retain
            assert body(message) == {**body(message), "vni": 100, "remote_macs": 5,
                                     "vteps": ["192.0.2.12"]}
            await late.subscribe(f"{PREFIX}/status", qos=1)
            status = await next_message(late, "the retained status",
                                        lambda m: m.topic.value == f"{PREFIX}/status")
            assert status.retain and body(status)["state"] == "online"
        async with mqtt_client(broker, f"{PREFIX}/summary/200") as late:
            assert await barrier(late, "subscribing to the cleared summary") == []
    # A clean stop leaves "offline" retained.
    async with mqtt_client(broker, f"{PREFIX}/status") as late:
        status = await next_message(late, "the retained offline status")
        assert body(status)["state"] == "offline"


# ----------------------------------------------------------- registrations


async def test_registration_then_clear_then_delete(broker: Broker) -> None:
    mac = "02:00:00:00:01:01"
    async with connected(make_config(broker)) as service, changes_of(service) as changes, \
            mqtt_client(broker, f"{PREFIX}/events/#") as orch:
        await register(orch, 100, mac, {"mac": mac})
        assert await changes.next("the registration") == EndpointRegistered(100, mac)
        await register(orch, 100, mac, {"mac": mac.upper(), "ip": "10.100.0.5", "sticky": True})
        assert await changes.next("the changed registration") == EndpointRegistered(
            100, mac, ip_address("10.100.0.5"), True)
        # The same registration again changes nothing and is not passed on.
        await register(orch, 100, mac, {"mac": mac, "ip": "10.100.0.5", "sticky": True})
        await register(orch, 100, mac, None)  # clearing the retained message
        assert await changes.next("the unregistration") == EndpointUnregistered(100, mac)
        assert service.registered() == {}

        await register(orch, 200, mac, {"mac": mac}, retain=False)
        assert await changes.next("a non-retained registration") == EndpointRegistered(200, mac)
        await register(orch, 200, mac, {"mac": mac, "delete": True}, retain=False)
        assert await changes.next("the explicit delete") == EndpointUnregistered(200, mac)

        names = [body(await next_message(orch, f"registration event {i}"))["event"]
                 for i in range(4)]
        assert names == ["endpoint_registered", "endpoint_registered",
                         "endpoint_unregistered", "endpoint_registered"]
        assert service.counters.registrations == 3
        assert service.counters.unregistrations == 2


async def test_invalid_message_is_reported_and_the_service_goes_on(broker: Broker) -> None:
    async with connected(make_config(broker), known_vnis=lambda: {100}) as service, \
            changes_of(service) as changes, \
            mqtt_client(broker, f"{PREFIX}/events/error") as orch:
        await register(orch, 100, "02:00:00:00:02:01", b"{not json", retain=False)
        error = body(await next_message(orch, "the error event"))
        assert error == {**error, "event": "error", "error": "invalid_registration",
                         "reason": "not-json", "vni": 100, "mac": "02:00:00:00:02:01",
                         "topic": f"{PREFIX}/endpoints/100/02:00:00:00:02:01",
                         "payload": "{not json"}
        await register(orch, 100, "02:00:00:00:02:01", {"mac": "02:00:00:00:02:02"},
                       retain=False)
        assert body(await next_message(orch, "the mismatch error"))["reason"] == "mac-mismatch"
        await register(orch, 300, "02:00:00:00:02:01", {"mac": "02:00:00:00:02:01"},
                       retain=False)
        assert body(await next_message(orch, "the unknown-VNI error"))["reason"] == "unknown-vni"
        await register(orch, 100, "02:00:00:00:02:03", {"mac": "02:00:00:00:02:03"},
                       retain=False)
        assert await changes.next("a valid registration after the bad ones") == \
            EndpointRegistered(100, "02:00:00:00:02:03")
        assert service.connected
        assert service.counters.invalid_messages == 3


# ------------------------------------------------------------------ outages


async def test_broker_down_then_back(broker: Broker) -> None:
    kept = "02:00:00:00:03:01"
    async with connected(make_config(broker)) as service, changes_of(service) as changes:
        async with mqtt_client(broker) as orch:
            await register(orch, 100, kept, {"mac": kept})
        assert await changes.next("the registration before the outage") == \
            EndpointRegistered(100, kept)

        broker.stop()
        await until(lambda: not service.connected, "the service to notice the outage", service)
        status = service.status()
        assert status.state in ("disconnected", "connecting")
        assert status.last_error
        before = service.counters.dropped
        # Never blocks, never raises: dropped and counted.
        results = [service.publish(codec.peer_down("192.0.2.1", reason="test"))
                   for _ in range(500)]
        assert results == [False] * 500
        assert service.counters.dropped == before + 500
        # While down the endpoint stays registered (evpnd keeps forwarding).
        assert set(service.registered()) == {(100, kept)}
        await until(lambda: service.counters.connect_failures >= 1,
                    "a failed reconnection attempt", service)

        broker.start()  # same port, retained messages persisted
        await until(lambda: service.connected and service.counters.resyncs >= 2,
                    "the service to reconnect and resync", service)
        assert service.counters.reconnects == 1
        assert set(service.registered()) == {(100, kept)}
        new = "02:00:00:00:03:02"
        async with mqtt_client(broker, f"{PREFIX}/events/#") as orch:
            await register(orch, 100, new, {"mac": new})
            # The re-delivered retained registration was not passed on again.
            assert await changes.next("a registration after the reconnect") == \
                EndpointRegistered(100, new)
            assert service.publish(codec.peer_up("192.0.2.1"))
            await next_message(orch, "an event after the reconnect",
                               lambda m: body(m)["event"] == "peer_up")


async def test_registration_cleared_while_disconnected_is_withdrawn(broker: Broker) -> None:
    gone, stays = "02:00:00:00:04:01", "02:00:00:00:04:02"
    config = make_config(broker, reconnect_min=1.0, reconnect_max=1.0)
    async with connected(config) as service, changes_of(service) as changes:
        async with mqtt_client(broker) as orch:
            await register(orch, 100, gone, {"mac": gone})
            await register(orch, 100, stays, {"mac": stays})
        assert {await changes.next("registration 1"), await changes.next("registration 2")} == \
            {EndpointRegistered(100, gone), EndpointRegistered(100, stays)}
        broker.stop()
        await until(lambda: not service.connected, "the service to notice the outage", service)
        broker.start()
        # Usually before the service is back (reconnect_min=1 s); if it is back
        # already, the clear arrives live. Either way it must be unregistered.
        async with mqtt_client(broker) as orch:
            await register(orch, 100, gone, None)
        assert await changes.next("the unregistration of the cleared endpoint") == \
            EndpointUnregistered(100, gone)
        await until(lambda: service.counters.resyncs >= 2, "the resync", service)
        assert set(service.registered()) == {(100, stays)}


# --------------------------------------------------------------- TLS + auth


def _openssl(*args: str | Path, cwd: Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(map(str, args))}:\n{result.stderr}"


def make_pki(where: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=evpnd test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=where)
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (where / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=evpnd test {name}", cwd=where)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=where)


@pytest.fixture
def tls_broker(mosquitto_program: str, tmp_path: Path) -> Any:
    require_program("openssl", "openssl")
    passwd = require_program("mosquitto_passwd", "mosquitto")
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    password_file = pki / "passwd"
    result = subprocess.run([passwd, "-c", "-b", str(password_file), "evpnd", "s3cret pass"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(mosquitto_program, workdir, anonymous=False, extra=(
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        f"require_certificate true\npassword_file {password_file}\n"))
    broker.start()
    try:
        yield broker, pki
    finally:
        broker.stop()


def tls_settings(pki: Path) -> MqttTls:
    return MqttTls(ca=pki / "ca.crt", cert=pki / "client.crt", key=pki / "client.key")


async def test_tls_with_password(tls_broker: tuple[Broker, Path]) -> None:
    broker, pki = tls_broker
    tls = tls_settings(pki)
    config = make_config(broker, tls=tls, username="evpnd", password="s3cret pass")
    async with mqtt_client(broker, f"{PREFIX}/events/#", tls_context=tls_context(tls),
                           username="evpnd", password="s3cret pass") as sub, \
            connected(config) as service:
        assert service.status().broker == f"mqtts://127.0.0.1:{broker.port}"
        assert service.publish(codec.peer_up("192.0.2.1"))
        assert body(await next_message(sub, "the event over TLS"))["event"] == "peer_up"
        async with changes_of(service) as changes:
            await register(sub, 100, "02:00:00:00:05:01", {"mac": "02:00:00:00:05:01"})
            assert await changes.next("a registration over TLS") == \
                EndpointRegistered(100, "02:00:00:00:05:01")


async def _refused(config: MqttConfig, what: str, *fragments: str) -> None:
    async with running(config) as service:
        await until(lambda: service.counters.connect_failures >= 2,
                    f"two refused attempts ({what})", service)
        status = service.status()
        assert status.state != CONNECTED
        assert status.counters.connects == 0
        assert status.last_error is not None
        assert any(f.lower() in status.last_error.lower() for f in fragments), status.last_error
        assert service.publish(codec.peer_up("192.0.2.1")) is False


async def test_tls_wrong_password_is_an_error_state(tls_broker: tuple[Broker, Path]) -> None:
    broker, pki = tls_broker
    await _refused(make_config(broker, tls=tls_settings(pki), username="evpnd",
                               password="wrong"),
                   "wrong password", "not authori", "bad user")


async def test_tls_unknown_ca_is_an_error_state(tls_broker: tuple[Broker, Path],
                                                tmp_path: Path) -> None:
    broker, pki = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    make_pki(other)
    tls = MqttTls(ca=other / "ca.crt", cert=pki / "client.crt", key=pki / "client.key")
    await _refused(make_config(broker, tls=tls, username="evpnd", password="s3cret pass"),
                   "untrusted broker certificate", "certificate verify failed")


async def test_missing_ca_file_is_an_error_state(broker: Broker, tmp_path: Path) -> None:
    tls = MqttTls(ca=tmp_path / "nope.crt")
    await _refused(make_config(broker, tls=tls), "missing CA file", "tls.ca", "no such file")
