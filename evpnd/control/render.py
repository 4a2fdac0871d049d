"""The views' JSON -> FRR-like human tables. Pure: data in, text out.

Each `render_<view>` takes exactly what the matching function in views.py
returns, after a JSON round trip: the CLI renders what the socket sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from evpnd.control import l3views

JSON = dict[str, Any]
GAP = "  "


def duration(seconds: float | None) -> str:
    """FRR's peer uptime: 00:12:34 under a day, 1d02h03m under a week, 02w3d04h beyond."""
    if seconds is None:
        return "never"
    s = int(max(0, seconds))
    minutes, sec = divmod(s, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    if days == 0:
        return f"{hour:02d}:{minute:02d}:{sec:02d}"
    if days < 7:
        return f"{days}d{hour:02d}h{minute:02d}m"
    return f"{days // 7:02d}w{days % 7}d{hour:02d}h"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """Left-aligned columns, two spaces apart, no trailing blanks."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    out = []
    for row in [list(headers), *cells]:
        out.append(GAP.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return out


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _yes(value: object) -> str:
    return "yes" if value else "no"


# ---------------------------------------------------------------- peers

_STATE_NAMES = {"idle": "Idle", "connected": "Connect", "down": "Down"}


def render_peers(data: JSON) -> str:
    lines = [
        f"BGP router identifier {data['router_id']}, local AS number {data['asn']}, "
        f"VTEP {data['vtep']}",
        f"ExaBGP pid {_cell(data['speaker_pid'])}",
        "",
    ]
    rows = []
    routes = {p["address"]: p["routes_received"] for p in data["peers"]}
    for p in data["peers"]:
        established = p["state"] == "established"
        rows.append(
            (
                p["address"],
                p["remote_asn"],
                (">" if established and p.get("uptime_is_minimum") else "")
                + duration(p["uptime"] if established else p["state_for"]),
                p["routes_received"] if established else _STATE_NAMES.get(p["state"], p["state"]),
                p["routes_sent"],
                p["updates_received"],
                p["description"] or ("(not configured)" if not p["configured"] else None),
            )
        )
    lines += table(("Neighbor", "AS", "Up/Down", "State/PfxRcd", "PfxSnt", "UpdRcvd", "Desc"),
                   rows)
    lines += ["", f"Total number of neighbors {len(data['peers'])}, "
                  f"established {data['established']}"]
    errors = [p for p in data["peers"] if p["last_error"]]
    if errors:
        lines += ["", "Last error:"]
        lines += [f"  {p['address']}: {p['last_error']}" for p in errors]
    graceful = [(p["address"], g) for p in data["peers"] if (g := p.get("graceful_restart"))
                and (g["capability"] is not None or g["state"] != "idle")]  # fmt: skip
    if graceful:
        lines += ["", "Graceful restart (RFC 4724; we keep a lost peer's routes, stale):"]
        lines += table(("  Neighbor", "Restart time", "EVPN F bit", "Helper state", "Stale",
                        "Ends in", "Restarts"),
                       [(f"  {address}", _restart_time(g), _f_bit(g), g["state"],
                         g["stale_routes"], None if g["ends_in"] is None
                         else f"{g['ends_in']:.0f}s", g["restarts"])
                        for address, g in graceful])  # fmt: skip
    limits = [(p["address"], p["route_limit"]) for p in data["peers"] if p.get("route_limit")]
    if limits:
        lines += ["", "Route limits:"]
        lines += table(("  Neighbor", "Routes", "Max", "Warn at", "Action", "Level", "Refused",
                        "Held down"),
                       [(f"  {address}", routes.get(address, 0), r["max_routes"], r["warning_at"],
                         r["action"], r["level"], r["refused"],
                         None if r["held_down_for"] is None
                         else f"{r['held_down_for']:.0f}s more")
                        for address, r in limits])  # fmt: skip
    return "\n".join(lines)


def _restart_time(grace: JSON) -> str | None:
    cap = grace["capability"]
    return None if cap is None else f"{cap['restart_time']}s"


def _f_bit(grace: JSON) -> str:
    cap = grace["capability"]
    if cap is None:
        return "no capability"
    preserved = cap["evpn_forwarding_preserved"]
    return "family absent" if preserved is None else _yes(preserved)


# ---------------------------------------------------------------- vni


def render_vni(data: JSON) -> str:
    rows = [
        (
            v["vni"],
            v["bridge"] + (" (adopted)" if v["bridge_adopted"] else ""),
            v["vxlan_device"],
            v["mtu"] if v["mtu"] is not None else f"{v['mtu_config']} (missing)",
            v["flood"],
            v["local_macs"],
            v["remote_macs"],
            v["local_ips"] + v["remote_neighbors"],
            " ".join(v["vteps"]) or None,
        )
        for v in data["vnis"]
    ]
    lines = table(("VNI", "Bridge", "VxLAN IF", "MTU", "Flood", "# Local MACs",
                   "# Remote MACs", "# ARPs", "Remote VTEPs"), rows)
    lines.append(f"Number of VNIs: {len(data['vnis'])}")
    lines += l3views.render_l3vni(data.get("l3vni"))
    return "\n".join(lines)


# ---------------------------------------------------------------- mac

MAC_FLAGS = "Flags: S=sticky, G=default gateway, I=inactive (a remote route wins), " \
            "C=conflict, N=not installed yet, D=duplicate, F=frozen (evpnd clear duplicate)"


def _mac_flags(m: JSON) -> str:
    flags = ""
    if m["sticky"]:
        flags += "S"
    if m["default_gateway"]:
        flags += "G"
    if m["advertised"] is False:
        flags += "I"
    if m["conflict"]:
        flags += "C"
    if m["installed"] is False:
        flags += "N"
    duplicate = m.get("duplicate")
    if duplicate:
        flags += "DF" if duplicate["frozen"] else "D"
    return flags


def render_mac(data: JSON) -> str:
    blocks = []
    for v in data["vnis"]:
        lines = [
            f"VNI {v['vni']} (bridge {v['bridge']}, {v['vxlan_device']})",
            f"Number of MACs (local and remote) known for this VNI: {v['count']}",
            MAC_FLAGS,
        ]
        rows = [
            (
                m["mac"],
                m["type"],
                _mac_flags(m),
                m["port"] if m["type"] == "local" else m["vtep"],
                m["seq"],
                m["peer"],
                " ".join(m["ips"]) or None,
            )
            for m in v["macs"]
        ]
        lines += table(("MAC", "Type", "Flags", "Intf/Remote VTEP", "Seq", "From peer", "IPs"),
                       rows)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "No VNIs configured"


# ---------------------------------------------------------------- neighbors


def render_neighbors(data: JSON) -> str:
    blocks = []
    for v in data["vnis"]:
        suppression = "on" if v["arp_suppression"] else "off"
        lines = [
            f"VNI {v['vni']} (bridge {v['bridge']}, ARP/ND suppression {suppression})",
            f"Number of ARPs (local and remote) known for this VNI: {v['count']}",
        ]
        rows = [
            (n["ip"], n["type"], n["mac"], n["vtep"], n["peer"],
             None if n["installed"] is None else _yes(n["installed"]))
            for n in v["neighbors"]
        ]
        lines += table(("Neighbor", "Type", "MAC", "Remote VTEP", "From peer", "Installed"),
                       rows)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else "No VNIs configured"


# ---------------------------------------------------------------- routes

_ROUTE_LEGEND = [
    "Status codes: * valid, > best (ours; received: imported, and the path evpnd uses)",
    "Dir: out = announced by this host, in = received",
    "EVPN type-1 prefix: [1]:[ESI]:[EthTag]",
    "EVPN type-2 prefix: [2]:[EthTag]:[MAClen]:[MAC]:[IPlen]:[IP]",
    "EVPN type-3 prefix: [3]:[EthTag]:[IPlen]:[OrigIP]",
    "EVPN type-4 prefix: [4]:[ESI]:[IPlen]:[OrigIP]",
    "EVPN type-5 prefix: [5]:[EthTag]:[IPlen]:[IP]",
]
_ZERO_ESI = "00:00:00:00:00:00:00:00:00:00"


def _extended(r: JSON) -> str:
    words = [f"RT:{rt}" for rt in r["route_targets"]]
    if r.get("encapsulation") is not None:
        words.append(f"ET:{r['encapsulation']}")
    if r.get("mobility_seq") or r.get("sticky"):
        words.append(f"MM:{r['mobility_seq']}" + (",sticky" if r.get("sticky") else ""))
    if r.get("default_gateway"):
        words.append("Default Gateway")
    if r.get("router_mac"):
        words.append(f"Rmac:{r['router_mac']}")
    if r.get("l3vni"):
        words.append(f"L3VNI:{r['l3vni']}")
    if r["type"] == 3 and r.get("tunnel_type") != "ingress-replication":
        words.append(f"PMSI:{r.get('tunnel_type')}")
    if r.get("esi") not in (None, _ZERO_ESI):
        words.append(f"ESI:{r['esi']}")
    if r.get("multihoming"):
        words.append("(multihoming: held, not acted on)")
    elif r.get("refused"):
        words.append(f"(refused: {r['refused']})")
    elif r["direction"] == "in" and not r["imported_vnis"]:
        words.append("(not imported)")
    return " ".join(words)


def _status(r: JSON) -> str:
    """FRR's status column: `*>` valid and best, `* ` valid, two blanks otherwise."""
    valid = r.get("valid", r["direction"] == "out" or bool(r["imported_vnis"]))
    return ("*" if valid else " ") + (">" if r.get("best") else " ")


def render_routes(data: JSON) -> str:
    lines = [f"BGP routing table: local router ID {data['router_id']}, local AS {data['asn']}",
             *_ROUTE_LEGEND, ""]
    rows: list[Sequence[object]] = []
    groups: list[tuple[int, str]] = []  # (row index, RD) where a new RD starts
    rd = None
    for r in data["routes"]:
        if r["rd"] != rd:
            rd = r["rd"]
            groups.append((len(rows), rd))
        rows.append((f"{_status(r)} {r['prefix']}", r["nexthop"], r["direction"], r["vni"],
                     r["peer"], _extended(r)))
    text = table(("   Network", "Next Hop", "Dir", "VNI", "Peer", "Extended"), rows)
    lines.append(text[0])
    starts = dict(groups)
    for i, line in enumerate(text[1:]):
        if i in starts:
            lines.append(f"Route Distinguisher: {starts[i]}")
        lines.append(line)
    out = sum(r["direction"] == "out" for r in data["routes"])
    by_type = ", ".join(f"type-{t}: {n}" for t, n in data["by_type"].items())
    lines += ["", f"Displayed {data['count']} routes ({out} out, {data['count'] - out} in)"
                  + (f"; {by_type}" if by_type else "")]
    return "\n".join(lines)


# ---------------------------------------------------------------- vteps


def render_vteps(data: JSON) -> str:
    rows = [
        (
            t["vtep"],
            " ".join(f"{f['vni']}({f['source']})" for f in t["flood_vnis"]) or None,
            t["macs"],
            t["neighbors"],
            " ".join(t["peers"]) or None,
            _yes(t["flood_installed"]) if t["flood_vnis"] else None,
        )
        for t in data["vteps"]
    ]
    lines = table(("VTEP", "Flood VNIs", "# MACs", "# ARPs", "Via peers", "Flood installed"),
                  rows)
    lines.append(f"Number of remote VTEPs: {len(data['vteps'])}")
    mismatches = data.get("nexthop_mismatches") or []
    if mismatches:
        lines += ["", "Type-2 next hops that differ from the Type-3 tunnel of the same VTEP "
                      "(unicast and flooding reach different addresses; a transit router "
                      "rewrote next hops?):"]
        lines += table(("  Peer", "RD", "Type-3 tunnel", "Type-2 next hops"),
                       [(f"  {m['peer']}", m["rd"], m["tunnel"], " ".join(m["nexthops"]))
                        for m in mismatches])  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------- status


def _pairs(title: str, items: Iterable[tuple[str, object]]) -> list[str]:
    items = list(items)
    width = max((len(k) for k, _ in items), default=0)
    return ["", f"{title}:", *(f"  {k.ljust(width)}  {_cell(v)}" for k, v in items)]


def _counter_text(counter: object) -> str:
    if isinstance(counter, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "0"
    return _cell(counter)


def render_status(data: JSON) -> str:
    sp, rib, dp = data["speaker"], data["rib"], data["dataplane"]
    if data["converged"]:
        converged = f"yes, {duration(data['converged_at'] - data['started'])} after start"
    else:
        converged = "no (holding kernel entries of the previous run until End-of-RIB)"
    lines = [
        f"evpnd {data['version']}, pid {_cell(data['pid'])}, up {duration(data['uptime'])}",
        f"Config {_cell(data['config'])}",
        f"Router id {data['router_id']}, AS {data['asn']}, VTEP {data['vtep']}, "
        f"{data['vnis']} VNI(s)",
        f"Converged: {converged}",
    ]
    lines += _pairs("ExaBGP", [
        ("pid", sp["pid"]),
        ("connected", _yes(sp["connected"])),
        ("restarts", sp["restarts"]),
        *((k.replace("_", " "), v) for k, v in sp["counters"].items() if k != "restarts"),
    ])
    lines += _pairs("BGP", [
        ("peers established", f"{data['peers']['established']} of {data['peers']['configured']}"),
        ("routes received", rib["routes"]),
        ("by type", ", ".join(f"type-{t} {n}" for t, n in rib["routes_by_type"].items())
         or None),
        ("not imported", rib["not_imported"]),
        ("stale", rib["stale"]),
        ("routes announced", rib["routes_out"]),
        ("own routes ignored", rib["own_routes_ignored"]),
    ])
    lines += _pairs("EVPN", [
        ("local MACs", f"{rib['local_macs']} ({rib['advertised_macs']} advertised)"),
        ("remote MACs", rib["remote_macs"]),
        ("remote neighbours", rib["remote_neighbors"]),
        ("flood VTEPs", rib["vteps"]),
        ("MAC conflicts", rib["conflicts"]),
        ("duplicate MACs", f"{rib.get('duplicates', 0)} "
                           f"({rib.get('frozen_duplicates', 0)} frozen)"),
    ])
    desired, installed = dp["desired"], dp["installed"]
    lines += _pairs("Dataplane", [
        ("desired", f"{desired['macs']} MACs, {desired['floods']} flood, "
                    f"{desired['neighbors']} neighbours"),
        ("installed", f"{installed['macs']} MACs, {installed['floods']} flood, "
                      f"{installed['neighbors']} neighbours"),
        ("holding removals", _yes(dp["holding_removals"])),
        *((k.replace("_", " "), v) for k, v in dp.items()
          if k not in ("desired", "installed", "holding_removals")),
    ])
    dec = data["decoder"]
    lines += _pairs("Events", [
        *((k.replace("_", " "), v) for k, v in data["daemon"].items()),
        ("decoder lines", dec.get("lines")),
        ("decoder raw frames", dec.get("frames")),
        ("decoder errors", _counter_text(dec.get("errors", {}))),
        *(("learner " + k.replace("_", " "), v) for k, v in data["learner"].items()),
    ])
    mqtt = data.get("mqtt")
    if mqtt:
        lines += _pairs("MQTT", [
            ("broker", mqtt["broker"]),
            ("state", f"{mqtt['state']} for "
                      f"{duration(data['started'] + data['uptime'] - mqtt['since'])}"),
            ("topic prefix", mqtt["topic_prefix"]),
            ("endpoints", mqtt.get("advertised_endpoints", mqtt["endpoints"])),
            ("queued", mqtt["queued"]),
            ("last error", mqtt["last_error"] or "-"),
            *((k.replace("_", " "), v) for k, v in mqtt["counters"].items()),
        ])
    docker = data.get("docker")
    if docker:
        lines += _pairs("Docker", [
            ("plugin", docker["plugin"]),
            ("networks", docker["networks"]),
            ("endpoints", f"{docker['endpoints']} of at most {docker['max_endpoints']} "
                          f"({docker['max_endpoints_per_network']} per network)"),
            ("skipped at recovery", ", ".join(docker["skipped"]) or "-"),
            ("IPAM", f"{docker.get('ipam_pools', 0)} pools, "
                     f"{docker.get('ipam_addresses', 0)} addresses in use"),
            ("address collisions", "; ".join(docker.get("collisions") or []) or "-"),
            *((("rebuild from dockerd", "pending: dockerd not answering yet"),)
              if docker.get("rebuild_pending") else ()),
            *((k.replace("_", " "), v) for k, v in docker["counters"].items()),
        ])
    return "\n".join(lines)


# ---------------------------------------------------------------- fabric


def render_fabric(data: JSON) -> str:
    host = data["host"]
    peers = data["peers"]
    state = "converged" if data["converged"] else "not converged"
    lines = [f"Fabric seen from VTEP {host['vtep']} (router-id {host['router_id']}, "
             f"AS {host['asn']}), {state}",
             "Peers: " + (", ".join(f"{p['address']} {p['state']}" for p in peers) or "none"),
             ""]  # fmt: skip
    lines += table(("VNI", "# Local MACs", "# Remote MACs", "# VTEPs", "FDB pending"),
                   [(v["vni"], v["local_macs"], v["remote_macs"], v["vteps"], v["fdb_pending"])
                    for v in data["vnis"]])  # fmt: skip
    lines.append("")
    lines += table(("Remote VTEP", "MACs per VNI", "Via peers"),
                   [(t["vtep"], " ".join(f"{v['vni']}:{v['macs']}" for v in t["vnis"]) or None,
                     " ".join(t["peers"]) or None) for t in data["vteps"]])  # fmt: skip
    lines.append(f"Number of remote VTEPs: {len(data['vteps'])}")
    if data["conflicts"]:
        lines += ["", "Conflicts:"]
        lines += [f"  MAC {c['mac']} in VNI {c['vni']}: {c['reason']}" for c in data["conflicts"]]
    duplicates = data.get("duplicates") or []
    if duplicates:
        lines += ["", "Duplicate MACs:"]
        lines += [f"  MAC {d['mac']} in VNI {d['vni']}: {d['moves']} moves"
                  + (", frozen" if d["frozen"] else "") for d in duplicates]  # fmt: skip
    limited = [p for p in data["peers"] if (p.get("route_limit") or {}).get("level", "ok") != "ok"]
    if limited:
        lines += ["", "Route limits:"]
        lines += [f"  {p['address']}: {p['route_limit']['level']} "
                  f"(max {p['route_limit']['max_routes']} routes)" for p in limited]  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------- config


def render_config(data: JSON) -> str:
    """The effective config as YAML that `check-config` takes (secrets stay `***`)."""
    import yaml

    docker = set(data["docker_vnis"])
    lines = [f"# The effective config of the running evpnd, from {data['source'] or '-'}; "
             "secrets shown as ***"]
    if docker:
        lines.append("# VNIs marked 'from a Docker network' are not in the file: the Docker "
                     "driver added them")
    dumped = yaml.safe_dump(data["config"], sort_keys=False, default_flow_style=False,
                            allow_unicode=True)
    for line in dumped.splitlines():
        number = line.removeprefix("- vni: ")
        if line.startswith("- vni: ") and number.isdigit() and int(number) in docker:
            line += "  # from a Docker network"
        lines.append(line)
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[JSON], str]] = {
    "peers": render_peers,
    "vni": render_vni,
    "mac": render_mac,
    "neighbors": render_neighbors,
    "routes": render_routes,
    "vteps": render_vteps,
    "ip": l3views.render_ip_routes,
    "status": render_status,
    "fabric": render_fabric,
    "config": render_config,
}


def render(what: str, data: JSON) -> str:
    return RENDERERS[what](data)
