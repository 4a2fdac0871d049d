"""Loading a config file: YAML 1.2 rules, duplicate keys, errors at the offending item's
line and value, warnings for a config that does nothing, `check-config --json` and the
JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from evpnd import config, validate, yaml12

HERE = Path(__file__).parent
REPO = HERE.parent.parent
EXAMPLE = REPO / "config" / "evpnd.example.yaml"

BASE = """router_id: 192.0.2.1
asn: 65000
vtep: {address: 192.0.2.1, device: eth0}
"""
PEER = "bgp: {peers: [{address: 192.0.2.9, remote_asn: 65000}]}\n"


def errors_of(text: str) -> list[config.ConfigIssue]:
    with pytest.raises(config.ConfigError) as info:
        config.parse(text, "test.yaml")
    return info.value.issues


def only(text: str) -> config.ConfigIssue:
    issues = errors_of(text)
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


# ------------------------------------------------------------ YAML 1.2 numbers


def test_a_leading_zero_is_decimal_not_octal() -> None:
    # YAML 1.1 (PyYAML's safe_load) reads 065000 as octal: 27136.
    assert config.parse(BASE.replace("asn: 65000", "asn: 065000")).asn == 65000


def test_an_unquoted_rd_or_route_target_is_a_string_not_base_60() -> None:
    # YAML 1.1 reads 65000:10 as 65000 * 60 + 10 = 3900010.
    cfg = config.parse(BASE + PEER + "vnis: [{vni: 10, rd: 65000:10, "
                                     "route_targets: {import: [65000:10], export: [65001:10]}}]")
    vni = cfg.vni(10)
    assert vni.rd == "65000:10"
    assert cfg.import_targets(vni) == ["65000:10"]
    assert cfg.export_targets(vni) == ["65001:10"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("065000", 65000), ("0x10", 16), ("0o17", 15), ("-3", -3), ("+7", 7), ("1.5", 1.5),
     ("65000:10", "65000:10"), ("1:30", "1:30"), ("1_000", "1_000"), ("0b11", "0b11"),
     ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("true", True),
     ("False", False), ("~", None), ("null", None), ("", None), ("2026-01-01", "2026-01-01"),
     ("'065000'", "065000"), ("!!str 12", "12")],
)  # fmt: skip
def test_yaml_1_2_core_schema_scalars(text: str, value: object) -> None:
    assert yaml12.read(f"key: {text}\n").data == {"key": value}


def test_a_boolean_word_is_a_string_so_a_description_no_loads() -> None:
    cfg = config.parse(BASE + "bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, "
                              "description: no}]}")
    assert cfg.bgp.peers[0].description == "no"


# ------------------------------------------------------------ duplicate keys


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    text = BASE + """bgp:
  peers:
    - address: 192.0.2.9
      remote_asn: 65000
      remote_asn: 65001
vnis:
  - vni: 10
asn: 65002
"""
    issues = errors_of(text)
    assert [(i.path, i.line) for i in issues] == [("bgp.peers.0.remote_asn", 8), ("asn", 11)]
    assert "first on line 7" in issues[0].message
    assert "duplicate key 'asn' (first on line 2)" in issues[1].message


def test_a_duplicate_secret_key_shows_no_secret() -> None:
    text = BASE + ("bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, md5_password: s3cr3t-a, "
                   "md5_password: s3cr3t-b}]}\n")
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text)
    assert "s3cr3t" not in caught.value.render()
    assert caught.value.issues[0].path == "bgp.peers.0.md5_password"


# ------------------------------------------------------------ errors at the item


@pytest.mark.parametrize(
    ("items", "path", "value", "line", "fragment"),
    [
        ("  - {vni: 5}\n  - {vni: 6}\n  - {vni: 5}\n", "vnis.2.vni", 5, 8,
         "VNI 5 is listed twice (also vnis.0)"),
        ("  - {vni: 5, bridge: brx}\n  - {vni: 6, bridge: brx}\n", "vnis.1.bridge", "brx", 7,
         "device 'brx' is used by VNI 5 (vnis.0) and VNI 6"),
        ("  - {vni: 5}\n  - {vni: 6, vxlan_device: br5}\n", "vnis.1.vxlan_device", "br5", 7,
         "device 'br5' is used by VNI 5"),
        ("  - {vni: 5, bridge: same, vxlan_device: same}\n", "vnis.0.vxlan_device", "same", 6,
         "bridge and vxlan device are both 'same'"),
        ("  - {vni: 5, vxlan: {gbp: true}}\n  - {vni: 6}\n", "vnis.1.vxlan.gbp", False, 7,
         "differ in gbp"),
        ("  - {vni: 5}\n  - {vni: 6, flood: multicast, group: 'ff0e::5'}\n", "vnis.1.group",
         "ff0e::5", 7, "different address families"),
        ("  - {vni: 5, flood: multicast}\n", "vnis.0.flood", "multicast", 6, "needs 'group'"),
        ("  - {vni: 5, flood: multicast, group: 192.0.2.5}\n", "vnis.0.group", "192.0.2.5", 6,
         "not a multicast address"),
        ("  - {vni: 5, group: 239.1.1.1}\n", "vnis.0.group", "239.1.1.1", 6,
         "only used with flood: multicast"),
        ("  - {vni: 5, flood: static}\n", "vnis.0.flood", "static", 6, "needs 'flood_peers'"),
        ("  - {vni: 5, flood_peers: [192.0.2.7]}\n", "vnis.0.flood_peers", ["192.0.2.7"], 6,
         "only used with flood: static"),
        ("  - {vni: 5, adopt_bridge: true}\n", "vnis.0.adopt_bridge", True, 6,
         "adopt_bridge needs 'bridge'"),
        ("  - vni: 5\n    vxlan:\n      noage: true\n      ageing: 30\n",
         "vnis.0.vxlan.ageing", 30, 9, "not both"),
        ("  - vni: 5\n    route_targets:\n      export: [auto, '1:x', '1:2']\n",
         "vnis.0.route_targets.export.1", "1:x", 8, "route target must be"),
        ("  - vni: 5\n    flood: static\n    flood_peers:\n      - 192.0.2.7\n      - 0.0.0.0\n",
         "vnis.0.flood_peers.1", "0.0.0.0", 10, "unspecified"),
    ],
)  # fmt: skip
def test_cross_field_errors_point_at_the_offending_item(
    items: str, path: str, value: object, line: int, fragment: str
) -> None:
    issue = only(BASE + PEER + "vnis:\n" + items)
    assert (issue.path, issue.value, issue.line) == (path, value, line), str(issue)
    assert fragment in issue.message
    assert "<top>" not in str(issue)


def test_peer_errors_point_at_the_peer() -> None:
    text = BASE + """bgp:
  peers:
    - {address: 192.0.2.9, remote_asn: 1}
    - {address: 192.0.2.10, remote_asn: 1}
    - {address: 192.0.2.9, remote_asn: 2}
