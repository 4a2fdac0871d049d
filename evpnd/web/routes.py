"""The fabric view's pages on the metrics server's aiohttp application.

GET /fabric       the live page (page.HTML), which loads
GET /fabric.js    its script (page.SCRIPT), which polls
GET /fabric.svg   the picture (fabric_svg.render of the view), every second
GET /fabric.json  the view itself (evpnd.control.views.fabric), for other tools

`view` takes a snapshot and runs the view (two passes over the wanted FDB
entries) on the event loop, like a scrape. One result is shared by every request within
`max_age` seconds, so several open pages cost no more than one (a view is
about 70 ms of loop time at 100k remote MACs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from evpnd.web import fabric_svg, page

log = structlog.get_logger(__name__)

JSON = Mapping[str, Any]
MAX_AGE = 1.0  # seconds a computed view is served again (the page polls every second)
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class FabricPages:
    """Serves the fabric view of `view()` (a callable returning the view's JSON)."""

    def __init__(
        self,
        view: Callable[[], JSON],
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._view = view
        self._max_age = max_age
        self._clock = clock
        self._cached: tuple[float, JSON, str | None] | None = None
        self.computed = 0  # views taken (for tests and curiosity)

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/fabric", self._page)
        app.router.add_get("/fabric.js", self._script)
        app.router.add_get("/fabric.svg", self._svg)
        app.router.add_get("/fabric.json", self._json)

    def data(self) -> JSON:
        now = self._clock()
        if self._cached is None or now - self._cached[0] >= self._max_age:
            self._cached = (now, self._view(), None)
            self.computed += 1
        return self._cached[1]

    def picture(self) -> str:
        data = self.data()
        assert self._cached is not None
        at, _, svg = self._cached
        if svg is None:
            svg = fabric_svg.render(data)
            self._cached = (at, data, svg)
        return svg

    async def _page(self, _: web.Request) -> web.Response:
        return web.Response(text=page.HTML, content_type="text/html", charset="utf-8",
                            headers={**COMMON_HEADERS, "Content-Security-Policy": PAGE_POLICY})

    async def _script(self, _: web.Request) -> web.Response:
        return web.Response(text=page.SCRIPT, content_type="text/javascript", charset="utf-8",
                            headers=COMMON_HEADERS)

    async def _svg(self, _: web.Request) -> web.Response:
        try:
            svg = self.picture()
        except Exception:
            log.exception("fabric view failed")
            return _failed()
        return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8",
                            headers=COMMON_HEADERS)

    async def _json(self, _: web.Request) -> web.Response:
        try:
            body = json.dumps(self.data())
        except Exception:
            log.exception("fabric view failed")
            return _failed()
        return web.Response(text=body, content_type="application/json", headers=COMMON_HEADERS)


def _failed() -> web.Response:
    return web.Response(status=500, text="fabric view failed; see the evpnd log\n",
                        headers=COMMON_HEADERS)
