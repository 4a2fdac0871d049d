"""A real mosquitto on a free loopback port, started and stopped by the test.

The broker runs from a config file generated in the test's tmp_path; only the
process started here is ever stopped. Retained messages are persisted in
tmp_path so that a restart (`Broker.stop()` then `Broker.start()`) keeps them,
like a production broker with persistence does.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_program

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Broker:
    def __init__(self, program: str, workdir: Path, *, extra: str = "",
                 anonymous: bool = True) -> None:
        self.program = program
        self.workdir = workdir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.extra = extra
        self.anonymous = anonymous
        self.process: subprocess.Popen[bytes] | None = None
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.starts = 0

    def write_config(self) -> None:
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.config.write_text(
            f"listener {self.port} {self.host}\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            # As root mosquitto would switch to the 'mosquitto' user, which
            # cannot read tmp_path; stay who we are.
            f"user {user}\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"{self.extra}"
        )

    def start(self) -> None:
        assert self.process is None, "broker already running"
        self.write_config()
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [self.program, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                pytest.fail(f"mosquitto exited with {code} at start:\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"mosquitto did not listen on {self.host}:{self.port} within "
                    f"{START_TIMEOUT}s:\n{self.log_text()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


@pytest.fixture
def mosquitto_program() -> str:
    return require_program("mosquitto", "mosquitto")


@pytest.fixture
def broker(mosquitto_program: str, tmp_path: Path) -> Iterator[Broker]:
    """An anonymous plain-TCP broker on 127.0.0.1:<free port>."""
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(mosquitto_program, workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
