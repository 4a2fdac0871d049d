"""The fabric view's JSON (evpnd.control.views.fabric) -> an SVG picture. Pure.

Three columns: the BGP peers on the left, this host (its VTEP and VNIs) in
the middle, the remote VTEPs on the right with their MACs per VNI; a line
from this host to each peer (coloured by the session state) and to each
remote VTEP (the VXLAN tunnels); below, what needs an operator (sticky MAC
conflicts, duplicate MACs, peers over their route limit), and the VTEPs and
peers concerned are outlined in red. The same text serves `evpnd show fabric
--svg FILE` and the live page (/fabric), which swaps it in every second.

Only presentation attributes, no <style> or script: the picture is safe to
inline in a page with a strict Content-Security-Policy, and looks the same
as a file. Every element a test or a script may look for carries a class
and data-* attributes (`g.vtep[data-vtep][data-macs]`, `text.vtep-vni
[data-vni][data-macs]`, `g.peer[data-peer][data-state]`, `g.vni[data-vni]`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

JSON = Mapping[str, Any]

WIDTH = 1040
MARGIN = 20
COLUMN = 250  # width of a box
PEER_X = MARGIN
HOST_X = (WIDTH - COLUMN) // 2
VTEP_X = WIDTH - MARGIN - COLUMN
TOP = 104  # first box
GAP = 12  # between boxes
LINE = 18  # one text line in a box
MAX_VTEPS = 200  # drawn; the rest are counted in a note
MAX_PROBLEMS = 20
TEXT_MAX = 34  # characters of free text (descriptions) in a box

FONT = "DejaVu Sans, Liberation Sans, Arial, sans-serif"
INK = "#1a202c"
MUTED = "#4a5568"
BOX = "#f7fafc"
EDGE = "#a0aec0"
TUNNEL = "#2b6cb0"
PROBLEM = "#c53030"
LIMIT_COLOURS = {"warning": "#b7791f", "exceeded": PROBLEM}
STATE_COLOURS = {
    "established": "#2f855a",
    "connected": "#b7791f",
    "idle": "#718096",
    "down": PROBLEM,
}


def _a(value: object) -> str:
    """An attribute value, quoted."""
    return '"' + escape(str(value), quote=True) + '"'


def _t(value: object) -> str:
    return escape(str(value), quote=False)


def _short(text: str, limit: int = TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _text(x: float, y: float, body: str, *, size: int = 13, weight: str = "normal",
          fill: str = INK, anchor: str = "start", extra: str = "") -> str:  # fmt: skip
    return (f'<text x="{x:g}" y="{y:g}" font-size="{size}" font-weight="{weight}" '
            f'fill="{fill}" text-anchor="{anchor}"{extra}>{_t(body)}</text>')  # fmt: skip


def _box(x: float, y: float, height: float, *, stroke: str = EDGE, width: float = 1.5) -> str:
    return (f'<rect x="{x:g}" y="{y:g}" width="{COLUMN}" height="{height:g}" rx="8" '
            f'fill="{BOX}" stroke="{stroke}" stroke-width="{width:g}"/>')


def _link(x1: float, y1: float, x2: float, y2: float, colour: str, *, dashed: bool = False,
          cls: str, data: str = "") -> str:  # fmt: skip
    mid = (x1 + x2) / 2
    dash = ' stroke-dasharray="6 4"' if dashed else ""
    return (f'<path class="{cls}"{data} d="M{x1:g},{y1:g} C{mid:g},{y1:g} {mid:g},{y2:g} '
            f'{x2:g},{y2:g}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _peer_boxes(peers: list[JSON]) -> tuple[list[str], list[float], float]:
    out: list[str] = []
    mids: list[float] = []
    y = float(TOP)
    for p in peers:
        state = str(p["state"])
        colour = STATE_COLOURS.get(state, MUTED)
        limit = p.get("route_limit")
        level = "none" if limit is None else str(limit["level"])
        height = (3 + (limit is not None)) * LINE + 8
        about = " \u00b7 ".join(str(x) for x in (p.get("description") or "",
                                                f"AS {p['remote_asn']}" if p.get("remote_asn")
                                                else "") if x)  # fmt: skip
        out += [
            f'<g class="peer" data-peer={_a(p["address"])} data-state={_a(state)} '
            f'data-limit={_a(level)}>',
            _box(PEER_X, y, height, stroke=LIMIT_COLOURS.get(level, colour), width=2),
            _text(PEER_X + 12, y + 22, str(p["address"]), size=14, weight="bold"),
            _text(PEER_X + 12, y + 22 + LINE, _short(about) or "BGP peer", fill=MUTED),
            _text(PEER_X + 12, y + 22 + 2 * LINE, state, fill=colour, weight="bold",
                  extra=' class="peer-state"'),
        ]
        if limit is not None:
            out.append(_text(PEER_X + 12, y + 22 + 3 * LINE,
                             f"route limit {limit['max_routes']}: {level}", size=12,
                             fill=LIMIT_COLOURS.get(level, MUTED), extra=' class="peer-limit"'))
        out.append("</g>")
        mids.append(y + height / 2)
        y += height + GAP
    if not peers:
        out.append(_text(PEER_X + 12, TOP + 22, "no BGP peers configured", fill=MUTED))
        y += LINE + GAP
    return out, mids, y


def _host_box(data: JSON) -> tuple[list[str], float, float]:
    host = data["host"]
    vnis = list(data["vnis"])
    height = 2 * LINE + 20 + max(1, len(vnis)) * 2 * LINE
    y = float(TOP)
    out = [
        f'<g class="host" data-vtep={_a(host["vtep"])}>',
        _box(HOST_X, y, height, stroke=INK, width=2.5),
        _text(HOST_X + 12, y + 22, f"VTEP {host['vtep']}", size=14, weight="bold"),
        _text(HOST_X + 12, y + 22 + LINE, f"router-id {host['router_id']}, AS {host['asn']}",
              fill=MUTED),
    ]
    row = y + 22 + 2 * LINE + 8
    for v in vnis:
        pending = int(v.get("fdb_pending", 0))
        detail = (f"{v['local_macs']} local, {v['remote_macs']} remote MACs, "
                  f"{_plural(int(v['vteps']), 'VTEP')}")  # fmt: skip
        out += [
            f'<g class="vni" data-vni={_a(v["vni"])} data-local-macs={_a(v["local_macs"])} '
            f'data-remote-macs={_a(v["remote_macs"])} data-fdb-pending={_a(pending)}>',
            _text(HOST_X + 12, row, f"VNI {v['vni']}", weight="bold",
                  extra=' class="vni-label"'),
            _text(HOST_X + 80, row, f"flood {v['flood']}"
                  + (f", {pending} FDB pending" if pending else ""),
                  fill=PROBLEM if pending else MUTED, size=12),
            _text(HOST_X + 12, row + LINE, detail, size=12),
            "</g>",
        ]
        row += 2 * LINE
    if not vnis:
        out.append(_text(HOST_X + 12, row, "no VNI configured", fill=MUTED))
    out.append("</g>")
    return out, y + height / 2, height


def _vtep_boxes(vteps: list[JSON], conflicted: set[str]) -> tuple[list[str], list[float], float]:
    out: list[str] = []
    mids: list[float] = []
    y = float(TOP)
    for t in vteps[:MAX_VTEPS]:
        rows = list(t["vnis"])
        height = 2 * LINE + 14 + max(1, len(rows)) * LINE
        bad = t["vtep"] in conflicted
        # The peer comes from a MAC's best path: a VTEP without MACs (an EVPN or static
        # flood-list entry only) has none to name.
        via = f"via {', '.join(t['peers'])}" if t["peers"] else "flood list only"
        out += [
            f'<g class="vtep" data-vtep={_a(t["vtep"])} data-macs={_a(t["macs"])}'
            f' data-conflict={_a(str(bad).lower())}>',
            _box(VTEP_X, y, height, stroke=PROBLEM if bad else TUNNEL, width=2 if bad else 1.5),
            _text(VTEP_X + 12, y + 22, str(t["vtep"]), size=14, weight="bold"),
            _text(VTEP_X + COLUMN - 12, y + 22, _plural(int(t["macs"]), "MAC"), fill=MUTED,
                  anchor="end"),
            _text(VTEP_X + 12, y + 22 + LINE, _short(via), fill=MUTED, size=12),
        ]
        row = y + 22 + 2 * LINE
        for v in rows:
            label = f"VNI {v['vni']}: {_plural(int(v['macs']), 'MAC')}"
            if not v["flood"]:
                label += " (not in flood list)"
            out.append(_text(VTEP_X + 12, row, label, size=12,
                             extra=f' class="vtep-vni" data-vni={_a(v["vni"])} '
                                   f'data-macs={_a(v["macs"])}'))  # fmt: skip
            row += LINE
        out.append("</g>")
        mids.append(y + height / 2)
        y += height + GAP
    hidden = len(vteps) - MAX_VTEPS
    if hidden > 0:
        out.append(_text(VTEP_X + 12, y + 14, f"\u2026 and {hidden} more VTEPs "
                         "(evpnd show vteps)", fill=MUTED, extra=' class="vteps-hidden"'))
        y += LINE + GAP
    if not vteps:
        out.append(_text(VTEP_X + 12, TOP + 22, "no remote VTEP yet", fill=MUTED,
                         extra=' class="no-vteps"'))
        y += LINE + GAP
    return out, mids, y


def _problems(data: JSON, y: float) -> tuple[list[str], float]:
    lines = [
        f"MAC {c['mac']} in VNI {c['vni']}: {c['reason']} ({', '.join(c['vteps']) or 'local'})"
        for c in data.get("conflicts", ())
    ]
    for d in data.get("duplicates", ()):
        where = f", last from {d['vtep']}" if d.get("vtep") else ""
        frozen = ", frozen" if d.get("frozen") else ""
        lines.append(f"MAC {d['mac']} in VNI {d['vni']}: duplicate ({d['moves']} moves"
                     f"{where}){frozen}")  # fmt: skip
    for p in data["peers"]:
        limit = p.get("route_limit")
        if limit is not None and limit["level"] != "ok":
            lines.append(f"peer {p['address']}: route limit {limit['max_routes']} "
                         f"{'exceeded' if limit['level'] == 'exceeded' else 'nearly reached'}")
    if not lines:
        return [], y
    out = [f'<g class="problems" data-count={_a(len(lines))}>',
           _text(MARGIN, y + 18, "Needs attention", size=15, weight="bold", fill=PROBLEM)]
    y += 18
    for line in lines[:MAX_PROBLEMS]:
        y += LINE
        out.append(_text(MARGIN + 12, y, line, fill=PROBLEM, extra=' class="problem"'))
    if len(lines) > MAX_PROBLEMS:
        y += LINE
        out.append(_text(MARGIN + 12, y, f"\u2026 and {len(lines) - MAX_PROBLEMS} more",
                         fill=PROBLEM))
    out.append("</g>")
    return out, y + GAP


def _conflicted_vteps(data: JSON) -> set[str]:
    """VTEPs named by a sticky conflict or as the last place of a duplicate MAC."""
    duplicates = {d["vtep"] for d in data.get("duplicates", ()) if d.get("vtep")}
    return duplicates | {vtep for c in data.get("conflicts", ()) for vtep in c["vteps"]}


def _summary(data: JSON) -> str:
    peers = list(data["peers"])
    up = sum(p["state"] == "established" for p in peers)
    return " \u00b7 ".join([
        "converged" if data["converged"] else "converging (start-up: holding stale entries)",
        f"{up} of {_plural(len(peers), 'BGP peer')} established",
        _plural(len(data["vteps"]), "remote VTEP"),
        _plural(len(data["vnis"]), "VNI"),
        f"as of {when(float(data['time']))}",
    ])  # fmt: skip


def render(data: JSON) -> str:
    """The picture of one fabric view, a complete SVG document (no XML declaration, so
    that it can also be inlined in HTML)."""
    host = data["host"]
    peer_parts, peer_mids, peer_bottom = _peer_boxes(list(data["peers"]))
    host_parts, host_mid, host_height = _host_box(data)
    vteps = list(data["vteps"])
    vtep_parts, vtep_mids, vtep_bottom = _vtep_boxes(vteps, _conflicted_vteps(data))
    bottom = max(peer_bottom, TOP + host_height + GAP, vtep_bottom)
    problem_parts, bottom = _problems(data, bottom)
    height = int(bottom + MARGIN)

    links: list[str] = []
    for p, mid in zip(data["peers"], peer_mids, strict=True):
        state = str(p["state"])
        links.append(_link(PEER_X + COLUMN, mid, HOST_X, host_mid,
                           STATE_COLOURS.get(state, MUTED), dashed=state != "established",
                           cls="session", data=f" data-peer={_a(p['address'])}"))  # fmt: skip
    for t, mid in zip(vteps, vtep_mids, strict=False):
        links.append(_link(HOST_X + COLUMN, host_mid, VTEP_X, mid, TUNNEL,
                           dashed=not t["flood_installed"], cls="tunnel",
                           data=f" data-vtep={_a(t['vtep'])}"))  # fmt: skip

    title = f"evpnd fabric seen from {host['vtep']}"
    parts: Iterable[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="fabric" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" font-family={_a(FONT)} '
        f'role="img" aria-label={_a(title)} data-vteps={_a(len(vteps))} '
        f'data-time={_a(data["time"])}>',
        f"<title>{_t(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        _text(MARGIN, 32, title, size=20, weight="bold"),
        _text(MARGIN, 54, _summary(data), fill=MUTED, extra=' class="summary"'),
        _text(PEER_X, 90, "BGP peers", size=12, weight="bold", fill=MUTED),
        _text(HOST_X, 90, "this host", size=12, weight="bold", fill=MUTED),
        _text(VTEP_X, 90, "remote VTEPs (VXLAN tunnels)", size=12, weight="bold", fill=MUTED),
        *links,
        *peer_parts,
        *host_parts,
        *vtep_parts,
        *problem_parts,
        "</svg>",
    ]
    return "\n".join(parts) + "\n"
