"""Daemon state -> JSON-able data, one function per `show` command. Pure.

Each view takes a `Snapshot` (see snapshot.py) and the request's arguments
and returns plain dicts/lists of str/int/float/bool/None: what `--json`
prints and what render.py turns into tables. Addresses are strings, times
are Unix seconds, durations seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from ipaddress import ip_address
from operator import attrgetter
from typing import Any

from evpnd.config import REDACTED, Vni, is_secret
from evpnd.control import l3views
from evpnd.control.peers import ESTABLISHED, PeerRecord
from evpnd.control.snapshot import Snapshot
from evpnd.model import (
    EadRoute,
    EsRoute,
    ImetRoute,
    IPAddress,
    MacIpRoute,
    PrefixRoute,
    Route,
    address_order,
)
from evpnd.rib import PERMANENT, DuplicateMac, LocalMacView, RemoteMacPath

JSON = dict[str, Any]
# The version of every `show` answer's layout (its "schema_version" key; docs/show-json.md):
# raised when a field is renamed, removed or changes meaning, not when one is added.
SCHEMA_VERSION = 1
ROUTE_TYPES = (1, 2, 3, 4, 5)
DIRECTIONS = ("in", "out")


class ViewError(ValueError):
    """A request the views cannot answer (unknown VNI, bad argument): said to the client."""


def _s(value: object) -> str | None:
    return None if value is None else str(value)


def _vnis(snap: Snapshot, vni: int | None) -> list[Vni]:
    if vni is None:
        return sorted(snap.cfg.vnis, key=lambda v: v.vni)
    for v in snap.cfg.vnis:
        if v.vni == vni:
            return [v]
    raise ViewError(f"VNI {vni} is not configured")


# ---------------------------------------------------------------- peers


def peers(snap: Snapshot) -> JSON:
    configured = {p.address: p for p in snap.cfg.bgp.peers}
    addresses = sorted(set(configured) | set(snap.peers), key=address_order)
    received = snap.rib.counts().routes_by_peer
    sent = len(snap.out_routes)
    rows = []
    for address in addresses:
        cfg_peer = configured.get(address)
        rec = snap.peers.get(address) or PeerRecord(address)
        established = rec.state == ESTABLISHED
        note = rec.last_notification
        rows.append(
            {
                "address": str(address),
                "remote_asn": None if cfg_peer is None else cfg_peer.remote_asn,
                "description": None if cfg_peer is None else cfg_peer.description,
                "configured": cfg_peer is not None,
                "state": rec.state,
                "since": rec.since,
                "uptime": rec.uptime(snap.now),
                # Taken over from a previous daemon: the session is older than `uptime`.
                "uptime_is_minimum": rec.adopted,
                "state_for": None if rec.since is None else max(0.0, snap.now - rec.since),
                "established_count": rec.established_count,
                "drops": rec.drops,
                "routes_received": received.get(str(address), 0),
                "routes_sent": sent if established else 0,
                "updates_received": rec.updates,
                "announced_received": rec.announced,
                "withdrawn_received": rec.withdrawn,
                "end_of_rib": rec.eor,
                "last_down_reason": rec.last_down_reason,
                "last_down_at": rec.last_down_at,
                "last_notification": None
                if note is None
                else {
                    "code": note.code,
                    "subcode": note.subcode,
                    "text": note.text,
                    "message": note.message,
                    "direction": note.direction,
                    "at": note.at,
                },
                "last_error": _last_error(rec),
                "graceful_restart": _graceful(snap, address),
                "route_limit": _route_limit(snap, address, cfg_peer),
            }
        )
    return {
        "router_id": str(snap.cfg.router_id),
        "asn": snap.cfg.asn,
        "vtep": str(snap.cfg.vtep.address),
        "speaker_pid": snap.speaker.pid,
        "established": sum(r["state"] == ESTABLISHED for r in rows),
        "peers": rows,
    }


def _graceful(snap: Snapshot, address: IPAddress) -> JSON | None:
    """The peer's graceful-restart capability (from its OPEN) and our helper state."""
    protection = snap.protection.get(address)
    grace = None if protection is None else protection.grace
    if grace is None:
        return None
    cap = grace.capability
    return {
        "capability": None if cap is None else {
            "restart_time": cap.restart_time,
            "restarting": cap.restarting,
            # The F bit for L2VPN/EVPN; None: the family is not in the capability.
            "evpn_forwarding_preserved": cap.evpn,
        },
        "state": grace.phase,
        "stale_routes": snap.rib.stale_count(address),
        "ends_in": None if grace.deadline is None else max(0.0, grace.deadline - snap.monotonic),
        "restarts": grace.restarts,
    }  # fmt: skip


