"""The MQTT per-VNI summaries: what one pass costs with many local MACs over many VNIs.

    .venv/bin/python -m bench.mqtt_summary [--vnis V] [--local N] [--remote R] [--repeat K]

Builds a RIB with N local MACs (and R remote ones from one peer) spread over V
VNIs, then times `MqttBridge.flush_summaries()` (a stand-in service records
the summaries): with every VNI dirty (after a reconnect, or a burst touching
all), and with one VNI dirty (a single MAC learned). Pure CPU, no broker; the
time is event-loop time the daemon spends on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from ipaddress import ip_address
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evpnd import config
from evpnd.derived import vni_policies
from evpnd.model import MacIpKey, MacIpRoute
from evpnd.rib import Rib
from evpnd.services import MqttBridge

PEER = ip_address("192.0.2.10")


class Service:
    """Stands in for MqttService: keeps the last summary of each VNI."""

    def __init__(self) -> None:
        self.summaries: dict[int, Any] = {}

    def retain_summary(self, vni: int, summary: Any) -> bool:
        self.summaries[vni] = summary
        return True

    def publish(self, event: Any) -> bool:
        return True


def build(vnis: int, local: int, remote: int) -> tuple[MqttBridge, config.Config]:
    lines = ["router_id: 192.0.2.1", "asn: 65000", "vtep: {address: 192.0.2.1, device: e0}",
             "vnis:", *(f"  - vni: {100 + i}" for i in range(vnis))]  # fmt: skip
    cfg = config.parse("\n".join(lines) + "\n")
    rib = Rib(ip_address("192.0.2.1"), vni_policies(cfg))
    for i in range(local):
        rib.local_mac_added(100 + i % vnis, f"02:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                                            f"{i & 255:02x}:01")  # fmt: skip
    updates = []
    for i in range(remote):
        vni = 100 + i % vnis
        key = MacIpKey(f"192.0.2.20:{vni}", 0, f"02:01:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:"
                                               f"{i & 255:02x}:01", None)  # fmt: skip
        route = MacIpRoute(key, ip_address(f"192.0.2.{20 + i % 40}"), vni,
                           route_targets=(f"65000:{vni}",))  # fmt: skip
        updates.append((PEER, (route,), ()))
    if updates:
        rib.apply_updates(updates)
    bridge = MqttBridge(lambda: cfg, rib, lambda changes: None)
    bridge.service = Service()
    return bridge, cfg


def timed(bridge: MqttBridge, dirty: set[int], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        bridge._dirty.update(dirty)
        bridge._summaries.clear()  # so that every summary is built and handed over
        start = time.perf_counter()
        bridge.flush_summaries()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vnis", type=int, default=100)
    parser.add_argument("--local", type=int, default=50_000)
    parser.add_argument("--remote", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bridge, cfg = build(args.vnis, args.local, args.remote)
    every = {v.vni for v in cfg.vnis}
    for label, dirty in (("every VNI dirty", every), ("one VNI dirty", {min(every)})):
        times = timed(bridge, dirty, args.repeat)
        print(f"{label}: {statistics.median(times) * 1000:.1f} ms per flush "
              f"(median of {args.repeat}; {args.local} local, {args.remote} remote MACs, "
              f"{args.vnis} VNIs)", flush=True)
    service = bridge.service
    assert isinstance(service, Service)
    first = service.summaries[min(every)]
    print(f"VNI {min(every)}: {first}")


if __name__ == "__main__":
    main()
