"""What one daemon leaves the next about a running ExaBGP (pure serialisation).

A daemon stopping with a hold (bgp.restart_hold) leaves ExaBGP and its
sessions up; the next daemon adopts it. Two files in state_dir carry over:

* `speaker.json`: which process is our ExaBGP and the token its relay says
  hello with, so the next daemon adopts only that one;
* `announced.json`: the routes ExaBGP holds for us, so the next daemon can
  withdraw the ones it no longer wants with the exact same NLRI, and leaves
  the others alone instead of re-announcing them.

Both are written atomically with mode 0600. A missing, unreadable or
foreign file is never fatal: the next daemon starts a fresh ExaBGP instead
(or, for `announced.json`, re-announces and logs what it cannot withdraw).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, is_dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

from evpnd.model import ImetKey, ImetRoute, MacIpKey, MacIpRoute, PrefixKey, PrefixRoute, Route

FORMAT = 1
_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (MacIpRoute, ImetRoute, PrefixRoute, MacIpKey, ImetKey, PrefixKey)
}
_ROUTES = (MacIpRoute, ImetRoute, PrefixRoute)


class HandoffError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SpeakerRecord:
    pid: int
    token: str
    config: str  # path of the ExaBGP configuration it was started with


def record_to_json(record: SpeakerRecord) -> str:
    return json.dumps({"format": FORMAT, "pid": record.pid, "token": record.token,
                       "config": record.config})  # fmt: skip


def record_from_json(text: str) -> SpeakerRecord:
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise HandoffError(f"unknown format {doc.get('format')!r}")
        return SpeakerRecord(int(doc["pid"]), str(doc["token"]), str(doc["config"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HandoffError(f"unreadable speaker record: {exc}") from None


def routes_to_json(routes: list[Route]) -> str:
    return json.dumps({"format": FORMAT, "routes": [_encode(route) for route in routes]})


def routes_from_json(text: str) -> list[Route]:
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise HandoffError(f"unknown format {doc.get('format')!r}")
        routes = [_decode(item) for item in doc["routes"]]
    except HandoffError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HandoffError(f"unreadable route list: {exc}") from None
    for route in routes:
        if not isinstance(route, _ROUTES):
            raise HandoffError(f"not a route: {route!r}")
    return routes


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {"_": type(value).__name__,
                **{f.name: _encode(getattr(value, f.name)) for f in fields(value)}}  # fmt: skip
    if isinstance(value, IPv4Address | IPv6Address):
        return {"ip": str(value)}
    if isinstance(value, IPv4Network | IPv6Network):
        return {"net": str(value)}
    if isinstance(value, tuple):
        return {"tuple": [_encode(item) for item in value]}
    if value is None or isinstance(value, str | int | bool):
        return value
    raise HandoffError(f"cannot record {type(value).__name__}")


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "_" in value:
        cls = _TYPES.get(value["_"])
        if cls is None:
            raise HandoffError(f"unknown type {value['_']!r}")
        return cls(**{name: _decode(item) for name, item in value.items() if name != "_"})
    if "ip" in value:
        return ip_address(value["ip"])
    if "net" in value:
        return ip_network(value["net"])
    if "tuple" in value:
        return tuple(_decode(item) for item in value["tuple"])
    raise HandoffError(f"unexpected object {sorted(value)}")