def _route_limit(snap: Snapshot, address: IPAddress, cfg_peer: Any) -> JSON | None:
    limit, level = snap.rib.route_limit(address)
    if limit is None:
        return None
    protection = snap.protection.get(address)
    until = None if protection is None else protection.held_down_until
    events = snap.rib.stats.limit_events.get(address, {})
    return {
        "max_routes": limit.max_routes,
        "warning_at": limit.warning_at,
        "action": None if cfg_peer is None else cfg_peer.max_routes_action,
        "restart_after": None if cfg_peer is None else cfg_peer.max_routes_restart,
        "level": level,
        "refused": snap.rib.stats.routes_refused.get(address, 0),
        "exceeded_count": events.get("exceeded", 0),
        "held_down_for": None if until is None else max(0.0, until - snap.monotonic),
    }


def _last_error(rec: PeerRecord) -> str | None:
    note = rec.last_notification
    if note is not None and (rec.last_down_at is None or note.at >= rec.last_down_at - 1):
        word = "received" if note.direction == "receive" else "sent"
        text = f"notification {word} ({note.text})"
        return f"{text}: {note.message}" if note.message else text
    return rec.last_down_reason


# ---------------------------------------------------------------- vni


def vni(snap: Snapshot, vni: int | None = None) -> JSON:
    rib = snap.rib
    vteps = rib.vteps()
    rows = []
    for v in _vnis(snap, vni):
        locals_ = rib.local_macs(v.vni)
        if v.flood == "evpn":
            flood = [str(t) for t in vteps.get(v.vni, ())]
        elif v.flood == "static":
            flood = [str(t) for t in v.flood_peers]
        else:
            flood = []
        rows.append(
            {
                "vni": v.vni,
                "bridge": v.bridge_name,
                "bridge_adopted": v.adopt_bridge,
                "vxlan_device": v.vxlan_name,
                "mtu": snap.mtus.get(v.vxlan_name),
                "bridge_mtu": snap.mtus.get(v.bridge_name),
                "mtu_config": v.mtu,
                "rd": snap.cfg.rd_for(v),
                "import_rts": snap.cfg.import_targets(v),
                "export_rts": snap.cfg.export_targets(v),
                "arp_suppression": v.arp_suppression,
                "flood": v.flood,
                "group": _s(v.group),
                "local_macs": len(locals_),
                "local_ips": sum(len(m.ips) for m in locals_),
                "remote_macs": len(rib.remote_macs(v.vni)),
                "remote_neighbors": len(rib.remote_neighs(v.vni)),
                "vteps": flood,
                "gateway": l3views.gateway(v),
            }
        )
    return {"vnis": rows, "l3vni": l3views.l3vni(snap)}


# ---------------------------------------------------------------- mac


