"""The metrics HTTP endpoint, scraped for real on 127.0.0.1, and the loop-lag task."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from evpnd import config
from evpnd.metrics.collector import build_registry
from evpnd.metrics.looplag import LoopLagMonitor
from evpnd.metrics.server import Credentials, MetricsServer, TlsError, TlsFiles, authorized
from evpnd.metrics.settings import MetricsConfig
from evpnd.services import MetricsEndpoint
from tests.conftest import require_program
from tests.unit.test_metrics import CONFIG, Source, scrape, value


def fetch(
    url: str,
    *,
    method: str = "GET",
    accept: str | None = None,
    auth: tuple[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method)
    if accept:
        request.add_header("Accept", accept)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


async def get(url: str, **kwargs: Any) -> tuple[int, dict, bytes]:
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
        assert status == 405
        assert {m.strip() for m in headers["Allow"].split(",")} == {"GET", "HEAD"}


async def test_garbage_request_gets_400_and_server_keeps_serving() -> None:
    async with MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"hello\r\n\r\n")
        await writer.drain()
        reply = await reader.read()
        writer.close()
        assert reply.split(b" ", 2)[1] == b"400", reply  # (aiohttp answers it in HTTP/1.0)
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


# ------------------------------------------------------------------- TLS and basic auth

USER, PASSWORD = "prometheus", "s3cret-Pa55word"


def make_cert(directory: Path, name: str) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 made by openssl, and its key."""
    openssl = require_program("openssl", "openssl")
    files = TlsFiles(directory / f"{name}.pem", directory / f"{name}.key")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(files.key), "-out", str(files.cert)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    return files


def trusting(files: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(files.cert))


def served_certificate(port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw) as tls:  # fmt: skip
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def der_of(files: TlsFiles) -> bytes:
    return ssl.PEM_cert_to_DER_cert(files.cert.read_text())


async def test_https_with_basic_auth_on_every_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = make_cert(tmp_path, "metrics")
    context = trusting(files)
    server = MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0, tls=files,
                           credentials=Credentials(USER, PASSWORD))  # fmt: skip
    async with server:
        assert server.url.startswith("https://127.0.0.1:")
        status, headers, _ = await get(server.url, context=context)
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="evpnd", charset="UTF-8"'
        wrong = (USER, PASSWORD + "x")
        assert (await get(server.url, context=context, auth=wrong))[0] == 401
        assert (await get(server.base_url + "/", context=context))[0] == 401
        assert (await get(server.base_url + "/nothing", context=context))[0] == 401
        status, _, body = await get(server.url, context=context, auth=(USER, PASSWORD))
        assert status == 200 and b"evpnd_bgp_sessions_up" in body
        assert (await get(server.base_url + "/", context=context, auth=(USER, PASSWORD)))[0] \
            == 200  # fmt: skip
        # Plain HTTP to the HTTPS port gets nothing served.
        with pytest.raises((OSError, urllib.error.URLError)):
            await get(server.url.replace("https://", "http://"))
        # An untrusted certificate is refused by the client.
        with pytest.raises(urllib.error.URLError):
            await get(server.url, auth=(USER, PASSWORD))
        assert server.refused == 4 and server.scrapes == 1
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err
    assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in out.out + out.err


