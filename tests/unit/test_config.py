"""Config validation: good files load, bad files name every field and value."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import ip_address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evpnd import config
from evpnd.control.settings import ControlConfig
from evpnd.docker.settings import DockerConfig
from evpnd.metrics.settings import MetricsConfig
from evpnd.mqtt.settings import MqttConfig, MqttTls

HERE = Path(__file__).parent
REPO = HERE.parent.parent
EXAMPLE = REPO / "config" / "evpnd.example.yaml"

BASE = """router_id: 192.0.2.1
asn: 65000
vtep: {address: 192.0.2.1, device: eth0}
"""


def errors_of(text: str) -> list[config.ConfigIssue]:
    with pytest.raises(config.ConfigError) as info:
        config.parse(text, "test.yaml")
    return info.value.issues


def paths(issues: list[config.ConfigIssue]) -> set[str]:
    return {i.path for i in issues}


def test_example_file_is_valid_and_documents_every_field() -> None:
    cfg = config.load(EXAMPLE)
    assert cfg.asn == 65000
    assert [v.vni for v in cfg.vnis] == [100, 200]
    text = EXAMPLE.read_text()
    # Every field of the model appears in the documented example.
    for model in (config.Config, config.Vtep, config.Peer, config.Bgp, config.Dad, config.Vni,
                  config.VxlanOptions, config.Logging, ControlConfig, MetricsConfig,
                  MqttConfig, MqttTls, DockerConfig):
        for name, field in model.model_fields.items():
            assert f"{field.alias or name}:" in text, f"{model.__name__}.{name} undocumented"


def test_minimal_defaults() -> None:
    cfg = config.load(HERE / "configs" / "minimal.yaml")
    assert cfg.bgp.peers == []
    assert cfg.vnis == []
    assert cfg.state_dir == Path("/run/evpnd")


def test_vni_defaults_and_derived_values() -> None:
    cfg = config.parse(BASE + "vnis: [{vni: 100}, {vni: 70000}, {vni: 1}]")
    vni = cfg.vni(100)
    assert (vni.bridge_name, vni.vxlan_name) == ("br100", "vxlan100")
    assert vni.vxlan.dstport == 4789
    assert vni.vxlan.learning is False
    assert vni.mtu == "auto"
    assert vni.arp_suppression is True
    assert cfg.rd_for(vni) == "192.0.2.1:100"
    # A VNI too large for the 16-bit RD number takes the lowest free index.
    assert cfg.rd_for(cfg.vni(70000)) == "192.0.2.1:2"
    assert cfg.import_targets(vni) == ["*:100"]  # any ASN, as FRR's automatic import
    assert cfg.export_targets(vni) == ["65000:100"]


def test_four_byte_asn_auto_rt_keeps_low_bits_like_frr() -> None:
    cfg = config.parse(BASE.replace("asn: 65000", "asn: 4200000001") + "vnis: [{vni: 5}]")
    assert cfg.export_targets(cfg.vni(5)) == [f"{4200000001 & 0xFFFF}:5"]


def test_acceptance_bad_vni_and_bad_address_both_reported() -> None:
    issues = errors_of((HERE / "configs" / "bad-vni-and-address.yaml").read_text())
    by_path = {i.path: i for i in issues}
    assert by_path["vnis.0.vni"].value == 99999999
    assert by_path["bgp.peers.0.address"].value == "10.0.0.300"
    assert by_path["vnis.0.vni"].line == 11
    assert by_path["bgp.peers.0.address"].line == 8


@pytest.mark.parametrize(
    ("snippet", "path", "value"),
    [
        ("vnis: [{vni: 0}]", "vnis.0.vni", 0),
        ("vnis: [{vni: 16777216}]", "vnis.0.vni", 16777216),
        ("vnis: [{vni: 5, bridge: 'has space'}]", "vnis.0.bridge", "has space"),
        ("vnis: [{vni: 5, vxlan_device: 'waytoolonginterfacename'}]", "vnis.0.vxlan_device",
         "waytoolonginterfacename"),
        ("vnis: [{vni: 5, mtu: 20}]", "vnis.0.mtu", 20),
        ("vnis: [{vni: 5, vxlan: {dstport: 0}}]", "vnis.0.vxlan.dstport", 0),
        ("vnis: [{vni: 5, vxlan: {ttl: 256}}]", "vnis.0.vxlan.ttl", 256),
        ("vnis: [{vni: 5, vxlan: {tos: 300}}]", "vnis.0.vxlan.tos", 300),
        ("vnis: [{vni: 5, vxlan: {port_range: [9, 8]}}]", "vnis.0.vxlan.port_range", [9, 8]),
        ("vnis: [{vni: 5, vxlan: {mac: 'zz:00:00:00:00:01'}}]", "vnis.0.vxlan.mac",
         "zz:00:00:00:00:01"),
        ("vnis: [{vni: 5, vxlan: {mac: '01:00:5e:00:00:01'}}]", "vnis.0.vxlan.mac",
         "01:00:5e:00:00:01"),
        ("vnis: [{vni: 5, vxlan: {learnin: true}}]", "vnis.0.vxlan.learnin", True),
        # A bad route target is named alone, not with the whole list.
        ("vnis: [{vni: 5, route_targets: {import: [auto, 'x:y']}}]",
         "vnis.0.route_targets.import.1", "x:y"),
        ("vnis: [{vni: 5, rd: 'nonsense'}]", "vnis.0.rd", "nonsense"),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 0}]}", "bgp.peers.0.remote_asn", 0),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, hold_time: 1}]}",
         "bgp.peers.0.hold_time", 1),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, ttl_security: 255}]}",
         "bgp.peers.0.ttl_security", 255),
        ("colour: blue", "colour", "blue"),
        # A secret's value is never shown, not even when it is the problem.
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, md5_password: 'a\"b'}]}",
         "bgp.peers.0.md5_password", "***"),
        # Values int()/isdigit() take but the encoder, ExaBGP or the kernel refuse.
        ("vnis: [{vni: 5, route_targets: {import: ['65001:\u0661\u0660\u0660']}}]",
         "vnis.0.route_targets.import.0", "65001:\u0661\u0660\u0660"),
        ("vnis: [{vni: 5, route_targets: {export: [\"65001:100\\n\"]}}]",
         "vnis.0.route_targets.export.0", "65001:100\n"),
        ("vnis: [{vni: 5, rd: \"65001:5\\n\"}]", "vnis.0.rd", "65001:5\n"),
        ("vnis: [{vni: 5, rd: '\u0661.2.3.4:5'}]", "vnis.0.rd", "\u0661.2.3.4:5"),
        ("vnis: [{vni: 5, bridge: \"br100\\n\"}]", "vnis.0.bridge", "br100\n"),
        ("vnis: [{vni: 5, vxlan_device: 'vx\u00e9'}]", "vnis.0.vxlan_device", "vx\u00e9"),
        ("vnis: [{vni: true}]", "vnis.0.vni", True),
        ("vnis: [{vni: 5, flood: static, flood_peers: [192.0.2.7, 224.0.0.5]}]",
         "vnis.0.flood_peers.1", "224.0.0.5"),
        ("vnis: [{vni: 5, vxlan: {mac: '00:00:00:00:00:00'}}]", "vnis.0.vxlan.mac",
         "00:00:00:00:00:00"),
    ],
)
def test_single_bad_field_is_named_with_its_value(snippet: str, path: str, value: object) -> None:
    issues = errors_of(BASE + snippet)
    assert path in paths(issues), [str(i) for i in issues]
    assert any(i.path == path and i.value == value for i in issues)


def test_every_error_is_reported_not_just_the_first() -> None:
    text = """router_id: 300.1.1.1
