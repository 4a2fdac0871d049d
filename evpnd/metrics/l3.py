"""Metrics of routing between segments (a section of the collector, read at scrape time).

Families, desired and installed apart as for the FDB (a sum over one family's
labels must mean something):

* `evpnd_l3_routes_desired` / `_installed`: routes into the L3VNI evpnd owns,
  by address family and by origin (`type2`: host routes of MAC+IP routes,
  `type5`: prefixes; `none`: installed by a previous run, no route asks for
  it any more);
* `evpnd_l3_neighbor_entries_desired` / `_installed`: next-hop neighbours on the
  L3VNI bridge (VTEP -> router MAC), by address family;
* `evpnd_l3_router_mac_entries_desired` / `_installed`: router MACs in the L3VNI
  vxlan device's FDB;
* `evpnd_l3_route_conflicts`: wanted routes an admin's route of the same prefix
  and metric holds;
* `evpnd_l3_routes_refused`: received L3 routes held but not installed, by reason
  (evpnd/l3/table.py);
* `evpnd_l3_router_mac_conflicts`: VTEPs left without a next hop because another
  VTEP claims their router MAC.

Without an L3VNI every family is there with zeros (or no labels), so alerts
and dashboards need no special case.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from evpnd.dataplane.state import ForwardingState
from evpnd.l3.table import BAD_RMAC, ESI, FAMILY, GATEWAY_IP, LABEL, LOCAL, LOOP, NO_RMAC

REFUSALS = (LABEL, NO_RMAC, BAD_RMAC, GATEWAY_IP, ESI, FAMILY, LOOP, LOCAL)
FAMILIES = ("ipv4", "ipv6")
ORIGINS = ("type2", "type5", "none")


def _gauge(name: str, doc: str, labels: list[str],
           values: Mapping[tuple[str, ...], float]) -> GaugeMetricFamily:  # fmt: skip
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def l3_devices(source: Any) -> tuple[str, str] | None:
    """(bridge, vxlan device) of the L3VNI, from the daemon's config (`cfg`)."""
    l3 = getattr(source.cfg, "l3vni", None)
    return None if l3 is None else (l3.bridge_name, l3.vxlan_name)


def counts(state: ForwardingState, devices: tuple[str, str] | None,
           origin: Mapping[Any, int]) -> dict[str, Counter[tuple[str, ...]]]:  # fmt: skip
    """Routes by (family, origin), next-hop neighbours by family, router MACs."""
    routes: Counter[tuple[str, ...]] = Counter(
        {(f, o): 0 for f in FAMILIES for o in ORIGINS})  # fmt: skip
    neighs: Counter[tuple[str, ...]] = Counter({(f,): 0 for f in FAMILIES})
    rmacs: Counter[tuple[str, ...]] = Counter({(): 0})
    for prefix in state.routes:
        kind = origin.get(prefix)
        routes[(f"ipv{prefix.version}", f"type{kind}" if kind else "none")] += 1
    if devices is not None:
        bridge, vxlan = devices
        for device, address in state.neighs:
            if device == bridge:
                neighs[(f"ipv{address.version}",)] += 1
        rmacs[()] = sum(1 for device, _ in state.macs if device == vxlan)
    return {"routes": routes, "neighs": neighs, "rmacs": rmacs}


def collect(source: Any) -> Iterator[Metric]:
    rec, rib = source.reconciler, source.rib
    devices = l3_devices(source)
    origin = {p.prefix: p.route_type for p in rib.l3_prefixes()}
    for state, view, meaning in (("desired", rec.desired, "what the routes ask for"),
                                 ("installed", rec.installed, "what the kernel holds")):
        found = counts(view, devices, origin)
        yield _gauge(f"evpnd_l3_routes_{state}",
                     f"Routes into the L3VNI owned by evpnd, {meaning}, by address family "
                     "and origin (type2 host routes, type5 prefixes).",
                     ["family", "origin"], found["routes"])  # fmt: skip
        yield _gauge(f"evpnd_l3_neighbor_entries_{state}",
                     f"Next-hop neighbours (VTEP -> router MAC) on the L3VNI bridge, {meaning}.",
                     ["family"], found["neighs"])  # fmt: skip
        yield _gauge(f"evpnd_l3_router_mac_entries_{state}",
                     f"Router MACs in the L3VNI vxlan device's FDB, {meaning}.",
                     [], found["rmacs"])  # fmt: skip
    conflicts = getattr(rec, "route_conflicts", frozenset())
    yield _gauge("evpnd_l3_route_conflicts",
                 "Wanted routes whose prefix and metric an admin's route holds (never "
                 "written over).", [], {(): len(conflicts)})  # fmt: skip
    refused = dict.fromkeys(((r,) for r in REFUSALS), 0)
    refused.update({(why,): n for why, n in rib.l3_refusals().items()})
    yield _gauge("evpnd_l3_routes_refused",
                 "Received L3 routes held but not installed, by reason.",
                 ["reason"], refused)  # fmt: skip
    waiting = sum(len(v) for v in rib.l3_rmac_conflicts().values())
    yield _gauge("evpnd_l3_router_mac_conflicts",
                 "VTEPs without a next hop: another VTEP claims their router MAC.",
                 [], {(): waiting})  # fmt: skip
