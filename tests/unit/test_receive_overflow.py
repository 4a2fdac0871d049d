"""Falling behind ExaBGP: the relay drops UPDATEs, the speaker says so, the daemon asks for
a route refresh. Real sockets between a real Relay and a real Speaker, in one process."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from evpnd import config
from evpnd.daemon import Daemon
from evpnd.speaker import relay
from evpnd.speaker.messages import ReceiveOverflow, SpeakerAttached
from evpnd.speaker.speaker import ReceiveQueue, Speaker
from evpnd.speaker.supervisor import RelayConnection
from tests.unit.test_relay_overflow import PEER_A, Sink, frame, route_body, state_line

CONFIG = """router_id: 192.0.2.1
asn: 65000
vtep: {{address: 192.0.2.1, device: eth0}}
state_dir: {state}
bgp:
  receive_buffer: 1048576
  peers:
    - {{address: 192.0.2.2, remote_asn: 65000}}
    - {{address: 192.0.2.3, remote_asn: 65000}}
vnis: [{{vni: 100}}]
"""


async def test_the_received_queue_holds_its_bound_in_bytes_and_events_always_fit() -> None:
    queue = ReceiveQueue(limit=100)
    await queue.put_line(b"x" * 60)
    await queue.put_line(b"y" * 60)  # past the bound now: the next line waits
    waiting = asyncio.create_task(queue.put_line(b"z" * 10))
    await asyncio.sleep(0.01)
    assert not waiting.done() and queue.size == 120 and queue.waits == 1
    queue.put_event(SpeakerAttached(False))  # never waits
    assert await queue.get_batch(1, 1 << 20) == [b"x" * 60]
    await asyncio.wait_for(waiting, 1)
    assert await queue.get_batch(10, 1 << 20) == [b"y" * 60, SpeakerAttached(False), b"z" * 10]
    assert queue.size == 0


async def test_a_daemon_far_behind_gets_an_overflow_event_naming_the_peers(
    tmp_path: Path,
) -> None:
    cfg = config.parse(CONFIG.format(state=tmp_path))
    speaker = Speaker(cfg, state_dir=tmp_path)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    loop = asyncio.get_running_loop()
    state = relay.Relay(Sink(), relay.MIN_BUFFER)  # type: ignore[arg-type]
    transport, _ = await loop.create_unix_connection(lambda: relay._FromDaemon(state), sock=ours)
    assert isinstance(transport, asyncio.Transport)
    state.attach(transport)
    reader, writer = await asyncio.open_unix_connection(sock=theirs, limit=1 << 22)
    session = speaker._attach(RelayConnection(reader, writer, 1, False, {}))
    batches = speaker.batches()
    try:
        assert await anext(batches) == [SpeakerAttached(False, ())]
        chunk = b"".join(frame(PEER_A, route_body(i)) for i in range(100))
        sent = 0
        for _ in range(1500):  # ~3 MB while nobody takes a batch
            state.from_exabgp(chunk)
            sent += 100
            await asyncio.sleep(0)
        state.from_exabgp(state_line(PEER_A, "up"))
        assert state.shed_lines > 0
        # The queue on the speaker's side stayed at its bound meanwhile.
        assert speaker._received.size <= cfg.bgp.receive_buffer + len(chunk)
        received, overflow = 0, None
        while overflow is None:
            for item in await asyncio.wait_for(anext(batches), 5):
                if isinstance(item, ReceiveOverflow):
                    overflow = item
                elif isinstance(item, bytes) and item.startswith(b"=evpn"):
                    received += 1
        assert overflow.peers == (PEER_A,) and overflow.lines == state.shed_lines
        assert received + overflow.lines == sent
        counters = speaker.counters
        assert counters.receive_overflows == 1 and counters.update_lines_dropped == overflow.lines
        assert counters.receive_waits >= 1

        # The daemon's answer: a route refresh for each peer named.
        daemon = Daemon(cfg)
        daemon._on_received([overflow, ReceiveOverflow(("192.0.2.2", "192.0.2.3"), 5, 500)])
        assert daemon.speaker.counters.refreshes == 3
    finally:
        session.reading.cancel()
        session.writing.cancel()
        transport.close()
        writer.close()