asn: -5
vtep: {address: nope, device: ''}
vnis:
  - {vni: 0, vxlan: {ttl: 0}}
  - {vni: 5, flood: multicast}
"""
    got = paths(errors_of(text))
    assert {"router_id", "asn", "vtep.address", "vtep.device", "vnis.0.vni",
            "vnis.0.vxlan.ttl", "vnis.1.flood"} <= got


@pytest.mark.parametrize(
    ("snippet", "fragment"),
    [
        ("vnis: [{vni: 5}, {vni: 5}]", "VNI 5 is listed twice"),
        ("vnis: [{vni: 5, bridge: brx}, {vni: 6, bridge: brx}]", "device 'brx'"),
        ("vnis: [{vni: 5, flood: multicast, group: 192.0.2.5}]", "not a multicast"),
        ("vnis: [{vni: 5, flood: static}]", "flood_peers"),
        ("vnis: [{vni: 5, flood_peers: [192.0.2.7]}]", "only used with flood: static"),
        ("vnis: [{vni: 5, vxlan: {noage: true, ageing: 30}}]", "not both"),
        ("vnis: [{vni: 5, adopt_bridge: true}]", "adopt_bridge needs"),
        ("vnis: [{vni: 5, bridge: br-d, adopt_bridge: true}, "
         "{vni: 6, bridge: br-d, adopt_bridge: true}]", "device 'br-d'"),
        ("vnis: [{vni: 5, vxlan: {gbp: true}}, {vni: 6}]", "differ in gbp"),
        ("vnis: [{vni: 5, flood: multicast, group: 'ff0e::5'}]", "different address families"),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1}, {address: 192.0.2.9, remote_asn: 2}]}",
         "listed twice"),
    ],
)
def test_cross_field_rules(snippet: str, fragment: str) -> None:
    messages = " | ".join(str(i) for i in errors_of(BASE + snippet))
    assert fragment in messages


def test_adopted_bridge_may_be_shared_name_and_static_and_multicast_modes_load() -> None:
    cfg = config.parse(
        BASE
        + """vnis:
  - {vni: 5, bridge: br-docker1, adopt_bridge: true}
  - {vni: 6, flood: static, flood_peers: [192.0.2.7, 192.0.2.8]}
  - {vni: 7, flood: multicast, group: 239.1.1.7, vxlan: {noage: true, ttl: inherit}}
