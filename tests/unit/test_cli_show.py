"""`evpnd show`: FRR's status codes on routes, the effective config, FRR-style aliases,
--watch, the JSON schema version, and shell completion generated from the parser."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from evpnd import cli, completion, config
from evpnd.control import aliases, render, views
from evpnd.control import cli as control_cli
from evpnd.control.client import ClientError
from evpnd.control.server import ControlServer
from evpnd.control.snapshot import take_snapshot
from evpnd.derived import vni_policies
from evpnd.model import ENCAP_VXLAN, ImetKey, ImetRoute, MacIpKey, MacIpRoute
from evpnd.rib import Rib
from tests.conftest import REPO, require_program
from tests.unit.control_data import build
from tests.unit.test_control_server import FakeDaemon, fake_daemon

DOCS = REPO / "docs" / "show-json.md"


def roundtrip(data: Any) -> Any:
    return json.loads(json.dumps(data))


# ---------------------------------------------------------------- show routes: *> and Dir

P1, P2 = IPv4Address("10.99.0.2"), IPv4Address("10.99.0.3")  # two route reflectors
VTEP = IPv4Address("10.99.0.4")
RT = ("65000:100",)


def mac_route(seq: int, *, rd: str = "10.99.0.4:100", vtep: IPv4Address = VTEP,
              rt: tuple[str, ...] = RT) -> MacIpRoute:
    return MacIpRoute(MacIpKey(rd, 0, "02:00:00:00:04:01"), vtep, 100, route_targets=rt,
                      encapsulation=ENCAP_VXLAN, mobility_seq=seq)


def routes_of(rib: Rib) -> list[dict[str, Any]]:
    snap = replace(build(), rib=rib, out_routes=())
    return roundtrip(views.show(snap, "routes"))["routes"]


def rib() -> Rib:
    return Rib(IPv4Address("10.99.0.1"), vni_policies(build().cfg))


def test_the_best_of_two_paths_is_the_one_the_rib_uses() -> None:
    table = rib()
    # The same NLRI through both reflectors; P2's copy is newer (the MAC moved there).
    table.announce(P1, mac_route(1))
    table.announce(P2, mac_route(5))
    rows = routes_of(table)
    assert [(r["peer"], r["valid"], r["best"]) for r in rows] == [
        (str(P1), True, False), (str(P2), True, True)]
    text = render.render("routes", roundtrip(views.show(replace(build(), rib=table,
                                                                out_routes=()), "routes")))
    marks = [line[:3] for line in text.splitlines() if "[02:00:00:00:04:01]" in line]
    assert marks == ["*  ", "*> "]


def test_identical_paths_the_lowest_peer_is_best_and_not_imported_is_not_valid() -> None:
    table = rib()
    imet = ImetRoute(ImetKey("10.99.0.4:100", 0, VTEP), VTEP, 100, VTEP, route_targets=RT,
                     encapsulation=ENCAP_VXLAN)
    table.announce(P2, imet)
    table.announce(P1, imet)
    table.announce(P1, mac_route(0, rd="10.99.0.4:300", rt=("65000:300",)))
    rows = {(r["peer"], r["type"]): r for r in routes_of(table)}
    assert rows[(str(P1), 3)]["best"] and rows[(str(P1), 3)]["valid"]
    assert not rows[(str(P2), 3)]["best"] and rows[(str(P2), 3)]["valid"]
    assert (rows[(str(P1), 2)]["valid"], rows[(str(P1), 2)]["best"]) == (False, False)


def test_our_routes_are_valid_and_best_with_direction_out() -> None:
    data = roundtrip(views.show(build(), "routes", {"direction": "out"}))
    assert data["routes"] and all(r["valid"] and r["best"] for r in data["routes"])
    lines = render.render("routes", data).splitlines()
    header = next(line for line in lines if line.startswith("   Network"))
    assert header.split() == ["Network", "Next", "Hop", "Dir", "VNI", "Peer", "Extended"]
    rows = [line for line in lines if line.startswith("*> ")]
    assert len(rows) == data["count"] and all(line.split()[3] == "out" for line in rows)
    assert "Status codes: * valid, > best" in lines[1]


# ---------------------------------------------------------------- show config

SECRET = "hunter2-SECRET"


def test_show_config_is_the_effective_config_with_docker_vnis_and_no_secret() -> None:
    file_cfg = config.parse(f"""router_id: 10.99.0.1
asn: 65000
vtep: {{address: 10.99.0.1, device: eth0}}
bgp:
  peers:
    - {{address: 10.99.0.2, remote_asn: 65000, md5_password: {SECRET}}}
    - {{address: 10.99.0.3, remote_asn: 65000}}
