"""`evpnd reload` over a real control socket, and the default config file of every command."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from evpnd import cli, config
from evpnd.control.server import ControlServer
from tests.conftest import REPO

MINIMAL = REPO / "tests/unit/configs/minimal.yaml"


def write_config(path: Path, state_dir: Path, **changes: object) -> Path:
    doc = yaml.safe_load(MINIMAL.read_text())
    doc["state_dir"] = str(state_dir)
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc))
    return path


class Daemon:
    """The daemon's side of a reload: re-read the file it was started with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reloads: list[bool] = []

    async def reload(self) -> bool:
        try:
            config.load(self.path)
        except config.ConfigError:
            self.reloads.append(False)
            return False
        self.reloads.append(True)
        return True


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Path]]:
    cfg = write_config(tmp_path / "evpnd.yaml", tmp_path / "state")
    (tmp_path / "state").mkdir()
    daemon = Daemon(cfg)
    server = ControlServer(SimpleNamespace(), tmp_path / "state" / "control.sock",
                           reload=daemon.reload)
    await server.start()
    try:
        yield daemon, cfg
    finally:
        await server.stop()


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(cli.main, list(argv))


async def test_reloaded(served: tuple[Daemon, Path], capsys: pytest.CaptureFixture[str]) -> None:
    daemon, cfg = served
    assert await run_cli("reload", "-c", str(cfg)) == 0
    assert capsys.readouterr().out == "reloaded\n"
    assert daemon.reloads == [True]


async def test_refused_prints_the_errors_and_exits_1(
    served: tuple[Daemon, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, cfg = served
    text = cfg.read_text().replace("asn: 65000", "asn: 0")
    assert text != cfg.read_text()
    cfg.write_text(text)
    # With --socket the CLI needs nothing from the file: the daemon is asked and refuses.
    socket = cfg.parent / "state" / "control.sock"
    assert await run_cli("reload", "--socket", str(socket), "-c", str(cfg)) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("evpnd reload: reload refused")
    assert f"{cfg}: 1 error(s)" in out.err and "asn" in out.err
    assert daemon.reloads == [False]


async def test_a_file_without_a_valid_socket_place_is_refused_without_asking(
    served: tuple[Daemon, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    daemon, cfg = served
    cfg.write_text("router_id: nope\n")
    assert await run_cli("reload", "-c", str(cfg)) == 1
    err = capsys.readouterr().err
    assert err.startswith("evpnd reload: not reloaded: the config file is invalid")
    assert "router_id" in err
    assert daemon.reloads == []


async def test_no_daemon_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "evpnd.yaml", tmp_path / "state")
    assert await run_cli("reload", "-c", str(cfg)) == 2
    assert capsys.readouterr().err == (
        f"evpnd reload: evpnd is not running (no control socket at "
        f"{tmp_path / 'state' / 'control.sock'})\n")


async def test_the_default_config_file(
    served: tuple[Daemon, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    daemon, cfg = served
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(cfg))
    assert await run_cli("reload") == 0
    assert await run_cli("check-config") == 0
    assert capsys.readouterr().out == "reloaded\nok\n"
    assert daemon.reloads == [True]
    assert cli.build_parser().parse_args(["run"]).config == str(cfg)
    assert cli.build_parser().parse_args(["plan"]).config == str(cfg)
    # `show` finds the socket through it too (this server answers show with an error:
    # exit 1 proves the request reached it, a wrong path would be exit 2).
    assert await run_cli("show", "status") == 1

    # No file at the default place: the default state_dir's socket, as before.
    monkeypatch.setattr(cli, "DEFAULT_CONFIG", str(tmp_path / "absent.yaml"))
    capsys.readouterr()
    assert await run_cli("show", "status", "--timeout", "5") == 2
    assert "no control socket at /run/evpnd/control.sock" in capsys.readouterr().err \
        or Path("/run/evpnd/control.sock").exists()


def test_the_documented_default() -> None:
    assert cli.DEFAULT_CONFIG == "/etc/evpnd/evpnd.yaml"
    parser = cli.build_parser()
    args = parser.parse_args(["reload"])
    assert args.config is None and args.timeout == 60.0