def mac(snap: Snapshot, vni: int | None = None) -> JSON:
    rib = snap.rib
    conflicts = {(c.vni, c.mac): c.reason for c in rib.conflicts()}
    out = []
    for v in _vnis(snap, vni):
        rows: list[JSON] = []
        duplicates = {d.mac: d for d in rib.duplicates(v.vni)}
        for lm in rib.local_macs(v.vni):
            row = _local_mac(snap, lm, conflicts.get((v.vni, lm.mac)))
            rows.append(_with_duplicate(snap, row, duplicates.get(lm.mac)))
        ips: dict[str, list[str]] = {}
        for n in rib.remote_neighs(v.vni):
            ips.setdefault(n.mac, []).append(str(n.ip))
        for path in rib.remote_macs(v.vni):
            conflict = conflicts.get((v.vni, path.mac))
            row = _remote_mac(snap, v, path, ips.get(path.mac, []), conflict)
            rows.append(_with_duplicate(snap, row, duplicates.get(path.mac)))
        shown = {r["mac"] for r in rows}
        for dup in duplicates.values():
            if dup.mac not in shown:  # frozen with nothing installed or advertised
                rows.append(_duplicate_only(snap, dup))
        rows.sort(key=lambda r: (r["mac"], r["type"]))
        out.append(
            {
                "vni": v.vni,
                "bridge": v.bridge_name,
                "vxlan_device": v.vxlan_name,
                "count": len({r["mac"] for r in rows}),
                "local": sum(r["type"] == "local" for r in rows),
                "remote": sum(r["type"] == "remote" for r in rows),
                "duplicates": len(duplicates),
                "macs": rows,
            }
        )
    return {"vnis": out}


def duplicate_dict(snap: Snapshot, dup: DuplicateMac) -> JSON:
    """A duplicate MAC's flag: moves counted, since when, frozen for how long."""
    until = dup.frozen_until
    return {
        "moves": dup.moves,
        "vtep": _s(dup.vtep),
        "detected_ago": max(0.0, snap.monotonic - dup.detected_at),
        "frozen": dup.frozen(snap.monotonic),
        # Seconds the freeze has left; None when not frozen or frozen until cleared.
        "frozen_for": None if until is None or until == PERMANENT
        else max(0.0, until - snap.monotonic),
        "permanent": until == PERMANENT,
    }  # fmt: skip


def _with_duplicate(snap: Snapshot, row: JSON, dup: DuplicateMac | None) -> JSON:
    row["duplicate"] = None if dup is None else duplicate_dict(snap, dup)
    return row


def _duplicate_only(snap: Snapshot, dup: DuplicateMac) -> JSON:
    return {
        "mac": dup.mac, "type": "duplicate", "port": None, "vtep": _s(dup.vtep), "seq": None,
        "sticky": False, "default_gateway": False, "peer": None, "ips": [],
        "advertised": None, "installed": None, "conflict": None,
        "duplicate": duplicate_dict(snap, dup),
    }  # fmt: skip


def _local_mac(snap: Snapshot, lm: LocalMacView, conflict: str | None) -> JSON:
    learned = snap.local.macs.get((lm.vni, lm.mac))
    return {
        "mac": lm.mac,
        "type": "local",
        "port": None if learned is None else learned.port,
        "vtep": None,
        "seq": lm.seq,
        "sticky": lm.sticky,
        "default_gateway": False,
        "peer": None,
        "ips": [str(i) for i in lm.ips],
        # False while a remote route beats ours (the MAC moved away, or is pinned there).
        "advertised": lm.advertised,
        "installed": None,
        "conflict": conflict,
    }


def _remote_mac(
    snap: Snapshot, v: Vni, path: RemoteMacPath, ips: list[str], conflict: str | None
) -> JSON:
    entry = snap.desired.macs.get((v.vxlan_name, path.mac))
    return {
        "mac": path.mac,
        "type": "remote",
        "port": None,
        "vtep": str(path.vtep),
        "seq": path.seq,
        "sticky": path.sticky,
        "default_gateway": path.default_gateway,
        "peer": str(path.peer),
        "ips": ips,
        "advertised": None,
        "installed": entry is not None and snap.installed.macs.get(entry.key) == entry,
        "conflict": conflict,
    }


