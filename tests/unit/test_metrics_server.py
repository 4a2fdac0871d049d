"""The metrics HTTP endpoint, scraped for real on 127.0.0.1, and the loop-lag task."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from evpnd.metrics.collector import build_registry
from evpnd.metrics.looplag import LoopLagMonitor
from evpnd.metrics.server import MetricsServer
from tests.unit.test_metrics import Source, scrape, value


def fetch(url: str, *, method: str = "GET", accept: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method)
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def get(url: str, **kwargs: str) -> tuple[int, dict, bytes]:
    # The server runs on this loop: the client must not block it.
    return await asyncio.to_thread(fetch, url, **kwargs)


def samples_of(body: bytes) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


async def test_scrape_over_http_follows_routes() -> None:
    source = Source()
    async with MetricsServer(build_registry(source), "127.0.0.1", 0) as server:
        assert server.port != 0
        status, headers, body = await get(server.url)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        before = samples_of(body)
        assert value(before, "evpnd_bgp_routes", type="3") == 0
        assert ("process_cpu_seconds_total", ()) in before or any(
            name == "python_info" for name, _ in before
        )

        source.feed("state_up", "type3_imet_pmsi", "type2_mac_only")
        await source.program()
        _, _, body = await get(server.url)
        after = samples_of(body)
        assert value(after, "evpnd_bgp_routes", type="3") == 1
        assert value(after, "evpnd_bgp_sessions_up") == 1
        assert value(after, "evpnd_flood_entries_installed", vni="100") == 1
        assert value(after, "evpnd_fdb_entries_installed", vni="100") == 1
        assert server.scrapes == 2


async def test_openmetrics_head_and_errors() -> None:
    async with MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0) as server:
        status, headers, body = await get(server.url, accept="application/openmetrics-text")
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")
        status, headers, body = await get(server.url, method="HEAD")
        assert (status, body) == (200, b"")
        assert int(headers["Content-Length"]) > 0
        base = server.url.removesuffix("/metrics")
        assert (await get(base + "/"))[0] == 200
        assert (await get(base + "/nothing"))[0] == 404
        status, headers, _ = await get(server.url, method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"


async def test_garbage_request_gets_400_and_server_keeps_serving() -> None:
    async with MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"hello\r\n\r\n")
        await writer.drain()
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 400 ")
        # A client that connects and says nothing does not hold up stop() or others.
        _, idle = await asyncio.open_connection("127.0.0.1", server.port)
        assert (await get(server.url))[0] == 200
    idle.close()


async def test_servers_start_and_stop_cleanly() -> None:
    source = Source()
    first = MetricsServer(build_registry(source, process=False), "127.0.0.1", 0)
    second = MetricsServer(build_registry(source, process=False), "127.0.0.1", 0)
    await first.start()
    await second.start()
    assert first.port != second.port
    port = first.port
    _, idle = await asyncio.open_connection("127.0.0.1", port)  # left open on purpose
    await first.stop()
    await first.stop()  # idempotent
    with pytest.raises(OSError):
        await get(f"http://127.0.0.1:{port}/metrics")
    # The port is free again: a new server can take it.
    again = MetricsServer(build_registry(source, process=False), "127.0.0.1", port)
    async with again:
        assert (await get(again.url))[0] == 200
    assert (await get(second.url))[0] == 200
    await second.stop()
    idle.close()


async def test_port_in_use_is_an_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MetricsServer(
            build_registry(Source(), process=False), "127.0.0.1", taken.getsockname()[1]
        )
        with pytest.raises(OSError):
            await server.start()


# ------------------------------------------------------------------- loop lag


async def test_loop_lag_reports_a_blocking_callback() -> None:
    monitor = LoopLagMonitor(interval=0.01)
    monitor.start()
    monitor.start()  # idempotent
    assert monitor.running
    try:
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_soon(time.sleep, 0.2)  # blocks the loop
        seen = monitor.count
        while monitor.count < seen + 3:
            await asyncio.sleep(0.01)
    finally:
        await monitor.stop()
    assert not monitor.running
    assert monitor.max > 0
    assert monitor.sum >= monitor.max
    histogram = monitor.histogram()
    assert histogram[-1] == (float("inf"), monitor.count)
    assert [n for _, n in histogram] == sorted(n for _, n in histogram)  # cumulative
    # And the collector exposes it.
    source = Source()
    source.loop_lag = monitor
    samples = scrape(build_registry(source, process=False))
    assert value(samples, "evpnd_event_loop_lag_max_seconds") > 0
    assert value(samples, "evpnd_event_loop_lag_seconds_count") == monitor.count


def test_loop_lag_histogram_buckets() -> None:
    monitor = LoopLagMonitor(buckets=(0.1, 0.01))
    for lag in (-0.001, 0.01, 0.05, 3.0):
        monitor.observe(lag)
    assert monitor.histogram() == [(0.01, 2), (0.1, 3), (float("inf"), 4)]
    assert (monitor.last, monitor.max, monitor.count) == (3.0, 3.0, 4)
    with pytest.raises(ValueError):
        LoopLagMonitor(interval=0)
    with pytest.raises(ValueError):
        LoopLagMonitor(buckets=())
