"""ExaBGP configuration and environment generated from the evpnd Config.

The text is also fed to ExaBGP's own parser (in a child process, because
ExaBGP's environment is process-global and read once).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from exabgp.environment.setup import CONFIGURATION

from evpnd.config import Config
from evpnd.speaker import exabgp_config

PYTHON = sys.executable
SOCKET = "/run/evpnd/exabgp-api.sock"


def make_config(peers: list[dict], graceful_restart: int = 120, **bgp: object) -> Config:
    return Config.model_validate(
        {
            "router_id": "192.0.2.1",
            "asn": 65000,
            "vtep": {"address": "192.0.2.1", "device": "eth0"},
            "bgp": {"peers": peers, "graceful_restart": graceful_restart, **bgp},
        }
    )


FULL = make_config(
    [
        {
            "address": "192.0.2.2",
            "remote_asn": 65000,
            "description": "route reflector {1}; # primary",
            "md5_password": "s3cr#t;{x}\\y",
            "ttl_security": 2,
            "hold_time": 9,
        },
        {"address": "192.0.2.3", "remote_asn": 4200000001, "passive": True, "hold_time": 0},
        {
            "address": "2001:db8::2",
            "remote_asn": 65001,
            "local_address": "2001:db8::1",
        },
    ]
)


def neighbor_block(text: str, address: str) -> str:
    start = text.index(f"neighbor {address} {{")
    return text[start : text.index("\n}\n", start)]


def test_process_runs_the_relay_and_speaks_json() -> None:
    text = exabgp_config.render(FULL, exabgp_config.relay_command(PYTHON, SOCKET))
    assert f"    run {PYTHON} -m evpnd.speaker.relay {SOCKET};" in text
    assert "    encoder json;" in text
    assert "    respawn false;" in text


def test_neighbor_with_md5_ttl_security_and_hold_time() -> None:
    text = exabgp_config.render(FULL, exabgp_config.relay_command(PYTHON, SOCKET))
    block = neighbor_block(text, "192.0.2.2")
    for line in (
        'description "route reflector {1}; # primary";',
        "router-id 192.0.2.1;",
        "local-address 192.0.2.1;",
        "local-as 65000;",
        "peer-as 65000;",
        "hold-time 9;",
        'md5-password "s3cr#t;{x}\\\\y";',
        "outgoing-ttl 255;",
        "incoming-ttl 254;",  # two hops allowed: minimum TTL 256 - 2
        "l2vpn evpn;",
        "graceful-restart 120;",
        "processes [ evpnd ];",
        "neighbor-changes;",
        "parsed;",
        "update;",
        "notification;",
    ):
        assert line in block, line
    assert "passive" not in block and "listen" not in block


def test_passive_peer_listens_and_ipv6_peer_uses_its_local_address() -> None:
    text = exabgp_config.render(FULL, exabgp_config.relay_command(PYTHON, SOCKET))
    passive = neighbor_block(text, "192.0.2.3")
    assert "passive true;" in passive and "listen 179;" in passive
    assert "peer-as 4200000001;" in passive and "hold-time 0;" in passive
    assert "md5-password" not in passive and "incoming-ttl" not in passive
    assert "outgoing-ttl 1;" in passive  # eBGP (AS 4200000001): directly connected
    v6 = neighbor_block(text, "2001:db8::2")
    assert "local-address 2001:db8::1;" in v6 and "router-id 192.0.2.1;" in v6


def test_receive_raw_is_the_default_and_json_leaves_the_keyword_out() -> None:
    peers = [{"address": "192.0.2.2", "remote_asn": 65000}]
    raw = neighbor_block(exabgp_config.render(make_config(peers), ["relay"]), "192.0.2.2")
    assert make_config(peers).bgp.receive == "raw"
    receive = raw[raw.index("receive {") :]
    # open: the peer's graceful-restart capability (restart time, F bit) comes in its OPEN.
    for line in ("parsed;", "update;", "notification;", "refresh;", "open;", "raw-evpn;"):
        assert line in receive, line
    json_mode = make_config(peers, receive="json")
    block = neighbor_block(exabgp_config.render(json_mode, ["relay"]), "192.0.2.2")
    assert "raw-evpn" not in block and "parsed;" in block and "update;" in block


def test_receive_accepts_only_raw_or_json() -> None:
    with pytest.raises(ValueError, match="receive"):
        make_config([], receive="hex")


def test_graceful_restart_zero_leaves_the_capability_out() -> None:
    config = make_config([{"address": "192.0.2.2", "remote_asn": 65000}], graceful_restart=0)
    text = exabgp_config.render(config, exabgp_config.relay_command(PYTHON, SOCKET))
    assert "graceful-restart" not in text


def test_values_exabgp_cannot_read_are_refused() -> None:
    # The config model already rejects quotes in passwords; a model built
    # around validation must still not produce a config ExaBGP misreads.
    peer = make_config([{"address": "192.0.2.2", "remote_asn": 1}]).bgp.peers[0]
    bad = FULL.model_copy(
        update={"bgp": FULL.bgp.model_copy(
            update={"peers": [peer.model_copy(update={"md5_password": 'a"b'})]})}
    )
    with pytest.raises(exabgp_config.ConfigTextError):
        exabgp_config.render(bad, exabgp_config.relay_command(PYTHON, SOCKET))
    with pytest.raises(exabgp_config.ConfigTextError):
        exabgp_config.render(FULL, [PYTHON, "-m", "x", "/tmp/with space/sock"])


def test_environment_names_exist_in_exabgp() -> None:
    env = exabgp_config.environment()
    for name in env:
        prefix, section, option = name.split("_", 2)
        assert prefix == "exabgp"
        assert option in CONFIGURATION[section], name
    assert env["exabgp_daemon_user"] == "root"
    assert env["exabgp_api_terminate"] == "true"
    assert env["exabgp_api_respawn"] == "false"
    assert env["exabgp_daemon_daemonize"] == "false"
    assert env["exabgp_daemon_pid"] == ""
    assert env["exabgp_api_cli"] == "false"
    assert env["exabgp_api_ack"] == "true"


PARSE = r"""
import json, os, sys
from evpnd.speaker import rawreceive
rawreceive.install()  # as the launcher does: `raw-evpn` is its keyword
from exabgp.configuration.configuration import Configuration
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
env = getenv()
configuration = Configuration([sys.argv[1]])
if not configuration.reload():
    print(json.dumps({"error": str(configuration.error)}))
    sys.exit(0)