"""
    issue = only(text)
    assert (issue.path, issue.value, issue.line) == ("bgp.peers.2.address", "192.0.2.9", 8)
    assert "listed twice (also bgp.peers.0)" in issue.message
    issue = only(text.replace("192.0.2.9, remote_asn: 2", "'2001:db8::9', remote_asn: 2"))
    assert (issue.path, issue.value, issue.line) == ("bgp.peers.2.address", "2001:db8::9", 8)
    assert "set local_address" in issue.message


def test_every_cross_field_error_is_reported() -> None:
    issues = errors_of(BASE + PEER + "vnis:\n  - {vni: 5, flood: static, group: 239.1.1.1, "
                                     "adopt_bridge: true}\n")
    assert {i.path for i in issues} == {"vnis.0.flood", "vnis.0.group", "vnis.0.adopt_bridge"}
    issues = errors_of(BASE + PEER + "vnis: [{vni: 5, bridge: b}, {vni: 6, bridge: b}, "
                                     "{vni: 5}, {vni: 7, vxlan: {gbp: true}}]\n")
    assert {i.path for i in issues} == {"vnis.1.bridge", "vnis.2.vni", "vnis.3.vxlan.gbp"}


def test_direct_construction_still_refuses_a_clash() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        config.Config.model_validate(
            {"router_id": "192.0.2.1", "asn": 1, "vtep": {"address": "192.0.2.1", "device": "e"},
             "vnis": [{"vni": 5}, {"vni": 5}]})


# ------------------------------------------------------------ messages


@pytest.mark.parametrize("rd", ["foo", "65536:65536", "1.2.3.4:70000", "'65000:'"])
def test_a_bad_rd_is_called_a_route_distinguisher(rd: str) -> None:
    issue = only(BASE + f"vnis: [{{vni: 5, rd: {rd}}}]")
    assert issue.path == "vnis.0.rd"
    assert "route distinguisher" in issue.message and "route target" not in issue.message


@pytest.mark.parametrize(
    ("router_id", "fragment"),
    [("'2001:db8::1'", "must be an IPv4 address"), ("'::ffff:192.0.2.1'", "must be an IPv4"),
     ("nope", "is not an IPv4 address"), ("300.1.1.1", "is not an IPv4 address"),
     ("0.0.0.0", "non-zero"), ("3232235777", "must be an IPv4 address")],
)  # fmt: skip
def test_router_id_must_be_ipv4(router_id: str, fragment: str) -> None:
    issue = only(BASE.replace("router_id: 192.0.2.1", f"router_id: {router_id}"))
    assert issue.path == "router_id" and issue.line == 1
    assert fragment in issue.message, issue.message
    assert "IPv4 or IPv6" not in issue.message


def test_validate_router_id() -> None:
    assert validate.router_id("192.0.2.1") == IPv4Address("192.0.2.1")
    assert validate.router_id(IPv4Address("10.0.0.1")) == IPv4Address("10.0.0.1")
    for bad in ("2001:db8::1", IPv6Address("2001:db8::1"), "1.2.3", "192.0.2.1%eth0", 5, None,
                "0.0.0.0"):
        with pytest.raises(ValueError, match="router id"):
            validate.router_id(bad)


def test_an_address_field_says_ipv4_or_ipv6_once() -> None:
    issue = only(BASE.replace("vtep: {address: 192.0.2.1", "vtep: {address: nope"))
    assert (issue.path, issue.message) == ("vtep.address", "not a valid IPv4 or IPv6 address")


@pytest.mark.parametrize("state_dir", ["run/evpnd", ".", "./state"])
def test_a_relative_state_dir_is_refused(state_dir: str) -> None:
    issue = only(BASE + f"state_dir: {state_dir}\n")
    assert (issue.path, issue.line) == ("state_dir", 4)
    assert "absolute" in issue.message


# ------------------------------------------------------------ warnings


def warnings_of(text: str) -> list[tuple[str, str]]:
    return [(w.path, w.message) for w in config.check(text).warnings]


def test_no_bgp_section_warns() -> None:
    got = warnings_of(BASE + "vnis: [{vni: 5}]\n")
    assert [path for path, _ in got] == ["bgp"]
    assert "no 'bgp:' section" in got[0][1] and "reaches no other VTEP" in got[0][1]


def test_a_bgp_section_without_peers_warns_at_peers() -> None:
    checked = config.check(BASE + "bgp:\n  graceful_restart: 60\nvnis: [{vni: 5}]\n")
    assert [(w.path, w.line) for w in checked.warnings] == [("bgp.peers", 4)]


def test_static_flooding_without_bgp_warns_only_about_the_evpn_vnis() -> None:
    checked = config.check(BASE + "vnis:\n  - {vni: 5, flood: static, flood_peers: [192.0.2.7]}\n"
                                  "  - {vni: 6}\n")
    assert [(w.path, w.value, w.line) for w in checked.warnings] == [
        ("vnis.1.flood", "evpn", 6)]
    assert config.check(BASE + "vnis: [{vni: 5, flood: multicast, group: 239.1.1.5}]\n"
                        ).warnings == []


def test_no_vni_warns_unless_docker_brings_them() -> None:
    assert [p for p, _ in warnings_of(BASE + PEER)] == ["vnis"]
    assert warnings_of(BASE + PEER + "docker: {enabled: true}\n") == []


def test_the_shipped_example_has_no_warning() -> None:
    assert config.check_file(EXAMPLE).warnings == []


# ------------------------------------------------------------ check-config and the schema


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "evpnd", *args], capture_output=True,
                          text=True, cwd=REPO)


def test_check_config_prints_ok_and_the_warnings_on_stderr(tmp_path: Path) -> None:
    path = tmp_path / "evpnd.yaml"
    path.write_text(BASE + "vnis: [{vni: 5}]\n")
    result = _cli("check-config", str(path))
    assert result.returncode == 0
    assert result.stdout == "ok\n"  # for scripts; the warnings go to stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{path}: 1 warning(s)"
    assert lines[1].startswith("  warning: bgp: there is no 'bgp:' section")


def test_check_config_json_errors_and_warnings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + PEER + "vnis:\n  - {vni: 5}\n  - {vni: 5}\n")
    result = _cli("check-config", "--json", str(bad))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1 and data["ok"] is False and data["warnings"] == []
    assert {"path": "vnis.1.vni", "line": 7, "value": 5,
            "message": "VNI 5 is listed twice (also vnis.0)"} in data["errors"]
    secret = tmp_path / "secret.yaml"
    secret.write_text(BASE + "bgp: {peers: [{address: 192.0.2.9, remote_asn: 1, "
                             "md5_password: 'hunter2-SECRET\"'}]}\n")
    result = _cli("check-config", "--json", str(secret))
    assert json.loads(result.stdout)["errors"] == [
        {"path": "bgp.peers.0.md5_password", "line": 4, "value": "***",
         "message": "must not contain quotes or line breaks"}]
    assert "hunter2" not in result.stdout
    good = tmp_path / "good.yaml"
    good.write_text(BASE + "vnis: [{vni: 5}]\n")
    result = _cli("check-config", "--json", str(good))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["errors"] == []
    assert [w["path"] for w in data["warnings"]] == ["bgp"]
    assert "value" not in data["warnings"][0]


def test_config_schema_accepts_the_example_and_refuses_mistakes() -> None:
    result = _cli("config-schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    example = yaml12.read(EXAMPLE.read_text()).data
    assert list(validator.iter_errors(example)) == []
    wrong = {**example, "asn": "65000", "colour": "blue",
             "vnis": [{"vni": 16_777_216, "flood": "sometimes"}]}
    found = {tuple(e.absolute_path) for e in validator.iter_errors(wrong)}
    assert {("asn",), (), ("vnis", 0, "vni"), ("vnis", 0, "flood")} <= found


def test_nested_aliases_are_walked_once() -> None:
    # Each level names the previous one ten times: walking through every alias would visit
    # 10**5 paths here (and 10**n for n levels); each node is walked once instead.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 5)]
    document = yaml12.read("\n".join(levels) + "\n")
    assert document.lines[("a4",)] == 5 and document.duplicates == ()
    assert len(document.lines) == 1 + 5 * 11  # the root, and each level with its 10 items
