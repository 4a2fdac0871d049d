"""The daemon's receive path without I/O: raw UPDATE frames -> decoder -> RIB -> wanted entries.

    .venv/bin/python -m bench.pipeline [--count N] [--per-update K] [--json] [--profile FILE]

The UPDATEs are bench.bgpsend's (N Type-2 MAC routes over 40 VTEPs plus their
Type-3s, K NLRIs per UPDATE), framed as ExaBGP's raw receive hook frames
them (rawreceive.py: up to 1000 UPDATEs per line), and fed through what
`Daemon._on_received` does with a batch: WireDecoder, Rib.apply_updates,
desired.apply_rib_changes onto a ForwardingTracker, then `pending()` (what
the writer would be handed). `--json` feeds ExaBGP's JSON lines for the same
UPDATEs through decode.Decoder instead (the fallback path; ExaBGP's own
parser makes them, which takes a while before the clock starts).

Prints the time of each tenth of the routes, so a cost that grows with the
table shows as later tenths getting slower, the total, and the withdrawal.
No namespace, no root: pure CPU, what the daemon does per route between
ExaBGP and the netlink writer.
"""

from __future__ import annotations

import argparse
import binascii
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
from evpnd.speaker.wire import FRAME_VERB, WireDecoder

PEER = "192.0.2.10"
VNI, ASN = 100, 65000
FRAME_BODIES = 1000  # rawreceive.py's bound per line
BATCH_LINES = 1024  # the speaker's batch bound (speaker.py)


def bodies(stream: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(stream):
        length = int.from_bytes(stream[pos + 16 : pos + 18], "big")
        out.append(stream[pos + 19 : pos + length])
        pos += length
    return out


def frames(updates: list[bytes]) -> list[bytes]:
    return [
        b" ".join([FRAME_VERB, PEER.encode(), *(binascii.b2a_base64(b, newline=False)
                                              for b in updates[i : i + FRAME_BODIES])])
        for i in range(0, len(updates), FRAME_BODIES)
    ]


def json_lines(updates: list[bytes]) -> list[bytes]:
    from tests.data import exabgp_reference  # ExaBGP's parser and JSON encoder

    return [exabgp_reference.json_line(body).encode() for body in updates]


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
    per_batch = max(1, min(BATCH_LINES, len(lines) // 10 or 1))
    start = chunk = time.perf_counter()
    for index in range(0, len(lines), per_batch):
        pipeline.batch(lines[index : index + per_batch])
        now = time.perf_counter()
        if now - chunk > 0 and len(lines) >= 10 and (index // per_batch) % 1 == 0:
            print(f"  {label} lines {index + per_batch:>6}/{len(lines)}: {now - chunk:.3f} s",
                  flush=True)
        chunk = now
    total = time.perf_counter() - start
    print(f"{label}: {total:.2f} s for {routes} routes ({routes / total:,.0f}/s, "
          f"{total / routes * 1e6:.1f} us/route)", flush=True)
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
    add_lines, del_lines = make(bodies(announce)), make(bodies(withdraw))
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
