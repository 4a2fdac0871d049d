"""What one daemon leaves the next about a running ExaBGP: the hand-over files.

A daemon stopping with a hold (bgp.restart_hold) leaves ExaBGP and its
sessions up; the next daemon adopts it. Two files in state_dir carry over:

* `speaker.json`: which process is our ExaBGP and the token its relay says
  hello with, so the next daemon adopts only that one;
* `announced.json`: the routes ExaBGP holds for us, so the next daemon can
  withdraw the ones it no longer wants with the exact same NLRI, and leaves
  the others alone instead of re-announcing them. It follows what ExaBGP was
  told even between hand-overs, so a crashed daemon's successor knows too.

Both are written atomically with mode 0600 (`write_private`, also used for
ExaBGP's configuration: evpnd/statefiles.py, which never follows a symlink
and fsyncs before the rename) and read without following a symlink. A
missing, unreadable or foreign file is never
fatal: the next daemon starts a fresh ExaBGP instead (or, for
`announced.json`, re-announces and logs what it cannot withdraw). Apart from
the file functions and `AnnouncedRecord` at the end, this module is pure
serialisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from pathlib import Path
from typing import Any

import structlog

from evpnd import statefiles
from evpnd.model import ImetKey, ImetRoute, MacIpKey, MacIpRoute, PrefixKey, PrefixRoute, Route

FORMAT = 1
RECORD_NAME = "speaker.json"
ANNOUNCED_NAME = "announced.json"
RECORD_DELAY = 2.0  # announced.json follows what ExaBGP was told this far behind
_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (MacIpRoute, ImetRoute, PrefixRoute, MacIpKey, ImetKey, PrefixKey)
}
_ROUTES = (MacIpRoute, ImetRoute, PrefixRoute)

log = structlog.get_logger(__name__)


class HandoverError(ValueError):
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
            raise HandoverError(f"unknown format {doc.get('format')!r}")
        return SpeakerRecord(int(doc["pid"]), str(doc["token"]), str(doc["config"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HandoverError(f"unreadable speaker record: {exc}") from None


def routes_to_json(routes: list[Route]) -> str:
    return json.dumps({"format": FORMAT, "routes": [_encode(route) for route in routes]})


def routes_from_json(text: str) -> list[Route]:
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise HandoverError(f"unknown format {doc.get('format')!r}")
        routes = [_decode(item) for item in doc["routes"]]
    except HandoverError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HandoverError(f"unreadable route list: {exc}") from None
    for route in routes:
        if not isinstance(route, _ROUTES):
            raise HandoverError(f"not a route: {route!r}")
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
    raise HandoverError(f"cannot record {type(value).__name__}")


def _decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if "_" in value:
        cls = _TYPES.get(value["_"])
        if cls is None:
            raise HandoverError(f"unknown type {value['_']!r}")
        return cls(**{name: _decode(item) for name, item in value.items() if name != "_"})
    if "ip" in value:
        return ip_address(value["ip"])
    if "net" in value:
        return ip_network(value["net"])
    if "tuple" in value:
        return tuple(_decode(item) for item in value["tuple"])
    raise HandoverError(f"unexpected object {sorted(value)}")


# ---------------------------------------------------------------------------
# The files


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by root only (it holds the token).

    O_EXCL temporary file, fsync, rename; never through a symlink; OSError
    (ENOSPC, an unsafe directory) leaves the old file.
    """
    statefiles.write_private(path, text)


def write_record(state_dir: Path, record: SpeakerRecord) -> None:
    write_private(state_dir / RECORD_NAME, record_to_json(record))


def read_record(state_dir: Path) -> SpeakerRecord:
    """Raises FileNotFoundError if there is none, OSError or HandoverError if unreadable."""
    return record_from_json(statefiles.read_private(state_dir / RECORD_NAME))


def write_announced(state_dir: Path, routes: list[Route]) -> None:
    write_private(state_dir / ANNOUNCED_NAME, routes_to_json(routes))


def read_announced(state_dir: Path) -> list[Route]:
    """Raises FileNotFoundError if there is none, OSError or HandoverError if unreadable."""
    return routes_from_json(statefiles.read_private(state_dir / ANNOUNCED_NAME))


def forget(state_dir: Path, *names: str) -> None:
    """Remove these hand-over files (RECORD_NAME, ANNOUNCED_NAME): they no longer hold."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()


class AnnouncedRecord:
    """announced.json kept close to what ExaBGP holds for us, even if we crash.

    The next daemon adopts our ExaBGP after a crash as after a hand-over, and
    withdraws from this list what it no longer wants. `changed()` marks the
    file stale; RECORD_DELAY later (one write for a burst of changes) it is
    rewritten from `routes()`, unless that says None (no ExaBGP attached).
    """

    def __init__(self, state_dir: Path, routes: Callable[[], list[Route] | None]) -> None:
        self.state_dir = state_dir
        self._routes = routes
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="announced-record")

    def changed(self) -> None:
        self._due.set()

    def write(self, routes: list[Route]) -> None:
        write_announced(self.state_dir, routes)

    def forget(self) -> None:
        """ExaBGP is gone and took our routes along: the record is void."""
        forget(self.state_dir, ANNOUNCED_NAME)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(RECORD_DELAY)
            self._due.clear()
            routes = self._routes()
            if routes is not None:
                try:
                    self.write(routes)
                except OSError as exc:
                    log.warning("cannot record the announced routes", error=str(exc))
