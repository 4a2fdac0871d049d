"""The daemon's receive path without I/O: raw UPDATE frames -> decoder -> RIB -> wanted entries.

    .venv/bin/python -m bench.pipeline [--count N] [--per-update K] [--json] [--profile FILE]

The UPDATEs are bench.bgpsend's (N Type-2 MAC routes over 40 VTEPs plus their
Type-3s, K NLRIs per UPDATE), framed as ExaBGP's raw receive hook frames
them (rawreceive.scan: up to MAX_FRAME_BODIES UPDATEs or MAX_FRAME_BYTES of
text per line), batched as the speaker batches them (its ReceiveQueue, within
BATCH_LINES and BATCH_BYTES), and each batch fed through what
`Daemon._on_received` does with it: WireDecoder, Rib.apply_updates,
desired.apply_rib_changes onto a ForwardingTracker, then `pending()` (what
the writer would be handed). `--json` feeds ExaBGP's JSON lines for the same
UPDATEs through decode.Decoder instead (the fallback path; ExaBGP's own
parser makes them, which takes a while before the clock starts).

Prints the time of each tenth of the routes, so a cost that grows with the
table shows as later tenths getting slower, the total, the withdrawal, and
the longest batch: how long the daemon's event loop goes without a turn.
No namespace, no root: pure CPU, what the daemon does per route between
ExaBGP and the netlink writer.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import time
from ipaddress import ip_address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bgpsend
from evpnd.dataplane.tracker import ForwardingTracker
from evpnd.desired import VniDevices, apply_rib_changes
from evpnd.rib import ReceivedUpdate, Rib, VniPolicy
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import RouteUpdate
from evpnd.speaker.rawreceive import frame_line, scan
from evpnd.speaker.speaker import BATCH_BYTES, BATCH_LINES, ReceiveQueue
from evpnd.speaker.wire import FRAME_VERB, WireDecoder

PEER = "192.0.2.10"
VNI, ASN = 100, 65000
MAX_MESSAGE = 4096  # no extended messages


def bodies(stream: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos + 16 : pos + 18], "big")
        out.append(stream[pos + 19 : pos + length])
        pos += length
    return out


def frames(stream: bytes) -> list[bytes]:
    """The stream's UPDATEs as the raw receive hook writes them, line by line."""
    lines, pos = [], 0
    while pos < len(stream):
        spans, pos = scan(stream, pos, len(stream), MAX_MESSAGE)
        lines.append(frame_line(PEER, stream, spans))
    return lines


def batches(lines: list[bytes]) -> list[list[bytes]]:
    """The lines as the speaker hands them to the daemon when all are ready at once."""
    async def drain() -> list[list[bytes]]:
        queue = ReceiveQueue(limit=sum(map(len, lines)) + 1)
        for line in lines:
            await queue.put_line(line)
        out = []
        while len(queue):
            out.append(await queue.get_batch(BATCH_LINES, BATCH_BYTES))
        return out  # type: ignore[return-value]

    return asyncio.run(drain())


def json_lines(stream: bytes) -> list[bytes]:
    from tests.data import exabgp_reference  # ExaBGP's parser and JSON encoder

    return [exabgp_reference.json_line(body).encode() for body in bodies(stream)]


class Pipeline:
    def __init__(self) -> None:
        self.decoder = Decoder()
        self.wire = WireDecoder(self.decoder.stats)
        self.rib = Rib(ip_address("192.0.2.22"), [VniPolicy.from_targets(VNI, ["auto"], ASN)])
        self.devices = {VNI: VniDevices(f"vxlan{VNI}", f"br{VNI}")}
        self.tracker = ForwardingTracker()
        self.entries = 0

    def batch(self, lines: list[bytes]) -> None:
        updates: list[ReceivedUpdate] = []
        for line in lines:
            decode = self.wire.decode_frame if line.startswith(FRAME_VERB) else self.decoder.decode
            for message in decode(line):
                if isinstance(message, RouteUpdate):
                    updates.append((message.peer, message.announced, message.withdrawn))
        apply_rib_changes(self.tracker, self.rib.apply_updates(updates), self.devices)
        changes = self.tracker.pending()
        self.entries += changes.count()
        self.tracker.record(changes, set())  # as if the writer succeeded


def run(pipeline: Pipeline, lines: list[bytes], routes: int, label: str) -> float:
    work = batches(lines)
    tenth = max(1, len(work) // 10)
    longest = 0.0
    start = chunk = time.perf_counter()
    for index, batch in enumerate(work, 1):
        began = time.perf_counter()
        pipeline.batch(batch)
        now = time.perf_counter()
        longest = max(longest, now - began)
        if index % tenth == 0 or index == len(work):
            print(f"  {label} batches {index:>6}/{len(work)}: {now - chunk:.3f} s", flush=True)
            chunk = now
    total = time.perf_counter() - start
    print(f"{label}: {total:.2f} s for {routes} routes ({routes / total:,.0f}/s, "
          f"{total / routes * 1e6:.1f} us/route); {len(work)} batches, the longest "
          f"{longest * 1000:.0f} ms", flush=True)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--per-update", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="the JSON fallback path")
    parser.add_argument("--profile", help="write cProfile stats of the add here")
    args = parser.parse_args()
    announce, withdraw = bgpsend.encode(args.count, 40, ASN, VNI, args.per_update)
    make = json_lines if args.json else frames
    add_lines, del_lines = make(announce), make(withdraw)
    pipeline = Pipeline()
    path = "json" if args.json else "raw"
    print(f"{path} path, N={args.count}, {args.per_update} NLRI(s) per UPDATE, "
          f"{len(add_lines)} lines", flush=True)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    run(pipeline, add_lines, args.count + 40, "add")
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    run(pipeline, del_lines, args.count + 40, "withdraw")
    print(f"kernel entries written: {pipeline.entries}; decode errors: "
          f"{sum(pipeline.decoder.stats.errors.values())}")


if __name__ == "__main__":
    main()
