"""What an evpnd host's kernel tables must hold, by FRR's word, and how far they are from it.

Pure: FRR's JSON (`show evpn mac vni N`, `show evpn arp-cache vni N`, `show bgp
l2vpn evpn route type multicast`) and the host's (`bridge -j fdb show dev
vxlanN`, `ip -j neigh show dev brN`) in, values out.

FRR's zebra on a VTEP of the VNI has already chosen, for every MAC, the VTEP
it lives behind (MAC mobility, sticky, its own local MACs); a host at VTEP X
must send each MAC FRR knows there too, except the ones FRR places behind X
(X's own endpoints). The flood list must name every VTEP that sent a Type-3
route for the VNI, except X. Neighbour entries (ARP/ND suppression) likewise
from FRR's ARP cache.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ZERO_MAC = "00:00:00:00:00:00"
EVPND_PROTOCOL = "238"


@dataclass(frozen=True)
class FrrView:
    """Where FRR sends each MAC and IP of the VNI, and the VTEPs of its flood list."""

    macs: dict[str, str]  # MAC -> VTEP
    neighbors: dict[str, tuple[str, str]]  # IP -> (MAC, VTEP)
    floods: frozenset[str]  # VTEPs that sent a Type-3 route (FRR's own included)


@dataclass(frozen=True)
class HostTables:
    """evpnd's entries in one host's kernel (extern_learn FDB entries, tagged neighbours)."""

    macs: dict[str, str]  # MAC -> dst
    floods: frozenset[str]
    neighbors: dict[str, str]  # IP -> MAC


@dataclass
class Differences:
    """Entries the host holds that FRR does not want there (stale) and the reverse."""

    stale: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.stale or self.missing)

    def __str__(self) -> str:
        def some(items: list[str]) -> str:
            return ", ".join(items[:6]) + (f" (+{len(items) - 6})" if len(items) > 6 else "")

        return f"stale {len(self.stale)} [{some(self.stale)}], missing {len(self.missing)} " \
               f"[{some(self.missing)}]"


def frr_view(frr_vtep: str, macs: Mapping[str, Any], arp: Mapping[str, Any],
             imets: Mapping[str, Any], vni: int | None = None) -> FrrView:  # fmt: skip
    """From `show evpn mac vni N json`, `show evpn arp-cache vni N json` and
    `show bgp l2vpn evpn route type multicast json` on an FRR VTEP of the VNI
    (`vni`: only the Type-3 routes whose route target names it; None: all)."""
    where: dict[str, str] = {}
    for mac, entry in (macs.get("macs") or {}).items():
        if entry.get("type") == "remote":
            where[mac] = entry["remoteVtep"]
        elif entry.get("type") == "local":
            where[mac] = frr_vtep
    neighbors: dict[str, tuple[str, str]] = {}
    for ip, entry in arp.items():
        if not isinstance(entry, dict):
            continue  # numArpNd
        if entry.get("type") == "remote":
            neighbors[ip] = (entry["mac"], entry["remoteVtep"])
        elif entry.get("type") == "local":
            neighbors[ip] = (entry["mac"], frr_vtep)
    return FrrView(where, neighbors, frozenset(_imet_originators(imets, vni)))


def _best_paths(table: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(prefix, best path) of every route in a `show bgp l2vpn evpn ... json` table."""
    found = []
    for rd, routes in table.items():
        if not isinstance(routes, dict):
            continue  # numPrefix, numPaths
        for prefix, route in routes.items():
            if not isinstance(route, dict) or "paths" not in route:
                continue
            for group in route["paths"]:
                for path in group if isinstance(group, list) else [group]:
                    if path.get("bestpath") and path.get("valid"):
                        found.append((f"{rd} {prefix}", path))
    return found


def _imet_originators(table: Mapping[str, Any], vni: int | None) -> set[str]:
    vteps = set()
    target = None if vni is None else re.compile(rf"RT:\S+:{vni}(\s|$)")
    for prefix, path in _best_paths(table):
        communities = path.get("extendedCommunity", {}).get("string", "")
        # "[3]:[0]:[32]:[192.0.2.1]": the originator is the last field.
        if prefix.split(" ", 1)[1].startswith("[3]:") and (
                target is None or target.search(communities)):
            vteps.add(prefix.rsplit("[", 1)[1].rstrip("]"))
    return vteps


def type2_macs_from(table: Mapping[str, Any], nexthop: str) -> set[str]:
    """MACs of the best Type-2 routes whose next hop is `nexthop` (what that VTEP sent)."""
    return {path["mac"] for _, path in _best_paths(table)
            if path.get("routeType") == 2
            and any(n.get("ip") == nexthop for n in path.get("nexthops", []))}  # fmt: skip


def host_tables(fdb: list[dict[str, Any]], neighbors: list[dict[str, Any]]) -> HostTables:
    """From `bridge -j fdb show dev vxlanN` and `ip -j neigh show dev brN` on the host."""
    macs: dict[str, str] = {}
    floods: set[str] = set()
    for entry in fdb:
        if "dst" not in entry or "extern_learn" not in entry.get("flags", []):
            continue  # the bridge's companion entries, an admin's entries
        if entry["mac"] == ZERO_MAC:
            floods.add(entry["dst"])
        else:
            macs[entry["mac"]] = entry["dst"]
    neighs = {n["dst"]: n.get("lladdr", "") for n in neighbors
              if n.get("protocol") == EVPND_PROTOCOL or "extern_learn" in n}  # fmt: skip
    return HostTables(macs, frozenset(floods), neighs)


def compare(view: FrrView, vtep: str, host: HostTables) -> Differences:
    """The host at `vtep` against FRR's view: entries stale on the host, entries missing."""
    want_macs = {(mac, where) for mac, where in view.macs.items() if where != vtep}
    want_floods = {v for v in view.floods if v != vtep}
    want_neighs = {(ip, mac) for ip, (mac, where) in view.neighbors.items() if where != vtep}
    have_macs = set(host.macs.items())
    have_neighs = set(host.neighbors.items())
    stale = ([f"mac {m} dst {d}" for m, d in sorted(have_macs - want_macs)]
             + [f"flood {v}" for v in sorted(host.floods - want_floods)]
             + [f"neigh {i} {m}" for i, m in sorted(have_neighs - want_neighs)])
    missing = ([f"mac {m} dst {d}" for m, d in sorted(want_macs - have_macs)]
               + [f"flood {v}" for v in sorted(want_floods - host.floods)]
               + [f"neigh {i} {m}" for i, m in sorted(want_neighs - have_neighs)])
    return Differences(stale, missing)
