"""One log stream: libraries' stdlib records as JSON lines; journald priorities by level."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
import structlog

from evpnd import log


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
        structlog.reset_defaults()


@pytest.fixture
def stream(tmp_path: Path, restore_logging: None) -> Iterator[IO[str]]:
    with (tmp_path / "stderr").open("w+", buffering=1) as out:
        yield out


def lines(out: IO[str]) -> list[str]:
    out.flush()
    return Path(out.name).read_text().splitlines()


def journal_env(out: IO[str]) -> dict[str, str]:
    st = os.fstat(out.fileno())
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def test_library_records_are_json_lines_with_their_level(stream: IO[str]) -> None:
    log.configure("info", "json", stream=stream, environ={})
    logging.getLogger("aiohttp.client").warning("connection lost to %s", "10.0.0.1")
    logging.getLogger("pyroute2.ndb").info("chatty")  # a library's info: not heard
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        logging.getLogger("aiomqtt").exception("callback failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    structlog.get_logger().info("evpnd's own", vni=100)

    records = [json.loads(line) for line in lines(stream)]  # every line is one JSON object
    assert [(r["level"], r.get("logger"), r["event"].split("\n")[0]) for r in records] == [
        ("warning", "aiohttp.client", "connection lost to 10.0.0.1"),
        ("error", "aiomqtt", "callback failed"),
        ("warning", "py.warnings", records[2]["event"].split("\n")[0]),
        ("info", None, "evpnd's own"),
    ]
    assert "ZeroDivisionError: boom" in records[1]["exception"]
    assert "deprecated thing" in records[2]["event"]
    assert records[3]["vni"] == 100 and "timestamp" in records[0]


def test_asyncio_unretrieved_task_error_is_one_json_line(stream: IO[str]) -> None:
    log.configure("info", "json", stream=stream, environ={})

    async def fails() -> None:
        raise RuntimeError("lost")

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del task

    asyncio.run(main())
    gc.collect()
    records = [json.loads(line) for line in lines(stream)]
    assert [(r["logger"], r["level"]) for r in records] == [("asyncio", "error")]
    assert "RuntimeError: lost" in records[0]["exception"]


def test_library_debug_follows_a_higher_evpnd_level(stream: IO[str]) -> None:
    log.configure("error", "json", stream=stream, environ={})
    logging.getLogger("aiohttp").warning("below error")
    logging.getLogger("aiohttp").error("heard")
    assert [json.loads(line)["event"] for line in lines(stream)] == ["heard"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_journal_priority_prefix_matches_the_level(stream: IO[str], fmt: str) -> None:
    log.configure("debug", fmt, stream=stream, environ=journal_env(stream))  # type: ignore[arg-type]
    logger = structlog.get_logger()
    logger.debug("d")
    logger.info("i")
    logger.warning("w")
    logger.error("e")
    logging.getLogger("paho.mqtt.client").warning("library w")
    logging.getLogger("asyncio").critical("library c")
    got = lines(stream)
    assert [line[:3] for line in got] == ["<7>", "<6>", "<4>", "<3>", "<4>", "<2>"]
    if fmt == "json":
        assert [json.loads(line[3:])["event"] for line in got] == \
            ["d", "i", "w", "e", "library w", "library c"]


def test_a_multi_line_console_record_has_the_prefix_on_every_line(stream: IO[str]) -> None:
    log.configure("info", "console", stream=stream, environ=journal_env(stream))
    try:
        raise ValueError("x")
    except ValueError:
        structlog.get_logger().exception("failed")
    got = lines(stream)
    assert len(got) > 3 and all(line.startswith("<3>") for line in got)


def test_no_prefix_when_stderr_is_not_the_journal_stream(stream: IO[str]) -> None:
    st = os.fstat(stream.fileno())
    for value in (f"{st.st_dev}:{st.st_ino + 1}", "garbage", ""):
        assert not log.journal_stream({"JOURNAL_STREAM": value}, stream.fileno())
    log.configure("info", "json", stream=stream,
                  environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    structlog.get_logger().warning("w")
    assert lines(stream)[0].startswith("{")


def test_a_process_under_the_journal_prefixes_its_stderr(tmp_path: Path) -> None:
    """The way systemd starts evpnd: stderr is the journal's socket, JOURNAL_STREAM names it."""
    out = tmp_path / "stderr"
    code = ("import logging, structlog; from evpnd import log; log.configure('info', 'auto'); "
            "structlog.get_logger().warning('w'); logging.getLogger('aiohttp').error('e')")
    with out.open("wb") as err:
        st = os.fstat(err.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([sys.executable, "-c", code], stderr=err, env=env, check=True)
    got = out.read_text().splitlines()
    assert [line[:3] for line in got] == ["<4>", "<3>"]
    assert json.loads(got[1][3:])["logger"] == "aiohttp"