neighbors = {}
for neighbor in configuration.neighbors.values():
    neighbors[str(neighbor["peer-address"])] = {
        "local-address": str(neighbor["local-address"]),
        "router-id": str(neighbor["router-id"]),
        "local-as": int(neighbor["local-as"]),
        "peer-as": int(neighbor["peer-as"]),
        "hold-time": int(neighbor["hold-time"]),
        "md5-password": neighbor["md5-password"],
        "description": neighbor["description"],
        "outgoing-ttl": neighbor["outgoing-ttl"],
        "incoming-ttl": neighbor["incoming-ttl"],
        "passive": neighbor["passive"],
        "listen": neighbor["listen"],
        "graceful-restart": neighbor["capability"]["graceful-restart"],
        "families": [f"{afi} {safi}" for afi, safi in neighbor.families()],
        "processes": neighbor.api["processes"],
        "receive-update": neighbor.api["receive-update"],
        "receive-raw-evpn": neighbor.api["receive-raw-evpn"],
        "neighbor-changes": neighbor.api["neighbor-changes"],
    }
process = configuration.processes["evpnd"]
print(json.dumps({
    "neighbors": neighbors,
    "run": process["run"],
    "encoder": process["encoder"],
    "respawn": process["respawn"],
    "user": env.daemon.user,
    "terminate": env.api.terminate,
}))
"""


def parse_with_exabgp(tmp_path: Path, config: Config) -> dict:
    setup = exabgp_config.setup(config, PYTHON, tmp_path / "api.sock")
    path = tmp_path / "exabgp.conf"
    path.write_text(setup.text)
    env = {"PATH": "/usr/bin:/bin", "EXABGP_ENVFILE": str(tmp_path / "none.env"), **setup.env}
    result = subprocess.run(
        [PYTHON, "-c", PARSE, str(path)], env=env, capture_output=True, text=True, timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_exabgp_parses_the_generated_configuration(tmp_path: Path) -> None:
    parsed = parse_with_exabgp(tmp_path, FULL)
    assert "error" not in parsed, parsed
    assert parsed["run"] == [PYTHON, "-m", "evpnd.speaker.relay", str(tmp_path / "api.sock")]
    assert parsed["encoder"] == "json" and parsed["respawn"] is False
    assert parsed["user"] == "root" and parsed["terminate"] is True
    first = parsed["neighbors"]["192.0.2.2"]
    assert first == {
        "local-address": "192.0.2.1",
        "router-id": "192.0.2.1",
        "local-as": 65000,
        "peer-as": 65000,
        "hold-time": 9,
        "md5-password": "s3cr#t;{x}\\y",
        "description": "route reflector {1}; # primary",
        "outgoing-ttl": 255,
        "incoming-ttl": 254,
        "passive": False,
        "listen": 0,
        "graceful-restart": 120,
        "families": ["l2vpn evpn"],
        "processes": ["evpnd"],
        "receive-update": ["evpnd"],
        "receive-raw-evpn": ["evpnd"],
        "neighbor-changes": ["evpnd"],
    }
    passive = parsed["neighbors"]["192.0.2.3"]
    assert passive["passive"] is True and passive["listen"] == 179
    assert passive["peer-as"] == 4200000001 and passive["hold-time"] == 0
    assert passive["md5-password"] is None and passive["incoming-ttl"] is None
    assert parsed["neighbors"]["2001:db8::2"]["local-address"] == "2001:db8::1"


def test_exabgp_reads_receive_json_as_no_raw_processes(tmp_path: Path) -> None:
    config = make_config([{"address": "192.0.2.2", "remote_asn": 65000}], receive="json")
    neighbor = parse_with_exabgp(tmp_path, config)["neighbors"]["192.0.2.2"]
    assert neighbor["receive-raw-evpn"] == [] and neighbor["receive-update"] == ["evpnd"]


def test_exabgp_validate_accepts_it_through_the_launcher(tmp_path: Path) -> None:
    setup = exabgp_config.setup(FULL, PYTHON, tmp_path / "api.sock")
    path = tmp_path / "exabgp.conf"
    path.write_text(setup.text)
    env = {"PATH": "/usr/bin:/bin", "EXABGP_ENVFILE": str(tmp_path / "none.env"), **setup.env}
    result = subprocess.run(
        [PYTHON, "-m", "evpnd.speaker.launcher", "validate", "-n", str(path)],
        env=env, capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout + result.stderr