vnis: [{{vni: 100}}]
mqtt: {{host: broker, username: u, password: {SECRET}}}
""")
    docker_vni = config.Vni(vni=4097, bridge="br-5f3a9c1d2e4b", adopt_bridge=True)
    effective = file_cfg.model_copy(update={"vnis": [*file_cfg.vnis, docker_vni]})
    daemon = FakeDaemon(effective, Rib(effective.vtep.address, vni_policies(effective)))
    daemon.file_cfg = file_cfg  # type: ignore[attr-defined]
    data = roundtrip(views.show(take_snapshot(daemon, mtu_of=lambda _: None), "config"))
    assert data["schema_version"] == views.SCHEMA_VERSION
    assert data["docker_vnis"] == [4097]
    shown = data["config"]
    assert SECRET not in json.dumps(data)
    assert shown["bgp"]["peers"][0]["md5_password"] == "***"
    assert shown["bgp"]["peers"][1]["md5_password"] is None  # unset stays unset
    assert shown["mqtt"]["password"] == "***"
    assert [v["vni"] for v in shown["vnis"]] == [100, 4097]
    assert shown["vnis"][0]["vxlan"]["dstport"] == 4789  # defaults are shown
    # The table is YAML that check-config takes: the same config, secrets as ***.
    table = render.render("config", data)
    assert SECRET not in table
    assert "- vni: 4097  # from a Docker network" in table.splitlines()
    again = config.parse(table)
    assert again.vnis == effective.vnis and again.bgp.peers[1] == effective.bgp.peers[1]
    assert again.bgp.peers[0].md5_password == "***"


async def test_show_config_and_running_config_over_the_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer(fake_daemon(), path)
    await server.start()
    try:
        capsys.readouterr()  # the server's log lines
        assert await asyncio.to_thread(cli.main, ["show", "config", "--socket", str(path)]) == 0
        table = capsys.readouterr().out
        assert table.startswith("# The effective config of the running evpnd")
        assert await asyncio.to_thread(
            cli.main, ["show", "running-config", "--socket", str(path)]) == 0
        assert capsys.readouterr().out == table
        assert config.parse(table).vnis == build().cfg.vnis
    finally:
        await server.stop()


# ---------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("show evpn mac vni all", "show mac"),
     ("show evpn mac vni 100 --json", "show mac --vni 100 --json"),
     ("show evpn arp-cache vni all", "show neighbors"),
     ("show evpn arp-cache vni 200", "show neighbors --vni 200"),
     ("show evpn vni", "show vni"), ("show evpn vni 100", "show vni --vni 100"),
     ("show evpn", "show status"),
     ("show bgp summary", "show peers"), ("show bgp l2vpn evpn summary", "show peers"),
     ("show bgp l2vpn evpn", "show routes"),
     ("show bgp l2vpn evpn route type macip", "show routes --type 2"),
     ("show bgp l2vpn evpn route type multicast --direction in",
      "show routes --type 3 --direction in"),
     ("show bgp l2vpn evpn route type 5", "show routes --type 5"),
     ("show bgp l2vpn evpn route vni 100", "show routes --vni 100"),
     ("show running-config", "show config"),
     ("show mac --vni 100", "show mac --vni 100"), ("reload", "reload")],
)  # fmt: skip
def test_frr_commands_map_to_views(typed: str, expected: str) -> None:
    argv = cli.expand_aliases(typed.split())
    assert argv == expected.split()
    cli.build_parser().parse_args(argv)  # and the parser takes the result


@pytest.mark.parametrize("typed", ["show evpn mac", "show bgp l2vpn", "show evpn mac vni x",
                                   "show bgp l2vpn evpn route type nonsense"])
def test_an_incomplete_frr_command_lists_the_known_ones(
    typed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.expand_aliases(typed.split())
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"no command '{typed}'" in err
    word = typed.split()[1]
    assert all(line.strip().startswith(word) for line in err.splitlines()[1:])


def test_show_help_lists_the_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["show", "--help"])
    out = capsys.readouterr().out
    for line in aliases.describe():
        assert line in out


# ---------------------------------------------------------------- --watch


class Clock:
    """time.sleep / time.time stand-ins: each sleep moves the clock; the n-th interrupts."""

    def __init__(self, interrupt_at: int) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []
        self.interrupt_at = interrupt_at

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) == self.interrupt_at:
            raise KeyboardInterrupt
        self.now += seconds


def test_watch_redraws_until_interrupted_and_survives_a_missing_daemon() -> None:
    answers = iter(["one", ClientError("evpnd is not running"), "three"])

    def frame() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock, out = Clock(interrupt_at=3), io.StringIO()
    code = control_cli.watch(frame, 2, "evpnd show peers", out=out, sleep=clock.sleep,
                             now=lambda: clock.now, clear=True)
    assert code == 0 and clock.sleeps == [2, 2, 2]
    frames = out.getvalue().split(control_cli.CLEAR)[1:]
    assert len(frames) == 3
    assert frames[0].startswith("Every 2s: evpnd show peers    ")
    assert [f.split("\n\n", 1)[1] for f in frames] == [
        "one\n", "evpnd show peers: evpnd is not running\n", "three\n"]
    plain = io.StringIO()
    control_cli.watch(lambda: "x", 0.5, "t", out=plain, sleep=Clock(2).sleep, clear=False)
    assert control_cli.CLEAR not in plain.getvalue()
    assert plain.getvalue().count("Every 0.5s: t") == 2


async def test_watch_over_the_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "control.sock"
    server = ControlServer(fake_daemon(), path)
    await server.start()
    clock = Clock(interrupt_at=2)
    watch = control_cli.watch
    monkeypatch.setattr(control_cli, "watch",
                        lambda *args, **kwargs: watch(*args, sleep=clock.sleep, **kwargs))
    try:
        code = await asyncio.to_thread(
            cli.main, ["show", "bgp", "summary", "--watch", "1.5", "--socket", str(path)])
    finally:
        await server.stop()
    out = capsys.readouterr().out
    assert code == 0 and clock.sleeps == [1.5, 1.5]
    assert out.count("Every 1.5s: evpnd show peers") == 2
    assert out.count("Total number of neighbors 2") == 2


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_watch_interval_must_be_sensible(bad: str) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["show", "peers", "--watch", bad])


# ---------------------------------------------------------------- JSON schema version


def test_every_view_carries_the_schema_version_and_is_documented() -> None:
    doc = DOCS.read_text()
    assert f"schema_version: {views.SCHEMA_VERSION}" in doc or \
        f'"schema_version": {views.SCHEMA_VERSION}' in doc
    snap = build()
    sections = re.split(r"^## ", doc, flags=re.M)
    by_view = {s.split("\n", 1)[0].split()[0].strip("`"): s for s in sections[1:]}
    for what in views.VIEWS:
        data = views.show(snap, what)
        assert data["schema_version"] == views.SCHEMA_VERSION
        section = by_view.get(what)
        assert section is not None, f"docs/show-json.md has no '## {what}' section"
        for key in data:
            assert f"`{key}`" in section, f"show {what}: key {key!r} is not documented"


# ---------------------------------------------------------------- completion


def bash_complete(script: str, *words: str) -> list[str]:
    program = ('source /dev/stdin; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
               '_evpnd; printf "%s\\n" "${COMPREPLY[@]}"')
    result = subprocess.run(["bash", "--norc", "-c", program, "bash", "evpnd", *words],
                            input=script, capture_output=True, text=True, check=True)
    assert result.stderr == ""
    return sorted(filter(None, result.stdout.splitlines()))


def zsh_complete(script: str, *words: str) -> list[str]:
    zsh = require_program("zsh", "zsh")
    program = ('source /dev/stdin; compadd() { [[ $1 == -- ]] && shift; print -rl -- "$@"; }; '
               '_files() { print -r -- @files; }; words=(evpnd "$@"); CURRENT=${#words}; _evpnd')
    result = subprocess.run([zsh, "-f", "-c", program, "zsh", *words], input=script,
                            capture_output=True, text=True, check=True)
    assert result.stderr == ""
    return sorted(filter(None, result.stdout.splitlines()))


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    parser = cli.build_parser()
    return {"bash": completion.bash(parser, "test"), "zsh": completion.zsh(parser, "test")}


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_follows_the_parser(shell: str, scripts: dict[str, str]) -> None:
    complete = bash_complete if shell == "bash" else zsh_complete
    script = scripts[shell]
    parser = cli.build_parser()
    top = next(a for a in parser._actions if a.dest == "command")
    assert complete(script, "") == sorted(top.choices)  # type: ignore[arg-type]
    show = top.choices["show"]  # type: ignore[index]
    view_names = next(a for a in show._actions if a.dest == "view").choices
    assert set(complete(script, "show", "")) == {*view_names, "bgp", "evpn", "running-config"}
    assert complete(script, "show", "routes", "--type", "") == ["1", "2", "3", "4", "5"]
    assert complete(script, "show", "routes", "--direction", "") == ["in", "out"]
    assert complete(script, "completion", "") == ["bash", "zsh"]
    # An FRR alias, through a typed VNI, offers the options of the view it stands for.
    options = complete(script, "show", "evpn", "mac", "vni", "100", "--")
    assert "--json" in options and "--watch" in options and "--vni" in options
    assert complete(script, "show", "evpn", "") == ["arp-cache", "mac", "vni"]
    assert complete(script, "show", "bgp", "l2vpn", "evpn", "route", "type", "") == sorted(
        aliases.ROUTE_TYPE_NAMES)
    # An option's value is skipped when walking the words typed.
    assert "--type" in complete(script, "show", "routes", "--vni", "100", "--")


def test_completion_cli_prints_both_scripts() -> None:
    for shell in ("bash", "zsh"):
        result = subprocess.run([*cli_command(), "completion", shell], capture_output=True,
                                text=True, cwd=REPO)
        assert result.returncode == 0 and "_evpnd" in result.stdout
    syntax = subprocess.run(["bash", "-n"], input=completion.bash(cli.build_parser(), "x"),
                            capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def cli_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "evpnd"]