# ---------------------------------------------------------------- neighbors


def neighbors(snap: Snapshot, vni: int | None = None) -> JSON:
    rib = snap.rib
    out = []
    for v in _vnis(snap, vni):
        rows: list[JSON] = []
        for lm in rib.local_macs(v.vni):
            for ip in lm.ips:
                rows.append(
                    {"ip": str(ip), "mac": lm.mac, "type": "local", "vtep": None, "peer": None,
                     "installed": None, "_order": address_order(ip)}
                )
        for n in rib.remote_neighs(v.vni):
            entry = snap.desired.neighs.get((v.bridge_name, n.ip))
            rows.append(
                {
                    "ip": str(n.ip),
                    "mac": n.mac,
                    "type": "remote",
                    "vtep": str(n.vtep),
                    "peer": str(n.peer),
                    "installed": entry is not None
                    and snap.installed.neighs.get(entry.key) == entry,
                    "_order": address_order(n.ip),
                }
            )
        rows.sort(key=lambda r: (r.pop("_order"), r["type"]))
        out.append(
            {
                "vni": v.vni,
                "bridge": v.bridge_name,
                "arp_suppression": v.arp_suppression,
                "count": len(rows),
                "neighbors": rows,
            }
        )
    return {"vnis": out}


# ---------------------------------------------------------------- routes


def routes(
    snap: Snapshot,
    type: int | None = None,
    direction: str | None = None,
    vni: int | None = None,
) -> JSON:
    if type is not None and type not in ROUTE_TYPES:
        raise ViewError(f"route type must be one of {', '.join(map(str, ROUTE_TYPES))}")
    if direction is not None and direction not in DIRECTIONS:
        raise ViewError("direction must be 'in' or 'out'")
    if vni is not None:
        _vnis(snap, vni)
    rows: list[JSON] = []
    if direction in (None, "in"):
        for peer, route in snap.rib.routes():
            imported = snap.rib.imported_vnis(peer, route.key)
            if vni is not None and vni not in imported:
                continue
            row = route_dict(route, "in", peer, imported)
            # Why a VNI whose import targets it matches refused it (RFC 8365), or None.
            row["refused"] = snap.rib.refusal(peer, route.key)
            rows.append(row)
    if direction in (None, "out"):
        for route in snap.out_routes:
            if vni is not None and route.vni != vni:
                continue
            rows.append(route_dict(route, "out", None, (route.vni,)))
    if type is not None:
        rows = [r for r in rows if r["type"] == type]
    _mark_status(snap, rows)
    rows.sort(key=_route_order)
    by_type: dict[str, int] = {}
    for r in rows:
        by_type[str(r["type"])] = by_type.get(str(r["type"]), 0) + 1
    return {
        "router_id": str(snap.cfg.router_id),
        "asn": snap.cfg.asn,
        "count": len(rows),
        "by_type": dict(sorted(by_type.items())),
        "routes": rows,
    }


def _mark_status(snap: Snapshot, rows: list[JSON]) -> None:
    """FRR's status codes on each row: `valid` (ours, or received and imported into a VNI of
    this host) and `best` (the one path of its RD and prefix evpnd uses: for a MAC the RIB's
    choice, otherwise the valid path from the lowest peer address, as BGP's last tie-break)."""
    paths: dict[tuple[str, str], list[JSON]] = {}
    for r in rows:
        ours = r["direction"] == "out"
        r["valid"] = ours or bool(r["imported_vnis"])
        r["best"] = ours
        if not ours and r["valid"]:
            paths.setdefault((r["rd"], r["prefix"]), []).append(r)
    for candidates in paths.values():
        chosen = [r for r in candidates if _rib_chose(snap, r)]
        pick = chosen or candidates
        min(pick, key=lambda r: address_order(ip_address(r["peer"])))["best"] = True