async def test_basic_auth_over_plain_http_warns(capsys: pytest.CaptureFixture[str]) -> None:
    server = MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0,
                           credentials=Credentials(USER, PASSWORD))  # fmt: skip
    async with server:
        assert (await get(server.url))[0] == 401
        assert (await get(server.url, auth=(USER, PASSWORD)))[0] == 200
    out = capsys.readouterr().out
    assert "sends the password in clear" in out and PASSWORD not in out


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, False),
        ("", False),
        ("Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), True),
        ("basic  " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), True),
        ("Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()).decode(), False),
        ("Basic " + base64.b64encode(f"{USER}x:{PASSWORD}".encode()).decode(), False),
        ("Basic " + base64.b64encode(f"{USER}{PASSWORD}".encode()).decode(), False),
        ("Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode(), False),
        ("Basic not-base64!", False),
        ("Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), False),
    ],
)
def test_authorized_header(header: str | None, ok: bool) -> None:
    assert authorized(header, Credentials(USER, PASSWORD)) is ok


def test_credentials_never_show_their_password() -> None:
    assert PASSWORD not in repr(Credentials(USER, PASSWORD))


async def test_certificate_reloaded_in_place_and_a_bad_one_keeps_the_old(
    tmp_path: Path,
) -> None:
    first, second = make_cert(tmp_path, "first"), make_cert(tmp_path, "second")
    live = TlsFiles(tmp_path / "live.pem", tmp_path / "live.key")
    live.cert.write_bytes(first.cert.read_bytes())
    live.key.write_bytes(first.key.read_bytes())
    server = MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0, tls=live)
    async with server:
        assert await asyncio.to_thread(served_certificate, server.port) == der_of(first)
        live.cert.write_bytes(second.cert.read_bytes())  # renewed, like certbot does
        live.key.write_bytes(second.key.read_bytes())
        server.reload_tls()
        assert await asyncio.to_thread(served_certificate, server.port) == der_of(second)
        live.key.write_bytes(first.key.read_bytes())  # a key that does not match
        with pytest.raises(TlsError, match=r"live\.pem with key .*live\.key"):
            server.reload_tls()
        assert await asyncio.to_thread(served_certificate, server.port) == der_of(second)
        status, _, _ = await get(server.url, context=trusting(second))
        assert status == 200


async def test_unusable_tls_files_are_an_error_naming_them(tmp_path: Path) -> None:
    files = make_cert(tmp_path, "metrics")
    missing = TlsFiles(tmp_path / "nope.pem", files.key)
    with pytest.raises(TlsError, match=r"nope\.pem"):
        await MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0,
                            tls=missing).start()  # fmt: skip
    mismatched = TlsFiles(files.cert, make_cert(tmp_path, "other").key)
    with pytest.raises(TlsError, match=r"metrics\.pem"):
        await MetricsServer(build_registry(Source(), process=False), "127.0.0.1", 0,
                            tls=mismatched).start()  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_endpoint_from_the_config_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """services.MetricsEndpoint: TLS, auth and the fabric view from `metrics:`; a bad
    certificate is an error text (the daemon goes on), a reload re-reads the files."""
    files = make_cert(tmp_path, "metrics")
    endpoint = MetricsEndpoint(Source())
    section = {"enabled": True, "port": free_port(), "fabric_view": False,
               "tls": {"cert": str(tmp_path / "missing.pem"), "key": str(files.key)},
               "basic_auth": {"user": USER, "password": PASSWORD}}  # fmt: skip
    bad = MetricsConfig.model_validate(section)
    problem = await endpoint.start(bad)
    assert problem is not None and "missing.pem" in problem and PASSWORD not in problem
    assert endpoint.server is None
    good = MetricsConfig.model_validate({**section, "tls": {"cert": str(files.cert),
                                                            "key": str(files.key)}})
    assert await endpoint.reconfigure(bad, good) is None
    try:
        url = f"https://127.0.0.1:{good.port}/metrics"
        status, _, body = await get(url, context=trusting(files), auth=(USER, PASSWORD))
        assert status == 200 and b"evpnd_fdb_entries_installed" in body
        assert (await get(url, context=trusting(files)))[0] == 401
        # Same settings: the reload re-reads the files; a broken file is reported and
        # the certificate in use stays.
        served = der_of(files)
        files.cert.write_text("not a certificate\n")
        problem = await endpoint.reconfigure(good, good)
        assert problem is not None and "metrics.pem" in problem
        assert await asyncio.to_thread(served_certificate, good.port) == served
    finally:
        await endpoint.stop()
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err


def test_password_never_in_config_errors_or_reprs() -> None:
    base = CONFIG + "metrics:\n  basic_auth: {user: prometheus, password: %s}\n"
    cfg = config.parse(base % PASSWORD)
    assert cfg.metrics.basic_auth is not None
    assert cfg.metrics.basic_auth.password.get_secret_value() == PASSWORD
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cfg.metrics)
    for wrong in ("123456789", "[s3cret-Pa55word]", "x" * 2000):
        with pytest.raises(config.ConfigError) as info:
            config.parse(base % wrong)
        assert "metrics.basic_auth" in info.value.render()
        assert wrong.strip("[]") not in info.value.render(), info.value.render()


# ------------------------------------------------------------------- loop lag
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
