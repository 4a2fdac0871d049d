"""A route ExaBGP rejects: the speaker retries it after a backoff, isolates it from its batch
and gives up on it alone; the others are announced. A stand-in ExaBGP process (no root, no
network) answers `error` to any line holding the bad route."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import tempfile
from ipaddress import ip_address
from pathlib import Path

from evpnd.config import Config
from evpnd.model import MacIpKey, MacIpRoute
from evpnd.speaker.outbox import RetryPolicy
from evpnd.speaker.speaker import Speaker

# Stands in for `python -m evpnd.speaker.launcher <conf>`: says hello like the
# relay, logs every command line and answers it at once: `error` when the line
# holds the bad MAC, `done` otherwise.
FAKE_EXABGP = """#!{python}
import os, socket
log = open("fake.log", "a")
sock = socket.socket(socket.AF_UNIX)
sock.connect("exabgp-api.sock")
sock.sendall(("evpnd-relay %s %d\\n" % (os.environ["EVPND_RELAY_TOKEN"], os.getpid())).encode())
buffer = b""
while True:
    data = sock.recv(65536)
    if not data:
        break
    buffer += data
    while b"\\n" in buffer:
        line, buffer = buffer.split(b"\\n", 1)
        if line.startswith(b"#evpnd "):
            continue
        log.write(line.decode() + "\\n"); log.flush()
        sock.sendall(b"error\\n" if b"{bad}" in line else b"done\\n")
"""
VTEP = ip_address("192.0.2.1")
BAD = "02:00:00:00:00:0d"


def route(i: int) -> MacIpRoute:
    mac = f"02:00:00:00:00:{i:02x}"
    return MacIpRoute(MacIpKey(f"{VTEP}:100", 0, mac, None), VTEP, 100,
                      route_targets=("65000:100",))  # fmt: skip


async def test_a_rejected_route_is_isolated_retried_and_given_up_on() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="evs-retry-"))
    fake = state_dir / "fake-exabgp"
    fake.write_text(FAKE_EXABGP.format(python=sys.executable, bad=BAD))
    fake.chmod(0o755)
    config = Config.model_validate(
        {"router_id": str(VTEP), "asn": 65000, "vtep": {"address": str(VTEP), "device": "e0"},
         "bgp": {"peers": [{"address": "192.0.2.2", "remote_asn": 65000}]}}
    )
    policy = RetryPolicy(backoff_initial=0.1, backoff_max=0.4, batch_attempts=2, alone_attempts=2)
    speaker = Speaker(config, state_dir=state_dir, python=str(fake), batch_size=8,
                      stop_timeout=1, retry=policy)  # fmt: skip
    await speaker.start()
    try:
        await speaker.wait_connected(10)
        routes = [route(i) for i in range(20)]
        speaker.announce(routes)
        await speaker.flush(30)  # idle: every route sent, or given up on
        counters = speaker.counters
        assert counters.routes_refused == 1 and counters.retries >= 3
        assert counters.announced == 19
        lines = (state_dir / "fake.log").read_text().splitlines()
        alone = [line for line in lines if BAD in line and "batch" not in line]
        assert len(alone) == policy.alone_attempts
        assert sum(BAD in line for line in lines) == policy.batch_attempts + policy.alone_attempts
        # Every other route went out in a line ExaBGP took.
        accepted = {mac for line in lines if BAD not in line
                    for mac in re.findall(r"mac=([0-9a-f:]{17})", line)}  # fmt: skip
        assert accepted == {r.key.mac for r in routes} - {BAD}
    finally:
        await speaker.stop()
        await asyncio.sleep(0)
        shutil.rmtree(state_dir, ignore_errors=True)