def _rib_chose(snap: Snapshot, r: JSON) -> bool:
    """A received Type-2 route is the RIB's best path for its MAC in one of its VNIs."""
    if r["type"] != 2:
        return False
    for number in r["imported_vnis"]:
        path = snap.rib.remote_mac(number, r["mac"])
        if path is not None and str(path.peer) == r["peer"] and str(path.vtep) == r["nexthop"]:
            return True
    return False


def _route_order(r: JSON) -> tuple[Any, ...]:
    return (r["direction"] != "out", r["rd"], r["type"], r["prefix"], r["peer"] or "")


def route_dict(
    route: Route, direction: str, peer: IPAddress | None, imported: Iterable[int]
) -> JSON:
    key = route.key
    base: JSON = {
        "direction": direction,
        "peer": _s(peer),
        "type": key.route_type,
        "rd": key.rd,
        "etag": key.etag,
        "prefix": prefix_string(route),
        "nexthop": str(route.nexthop),
        "vni": route.vni,
        "route_targets": list(route.route_targets),
        "encapsulation": route.encapsulation,
        "imported_vnis": list(imported),
    }
    if isinstance(route, MacIpRoute):
        base.update(
            mac=route.mac,
            ip=_s(route.ip),
            l3vni=route.l3vni,
            esi=route.esi,
            mobility_seq=route.mobility_seq,
            sticky=route.sticky,
            router_mac=route.router_mac,
            default_gateway=route.default_gateway,
        )
    elif isinstance(route, ImetRoute):
        base.update(
            originator=str(route.key.originator),
            tunnel=_s(route.tunnel),
            tunnel_type=route.tunnel_type,
        )
    elif isinstance(route, PrefixRoute):
        base.update(
            ip_prefix=str(route.key.prefix),
            gateway=_s(route.gateway),
            esi=route.esi,
            router_mac=route.router_mac,
        )
    elif isinstance(route, EadRoute):
        base.update(esi=route.esi, multihoming=True)
    elif isinstance(route, EsRoute):
        base.update(esi=route.esi, originator=str(route.key.originator), multihoming=True)
    return base


def prefix_string(route: Route) -> str:
    """FRR's notation: [2]:[EthTag]:[MAClen]:[MAC]:[IPlen]:[IP], [3]:[EthTag]:[IPlen]:[OrigIP],
    [1]:[ESI]:[EthTag], [4]:[ESI]:[IPlen]:[OrigIP], [5]:[EthTag]:[IPlen]:[IP]."""
    key = route.key
    if isinstance(route, MacIpRoute):
        text = f"[2]:[{key.etag}]:[48]:[{route.mac}]"
        if route.ip is not None:
            text += f":[{route.ip.max_prefixlen}]:[{route.ip}]"
        return text
    if isinstance(route, ImetRoute):
        orig = route.key.originator
        return f"[3]:[{key.etag}]:[{orig.max_prefixlen}]:[{orig}]"
    if isinstance(route, EadRoute):
        return f"[1]:[{route.esi}]:[{key.etag}]"
    if isinstance(route, EsRoute):
        orig = route.key.originator
        return f"[4]:[{route.esi}]:[{orig.max_prefixlen}]:[{orig}]"
    net = route.key.prefix
    return f"[5]:[{key.etag}]:[{net.prefixlen}]:[{net.network_address}]"


# ---------------------------------------------------------------- vteps


