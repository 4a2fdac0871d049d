"""Control socket over a real unix socket: requests, errors, permissions, and `evpnd show`."""

from __future__ import annotations

import asyncio
import grp
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from evpnd import cli, config
from evpnd.control import client, views
from evpnd.control.peers import PeerTracker
from evpnd.control.server import ControlError, ControlServer
from evpnd.control.settings import ControlConfig
from evpnd.control.snapshot import take_snapshot
from evpnd.daemon import DaemonStats, NoSpeaker
from evpnd.dataplane.learner import LocalLearner
from evpnd.dataplane.reconciler import Reconciler
from evpnd.derived import vni_devices, watched_vnis
from evpnd.desired import desired_state
from evpnd.rib import Rib
from evpnd.speaker.decode import Decoder
from evpnd.speaker.messages import PeerState
from tests.conftest import REPO
from tests.unit.control_data import FRR, build


@dataclass
class FakeDaemon:
    """evpnd.daemon.Daemon as the control server sees it, made of the real parts."""

    cfg: config.Config
    rib: Rib
    config_path: Path | None = None
    stats: DaemonStats = field(default_factory=DaemonStats)
    decoder: Decoder = field(default_factory=Decoder)
    speaker: NoSpeaker = field(default_factory=NoSpeaker)
    peer_tracker: PeerTracker = field(default_factory=PeerTracker)
    reconciler: Reconciler = field(init=False)
    learner: LocalLearner = field(init=False)

    def __post_init__(self) -> None:
        desired = desired_state(self.rib, vni_devices(self.cfg))
        self.reconciler = Reconciler(None, desired, monitor=False, hold_removals=True)
        self.learner = LocalLearner(watched_vnis(self.cfg))
        self.peer_tracker.observe(PeerState(FRR, "up"))


def fake_daemon() -> FakeDaemon:
    snap = build()
    return FakeDaemon(snap.cfg, snap.rib)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ControlServer, Path]]:
    path = tmp_path / "control.sock"
    server = ControlServer(fake_daemon(), path)
    await server.start()
    try:
        yield server, path
    finally:
        await server.stop()


async def ask(path: Path, payload: dict) -> dict:
    return await asyncio.to_thread(client.request, path, payload, 5.0)


async def raw_exchange(path: Path, data: bytes, answers: int = 1) -> list[dict]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    out = [json.loads(await asyncio.wait_for(reader.readline(), 5)) for _ in range(answers)]
    writer.close()
    return out


def run_cli(*argv: str) -> int:
    return cli.main(list(argv))


# ---------------------------------------------------------------- server


def test_snapshot_of_the_daemon_parts() -> None:
    daemon = fake_daemon()
    snap = take_snapshot(daemon, now=daemon.stats.started + 5, mtu_of=lambda name: 1450)
    assert snap.mtus == {"br100": 1450, "br200": 1450, "vxlan100": 1450, "vxlan200": 1450}
    assert snap.holding is True and snap.speaker.pid is None
    assert set(snap.speaker.counters.values()) == {0}  # NoSpeaker: nothing sent, ever
    assert snap.mqtt is None
    assert snap.pid == os.getpid()
    assert len(snap.out_routes) == 5  # one Type-3 for VNI 100, four local Type-2
    status = views.status(snap)
    assert status["uptime"] == 5 and status["dataplane"]["desired"]["macs"] == 3
    assert views.peers(snap)["established"] == 1


async def test_show_over_the_socket(served: tuple[ControlServer, Path]) -> None:
    server, path = served
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    answer = await ask(path, {"command": "show", "what": "mac", "args": {"vni": 100}})
    assert answer["ok"] is True
    assert answer["data"]["vnis"][0]["count"] == 5
    answer = await ask(path, {"command": "show", "what": "peers"})
    assert answer["data"]["peers"][0]["state"] == "established"
    assert (await ask(path, {"command": "ping"}))["data"]["pid"] == os.getpid()
    assert server.requests == 3 and server.errors == 0


