"""The speaker's received batches give the event loop a turn between them.

Found by the chaos suite (C3, a peer sending 1,000,000 routes): with the
received queue full, the daemon drained it batch after batch without the loop
ever running anything else, and the event-loop lag reached seconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from evpnd import config
from evpnd.speaker.speaker import BATCH_LINES, Speaker

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