"""
    )
    assert cfg.vni(5).adopt_bridge
    assert cfg.vni(6).flood_peers == [ip_address("192.0.2.7"), ip_address("192.0.2.8")]
    assert cfg.vni(7).vxlan.ageing_seconds() == config.NOAGE_SECONDS


def test_yaml_syntax_error_and_non_mapping() -> None:
    assert errors_of("router_id: [unclosed")[0].message.startswith("invalid YAML")
    assert "mapping" in errors_of("- just\n- a list\n")[0].message


@given(st.integers())
def test_vni_range_property(number: int) -> None:
    text = BASE + f"vnis: [{{vni: {number}}}]"
    if 1 <= number <= config.VNI_MAX:
        assert config.parse(text).vnis[0].vni == number
    else:
        assert "vnis.0.vni" in paths(errors_of(text))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evpnd", *args], capture_output=True, text=True, cwd=REPO
    )


def test_check_config_cli_ok() -> None:
    result = _cli("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_check_config_cli_reports_all_and_exits_1() -> None:
    result = _cli("check-config", str(HERE / "configs" / "bad-vni-and-address.yaml"))
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "vnis.0.vni" in out and "99999999" in out
    assert "bgp.peers.0.address" in out and "10.0.0.300" in out
    assert "Traceback" not in out


def test_check_config_cli_missing_file() -> None:
    result = _cli("check-config", "/nonexistent/evpnd.yaml")
    assert result.returncode == 1
    assert "No such file" in result.stdout + result.stderr


# --------------------------------------------------------- one validator, secrets


@pytest.mark.parametrize(
    ("vtep", "path", "fragment"),
    [("{address: 192.0.2.1, device: \"eth0\\n\"}", "vtep.device", "not a valid interface"),
     ("{address: 0.0.0.0, device: eth0}", "vtep.address", "unspecified"),
     ("{address: 239.1.1.1, device: eth0}", "vtep.address", "multicast")],
)  # fmt: skip
def test_vtep_device_and_address(vtep: str, path: str, fragment: str) -> None:
    issues = errors_of(f"router_id: 192.0.2.1\nasn: 65000\nvtep: {vtep}\n")
    assert any(i.path == path and fragment in i.message for i in issues), issues


def test_loopback_vtep_is_fine_for_a_single_host() -> None:
    cfg = config.parse("router_id: 127.0.0.1\nasn: 65000\nvtep: {address: 127.0.0.1, device: lo}")
    assert str(cfg.vtep.address) == "127.0.0.1"


def test_route_targets_and_rds_are_kept_canonical() -> None:
    cfg = config.parse(BASE + "vnis: [{vni: 5, rd: '192.0.2.1:05', "
                              "route_targets: {import: ['065000:0100', auto]}}]")
    assert cfg.vni(5).rd == "192.0.2.1:5"
    # Received routes print targets without leading zeros: the import must match them.
    assert cfg.import_targets(cfg.vni(5)) == ["65000:100", "*:5"]


SECRET = "hunter2-SECRET"


@pytest.mark.parametrize(
    "snippet",
    [f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, md5_password: '{SECRET}\"'}}]}}",
     f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, md5_password: '{SECRET}\u00e9'}}]}}",
     f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, md5_password: '{SECRET * 9}'}}]}}",
     # a misspelt secret is still a secret
     f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, md5_pasword: '{SECRET}'}}]}}",
     f"mqtt: {{host: broker, password: '{SECRET}'}}",
     f"mqtt: {{host: broker, username: u, password: ['{SECRET}']}}",
     f"mqtt: {{host: broker, username: u, password: {{x: '{SECRET}'}}}}",
     # the whole section is the input of a section-level error
     f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, md5_password: '{SECRET}'}}, "
     f"{{address: 192.0.2.9, remote_asn: 2, md5_password: '{SECRET}'}}]}}",
     f"bgp: {{peers: [[{{md5_password: '{SECRET}'}}]]}}",
     # PyYAML quotes the offending source line in its message
     f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, md5_password: \"{SECRET}}}]}}\n"],
)  # fmt: skip
def test_secrets_never_appear_in_error_reports(snippet: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(BASE + snippet, "test.yaml")
    error = caught.value
    shown = [error.render(), str(error), *(str(i) for i in error.issues),
             *(repr(i) for i in error.issues)]
    assert not any(SECRET in text for text in shown), shown
    assert "hunter2" not in error.render()


def test_secrets_never_appear_in_a_repr_of_the_config() -> None:
    cfg = config.parse(BASE + f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, "
                              f"md5_password: '{SECRET}'}}]}}\n"
                              f"mqtt: {{host: broker, username: u, password: '{SECRET}'}}\n")
    assert cfg.bgp.peers[0].md5_password == SECRET  # still there for ExaBGP's config
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)


def test_secret_redaction_keeps_other_values() -> None:
    assert config.redacted("bgp.peers.0", {"address": "x", "md5_password": "s"}) == {
        "address": "x", "md5_password": "***"}
    assert config.redacted("mqtt.password", None) == "***"
    assert config.redacted("vnis.0.rd", "1:2") == "1:2"


@pytest.mark.parametrize(
    ("snippet", "path", "value"),
    [
        ("dad: {max_moves: 1}", "dad.max_moves", 1),
        ("dad: {window: 0}", "dad.window", 0),
        ("dad: {freeze: 10}", "dad.freeze", 10),
        ("dad: {freeze: true}", "dad.freeze", True),
        ("dad: {freeze: forever}", "dad.freeze", "forever"),
        ("dad: {max_move: 5}", "dad.max_move", 5),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, max_routes: -1}]}",
         "bgp.peers.0.max_routes", -1),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, max_routes_warning: 101}]}",
         "bgp.peers.0.max_routes_warning", 101),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, max_routes_action: drop}]}",
         "bgp.peers.0.max_routes_action", "drop"),
        ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, max_routes_restart: 0}]}",
         "bgp.peers.0.max_routes_restart", 0),
    ],
)
def test_dad_and_route_limit_errors_name_field_and_value(
    snippet: str, path: str, value: object
) -> None:
    issues = errors_of(BASE + snippet)
    assert [(i.path, i.value) for i in issues] == [(path, value)], [str(i) for i in issues]


def test_dad_and_route_limit_defaults() -> None:
    cfg = config.parse(BASE + "bgp: {peers: [{address: 192.0.2.9, remote_asn: 1}]}")
    assert (cfg.dad.enabled, cfg.dad.max_moves, cfg.dad.window, cfg.dad.freeze) == (
        True, 5, 180, False)  # FRR's: dup-addr-detection max-moves 5 time 180, no freeze
    peer = cfg.bgp.peers[0]
    assert (peer.max_routes, peer.max_routes_warning, peer.max_routes_action,
            peer.max_routes_restart) == (500_000, 75, "teardown", 300)  # fmt: skip
    assert config.parse(BASE + "dad: {freeze: permanent}").dad.freeze == "permanent"
    assert config.parse(BASE + "dad: {freeze: 600}").dad.freeze == 600


async def test_a_refused_reload_logs_and_publishes_no_secret(tmp_path: Path) -> None:
    """The daemon's reload path: its log line and its MQTT error event are built from the
    issues, so they carry *** where the secret was."""
    from structlog.testing import capture_logs

    from evpnd.daemon import Daemon

    path = tmp_path / "evpnd.yaml"
    good = BASE + f"state_dir: {tmp_path}\n"
    path.write_text(good)
    daemon = Daemon(config.parse(good), path)
    published: list[tuple[str, str, dict]] = []
    daemon.mqtt.error = lambda error, detail, **context: published.append(  # type: ignore
        (error, detail, context))
    path.write_text(good + f"bgp: {{peers: [{{address: 192.0.2.9, remote_asn: 1, "
                           f"md5_password: '{SECRET}\u00e9'}}]}}\n")
    with capture_logs() as logs:
        assert await daemon.reload() is False
    refused = [entry for entry in logs if entry["event"].startswith("reload refused")]
    assert refused and published, (logs, published)
    assert SECRET not in repr(logs) and SECRET not in repr(published)
    assert "***" in repr(refused) and "bgp.peers.0.md5_password" in repr(published)