async def test_bad_requests_get_errors_and_the_server_lives_on(
    served: tuple[ControlServer, Path],
) -> None:
    server, path = served
    lines = [
        b"this is not json\n",
        b"[1, 2]\n",
        b'{"command": "format-disk"}\n',
        b'{"command": "show"}\n',
        b'{"command": "show", "what": "bgp"}\n',
        b'{"command": "show", "what": "mac", "args": [1]}\n',
        b'{"command": "show", "what": "mac", "args": {"vni": 999}}\n',
        b'{"command": "reload"}\n',
        b"\n",  # blank lines are skipped
        b'{"command": "show", "what": "status"}\n',
    ]
    answers = await raw_exchange(path, b"".join(lines), answers=9)
    errors = [a.get("error") for a in answers[:8]]
    assert errors == [
        "request is not valid JSON",
        "request must be a JSON object",
        "unknown command 'format-disk'; one of: show, reload, clear, ping",
        "'show' needs 'what': one of peers, vni, mac, neighbors, routes, vteps, ip, status, "
        "fabric, config",
        "unknown view 'bgp'; one of: peers, vni, mac, neighbors, routes, vteps, ip, status, "
        "fabric, config",
        "'args' must be a JSON object",
        "VNI 999 is not configured",
        "this daemon does not take reload requests",
    ]
    assert all(a["ok"] is False for a in answers[:8])
    assert answers[8]["ok"] is True and answers[8]["data"]["rib"]["routes"] == 9
    assert server.errors == 8


async def test_a_failing_view_is_an_error_answer(tmp_path: Path) -> None:
    def broken() -> object:
        raise RuntimeError("boom")

    path = tmp_path / "c.sock"
    async with ControlServer(fake_daemon(), path, snapshot=broken):  # type: ignore[arg-type]
        answer = await ask(path, {"command": "show", "what": "status"})
        assert answer == {"ok": False, "error": "internal error: RuntimeError: boom"}
        assert (await ask(path, {"command": "ping"}))["ok"] is True


async def test_oversized_request_is_refused_and_the_connection_closed(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    async with ControlServer(fake_daemon(), path, max_request=1024):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b'{"command": "show", "what": "' + b"x" * 4096 + b'"}\n')
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert answer == {"ok": False, "error": "request too large (limit 1024 bytes per line)"}
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
        writer.close()
        assert (await ask(path, {"command": "ping"}))["ok"] is True