def vteps(snap: Snapshot, vni: int | None = None) -> JSON:
    wanted = {v.vni: v for v in _vnis(snap, vni)}
    info: dict[IPAddress, JSON] = {}

    def at(vtep: IPAddress) -> JSON:
        row = info.get(vtep)
        if row is None:
            row = info[vtep] = {"vtep": str(vtep), "flood_vnis": {}, "macs": 0,
                                "neighbors": 0, "peers": set(), "flood_installed": True,
                                "nexthop_mismatch": False}
        return row

    for number, addresses in snap.rib.vteps().items():
        if number in wanted:
            for address in addresses:
                at(address)["flood_vnis"][number] = "evpn"
    for v in wanted.values():
        if v.flood == "static":
            for address in v.flood_peers:
                at(address)["flood_vnis"][v.vni] = "static"
    for number in wanted:
        for path in snap.rib.remote_macs(number):
            row = at(path.vtep)
            row["macs"] += 1
            row["peers"].add(path.peer)
        for n in snap.rib.remote_neighs(number):
            at(n.vtep)["neighbors"] += 1
    for peer, route in snap.rib.routes():
        vtep = route.vtep if isinstance(route, ImetRoute) else route.nexthop
        if vtep in info and set(snap.rib.imported_vnis(peer, route.key)) & set(wanted):
            info[vtep]["peers"].add(peer)
    # A VTEP whose Type-2 next hops and Type-3 tunnel differ (a transit router rewrote
    # next hops): shown on the rows of the tunnel and of each next hop, and listed.
    mismatches = snap.rib.nexthop_mismatches()
    for m in mismatches:
        for address in (m.tunnel, *m.nexthops):
            if address in info:
                info[address]["nexthop_mismatch"] = True
    installed = snap.installed.floods
    for vtep, row in info.items():
        desired = [f for f in snap.desired.floods if f.vtep == vtep
                   and f.device in {wanted[n].vxlan_name for n in row["flood_vnis"]}]
        row["flood_installed"] = all(f in installed for f in desired)
    rows = []
    for vtep in sorted(info, key=address_order):
        row = info[vtep]
        rows.append(
            {
                **row,
                "flood_vnis": [
                    {"vni": n, "source": s} for n, s in sorted(row["flood_vnis"].items())
                ],
                "peers": [str(p) for p in sorted(row["peers"], key=address_order)],
            }
        )
    return {
        "vteps": rows,
        "nexthop_mismatches": [
            {"peer": str(m.peer), "rd": m.rd, "tunnel": str(m.tunnel),
             "nexthops": [str(n) for n in m.nexthops]}
            for m in mismatches
        ],
    }  # fmt: skip


# ---------------------------------------------------------------- fabric

_TUNNEL = attrgetter("device", "vtep")


