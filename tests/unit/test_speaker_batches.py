"""The speaker's received batches give the event loop a turn between them, and
each is small enough that the daemon's work on it keeps the loop only briefly.

Found by the chaos suite (C3, a peer sending 1,000,000 routes): with the
received queue full, the daemon drained it batch after batch without the loop
ever running anything else, and the event-loop lag reached seconds. Then, with
a turn between batches, one batch (2 MiB of frame text, three 1 MiB frame
lines: ~66k routes) still kept the loop 0.5 to 1 s: the lag's p99 was 2.5 s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench import bgpsend
from evpnd import config
from evpnd.speaker.messages import RouteUpdate
from evpnd.speaker.rawreceive import frame_line, scan
from evpnd.speaker.speaker import BATCH_BYTES, BATCH_LINES, ReceiveQueue, Speaker
from evpnd.speaker.wire import WireDecoder

CONFIG = """router_id: 192.0.2.1
asn: 65000
vtep: {{address: 192.0.2.1, device: eth0}}
state_dir: {state}
vnis: [{{vni: 100}}]
"""


async def test_other_tasks_run_between_two_batches(tmp_path: Path) -> None:
    speaker = Speaker(config.parse(CONFIG.format(state=tmp_path)), state_dir=tmp_path)
    for i in range(3 * BATCH_LINES):  # three batches' worth, all ready at once
        await speaker._received.put_line(b"=evpn 192.0.2.2 line%d" % i)
    turns = 0

    async def other() -> None:  # another task of the loop: a timer, a control client
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(other())
    try:
        await asyncio.sleep(0)
        seen = []
        batches = speaker.batches()
        for _ in range(3):
            batch = await anext(batches)
            assert len(batch) == BATCH_LINES
            seen.append(turns)
        assert seen[0] < seen[1] < seen[2], seen
    finally:
        task.cancel()


async def test_a_batch_holds_at_most_its_bytes_unless_one_line_is_longer() -> None:
    queue = ReceiveQueue(limit=1 << 30)
    line = b"=evpn 192.0.2.2 " + b"A" * (BATCH_BYTES // 3)
    for _ in range(7):
        await queue.put_line(line)
    await queue.put_line(b"=evpn 192.0.2.2 " + b"B" * (2 * BATCH_BYTES))
    sizes = []
    while len(queue):
        batch = await queue.get_batch(BATCH_LINES, BATCH_BYTES)
        sizes.append([len(item) for item in batch])  # type: ignore[arg-type]
    third = len(line)
    # Two thirds and a bit fit; a third line would go past the bound.
    assert sizes == [[third] * 2, [third] * 2, [third] * 2, [third], [2 * BATCH_BYTES + 16]]


# The most routes one batch may carry: the daemon decodes and applies a batch
# without a turn of its event loop, at 7-12 us a route (bench/pipeline.py).
MAX_BATCH_ROUTES = 8192


async def test_a_flood_of_large_updates_comes_in_batches_of_a_few_thousand_routes(
    tmp_path: Path,
) -> None:
    # bench.bgpsend's UPDATEs packed as a route reflector packs them (100 MAC routes
    # each), framed as ExaBGP's raw receive hook frames them, all ready at once.
    announce, withdraw = bgpsend.encode(30_000, 40, 65000, 100, per_update=100)
    speaker = Speaker(config.parse(CONFIG.format(state=tmp_path)), state_dir=tmp_path)
    for stream in (announce, withdraw):
        pos = 0
        while pos < len(stream):
            spans, pos = scan(stream, pos, len(stream), bgpsend.MAX_MESSAGE)
            await speaker._received.put_line(frame_line("192.0.2.2", stream, spans))
    decoder = WireDecoder()
    per_batch = []
    batches = speaker.batches()
    while len(speaker._received):
        routes = 0
        for line in await anext(batches):
            assert isinstance(line, bytes)
            for message in decoder.decode_frame(line):
                assert isinstance(message, RouteUpdate), message
                routes += len(message.announced) + len(message.withdrawn)
        per_batch.append(routes)
    assert sum(per_batch) == 2 * (30_000 + 40)
    assert max(per_batch) <= MAX_BATCH_ROUTES, per_batch
