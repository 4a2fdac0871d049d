"""`MqttService`: evpnd's MQTT client as an asyncio service (aiomqtt).

* Out: `publish(event)` never blocks and never raises. While connected,
  events wait in a bounded queue (`queue_size`) for the writer task; when the
  queue is full the **oldest** queued event is dropped for the new one
  (counted in `dropped` and `overflowed`: the newest say most about now);
  while the broker is down events are dropped and counted (`dropped`).
  Events are not stored for later: an outage loses the events that happened
  during it, and events still queued when the connection breaks are dropped
  too. State is not lost that way: per-VNI summaries (`retain_summary`) and
  per-peer session states (`retain_peer_state`), one message per topic and
  never in the event queue, are retained, and the latest one of each topic
  is re-published at every (re)connect, as is the `online` status. A late
  subscriber to `P/peers/+` learns every peer's state from the broker.
* In: `registrations()` yields `EndpointRegistered` / `EndpointUnregistered`
  from `P/endpoints/<vni>/<mac>`, de-duplicated and resynced at each
  reconnect (see `evpnd.mqtt.registry`). An invalid message is counted
  (`invalid_messages`), logged and answered with an error event on
  `P/events/error`; the service goes on. So is a new endpoint past
  `max_endpoints` (`refused_endpoints`, error `endpoint_limit`).
* Connection: one supervisor task connects, subscribes to
  `P/endpoints/+/+` at every connect, and on any failure reconnects after a
  delay that doubles from `reconnect_min` to `reconnect_max` (back to
  `reconnect_min` once a connection was made). A broker that refuses us
  (bad password, TLS failure) is just another failure: retried, reported in
  `status().last_error`. `status()` is the snapshot for `show status` and
  metrics.
* `P/status` is retained: `online` on connect (with its time), `offline` with
  reason `stopped` on stop, and as the MQTT will `offline` with reason
  `connection-lost` and no time (the will is handed over at connect: a time in
  it would be the connect's, stale by the time the broker publishes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Container, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import aiomqtt
import structlog

from evpnd.model import IPAddress
from evpnd.mqtt import codec
from evpnd.mqtt.codec import Event, Registration, RegistrationError
from evpnd.mqtt.registry import EndpointRegistry
from evpnd.mqtt.settings import MqttConfig, MqttTls

log = structlog.get_logger(__name__)

# Connection states shown by status().state.
NEW = "new"  # start() not called yet
CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"  # waiting before the next attempt
STOPPED = "stopped"

_EOF = object()
PUBLISH_WINDOW = 32  # events published and not yet acknowledged by the broker


@dataclass(slots=True)
class MqttCounters:
    connects: int = 0  # connections made (CONNACK accepted)
    reconnects: int = 0  # connections made after the first one
    connect_failures: int = 0  # attempts that did not get a connection
    published: int = 0  # messages the broker took (events, summaries, status)
    dropped: int = 0  # events not sent: broker down, queue full, lost at a disconnect
    overflowed: int = 0  # of `dropped`: the oldest queued events, pushed out by newer ones
    invalid_messages: int = 0  # refused registrations
    refused_endpoints: int = 0  # new endpoints past max_endpoints
    registrations: int = 0  # EndpointRegistered passed on
    unregistrations: int = 0  # EndpointUnregistered passed on
    resyncs: int = 0  # retained registrations fully re-read after a connect

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MqttStatus:
    state: str
    connected: bool
    broker: str
    client_id: str
    topic_prefix: str
    since: float  # time.time() of the last state change
    queued: int  # events waiting to be sent
    endpoints: int  # endpoints currently registered
    last_error: str | None
    last_error_at: float | None  # time.time()
    counters: MqttCounters

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counters"] = self.counters.as_dict()
        return data


def tls_context(tls: MqttTls) -> ssl.SSLContext:
    """Verify the broker (against `ca`, or the system store); present a client cert if set.

    Raises ValueError naming the `tls.*` setting whose file could not be used.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls.ca is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls.ca {tls.ca}: {_reason(exc)}") from None
    if tls.cert is not None and tls.key is not None:
        try:
            context.load_cert_chain(str(tls.cert), str(tls.key))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls.cert {tls.cert} / tls.key {tls.key}: {_reason(exc)}") from None
    if tls.insecure:
        context.check_hostname = False  # the chain is still verified
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def describe(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, aiomqtt.MqttError) and exc.__cause__ is not None and text in (
        "", "Disconnected during message iteration"
    ):
        text = f"{text}: {exc.__cause__}" if text else str(exc.__cause__)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class MqttService:
    """Publish evpnd's events, receive endpoint registrations; survive any broker."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        known_vnis: Callable[[], Container[int]] | None = None,
        connect_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        """`known_vnis`, when given, is asked at each registration for the VNIs
        this host serves; registrations for other VNIs are refused (unknown-vni)."""
        self.config = config
        self.known_vnis = known_vnis
        self.connect_timeout = connect_timeout
        self.stop_timeout = stop_timeout
        self.counters = MqttCounters()
        self._prefix = config.topic_prefix
        self._state = NEW
        self._since = time.time()
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._events: deque[tuple[str, bytes]] = deque()
        # Retained state by topic (summaries, peer states); None: clear it on the broker.
        self._retained: dict[str, bytes | None] = {}
        self._retained_dirty: dict[str, None] = {}  # ordered set of topics to (re)send
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._up = asyncio.Event()
        self._changes: asyncio.Queue[object] = asyncio.Queue()
        self._registry = EndpointRegistry(config.max_endpoints)
        # Set once the retained registrations of the first connection were all
        # read (and passed on to registrations()).
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dropped_in_outage = 0

    # ------------------------------------------------------------------ API

    @property
    def connected(self) -> bool:
        return self._state == CONNECTED

    def status(self) -> MqttStatus:
        return MqttStatus(
            state=self._state,
            connected=self.connected,
            broker=self.config.broker,
            client_id=self.config.client_id,
            topic_prefix=self._prefix,
            since=self._since,
            queued=len(self._events),
            endpoints=len(self._registry),
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            counters=MqttCounters(**self.counters.as_dict()),
        )

    def registered(self) -> dict[tuple[int, str], codec.EndpointRegistered]:
        """The endpoints registered now, by (vni, mac)."""
        return self._registry.endpoints()

    async def start(self) -> None:
        """Start connecting in the background; returns at once (the broker may be down)."""
        if self._task is not None:
            raise RuntimeError("an MqttService starts once")
        self._task = asyncio.create_task(self._supervise(), name="mqtt")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Until connected (raises TimeoutError after `timeout` seconds)."""
        await asyncio.wait_for(self._up.wait(), timeout)

    def publish(self, event: Event) -> bool:
        """Queue an event; False when it was dropped (not connected).

        A full queue drops its oldest event to take this one.
        """
        try:
            if self._state != CONNECTED or self._stopping.is_set():
                self._drop(1)
                return False
            item = (event.topic(self._prefix), event.payload())
            if len(self._events) >= self.config.queue_size:
                self._events.popleft()
                self._drop(1)
                self.counters.overflowed += 1
                if self.counters.overflowed & (self.counters.overflowed - 1) == 0:
                    log.warning("mqtt queue full: dropping the oldest events",
                                queue_size=self.config.queue_size,
                                overflowed=self.counters.overflowed)  # fmt: skip
            self._events.append(item)
            self._wakeup.set()
            return True
        except Exception:
            log.exception("mqtt publish failed", mqtt_event=getattr(event, "name", None))
            self._drop(1)
            return False

    def retain_summary(self, vni: int, summary: Mapping[str, Any]) -> bool:
        """Set the retained `P/summary/<vni>` (the payload gets `vni` and `time`).

        Only the latest summary per VNI is kept; it is sent now if connected
        and again after every reconnect. False if `summary` is not JSON-able.
        """
        try:
            payload = codec.summary_payload(vni, summary)
        except (TypeError, ValueError):
            log.exception("mqtt summary is not JSON", vni=vni)
            return False
        self._retain(codec.summary_topic(self._prefix, vni), payload)
        return True

    def clear_summary(self, vni: int) -> None:
        """Remove the retained summary of a VNI (it left the config)."""
        self._retain(codec.summary_topic(self._prefix, vni), None)

    def retain_peer_state(self, peer: IPAddress | str, state: str, since: datetime,
                          **fields: Any) -> bool:
        """Set the retained `P/peers/<address>` (codec.peer_state_payload's fields); like a
        summary, only the latest per peer is kept, sent now and after every reconnect."""
        try:
            payload = codec.peer_state_payload(peer, state, since, **fields)
        except (TypeError, ValueError):
            log.exception("mqtt peer state is not JSON", peer=str(peer))
            return False
        self._retain(codec.peer_topic(self._prefix, peer), payload)
        return True

    def clear_peer_state(self, peer: IPAddress | str) -> None:
        """Remove the retained state of a peer (it left the config)."""
        self._retain(codec.peer_topic(self._prefix, peer), None)

    def pending(self) -> int:
        """Registration changes passed on and not yet taken by registrations()."""
        return self._changes.qsize()

    async def registrations(self) -> AsyncIterator[Registration]:
        """Registration changes, in order, until stop(). One consumer."""
        while True:
            item = await self._changes.get()
            if item is _EOF:
                self._changes.put_nowait(_EOF)
                return
            assert isinstance(item, codec.EndpointRegistered | codec.EndpointUnregistered)
            yield item

    async def stop(self) -> None:
        """Publish `offline`, disconnect, end registrations(); at most ~stop_timeout s."""
        if self._state == STOPPED:
            return
        self._stopping.set()
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            if self._state != CONNECTED:
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), self.stop_timeout)
            except TimeoutError:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._set_state(STOPPED)
        self._drop(len(self._events))
        self._events.clear()
        self._changes.put_nowait(_EOF)
        log.info("mqtt stopped", **self.counters.as_dict())

    # ------------------------------------------------------------ internals

    def _drop(self, count: int) -> None:
        self.counters.dropped += count
        if self._state != CONNECTED:
            self._dropped_in_outage += count

    def _retain(self, topic: str, payload: bytes | None) -> None:
        self._retained[topic] = payload
        self._retained_dirty[topic] = None
        self._wakeup.set()

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._since = time.time()

    def _error(self, message: str) -> None:
        self._last_error = message
        self._last_error_at = time.time()

    def _client(self) -> aiomqtt.Client:
        cfg = self.config
        will = aiomqtt.Will(
            codec.status_topic(self._prefix),
            codec.will_payload(cfg.client_id),
            qos=cfg.qos,
            retain=True,
        )
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            keepalive=cfg.keepalive,
            timeout=self.connect_timeout,
            will=will,
            clean_session=True,
            tls_context=tls_context(cfg.tls) if cfg.tls is not None else None,
        )
        # aiomqtt warns above this many unacknowledged calls; the window is ours.
        client.pending_calls_threshold = PUBLISH_WINDOW + 8
        return client

    async def _supervise(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min
        while not self._stopping.is_set():
            self._set_state(CONNECTING)
            established = False
            try:
                client = self._client()
                async with client:
                    established = True
                    await self._connected(client)
            except asyncio.CancelledError:
                self._lost()
                raise
            except (aiomqtt.MqttError, OSError, ValueError) as exc:
                self._error(describe(exc))
            except Exception as exc:  # a bug here must not end the service
                log.exception("mqtt session failed")
                self._error(describe(exc))
            self._lost()
            if self._stopping.is_set():
                return
            if established:
                delay = cfg.reconnect_min
                log.warning("mqtt connection lost", broker=cfg.broker, error=self._last_error,
                            retry_in=delay)
            else:
                self.counters.connect_failures += 1
                log.warning("mqtt broker unreachable", broker=cfg.broker,
                            error=self._last_error, retry_in=delay,
                            failures=self.counters.connect_failures)
            self._set_state(DISCONNECTED)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if not established:
                delay = min(delay * 2, cfg.reconnect_max)

    def _lost(self) -> None:
        self._up.clear()
        self._registry.abort_sync()
        if self._events:
            self.counters.dropped += len(self._events)
            self._dropped_in_outage += len(self._events)
            self._events.clear()
        if self._state == CONNECTED:
            self._set_state(DISCONNECTED)

    async def _connected(self, client: aiomqtt.Client) -> None:
        cfg = self.config
        self.counters.connects += 1
        if self.counters.connects > 1:
            self.counters.reconnects += 1
        token = secrets.token_hex(8)
        sync_topic = f"{self._prefix}/sync/{token}"
        # Subscribe first: the broker queues the retained registrations for us
        # when it takes the subscription. The marker published after the second
        # SUBACK comes back behind them, which closes the resync.
        self._registry.begin_sync()
        await client.subscribe(codec.endpoints_filter(self._prefix), qos=cfg.qos)
        await client.subscribe(sync_topic, qos=cfg.qos)
        self._set_state(CONNECTED)
        self._up.set()
        dropped, self._dropped_in_outage = self._dropped_in_outage, 0
        log.info("mqtt connected", broker=cfg.broker, client_id=cfg.client_id,
                 prefix=self._prefix, connects=self.counters.connects,
                 dropped_while_down=dropped)
        await client.publish(codec.status_topic(self._prefix),
                             codec.status_payload("online", cfg.client_id), qos=cfg.qos,
                             retain=True)
        self.counters.published += 1
        await client.publish(sync_topic, token.encode(), qos=cfg.qos)
        for topic in self._retained:
            self._retained_dirty[topic] = None
        self._wakeup.set()

        reader = asyncio.create_task(self._read(client, sync_topic, token), name="mqtt-read")
        writer = asyncio.create_task(self._write(client), name="mqtt-write")
        stopping = asyncio.create_task(self._stopping.wait(), name="mqtt-stop")
        tasks = {reader, writer, stopping}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done and writer not in done:
                # A clean stop: let the writer send what is queued (it returns
                # once the queue is empty), within half the stop timeout.
                reader.cancel()
                self._wakeup.set()
                await asyncio.wait({writer}, timeout=self.stop_timeout / 2)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if stopping in done:
            # "offline" by hand: the will is only for connections that die.
            self._set_state(STOPPED)
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.publish(codec.status_topic(self._prefix),
                                     codec.status_payload("offline", cfg.client_id,
                                                          reason="stopped"),
                                     qos=cfg.qos, retain=True, timeout=self.stop_timeout / 4)
                self.counters.published += 1
            return
        for task in (reader, writer):
            if task in done and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        raise aiomqtt.MqttError("session ended")

    async def _read(self, client: aiomqtt.Client, sync_topic: str, token: str) -> None:
        async for message in client.messages:
            try:
                self._on_message(message, sync_topic, token)
            except Exception:  # one bad message must not end the session
                log.exception("mqtt message handling failed", topic=str(message.topic))

    def _on_message(self, message: aiomqtt.Message, sync_topic: str, token: str) -> None:
        topic = message.topic.value
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = b"" if payload is None else str(payload).encode()
        if topic == sync_topic:
            if bytes(payload) == token.encode() and self._registry.syncing:
                gone = self._registry.end_sync()
                self.counters.resyncs += 1
                for unreg in gone:
                    self._pass_on(unreg, reason="gone-from-broker")
                self.synced.set()
                log.info("mqtt registrations synced", endpoints=len(self._registry),
                         unregistered=len(gone))
            return
        known = None
        if self.known_vnis is not None:
            try:
                known = self.known_vnis()
            except Exception:
                log.exception("mqtt known_vnis callback failed")
        result = codec.parse_registration(self._prefix, topic, payload, known_vnis=known)
        if isinstance(result, RegistrationError):
            self.counters.invalid_messages += 1
            log.warning("mqtt registration refused", topic=topic, reason=result.reason,
                        detail=result.detail)
            self.publish(codec.invalid_registration(result))
            return
        if not self._registry.admits(result):
            self.counters.refused_endpoints += 1
            limit = self._registry.max_endpoints
            log.warning("mqtt registration refused: endpoint limit reached", vni=result.vni,
                        mac=result.mac, max_endpoints=limit)  # fmt: skip
            self.publish(codec.error(
                "endpoint_limit", f"{limit} endpoints registered already (mqtt.max_endpoints)",
                vni=result.vni, mac=result.mac, max_endpoints=limit,
            ))  # fmt: skip
            return
        change = self._registry.apply(result)
        if change is not None:
            self._pass_on(change, reason="deleted" if payload else "cleared")

    def _pass_on(self, change: Registration, *, reason: str) -> None:
        self._changes.put_nowait(change)
        if isinstance(change, codec.EndpointRegistered):
            self.counters.registrations += 1
            log.info("mqtt endpoint registered", vni=change.vni, mac=change.mac,
                     ip=None if change.ip is None else str(change.ip), sticky=change.sticky)
            self.publish(codec.endpoint_registered(change))
        else:
            self.counters.unregistrations += 1
            log.info("mqtt endpoint unregistered", vni=change.vni, mac=change.mac, reason=reason)
            self.publish(codec.endpoint_unregistered(change, reason=reason))

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            await self._flush(client)
            if self._stopping.is_set():
                return
            await self._wakeup.wait()
            self._wakeup.clear()

    async def _flush(self, client: aiomqtt.Client) -> None:
        """Send the changed retained state (summaries, peer states), then the queued
        events, one at a time."""
        qos = self.config.qos
        while self._retained_dirty or self._events:
            while self._retained_dirty:
                topic = next(iter(self._retained_dirty))
                del self._retained_dirty[topic]
                payload = self._retained.get(topic)
                try:
                    await client.publish(topic, payload or b"", qos=qos, retain=True)
                except BaseException:
                    self._retained_dirty[topic] = None  # state: sent again after reconnect
                    raise
                self.counters.published += 1
                if payload is None and topic in self._retained and self._retained[topic] is None:
                    del self._retained[topic]  # cleared on the broker: nothing to re-send
            if self._events:
                await self._send_events(client)

    async def _send_events(self, client: aiomqtt.Client) -> None:
        """Publish queued events with up to PUBLISH_WINDOW awaiting their ack.

        One at a time, QoS 1 manages about 1,300 events/s on loopback (one
        round trip each); the window keeps the order (paho sends in call order)
        and lifts that several times.
        """
        qos = self.config.qos
        pending: set[asyncio.Task[None]] = set()
        try:
            while self._events or pending:
                while self._events and len(pending) < PUBLISH_WINDOW:
                    topic, payload = self._events.popleft()
                    pending.add(asyncio.create_task(client.publish(topic, payload, qos=qos)))
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failure: BaseException | None = None
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        self.counters.published += 1
                    else:
                        self._drop(1)
                        failure = failure or exc
                if failure is not None:
                    raise failure
        finally:
            for task in pending:
                task.cancel()
            if pending:
                self._drop(len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