def fabric(snap: Snapshot) -> JSON:
    """The fabric seen from this host, as the picture draws it (evpnd/web/fabric_svg.py):
    this host and its VNIs, the BGP peers (with their route limits), each remote VTEP with
    its MACs per VNI (the tunnels the wanted kernel entries use), and what needs an
    operator (sticky MAC conflicts, duplicate MACs, peers over their route limit).

    The live page asks for it every second: it costs two passes over the wanted FDB
    entries, mostly in C, and sorts nothing of the RIB (about 70 ms at 100k MACs).
    """
    vni_of = {v.vxlan_name: v.vni for v in snap.cfg.vnis}
    wanted, installed = snap.desired.macs, snap.installed.macs
    per_tunnel = Counter(map(_TUNNEL, wanted.values()))  # (device, VTEP) -> MACs
    pending = Counter(e.device for k, e in wanted.items()
                      if (got := installed.get(k)) is not e and got != e)  # fmt: skip
    macs = {(vtep, vni_of[dev]): n for (dev, vtep), n in per_tunnel.items() if dev in vni_of}
    # The peer each VTEP's routes come through: the best path of one MAC per tunnel.
    via: dict[IPAddress, set[IPAddress]] = {}
    unseen = set(per_tunnel)
    for entry in wanted.values():
        if not unseen:
            break
        tunnel = _TUNNEL(entry)
        if tunnel in unseen:
            unseen.discard(tunnel)
            path = snap.rib.remote_mac(vni_of.get(entry.device, -1), entry.mac)
            if path is not None:
                via.setdefault(entry.vtep, set()).add(path.peer)
    flooded = {(f.vtep, vni_of[f.device]) for f in snap.desired.floods if f.device in vni_of}
    flood_missing = {f.vtep for f in snap.desired.floods if f not in snap.installed.floods}
    vnis_of: dict[IPAddress, set[int]] = {}
    for vtep, number in set(macs) | flooded:
        vnis_of.setdefault(vtep, set()).add(number)
    remote = []
    for vtep in sorted(vnis_of, key=address_order):
        numbers = sorted(vnis_of[vtep])
        remote.append({
            "vtep": str(vtep),
            "macs": sum(macs.get((vtep, n), 0) for n in numbers),
            "peers": [str(p) for p in sorted(via.get(vtep, ()), key=address_order)],
            "flood_installed": vtep not in flood_missing,
            "vnis": [{"vni": n, "macs": macs.get((vtep, n), 0), "flood": (vtep, n) in flooded}
                     for n in numbers],
        })  # fmt: skip
    remote_per_vni = Counter[int]()
    for (_, number), n in macs.items():
        remote_per_vni[number] += n
    configured = {p.address: p for p in snap.cfg.bgp.peers}
    sessions = []
    for address in sorted(set(configured) | set(snap.peers), key=address_order):
        rec = snap.peers.get(address) or PeerRecord(address)
        cfg_peer = configured.get(address)
        limit, level = snap.rib.route_limit(address)
        sessions.append({
            "address": str(address),
            "description": None if cfg_peer is None else cfg_peer.description,
            "remote_asn": None if cfg_peer is None else cfg_peer.remote_asn,
            "state": rec.state,
            "route_limit": None if limit is None
            else {"max_routes": limit.max_routes, "level": level},
        })  # fmt: skip
    return {
        "time": snap.now,
        "host": {"router_id": str(snap.cfg.router_id), "asn": snap.cfg.asn,
                 "vtep": str(snap.cfg.vtep.address)},
        "converged": snap.converged_at is not None,
        "vnis": [
            {"vni": v.vni, "flood": v.flood,
             "local_macs": len(snap.rib.local_macs(v.vni)),
             "remote_macs": remote_per_vni[v.vni],
             "vteps": sum(v.vni in numbers for numbers in vnis_of.values()),
             "fdb_pending": pending[v.vxlan_name]}
            for v in _vnis(snap, None)
        ],
        "peers": sessions,
        "vteps": remote,
        "conflicts": [
            {"vni": c.vni, "mac": c.mac, "reason": c.reason, "vteps": [str(t) for t in c.vteps]}
            for c in snap.rib.conflicts()
        ],
        "duplicates": [
            {"vni": d.vni, "mac": d.mac, "moves": d.moves, "vtep": _s(d.vtep),
             "frozen": d.frozen(snap.monotonic)}
            for d in snap.rib.duplicates()
        ],
    }  # fmt: skip


# ---------------------------------------------------------------- config


def config(snap: Snapshot) -> JSON:
    """The effective config: the file's settings with every default, plus the VNIs of Docker
    networks (`docker_vnis`); secrets (md5_password, passwords) shown as `***`."""
    dumped = snap.cfg.model_dump(mode="json", by_alias=True)
    docker = [] if snap.file_vnis is None else sorted(
        v.vni for v in snap.cfg.vnis if v.vni not in snap.file_vnis)
    return {"source": snap.config_path, "docker_vnis": docker,
            "config": _without_secrets(dumped)}  # fmt: skip


