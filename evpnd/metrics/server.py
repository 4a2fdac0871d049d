"""The HTTP(S) endpoint: GET /metrics (and the fabric view), aiohttp on the daemon's loop.

On the event loop rather than prometheus_client's threaded server on
purpose: the collector reads the RIB and the dataplane tables while the event
loop changes them, so it must run on the loop's own thread. A scrape is a few
milliseconds of loop time (it shows in the loop-lag metric if it ever is not).

aiohttp does the HTTP/1.1 (keep-alive, parsing, limits, 400/404/405 answers,
HEAD for every GET route); this module adds the routes, optional TLS (a
certificate and key; `reload_tls` re-reads them for a SIGHUP) and optional
basic authentication on every path. The password never reaches a log line or
an error text: a refused request is logged with its peer and path only.
Bodies come in the format the scraper asks for (Prometheus text or
OpenMetrics, by the `Accept` header). `stop()` closes the listening socket
and every open connection, so tests can start and stop as many servers as
they like.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"
MAX_BODY = 16 * 1024  # nothing here takes a body
KEEPALIVE = 15.0  # seconds an idle keep-alive connection stays open
SHUTDOWN_TIMEOUT = 2.0  # seconds stop() gives a request still being answered
REALM = "evpnd"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The one user and password basic authentication accepts."""

    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path


class Pages(Protocol):
    """More routes on the same application (evpnd.web.routes.FabricPages)."""

    def add_to(self, app: web.Application) -> None: ...


def authorized(header: str | None, credentials: Credentials) -> bool:
    """Whether an `Authorization` header carries exactly `credentials` (RFC 7617).

    Both parts are compared in constant time, whatever comes first, so the
    answer's timing tells nothing about how much of a guess was right.
    """
    if not header:
        return False
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = decoded.partition(b":")
    user_ok = hmac.compare_digest(user, credentials.user.encode())
    password_ok = hmac.compare_digest(password, credentials.password.encode())
    return bool(sep) and user_ok and password_ok


class TlsError(OSError):
    """The certificate or key cannot be read, or they do not belong together."""


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context with the certificate and key; TlsError (an OSError) if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(context, files)
    return context


def _load(context: ssl.SSLContext, files: TlsFiles) -> None:
    try:
        context.load_cert_chain(files.cert, files.key)
    except OSError as exc:  # ssl.SSLError included
        reason = exc.strerror or getattr(exc, "reason", None) or str(exc)
        raise TlsError(f"TLS certificate {files.cert} with key {files.key}: {reason}") from None


def index_page(extra: bool) -> bytes:
    fabric = '<li><a href="/fabric">fabric view</a></li>' if extra else ""
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>evpnd</title></head><body>"
        f'<h1>evpnd</h1><ul><li><a href="/metrics">metrics</a></li>{fabric}</ul>'
        "</body></html>\n"
    ).encode()


class MetricsServer:
    """Serves `registry` on address:port (port 0: any free port, see `.port`).

    `tls`: HTTPS with these files; `credentials`: basic auth on every path;
    `pages`: more routes (the fabric view), behind the same TLS and auth.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        address: str = "127.0.0.1",
        port: int = 9595,
        *,
        tls: TlsFiles | None = None,
        credentials: Credentials | None = None,
        pages: Pages | None = None,
    ) -> None:
        self.registry = registry
        self.address = address
        self.requested_port = port
        self.tls = tls
        self.credentials = credentials
        self.pages = pages
        self.scrapes = 0
        self.refused = 0  # requests without the right credentials
        self._runner: web.AppRunner | None = None
        self._context: ssl.SSLContext | None = None
        self._index = index_page(pages is not None)

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when started with port 0)."""
        if self._runner is None or not self._runner.addresses:
            return self.requested_port
        return int(self._runner.addresses[0][1])

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + METRICS_PATH

    async def start(self) -> None:
        """Listen; raises OSError when the address is taken or not ours, or the TLS
        files cannot be read or do not match (ssl.SSLError is an OSError)."""
        if self._runner is not None:
            raise RuntimeError("metrics server already started")
        context = None if self.tls is None else tls_context(self.tls)
        middlewares = [] if self.credentials is None else [self._authenticate]
        app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
        app.router.add_get("/", self._root)
        app.router.add_get(METRICS_PATH, self._metrics)
        if self.pages is not None:
            self.pages.add_to(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               keepalive_timeout=KEEPALIVE, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.address, self.requested_port, ssl_context=context,
                           reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._context = runner, context
        if self.credentials is not None and self.tls is None:
            log.warning("metrics endpoint: basic auth over plain HTTP sends the password in "
                        "clear; set metrics.tls")
        log.info("metrics endpoint listening", url=self.base_url,
                 auth=self.credentials is not None, fabric_view=self.pages is not None)

    def reload_tls(self) -> None:
        """Re-read the certificate and key (renewed files) for the next connections;
        raises OSError like start() and keeps the previous ones then."""
        if self.tls is None or self._context is None:
            return
        tls_context(self.tls)  # both files readable and matching, or raise
        _load(self._context, self.tls)
        log.info("metrics endpoint certificate reloaded", cert=str(self.tls.cert))

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- requests -----------------------------------------------------------

    @web.middleware
    async def _authenticate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        assert self.credentials is not None
        if authorized(request.headers.get("Authorization"), self.credentials):
            return await handler(request)
        self.refused += 1
        log.debug("metrics endpoint: request without valid credentials",
                  peer=request.remote, path=request.path)
        return web.Response(
            status=401,
            text="authentication required\n",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )

    async def _root(self, _: web.Request) -> web.Response:
        return web.Response(body=self._index, content_type="text/html", charset="utf-8")

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, ctype = choose_encoder(request.headers.get("Accept", ""))
        try:
            body = encoder(self.registry)
        except Exception:
            log.exception("metrics exposition failed")
            return web.Response(status=500,
                                text="metrics exposition failed; see the evpnd log\n")
        self.scrapes += 1
        return web.Response(body=body, headers={"Content-Type": ctype})
