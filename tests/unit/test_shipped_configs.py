"""The configs an operator starts from: the README's quickstart files, the minimal starter
(config/evpnd.minimal.yaml) and the reference example (config/evpnd.example.yaml).

`check-config` takes each with no warning, and the example enables nothing that needs
something outside the file: no broker, no certificate or CA file, no bridge someone
else must have made. tests/netns/test_quickstart.py runs the quickstart's files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evpnd import config
from evpnd.mqtt.settings import MqttConfig, MqttTls
from tests.conftest import REPO
from tests.quickstart import NAMES, attach_command, quickstart_files

EXAMPLE = REPO / "config" / "evpnd.example.yaml"
MINIMAL = REPO / "config" / "evpnd.minimal.yaml"


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evpnd", "check-config", str(path)],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip


def assert_ok_without_warnings(path: Path) -> None:
    result = check_config(path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", ""), result


# ------------------------------------------------------------------ the quickstart


def test_the_readme_marks_each_quickstart_file_once() -> None:
    assert sorted(quickstart_files()) == sorted(NAMES)
    port, command = attach_command()
    assert port == "vm1" and command.startswith("ip link set dev vm1 ")


def test_host_a_of_the_quickstart_is_the_minimal_config() -> None:
    assert quickstart_files()["hostA/evpnd.yaml"] == MINIMAL.read_text()


@pytest.mark.parametrize("name", ["hostA/evpnd.yaml", "hostB/evpnd.yaml"])
def test_each_quickstart_host_config_checks_ok_without_warnings(
    name: str, tmp_path: Path
) -> None:
    path = tmp_path / "evpnd.yaml"
    path.write_text(quickstart_files()[name])
    assert_ok_without_warnings(path)


def test_host_b_differs_from_host_a_only_in_its_address() -> None:
    files = quickstart_files()
    a = config.parse(files["hostA/evpnd.yaml"])
    b = config.parse(files["hostB/evpnd.yaml"])
    assert str(a.router_id) == str(a.vtep.address) == "192.0.2.11"
    assert str(b.router_id) == str(b.vtep.address) == "192.0.2.12"
    as_b = config.parse(files["hostA/evpnd.yaml"].replace("192.0.2.11", "192.0.2.12"))
    assert as_b.model_dump() == b.model_dump()


def test_the_quickstart_hosts_peer_with_the_route_reflector_of_its_frr_conf() -> None:
    files = quickstart_files()
    frr = files["rr/frr.conf"]
    for name in ("hostA/evpnd.yaml", "hostB/evpnd.yaml"):
        cfg = config.parse(files[name])
        [peer] = cfg.bgp.peers
        assert f" bgp router-id {peer.address}\n" in frr
        assert f"router bgp {peer.remote_asn}\n" in frr and peer.remote_asn == cfg.asn
        assert f" neighbor {cfg.vtep.address} peer-group HOSTS\n" in frr
    # Production timers: FRR's defaults, not the labs' 3/9 seconds.
    assert "timers" not in frr
    assert all("hold_time" not in files[n] for n in ("hostA/evpnd.yaml", "hostB/evpnd.yaml"))


# ------------------------------------------------------------------ the starter and the example


def test_the_minimal_config_checks_ok_without_warnings() -> None:
    assert_ok_without_warnings(MINIMAL)


def test_the_example_checks_ok_without_warnings() -> None:
    assert_ok_without_warnings(EXAMPLE)


def test_the_example_enables_nothing_that_needs_something_outside_the_file() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.mqtt is None  # a broker (and its CA file) would have to exist
    assert cfg.metrics.tls is None and cfg.metrics.basic_auth is None
    assert not cfg.docker.enabled  # dockerd
    assert [v.vni for v in cfg.vnis if v.adopt_bridge] == []  # a bridge someone else made
    # What a loaded config reads from files: none of it is set.
    assert all(getattr(cfg.metrics.tls, f, None) is None for f in ("cert", "key"))


def commented_block(name: str) -> tuple[list[str], int, int]:
    """The example's lines, and where its commented-out `# name:` section starts and ends."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index(f"# {name}:")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("#"))
    return lines, start, end


def test_the_examples_mqtt_section_is_commented_out_valid_and_names_no_file() -> None:
    lines, start, end = commented_block("mqtt")
    data = yaml.safe_load("\n".join(line[2:] for line in lines[start:end]))["mqtt"]
    for name in MqttConfig.model_fields:
        assert name in data, f"MqttConfig.{name} undocumented"
    for name in MqttTls.model_fields:
        assert name in data["tls"], f"MqttTls.{name} undocumented"
    mqtt = MqttConfig.model_validate(data)
    assert mqtt.tls is not None
    assert (mqtt.tls.ca, mqtt.tls.cert, mqtt.tls.key) == (None, None, None)
    # Uncommented as it is, it fits into the rest of the example.
    uncommented = [*lines[:start], *(line[2:] for line in lines[start:end]), *lines[end:]]
    assert config.parse("\n".join(uncommented)).mqtt == mqtt