async def test_group_makes_the_socket_0660(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    path = tmp_path / "c.sock"
    async with ControlServer(fake_daemon(), path, group=group):
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
    assert not path.exists()


async def test_unknown_group_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with pytest.raises(ControlError, match="group 'no-such-group-xyz' does not exist"):
        await ControlServer(fake_daemon(), path, group="no-such-group-xyz").start()
    assert not path.exists()


async def test_stale_socket_is_replaced_live_one_and_files_are_not(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a killed daemon leaves
    stale.close()
    async with ControlServer(fake_daemon(), path):
        assert (await ask(path, {"command": "ping"}))["ok"] is True
        with pytest.raises(ControlError, match="another process answers"):
            await ControlServer(fake_daemon(), path).start()
        assert (await ask(path, {"command": "ping"}))["ok"] is True
    other = tmp_path / "file"
    other.write_text("precious")
    with pytest.raises(ControlError, match="is not a socket"):
        await ControlServer(fake_daemon(), other).start()
    assert other.read_text() == "precious"


async def test_stop_leaves_a_successors_socket_alone(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    first = ControlServer(fake_daemon(), path)
    await first.start()
    path.unlink()  # e.g. removed by hand, then a new daemon binds the path
    async with ControlServer(fake_daemon(), path):
        await first.stop()
        assert (await ask(path, {"command": "ping"}))["ok"] is True


async def test_reload_hook(tmp_path: Path) -> None:
    results = [True, False]
    calls = []

    async def reload() -> bool:
        calls.append(1)
        return results.pop(0)

    path = tmp_path / "c.sock"
    async with ControlServer(fake_daemon(), path, reload=reload):
        assert await ask(path, {"command": "reload"}) == {"ok": True, "data": {"reloaded": True}}
        refused = await ask(path, {"command": "reload"})
        assert refused["ok"] is False and refused["error"].startswith("reload refused")
    assert len(calls) == 2


async def test_for_daemon_uses_state_dir(tmp_path: Path) -> None:
    daemon = fake_daemon()
    daemon.cfg = daemon.cfg.model_copy(update={"state_dir": tmp_path / "state"})
    server = ControlServer.for_daemon(daemon)
    assert server.path == tmp_path / "state" / "control.sock" and server.group is None


# ---------------------------------------------------------------- client and CLI


def test_cli_against_a_stopped_daemon_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    assert run_cli("show", "peers", "--socket", str(path)) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"evpnd show peers: evpnd is not running (no control socket at {path})"
    assert "Traceback" not in err
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    assert run_cli("show", "status", "--socket", str(path), "--json") == 2
    assert "evpnd is not running" in capsys.readouterr().err


def test_cli_default_socket_comes_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_file = tmp_path / "evpnd.yaml"
    doc = yaml.safe_load((REPO / "tests/unit/configs/minimal.yaml").read_text())
    doc["state_dir"] = str(tmp_path / "state")
    cfg_file.write_text(yaml.safe_dump(doc))
    assert run_cli("show", "vni", "-c", str(cfg_file)) == 2
    expected = tmp_path / "state" / "control.sock"
    assert f"no control socket at {expected})" in capsys.readouterr().err
    assert run_cli("show", "vni") == 2 or Path("/run/evpnd/control.sock").exists()
    capsys.readouterr()


def test_client_permission_denied_is_explained(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert run_cli("show", "mac", "--socket", str(tmp_path / "s")) == 2
    assert "permission denied on the control socket" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
async def test_real_permission_denied_for_another_user() -> None:
    # A directory anyone may enter: only the socket's own mode (0600) stops `nobody`.
    where = Path(tempfile.mkdtemp(prefix="evpnd-ctl-"))
    try:
        os.chmod(where, 0o755)
        path = where / "control.sock"
        async with ControlServer(fake_daemon(), path):
            result = await asyncio.to_thread(subprocess.run, [
                "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                "-c", "import sys; from evpnd.control import client\n"
                      "try:\n client.request(sys.argv[1], {'command': 'ping'}, 5)\n"
                      "except client.ClientError as e:\n print(e); sys.exit(e.exit_code)",
                str(path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    if result.returncode not in (0, 2):
        pytest.skip(f"nobody cannot run this checkout: {result.stderr[-200:]}")
    assert result.returncode == 2, result.stdout
    assert result.stdout.strip() == (f"permission denied on the control socket {path} "
                                     "(run as root, or as a member of the socket's group: "
                                     "control.group)")


async def test_cli_tables_and_json(
    served: tuple[ControlServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = served
    code = await asyncio.to_thread(run_cli, "show", "mac", "--vni", "100", "--socket", str(path))
    out = capsys.readouterr().out
    assert code == 0
    assert "Number of MACs (local and remote) known for this VNI: 5" in out
    code = await asyncio.to_thread(
        run_cli, "show", "routes", "--type", "3", "--direction", "in", "--json",
        "--socket", str(path))
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["originator"] for r in data["routes"]] == ["10.99.0.2", "10.99.0.4"]
    code = await asyncio.to_thread(run_cli, "show", "neighbors", "--vni", "7",
                                   "--socket", str(path))
    assert code == 1
    assert capsys.readouterr().err.strip() == "evpnd show neighbors: VNI 7 is not configured"
    for what in views.VIEWS:
        assert await asyncio.to_thread(run_cli, "show", what, "--socket", str(path)) == 0
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- settings


def test_control_settings() -> None:
    assert ControlConfig().socket_path(Path("/run/evpnd")) == Path("/run/evpnd/control.sock")
    custom = ControlConfig.model_validate({"socket": "/run/x.sock", "group": "evpnd"})
    assert custom.socket_path(Path("/run/evpnd")) == Path("/run/x.sock")
    assert ControlConfig.model_validate({"group": 1001}).group == 1001
    for bad in ({"socket": "relative.sock"}, {"socket": "/" + "x" * 120}, {"group": "a b"},
                {"group": -1}, {"mode": "0666"}):
        with pytest.raises(ValueError):
            ControlConfig.model_validate(bad)


def test_example_documents_the_control_block() -> None:
    text = (REPO / "config" / "evpnd.example.yaml").read_text()
    parsed = yaml.safe_load(text)
    assert ControlConfig.model_validate(parsed["control"]) == ControlConfig()
    for name in ControlConfig.model_fields:
        assert f"\n  {name}:" in text, f"ControlConfig.{name} undocumented"


def test_counters_become_plain_json() -> None:
    from collections import Counter

    from evpnd.control.snapshot import _counters

    @dataclass
    class Stats:
        lines: int = 3
        received: Counter = field(default_factory=lambda: Counter({(2, "announce"): 4}))
        by_peer: dict = field(default_factory=lambda: {FRR: 1})

    assert _counters(Stats()) == {"lines": 3, "received": {"2:announce": 4},
                                  "by_peer": {"10.99.0.2": 1}}
    assert _counters(None) == {}
