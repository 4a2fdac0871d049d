"""The HTTP exposition endpoint: GET /metrics, served on the daemon's event loop.

An asyncio server rather than prometheus_client's threaded one on purpose:
the collector reads the RIB and the dataplane tables while the event loop
changes them, so it must run on the loop's own thread. A scrape is a few
milliseconds of loop time (it shows in the loop-lag metric if it ever is not).

One request per connection (`Connection: close`), GET and HEAD only, bodies
in the format the scraper asks for (Prometheus text or OpenMetrics, by the
`Accept` header). `stop()` closes the listening socket and every open
connection, so tests can start and stop as many servers as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import structlog
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = structlog.get_logger(__name__)

METRICS_PATH = "/metrics"
MAX_REQUEST = 16 * 1024
REQUEST_TIMEOUT = 10.0
_INDEX = (
    b"<html><head><title>evpnd</title></head><body>"
    b'<h1>evpnd</h1><p><a href="/metrics">metrics</a></p></body></html>\n'
)
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class MetricsServer:
    """Serves `registry` on address:port (port 0: any free port, see `.port`)."""

    def __init__(self, registry: CollectorRegistry, address: str = "127.0.0.1", port: int = 9595):
        self.registry = registry
        self.address = address
        self.requested_port = port
        self.scrapes = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self.requested_port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}{METRICS_PATH}"

    async def start(self) -> None:
        """Listen; raises OSError when the address is taken or not ours."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        self._server = await asyncio.start_server(
            self._on_connection,
            self.address,
            self.requested_port,
            reuse_address=True,
            limit=MAX_REQUEST,
        )
        log.info("metrics endpoint listening", url=self.url)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- one connection -----------------------------------------------------

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except asyncio.LimitOverrunError:
            await _respond(writer, 431, b"request too large\n")
            return
        except TimeoutError:
            return
        status, body, ctype, headers = self._handle(head)
        head_only = head.startswith(b"HEAD ")
        await _respond(writer, status, body, ctype, headers, head_only=head_only)

    def _handle(self, head: bytes) -> tuple[int, bytes, str, dict[str, str]]:
        """Request head -> (status, body, content type, extra headers)."""
        text = "text/plain; charset=utf-8"
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, b"bad request line\n", text, {}
        method, target, _ = parts
        request_headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                request_headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return 405, b"only GET and HEAD\n", text, {"Allow": "GET, HEAD"}
        path = urlsplit(target).path
        if path == "/":
            return 200, _INDEX, "text/html; charset=utf-8", {}
        if path != METRICS_PATH:
            return 404, b"not found; try /metrics\n", text, {}
        encoder, ctype = choose_encoder(request_headers.get("accept", ""))
        try:
            body = encoder(self.registry)
        except Exception:
            log.exception("metrics exposition failed")
            return 500, b"metrics exposition failed; see the evpnd log\n", text, {}
        self.scrapes += 1
        return 200, body, ctype, {}


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    ctype: str = "text/plain; charset=utf-8",
    headers: dict[str, str] | None = None,
    *,
    head_only: bool = False,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(body)
    await writer.drain()
