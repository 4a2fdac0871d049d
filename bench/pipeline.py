"""The daemon's receive path without I/O: ExaBGP JSON line -> decoder -> RIB -> kernel delta.

    .venv/bin/python -m bench.pipeline [--count N] [--per-update K] [--gc default|freeze|off]

Lines are made like ExaBGP prints FRR's packed UPDATEs (K Type-2 MAC routes
per line, one next hop). Prints the time of each tenth of the routes, so a
cost that grows with the table shows as later tenths getting slower, and the
total. No namespace, no root: a pure CPU measure of what the daemon does per
route between ExaBGP and the netlink writer (daemon.py's _bgp_loop).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from ipaddress import ip_address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evpnd.desired import VniDevices, delta
from evpnd.rib import Rib, VniPolicy
from evpnd.speaker.decode import Decoder

PEER = "192.0.2.10"
ATTRIBUTE = {"origin": "igp", "local-preference": 100, "extended-community": [
    {"value": 842122827661412, "string": "target:65000:100"},
    {"value": 219550481834311688, "string": "encap:VXLAN"}]}


def line(start: int, count: int) -> str:
    routes = [{
        "code": 2, "parsed": True, "raw": "", "name": "MAC/IP advertisement",
        "rd": f"{PEER}:2", "esi": "-", "ethernet-tag": 0,
        "mac": f"02:AA:{i >> 16 & 255:02X}:{i >> 8 & 255:02X}:{i & 255:02X}:01",
        "label": [[6, 100]],
    } for i in range(start, start + count)]
    return json.dumps({
        "exabgp": "5.0.0", "time": 0.0, "host": "bench", "pid": 1, "ppid": 1, "counter": 1,
        "type": "update", "neighbor": {
            "address": {"local": "192.0.2.22", "peer": PEER},
            "asn": {"local": 65000, "peer": 65000}, "router-id": "192.0.2.22",
            "direction": "receive", "message": {"update": {
                "attribute": ATTRIBUTE, "announce": {"l2vpn evpn": {PEER: routes}}}}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--per-update", type=int, default=100)
    parser.add_argument("--gc", choices=["default", "freeze", "off"], default="default")
    args = parser.parse_args()
    lines = [line(i, min(args.per_update, args.count - i))
             for i in range(0, args.count, args.per_update)]
    decoder = Decoder()
    rib = Rib(ip_address("192.0.2.22"), [VniPolicy.from_targets(100, ["65000:100"], 65000)])
    devices = {100: VniDevices("vxlan100", "br100")}
    if args.gc == "freeze":
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
    elif args.gc == "off":
        gc.disable()
    tenth = max(1, len(lines) // 10)
    start = chunk = time.perf_counter()
    entries = 0
    for index, text in enumerate(lines, 1):
        for message in decoder.decode(text):
            changes = rib.apply_update(message.peer, message.announced, message.withdrawn)
            entries += len(delta(changes, devices).add_macs)
        if index % tenth == 0:
            now = time.perf_counter()
            print(f"routes up to {index * args.per_update:>7}: {now - chunk:.3f} s", flush=True)
            chunk = now
    total = time.perf_counter() - start
    print(f"gc={args.gc} total {total:.2f} s for {args.count} routes "
          f"({args.count / total:,.0f}/s), {entries} kernel entries")


if __name__ == "__main__":
    main()
