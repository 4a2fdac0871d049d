"""The raw EVPN receive path under the Speaker, against FRR 8.4 in namespaces.

FRR advertises its flood-list route and MACs its bridge learns; the ExaBGP the
Speaker runs (bgp.receive left at its default, raw) must hand them over as
`=evpn` frames whose bodies are FRR's UPDATEs, and no JSON for them, while the
session's state still comes as JSON. The lab (FRR in one namespace, the
speaker in another, a veth between) is test_speaker.py's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from evpnd.config import Config
from evpnd.speaker.speaker import Speaker
from tests.netns import test_speaker
from tests.netns.test_speaker import ASN, FRR_IP, SPEAKER_IP, VNI, FrrLab, sh

pytestmark = pytest.mark.netns
frr_lab = test_speaker.frr_lab  # the fixture: FRR and the speaker's namespace

MAC_COUNT = 50


async def speaker_lines(speaker: Speaker) -> AsyncIterator[str]:
    """What ExaBGP said through the speaker, one line at a time (its own events left out)."""
    async for batch in speaker.batches():
        for item in batch:
            if isinstance(item, bytes):
                yield item.decode().strip()


def evpn_routes(body: bytes) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """(announced, withdrawn) EVPN NLRIs of an UPDATE body, as (route type, value)."""
    attributes = body[4 : 4 + int.from_bytes(body[2:4], "big")]
    announced: list[tuple[int, bytes]] = []
    withdrawn: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(attributes):
        flags, code = attributes[pos], attributes[pos + 1]
        if flags & 0x10:
            length, pos = int.from_bytes(attributes[pos + 2 : pos + 4], "big"), pos + 4
        else:
            length, pos = attributes[pos + 2], pos + 3
        value, pos = attributes[pos : pos + length], pos + length
        if code == 14:
            assert value[:3] == b"\x00\x19\x46"
            nlri = value[5 + value[3] :]
            announced += _nlris(nlri)
        elif code == 15:
            assert value[:3] == b"\x00\x19\x46"
            withdrawn += _nlris(value[3:])
    return announced, withdrawn


def _nlris(data: bytes) -> list[tuple[int, bytes]]:
    found, pos = [], 0
    while pos < len(data):
        kind, length = data[pos], data[pos + 1]
        found.append((kind, data[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return found


def mac_of(value: bytes) -> str:
    """The MAC of a Type-2 NLRI value: RD 8, ESI 10, Ethernet tag 4, MAC length 1, MAC 6."""
    return ":".join(f"{octet:02x}" for octet in value[23:29])


def macs(count: int) -> list[str]:
    return [f"02:03:00:00:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}" for i in range(count)]


@pytest.fixture
async def raw_speaker(frr_lab: FrrLab) -> AsyncIterator[tuple[Speaker, list[str]]]:
    config = Config.model_validate({
        "router_id": SPEAKER_IP, "asn": ASN, "vtep": {"address": SPEAKER_IP, "device": "e0"},
        "bgp": {"peers": [{"address": FRR_IP, "remote_asn": ASN, "hold_time": 9}]},
    })
    assert config.bgp.receive == "raw"  # the default
    state_dir = Path(tempfile.mkdtemp(prefix="evs-raw-"))
    speaker = Speaker(config, state_dir=state_dir, exec_prefix=["ip", "netns", "exec",
                      frr_lab.speaker_ns], backoff_initial=0.2, stop_timeout=3)
    lines: list[str] = []

    async def collect() -> None:
        async for line in speaker_lines(speaker):
            lines.append(line)

    await speaker.start()
    collector = asyncio.create_task(collect())
    try:
        yield speaker, lines
    finally:
        await speaker.stop()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        shutil.rmtree(state_dir, ignore_errors=True)


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def frames(lines: list[str]) -> list[tuple[str, list[bytes]]]:
    found = []
    for line in list(lines):
        if line.startswith("="):
            verb, peer, *bodies = line.split(" ")
            assert verb == "=evpn"
            found.append((peer, [base64.b64decode(b, validate=True) for b in bodies]))
    return found


def json_messages(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in list(lines) if line.startswith("{")]


def routes(lines: list[str]) -> tuple[set[tuple[int, bytes]], set[tuple[int, bytes]]]:
    announced: set[tuple[int, bytes]] = set()
    withdrawn: set[tuple[int, bytes]] = set()
    for _, bodies in frames(lines):
        for body in bodies:
            added, removed = evpn_routes(body)
            announced.update(added)
            withdrawn.update(removed)
    return announced, withdrawn


async def test_frr_routes_reach_the_speaker_as_frames(
        frr_lab: FrrLab, raw_speaker: tuple[Speaker, list[str]]) -> None:
    speaker, lines = raw_speaker

    def is_up() -> bool:
        return any(m.get("type") == "state" and m["neighbor"].get("state") == "up"
                   for m in json_messages(lines))

    await wait_for(is_up, "the session's state line (JSON)")

    # FRR's flood-list route (Type-3, originator = its VTEP) comes as a frame.
    def has_imet() -> bool:
        return any(kind == 3 and value.endswith(bytes(map(int, FRR_IP.split("."))))
                   for kind, value in routes(lines)[0])

    await wait_for(has_imet, "FRR's Type-3 in a frame")

    # MACs FRR's bridge learns become Type-2 routes, in frames.
    sh(frr_lab.frr_ns, "ip", "link", "add", "h0", "type", "veth", "peer", "name", "h0p")
    sh(frr_lab.frr_ns, "ip", "link", "set", "h0", "master", f"br{VNI}", "up")
    sh(frr_lab.frr_ns, "ip", "link", "set", "h0p", "up")
    batch = frr_lab.frr_dir / "fdb.batch"
    batch.write_text("".join(f"fdb add {mac} dev h0 master static\n"
                             for mac in macs(MAC_COUNT)))
    await asyncio.to_thread(sh, frr_lab.frr_ns, "bridge", "-batch", str(batch))

    def has_macs() -> bool:
        return set(macs(MAC_COUNT)) <= {mac_of(v) for kind, v in routes(lines)[0] if kind == 2}

    await wait_for(has_macs, f"{MAC_COUNT} MACs in frames")
    assert {peer for peer, _ in frames(lines)} == {FRR_IP}

    # ... and their withdrawal too.
    batch.write_text("".join(f"fdb del {mac} dev h0 master static\n"
                             for mac in macs(MAC_COUNT)))
    await asyncio.to_thread(sh, frr_lab.frr_ns, "bridge", "-batch", str(batch))

    def withdrawn() -> bool:
        return set(macs(MAC_COUNT)) <= {mac_of(v) for kind, v in routes(lines)[1] if kind == 2}

    await wait_for(withdrawn, f"{MAC_COUNT} withdrawals in frames")

    # Not one EVPN route came as JSON; the session never went down.
    messages = json_messages(lines)
    assert not [m for m in messages if m.get("type") == "update"]
    assert not [m for m in messages if m.get("type") == "state"
                and m["neighbor"].get("state") == "down"]
    peer = await frr_lab.peer()
    assert peer["state"] == "Established" and peer.get("connectionsDropped", 0) == 0
    assert speaker.counters.lines_received >= len(frames(lines))
