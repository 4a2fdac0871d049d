"""Measure the raw UPDATE decoder against the JSON path, on this machine.

    .venv/bin/python -m tests.data.measure_decoders [--routes 20000] [--repeat 5]

Same routes both ways: Type-2 MACs of one VNI over 40 VTEPs (RD VTEP:VNI,
RT ASN:VNI, VXLAN encapsulation, ORIGIN/AS_PATH/LOCAL_PREF as an iBGP peer
sends them), one NLRI per UPDATE and 100 per UPDATE. The wire decoder gets
the UPDATE bodies (`decode_update`) and frame lines of 100 bodies
(`decode_frame`, base64 included); `decode.Decoder` gets the JSON line ExaBGP
prints for each body (made once with ExaBGP's parser and JSON encoder, not
timed). Best of --repeat runs, each over fresh decoders (cold caches); the
machine is shared, so the best run is the least disturbed one. Then the
memory the decoded messages hold per route (tracemalloc), each way. No
assertion: figures for the report.
"""

from __future__ import annotations

import argparse
import binascii
import gc
import struct
import time
import tracemalloc
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address

from evpnd.speaker.decode import Decoder
from evpnd.speaker.wire import WireDecoder
from tests.data import exabgp_reference as ref

VTEPS = 40
FIRST_VTEP = IPv4Address("198.51.100.1")
VNI = 100


def _attr(flags: int, code: int, value: bytes) -> bytes:
    if len(value) > 255:
        return struct.pack("!BBH", flags | 0x10, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


def _type2(i: int, vtep: IPv4Address) -> bytes:
    rd = struct.pack("!H", 1) + vtep.packed + struct.pack("!H", VNI)
    mac = bytes((0x02, 0xBB, (i >> 16) & 255, (i >> 8) & 255, i & 255, 0x01))
    route = rd + bytes(14) + b"\x30" + mac + b"\x00" + VNI.to_bytes(3, "big")
    return bytes((2, len(route))) + route


def updates(routes: int, per_update: int) -> list[bytes]:
    """UPDATE bodies: `per_update` Type-2 NLRIs each, VTEPs round-robin by UPDATE."""
    communities = struct.pack("!BBHI", 0, 2, 65000, VNI) + bytes.fromhex("030c000000000008")
    common = (
        _attr(0x40, 1, b"\0") + _attr(0x40, 2, b"") + _attr(0x40, 5, struct.pack("!I", 100))
        + _attr(0xC0, 16, communities)
    )  # fmt: skip
    bodies = []
    for n, first in enumerate(range(0, routes, per_update)):
        vtep = FIRST_VTEP + n % VTEPS
        nlri = b"".join(_type2(i, vtep) for i in range(first, min(first + per_update, routes)))
        mp = struct.pack("!HBB", 25, 70, 4) + vtep.packed + b"\0" + nlri
        section = _attr(0x80, 14, mp) + common
        bodies.append(struct.pack("!HH", 0, len(section)) + section)
    return bodies


def best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(routes: int, per_update: int, repeat: int) -> dict[str, float]:
    bodies = updates(routes, per_update)
    sess = ref.session()
    lines = [ref.exabgp_json(b, sess) for b in bodies]
    frames = [
        b"=evpn 10.99.0.2 "
        + b" ".join(binascii.b2a_base64(b, newline=False) for b in bodies[i : i + 100])
        + b"\n"
        for i in range(0, len(bodies), 100)
    ]
    peer = IPv4Address("10.99.0.2")

    def wire_updates() -> None:
        decoder = WireDecoder()
        for b in bodies:
            decoder.decode_update(peer, b)

    def wire_frames() -> None:
        decoder = WireDecoder()
        for f in frames:
            decoder.decode_frame(f)

    def json_lines() -> None:
        decoder = Decoder()
        for line in lines:
            decoder.decode(line)

    check = WireDecoder()
    assert [m for b in bodies for m in check.decode_update(peer, b)] == [
        m for line in lines for m in Decoder().decode(line)
    ]
    results = {}
    for name, run in (("wire decode_update", wire_updates), ("wire decode_frame", wire_frames),
                      ("json Decoder.decode", json_lines)):  # fmt: skip
        seconds = best(run, repeat)
        results[name] = seconds * 1e6 / len(bodies)
    return results


def retained(decode: Callable[[], list[object]]) -> float:
    """Bytes allocated and still held by what `decode` returns (the routes), per route."""
    gc.collect()
    tracemalloc.start()
    messages = decode()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    routes = sum(len(m.announced) for m in messages)  # type: ignore[attr-defined]
    return held / routes


def memory(routes: int, per_update: int) -> dict[str, float]:
    bodies = updates(routes, per_update)
    sess = ref.session()
    lines = [ref.exabgp_json(b, sess) for b in bodies]
    peer = IPv4Address("10.99.0.2")
    wire = WireDecoder()
    json_decoder = Decoder()
    return {
        "wire": retained(lambda: [m for b in bodies for m in wire.decode_update(peer, b)]),
        "json": retained(lambda: [m for line in lines for m in json_decoder.decode(line)]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routes", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    for per_update in (1, 100):
        results = measure(args.routes, per_update, args.repeat)
        print(f"{per_update} NLRI per UPDATE, {args.routes} routes:")
        for name, per in results.items():
            print(f"  {name:22s} {per:8.2f} us/UPDATE  {per / per_update:7.2f} us/route")
    for per_update in (1, 100):
        held = memory(args.routes, per_update)
        print(f"memory held per route, messages kept ({per_update} NLRI per UPDATE):")
        for name, per in held.items():
            print(f"  {name:22s} {per:8.0f} bytes/route")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
