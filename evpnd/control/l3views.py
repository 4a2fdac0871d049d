"""`show` for routing between segments: the L3VNI in `show vni`, and `show ip routes`. Pure.

Views take a `Snapshot` and return JSON-able data (views.py's conventions);
the `render_*` functions turn that data into FRR-like tables (render.py's).

`show ip routes` lists the routes evpnd owns in the kernel's main table (all
into the L3VNI: `prefix via VTEP dev <L3VNI bridge> onlink`, protocol 238),
each with its origin: the received route it comes from (a Type-2 host route
or a Type-5 prefix, its VTEP, router MAC and peer) and its state (installed,
pending, held by an admin's route of the same prefix and metric, or left
from a previous run until start-up is over).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from evpnd.l3 import settings as l3settings

if TYPE_CHECKING:  # the CLI renders without the daemon's modules
    from evpnd.config import Vni
    from evpnd.control.snapshot import Snapshot

JSON = dict[str, Any]
ROUTE_TYPE_NAMES = {2: "type-2 host", 5: "type-5 prefix"}


def gateway(vni: Vni) -> JSON | None:
    """A VNI's anycast gateway, for its `show vni` row."""
    if vni.gateway is None:
        return None
    return {"addresses": [str(a) for a in vni.gateway.addresses],
            "mac": vni.gateway.mac_for(vni.vni)}  # fmt: skip


def l3vni(snap: Snapshot) -> JSON | None:
    """The L3VNI part of `show vni`: devices, router MAC, route targets, what we announce
    as Type-5, and the L3 table (next hops, routes, refusals)."""
    cfg, rib = snap.cfg, snap.rib
    l3 = cfg.l3vni
    if l3 is None:
        return None
    return {
        "vni": l3.vni,
        "bridge": l3.bridge_name,
        "vxlan_device": l3.vxlan_name,
        "router_mac": l3.router_mac,
        "mtu": snap.mtus.get(l3.vxlan_name),
        "rd": l3settings.route_distinguisher(cfg),
        "import_rts": l3settings.import_targets(cfg),
        "export_rts": l3settings.export_targets(cfg),
        "advertised": [str(p) for p in l3settings.advertised_prefixes(cfg)],
        "routes": len(rib.l3_prefixes()),
        "nexthops": [{"vtep": str(n.vtep), "router_mac": n.router_mac,
                      "families": list(n.families)} for n in rib.l3_nexthops()],
        "refused": dict(sorted(rib.l3_refusals().items())),
        "router_mac_conflicts": {mac: [str(v) for v in vteps]
                                 for mac, vteps in rib.l3_rmac_conflicts().items()},
    }


def ip_routes(snap: Snapshot) -> JSON:
    """Every route evpnd wants or holds in the kernel, with its origin and state."""
    wanted, installed = snap.desired.routes, snap.installed.routes
    origin = {p.prefix: p for p in snap.rib.l3_prefixes()}
    conflicts = set(getattr(snap, "route_conflicts", ()))
    rows = []
    for prefix in sorted({*wanted, *installed}, key=_order):
        entry = wanted.get(prefix) or installed[prefix]
        source = origin.get(prefix)
        if prefix not in wanted:
            state = "stale"  # a previous run's, kept until start-up is over
        elif prefix in conflicts:
            state = "admin"  # an admin's route holds the prefix and metric
        elif installed.get(prefix) == entry:
            state = "installed"
        else:
            state = "pending"
        rows.append({
            "prefix": str(prefix),
            "via": str(entry.gateway),
            "device": entry.device,
            "state": state,
            "origin": None if source is None else ROUTE_TYPE_NAMES.get(source.route_type),
            "vtep": None if source is None else str(source.vtep),
            "router_mac": None if source is None else source.router_mac,
            "peer": None if source is None else str(source.peer),
        })  # fmt: skip
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return {"l3vni": None if snap.cfg.l3vni is None else snap.cfg.l3vni.vni,
            "count": len(rows), "by_state": counts, "routes": rows}  # fmt: skip


def _order(prefix: Any) -> tuple[int, int, int]:
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


# ---------------------------------------------------------------- rendering


def _table(headers: Iterable[str], rows: list[tuple[object, ...]]) -> list[str]:
    from evpnd.control.render import table

    return table(tuple(headers), rows)


def render_l3vni(data: JSON | None) -> list[str]:
    """The L3VNI lines under `show vni`'s table."""
    if data is None:
        return []
    lines = [
        "",
        f"L3VNI {data['vni']}: bridge {data['bridge']}, vxlan {data['vxlan_device']}, "
        f"router MAC {data['router_mac'] or '(not known yet)'}",
        f"  RD {data['rd']}, import {' '.join(data['import_rts'])}, "
        f"export {' '.join(data['export_rts'])}",
        f"  Type-5 announced: {' '.join(data['advertised']) or '-'}",
        f"  Routes into the L3VNI: {data['routes']}",
    ]
    if data["nexthops"]:
        lines += ["  " + line for line in _table(
            ("Next hop VTEP", "Router MAC"),
            [(n["vtep"], n["router_mac"]) for n in data["nexthops"]])]  # fmt: skip
    if data["refused"]:
        refused = ", ".join(f"{why} {n}" for why, n in data["refused"].items())
        lines.append(f"  Received L3 routes not installed: {refused}")
    for mac, vteps in data["router_mac_conflicts"].items():
        lines.append(f"  Router MAC {mac} claimed by another VTEP too: {' '.join(vteps)} wait")
    return lines


def render_ip_routes(data: JSON) -> str:
    if data["l3vni"] is None and not data["routes"]:
        return "No L3VNI configured: evpnd installs no routes."
    rows = [(r["prefix"], r["via"], r["device"], r["state"], r["origin"], r["vtep"],
             r["router_mac"], r["peer"]) for r in data["routes"]]  # fmt: skip
    lines = ["Routes evpnd installed (main table, proto 238, metric 20, onlink)"]
    lines += _table(("Prefix", "Via", "Dev", "State", "Origin", "VTEP", "Router MAC",
                     "From peer"), rows)  # fmt: skip
    states = ", ".join(f"{n} {s}" for s, n in sorted(data["by_state"].items()))
    lines.append(f"Number of routes: {data['count']}" + (f" ({states})" if states else ""))
    return "\n".join(lines)