def _without_secrets(value: Any) -> Any:
    """Every set value under a secret's name (config.is_secret) as `***`; unset stays null."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret(k) and v is not None else _without_secrets(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


# ---------------------------------------------------------------- status


def status(snap: Snapshot) -> JSON:
    counts = snap.rib.counts()
    desired, installed = snap.desired, snap.installed
    return {
        "version": snap.version,
        "pid": snap.pid,
        "config": snap.config_path,
        "started": snap.started,
        "uptime": max(0.0, snap.now - snap.started),
        "router_id": str(snap.cfg.router_id),
        "asn": snap.cfg.asn,
        "vtep": str(snap.cfg.vtep.address),
        "vnis": len(snap.cfg.vnis),
        "converged": snap.converged_at is not None,
        "converged_at": snap.converged_at,
        "speaker": {
            "pid": snap.speaker.pid,
            "connected": snap.speaker.connected,
            "restarts": snap.daemon_counters.get("speaker_restarts", 0),
            "counters": dict(snap.speaker.counters),
        },
        "peers": {
            "configured": len(snap.cfg.bgp.peers),
            "established": sum(r.state == ESTABLISHED for r in snap.peers.values()),
        },
        "rib": {
            "routes": counts.routes,
            "routes_by_type": {str(k): v for k, v in counts.routes_by_type.items()},
            "not_imported": counts.not_imported,
            "stale": counts.stale,
            "remote_macs": counts.remote_macs,
            "remote_neighbors": counts.remote_neighs,
            "vteps": counts.vteps,
            "local_macs": counts.local_macs,
            "advertised_macs": counts.advertised_macs,
            "conflicts": counts.conflicts,
            "duplicates": counts.duplicates,
            "frozen_duplicates": counts.frozen,
            "own_routes_ignored": counts.own_routes_ignored,
            "routes_out": len(snap.out_routes),
        },
        "dataplane": {
            "desired": _state_counts(desired.macs, desired.floods, desired.neighs),
            "installed": _state_counts(installed.macs, installed.floods, installed.neighs),
            "holding_removals": snap.holding,
            "conflicts": snap.dataplane_conflicts,
            **dict(snap.dataplane_counters),
        },
        "daemon": dict(snap.daemon_counters),
        "decoder": dict(snap.decoder_counters),
        "learner": dict(snap.learner_counters),
        "mqtt": None if snap.mqtt is None else dict(snap.mqtt),
        "docker": None if snap.docker is None else dict(snap.docker),
    }


def _state_counts(macs: Mapping[Any, Any], floods: set[Any], neighs: Mapping[Any, Any]) -> JSON:
    return {"macs": len(macs), "floods": len(floods), "neighbors": len(neighs)}


# ---------------------------------------------------------------- dispatch

View = Callable[..., JSON]
VIEWS: dict[str, View] = {
    "peers": peers,
    "vni": vni,
    "mac": mac,
    "neighbors": neighbors,
    "routes": routes,
    "vteps": vteps,
    "ip": l3views.ip_routes,  # `show ip routes`
    "status": status,
    "fabric": fabric,
    "config": config,
}
# The arguments each view takes, and their types.
ARGS: dict[str, dict[str, type]] = {
    "peers": {},
    "vni": {"vni": int},
    "mac": {"vni": int},
    "neighbors": {"vni": int},
    "routes": {"type": int, "direction": str, "vni": int},
    "vteps": {"vni": int},
    "ip": {},
    "status": {},
    "fabric": {},
    "config": {},
}


def show(snap: Snapshot, what: str, args: Mapping[str, Any] | None = None) -> JSON:
    """One `show` request: checks the view name and its arguments, then runs it."""
    view = VIEWS.get(what)
    if view is None:
        raise ViewError(f"unknown view {what!r}; one of: {', '.join(VIEWS)}")
    accepted = ARGS[what]
    kwargs: dict[str, Any] = {}
    for name, value in (args or {}).items():
        if value is None:
            continue
        kind = accepted.get(name)
        if kind is None:
            raise ViewError(f"'show {what}' takes no argument {name!r}")
        if not isinstance(value, kind) or isinstance(value, bool):
            wanted = "an integer" if kind is int else "a string"
            raise ViewError(f"argument {name!r} must be {wanted}")
        kwargs[name] = value
    return {"schema_version": SCHEMA_VERSION, **view(snap, **kwargs)}
