"""The lab engine's pure parts: topology files, schema, image map, command rewriting."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from evpnd import config as evpnd_config
from evpnd.lab import (
    cli,
    commands,
    frr,
    gobgp,
    images,
    mosquitto,
    program,
    schema,
    state,
    topology,
)
from evpnd.lab.topology import LabError
from tests.conftest import REPO, require_program

LAB_DIR = REPO / "containerlab"
LAB_FILES = sorted(LAB_DIR.glob("*.clab.yml"))
EVPND_CONFIGS = sorted((LAB_DIR / "configs").glob("*/*/evpnd.yaml"))
FRR_CONFIGS = sorted((LAB_DIR / "configs").glob("*/*/frr.conf"))
GOBGP_CONFIGS = sorted((LAB_DIR / "configs").glob("*/*/gobgpd.*"))


def ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(LAB_DIR)) for p in paths]


def write_topo(tmp_path: Path, text: str, name: str = "t.clab.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def minimal(extra_node: str = "", extra_top: str = "", links: str = "") -> str:
    return (
        "name: t\n"
        f"{extra_top}"
        "topology:\n"
        "  nodes:\n"
        "    a:\n"
        "      kind: linux\n"
        "      image: alpine:3\n"
        f"{extra_node}"
        "    b:\n"
        "      kind: linux\n"
        "      image: alpine:3\n"
        "  links:\n"
        '    - endpoints: ["a:eth1", "b:eth1"]\n'
        f"{links}"
    )


# ---------------------------------------------------------------------------
# The lab files shipped in containerlab/


def test_the_three_labs_exist() -> None:
    assert {p.name for p in LAB_FILES} >= {
        "evpn-rr.clab.yml",
        "evpn-mixed.clab.yml",
        "frr-only.clab.yml",
        "evpn-gobgp.clab.yml",
    }


@pytest.mark.parametrize("path", LAB_FILES, ids=ids(LAB_FILES))
def test_lab_file_validates_against_the_vendored_schema(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    assert schema.validate(data, schema.VENDORED) == []


@pytest.mark.parametrize("path", LAB_FILES, ids=ids(LAB_FILES))
def test_lab_file_validates_against_the_shared_upstream_schema(
    path: Path, shared_dir: Path
) -> None:
    upstream = shared_dir / "containerlab" / "clab.schema.json"
    data = yaml.safe_load(path.read_text())
    assert schema.validate(data, upstream) == []


@pytest.mark.parametrize("path", LAB_FILES, ids=ids(LAB_FILES))
def test_lab_file_parses_and_only_uses_known_images(path: Path) -> None:
    topo = topology.load(path)
    assert topo.nodes and topo.links
    for name, node in topo.nodes.items():
        assert topo.netns_name(name) == f"clab-{topo.name}-{name}"
        assert node.kind == "linux"
        assert node.role in images.Role
        if node.role is images.Role.FRR:
            assert node.bound(images.FRR_CONFIG) and node.bound(images.FRR_DAEMONS)
        if node.role is images.Role.GOBGP:
            assert node.gobgp_config is not None
        if node.role is images.Role.MOSQUITTO:
            assert node.bound(images.MOSQUITTO_CONFIG)


@pytest.mark.parametrize("path", EVPND_CONFIGS, ids=ids(EVPND_CONFIGS))
def test_evpnd_host_config_is_valid(path: Path) -> None:
    evpnd_config.load(path)


def added_addresses(node: topology.Node) -> set[tuple[str, str]]:
    """(address, device) of the node's `ip [-6] addr add` exec lines."""
    found = set()
    for line in node.exec:
        words = [w for w in shlex.split(line) if w != "-6"]
        if words[:3] == ["ip", "addr", "add"] and "dev" in words:
            found.add((words[3].split("/")[0], words[words.index("dev") + 1]))
    return found


@pytest.mark.parametrize("path", LAB_FILES, ids=ids(LAB_FILES))
def test_evpnd_hosts_agree_with_their_topology(path: Path) -> None:
    """The VTEP address the config names is the one the exec lines put on vtep.device,
    and each BGP peer is an address another node's exec lines add (a route reflector's
    or a top-of-rack switch's)."""
    topo = topology.load(path)
    for node in topo.nodes.values():
        if node.role is not images.Role.EVPND:
            continue
        cfg_path = node.bound(images.EVPND_CONFIG)
        assert cfg_path is not None
        cfg = evpnd_config.load(cfg_path)
        assert (str(cfg.vtep.address), cfg.vtep.device) in added_addresses(node)
        others = {a for n in topo.nodes.values() if n is not node for a, _ in added_addresses(n)}
        assert {str(p.address) for p in cfg.bgp.peers} <= others
        assert f"{topo.name}-{node.name}" in str(cfg.state_dir)
        # Every bridge the config creates gets its ports attached by an exec line (or, on
        # a host with no endpoint of its own, the exec lines wait for it to exist).
        for vni in cfg.vnis:
            assert any(f"attach-ports.sh {vni.bridge_name} " in f"{line} " for line in node.exec)


def test_every_config_file_is_bound_by_some_node() -> None:
    bound = {
        bind.source
        for path in LAB_FILES
        for node in topology.load(path).nodes.values()
        for bind in node.binds
    }
    files = {p.resolve() for p in (LAB_DIR / "configs").rglob("*") if p.is_file()}
    assert files - bound == set()


@pytest.mark.parametrize("path", FRR_CONFIGS, ids=ids(FRR_CONFIGS))
def test_frr_config_passes_vtysh_dry_run(path: Path) -> None:
    require_program("vtysh", "frr")
    assert frr.check_config(path) is None


@pytest.mark.parametrize("path", GOBGP_CONFIGS, ids=ids(GOBGP_CONFIGS))
def test_gobgpd_config_passes_gobgpd_dry_run(path: Path) -> None:
    require_program("gobgpd", "gobgpd")
    assert gobgp.check_config(path) is None


def test_gobgp_lab_has_the_promised_shape() -> None:
    topo = topology.load(LAB_DIR / "evpn-gobgp.clab.yml")
    rr = topo.nodes["rr"]
    assert rr.role is images.Role.GOBGP
    assert rr.sysctls == {"net.ipv4.ip_forward": "1"}
    assert [n for n, node in topo.nodes.items() if node.role is images.Role.EVPND] == [
        "host1", "host2",
    ]  # fmt: skip
    endpoints = [n for n in topo.nodes.values() if n.role is images.Role.NAMESPACE]
    assert len(endpoints) == 2
    # The RR reflects l2vpn-evpn to both hosts as route-reflector clients.
    assert rr.gobgp_config is not None
    conf = tomllib.loads(rr.gobgp_config.read_text())
    assert conf["global"]["config"] == {"as": 65000, "router-id": "10.0.0.1"}
    for neighbor in conf["neighbors"]:
        assert neighbor["config"]["peer-as"] == 65000
        assert neighbor["route-reflector"]["config"] == {
            "route-reflector-client": True,
            "route-reflector-cluster-id": "10.0.0.1",
        }
        assert [a["config"]["afi-safi-name"] for a in neighbor["afi-safis"]] == ["l2vpn-evpn"]
    assert sorted(n["config"]["neighbor-address"] for n in conf["neighbors"]) == [
        "10.0.1.2", "10.0.2.2",
    ]  # fmt: skip


def test_evpn_labs_have_the_promised_shape() -> None:
    rr = topology.load(LAB_DIR / "evpn-rr.clab.yml")
    assert [n for n in rr.nodes if n.startswith("host")] == ["host1", "host2", "host3"]
    mixed = topology.load(LAB_DIR / "evpn-mixed.clab.yml")
    assert mixed.nodes["vtep3"].role is images.Role.FRR
    assert "host3" not in mixed.nodes
    for topo in (rr, mixed):
        assert topo.nodes["rr"].role is images.Role.FRR
        assert topo.nodes["rr"].sysctls == {"net.ipv4.ip_forward": "1"}
        endpoints = [n for n in topo.nodes.values() if n.role is images.Role.NAMESPACE]
        assert len(endpoints) == 8  # two on VNI 100 per host, one on VNI 200 on host1/2
        macs = [line.split()[-1] for n in endpoints for line in n.exec if " address " in line]
        assert len(set(macs)) == 8


# ---------------------------------------------------------------------------
# The schema and its regex fix


def test_upstream_schema_needs_the_regex_fix(shared_dir: Path) -> None:
    raw = json.loads((shared_dir / "containerlab" / "clab.schema.json").read_text())
    with pytest.raises((jsonschema.SchemaError, re.error)):
        jsonschema.Draft7Validator.check_schema(raw)
    jsonschema.Draft7Validator.check_schema(schema.load_schema(schema.SHARED))


def test_vendored_schema_is_the_fixed_upstream_copy(shared_dir: Path) -> None:
    upstream = (shared_dir / "containerlab" / "clab.schema.json").read_text()
    assert schema.VENDORED.read_text() == schema.fix_patterns(upstream)
    assert r"\p{" not in schema.VENDORED.read_text()
    license_note = schema.VENDORED.with_name("clab.schema.LICENSE.txt").read_text()
    assert "BSD" in license_note or "Redistribution and use" in license_note
    assert "Copyright (c) 2021 Nokia" in license_note


def test_fixed_patterns_accept_what_upstream_meant() -> None:
    data = yaml.safe_load(minimal(extra_node="      mgmt-ipv4: 172.20.20.5\n"))
    assert schema.validate(data, schema.VENDORED) == []
    data["topology"]["nodes"]["a"]["mgmt-ipv4"] = "not-an-address"
    assert schema.validate(data, schema.VENDORED)


def test_schema_violation_is_reported_with_its_location(tmp_path: Path) -> None:
    path = write_topo(tmp_path, minimal(extra_node="      exec: not-a-list\n"))
    with pytest.raises(LabError, match=r"topology\.nodes\.a\.exec"):
        topology.load(path)


# ---------------------------------------------------------------------------
# Unsupported keys: loud, naming the key and where it is


@pytest.mark.parametrize(
    "extra",
    [
        "      mgmt-ipv4: 172.20.20.5\n",
        "      ports: ['8080:80']\n",
        "      cpu: 1.5\n",
        "      memory: 1Gb\n",
        "      network-mode: host\n",
        "      cmd: sleep infinity\n",
        "      labels: {a: b}\n",
        "      startup-delay: 5\n",
    ],
)
def test_unsupported_node_key_names_key_and_node(tmp_path: Path, extra: str) -> None:
    key = extra.split(":")[0].strip()
    path = write_topo(tmp_path, minimal(extra_node=extra))
    with pytest.raises(LabError) as caught:
        topology.load(path)
    message = caught.value.render()
    assert f"node 'a': key '{key}' is not supported" in message


def test_unsupported_top_level_key(tmp_path: Path) -> None:
    path = write_topo(tmp_path, minimal(extra_top="mgmt:\n  network: custom\n"))
    with pytest.raises(LabError, match="top level: key 'mgmt' is not supported"):
        topology.load(path)


def test_unsupported_key_in_defaults(tmp_path: Path) -> None:
    text = minimal().replace("topology:\n", "topology:\n  defaults:\n    memory: 1Gb\n")
    with pytest.raises(LabError, match=r"topology\.defaults: key 'memory'"):
        topology.load(write_topo(tmp_path, text))


def test_unsupported_kind(tmp_path: Path) -> None:
    text = minimal().replace("kind: linux\n      image: alpine:3\n", "kind: nokia_srlinux\n", 1)
    with pytest.raises(LabError, match="node 'a': kind 'nokia_srlinux' is not supported"):
        topology.load(write_topo(tmp_path, text))


def test_unsupported_link_type(tmp_path: Path) -> None:
    links = (
        "    - type: macvlan\n"
        "      endpoint: {node: a, interface: eth2}\n"
        "      host-interface: eth0\n"
    )
    with pytest.raises(LabError, match="link type 'macvlan' is not supported"):
        topology.load(write_topo(tmp_path, minimal(links=links)))


def test_host_endpoint_is_refused(tmp_path: Path) -> None:
    links = '    - endpoints: ["a:eth2", "host:veth-a"]\n'
    with pytest.raises(LabError, match="root namespace"):
        topology.load(write_topo(tmp_path, minimal(links=links)))


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write_topo(tmp_path, minimal(extra_node="      cpu: 1\n      memory: 1Gb\n"))
    with pytest.raises(LabError) as caught:
        topology.load(path)
    assert len(caught.value.problems) == 2


# ---------------------------------------------------------------------------
# Checks the schema cannot make


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ('    - endpoints: ["a:eth2", "zz:eth1"]\n', "node 'zz' is not defined"),
        ('    - endpoints: ["a:eth1", "b:eth2"]\n', "a:eth1 is already used by link 1"),
        ('    - endpoints: ["a:eth0", "b:eth2"]\n', "eth0 is containerlab's management"),
        ('    - endpoints: ["a:averyveryverylongname", "b:eth2"]\n', "not a valid interface"),
    ],
)
def test_link_problems(tmp_path: Path, links: str, message: str) -> None:
    with pytest.raises(LabError, match=re.escape(message)):
        topology.load(write_topo(tmp_path, minimal(links=links)))


def test_unknown_image_is_refused_with_the_known_list(tmp_path: Path) -> None:
    text = minimal().replace("image: alpine:3", "image: frrouting/frr:v9.1.0", 1)
    with pytest.raises(LabError, match=r"no host substitute.*quay.io/frrouting/frr:8.4.4"):
        topology.load(write_topo(tmp_path, text))


def test_missing_bind_source_is_refused(tmp_path: Path) -> None:
    extra = "      binds:\n        - nothere.conf:/etc/x.conf\n"
    with pytest.raises(LabError, match=r"nothere\.conf does not exist"):
        topology.load(write_topo(tmp_path, minimal(extra_node=extra)))


def test_frr_node_needs_its_config(tmp_path: Path) -> None:
    text = minimal().replace("image: alpine:3", "image: quay.io/frrouting/frr:8.4.4", 1)
    with pytest.raises(LabError, match="FRR node needs its config"):
        topology.load(write_topo(tmp_path, text))


def test_evpnd_node_needs_its_config(tmp_path: Path) -> None:
    text = minimal().replace("image: alpine:3", "image: evpnd:latest", 1)
    with pytest.raises(LabError, match=re.escape("/etc/evpnd/evpnd.yaml")):
        topology.load(write_topo(tmp_path, text))


def test_non_network_sysctl_is_refused(tmp_path: Path) -> None:
    extra = "      sysctls:\n        kernel.pid_max: 100000\n"
    with pytest.raises(LabError, match="would change the host"):
        topology.load(write_topo(tmp_path, minimal(extra_node=extra)))


def test_startup_config_is_the_frr_config(tmp_path: Path) -> None:
    (tmp_path / "r.conf").write_text("hostname r\n")
    text = minimal().replace(
        "image: alpine:3", "image: frrouting/frr:v8.4.4\n      startup-config: r.conf", 1
    )
    node = topology.load(write_topo(tmp_path, text)).nodes["a"]
    assert node.role is images.Role.FRR
    assert node.startup_config == (tmp_path / "r.conf").resolve()


# ---------------------------------------------------------------------------
# Inheritance, links, names, environment


def test_defaults_kinds_groups_and_node_are_merged(tmp_path: Path) -> None:
    for name in ("d.txt", "k.txt", "n.txt"):
        (tmp_path / name).write_text(name)
    text = """\
name: inherit
topology:
  defaults:
    kind: linux
    env: {A: defaults, B: defaults}
    binds: [d.txt:/x, d.txt:/d]
    exec: [echo defaults]
  kinds:
    linux:
      image: alpine:3
      env: {B: kind, C: kind}
      binds: [k.txt:/x]
  groups:
    g1:
      sysctls: {net.ipv4.ip_forward: 1}
      exec: [echo group]
  nodes:
    n1:
      group: g1
      env: {C: node}
      binds: [n.txt:/n]
    n2:
      image: busybox
      exec: [echo node]
"""
    topo = topology.load(write_topo(tmp_path, text))
    n1, n2 = topo.nodes["n1"], topo.nodes["n2"]
    assert n1.env == {"A": "defaults", "B": "kind", "C": "node"}
    assert {b.target: b.source.name for b in n1.binds} == {"/x": "k.txt", "/d": "d.txt",
                                                            "/n": "n.txt"}  # fmt: skip
    assert n1.exec == ("echo group",)
    assert n1.sysctls == {"net.ipv4.ip_forward": "1"}
    assert n1.image == "alpine:3"
    assert n2.exec == ("echo node",)
    assert n2.image == "busybox"
    assert n2.sysctls == {}


def test_links_default_mtu_and_extended_form(tmp_path: Path) -> None:
    links = (
        "    - type: veth\n"
        "      mtu: 1400\n"
        "      endpoints:\n"
        "        - {node: a, interface: eth2, mac: '02:AA:00:00:00:01', ipv4: 10.9.0.1/24}\n"
        "        - {node: b, interface: eth2}\n"
        '    - endpoints: ["a:eth3", "b:eth3"]\n'
        "      ipv4: [10.8.0.1/30, 10.8.0.2/30]\n"
    )
    topo = topology.load(write_topo(tmp_path, minimal(links=links)))
    first, second, third = topo.links
    assert first.mtu == topology.CONTAINERLAB_DEFAULT_MTU == 9500
    assert (second.mtu, second.a.mac, second.a.ipv4, second.b.ipv4) == (
        1400, "02:aa:00:00:00:01", "10.9.0.1/24", None
    )  # fmt: skip
    assert (third.a.ipv4, third.b.ipv4) == ("10.8.0.1/30", "10.8.0.2/30")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [(None, "clab-lab-n"), ("", "n"), ("__lab-name", "lab-n"), ("p", "p-lab-n")],
)
def test_namespace_names_follow_containerlab_prefix_rules(
    prefix: str | None, expected: str
) -> None:
    topo = topology.Topology(name="lab", prefix=prefix, path=Path("x"), nodes={}, links=())
    assert topo.netns_name("n") == expected


def test_environment_is_expanded_like_containerlab() -> None:
    env = {"IMG": "alpine:3"}
    assert topology.expand_env("image: $IMG", "s", env) == "image: alpine:3"
    assert topology.expand_env("a: ${NOPE:=d} ${IMG}", "s", env) == "a: d alpine:3"
    assert topology.expand_env("sh -c 'echo $$HOME'", "s", env) == "sh -c 'echo $HOME'"
    with pytest.raises(LabError, match="NOPE is not set"):
        topology.expand_env("x: $NOPE", "s", env)


def test_identity_is_read_without_validation(tmp_path: Path) -> None:
    path = write_topo(tmp_path, "name: broken\ntopology:\n  nodes:\n    x: {cpu: 1}\n")
    assert topology.read_identity(path) == ("broken", None, ["x"])


# ---------------------------------------------------------------------------
# The image map


def test_image_map_is_explicit() -> None:
    """Exactly these images have a stand-in; FRR only in the host's own version."""
    roles = {ref: spec.role for ref, spec in images.IMAGE_MAP.items()}
    assert roles == {
        "quay.io/frrouting/frr:8.4.4": images.Role.FRR,
        "frrouting/frr:v8.4.4": images.Role.FRR,
        "evpnd:latest": images.Role.EVPND,
        "jauderho/gobgp:v3.10.0": images.Role.GOBGP,
        "eclipse-mosquitto:2.0.11": images.Role.MOSQUITTO,
        "alpine:3": images.Role.NAMESPACE,
        "alpine:latest": images.Role.NAMESPACE,
        "busybox:latest": images.Role.NAMESPACE,
        "busybox:1": images.Role.NAMESPACE,
    }
    assert all(spec.substitute for spec in images.IMAGE_MAP.values())


@pytest.mark.parametrize(
    ("reference", "role"),
    [
        ("docker.io/library/alpine:3", images.Role.NAMESPACE),
        ("busybox", images.Role.NAMESPACE),
        ("docker.io/frrouting/frr:v8.4.4", images.Role.FRR),
        ("evpnd", images.Role.EVPND),
        ("docker.io/jauderho/gobgp:v3.10.0", images.Role.GOBGP),
        ("docker.io/library/eclipse-mosquitto:2.0.11", images.Role.MOSQUITTO),
    ],
)
def test_image_references_are_normalized(reference: str, role: images.Role) -> None:
    assert images.lookup(reference).role is role


@pytest.mark.parametrize(
    "reference",
    [
        "frrouting/frr:latest",
        "quay.io/frrouting/frr:9.1.0",
        "ubuntu:22.04",
        "jauderho/gobgp:latest",
        "osrg/gobgp",
    ],
)
def test_other_images_have_no_substitute(reference: str) -> None:
    with pytest.raises(images.UnknownImage, match="known images"):
        images.lookup(reference)


def test_registry_port_is_not_a_tag() -> None:
    assert images.normalize("registry:5000/evpnd") == "registry:5000/evpnd:latest"


# ---------------------------------------------------------------------------
# FRR pathspace and command rewriting


def test_daemons_file_selects_daemons_zebra_first() -> None:
    text = 'bgpd=yes\nospfd=no\nvtysh_enable=yes\nzebra_options=" -A 127.0.0.1"\n'
    assert frr.parse_daemons(text).names == ("zebra", "staticd", "bgpd")
    assert frr.parse_daemons(None).names == ("zebra", "staticd")
    assert frr.parse_daemons('frr_profile="datacenter"\n').profile == "datacenter"
    with pytest.raises(frr.FrrError, match="ospfd"):
        frr.parse_daemons("ospfd=1,2\n")


def test_frr_daemon_command_line_has_its_own_pathspace() -> None:
    node = frr.FrrNode(
        pathspace="clab-l-rr",
        runtime_dir=Path("/run/evpnd-lab/l/rr"),
        config=Path("/c/frr.conf"),
        daemons=frr.parse_daemons("bgpd=yes\n"),
    )
    assert frr.daemon_command("bgpd", node) == [
        "/usr/lib/frr/bgpd", "-d", "-N", "clab-l-rr", "-f", "/c/frr.conf",
        "-i", "/run/evpnd-lab/l/rr/bgpd.pid", "-z", "/run/evpnd-lab/l/rr/zserv.api",
        "--vty_socket", "/run/evpnd-lab/l/rr", "-A", "127.0.0.1", "-P", "0",
        "--log", "file:/run/evpnd-lab/l/rr/bgpd.log",
    ]  # fmt: skip


def test_vtysh_gets_the_nodes_vty_socket() -> None:
    argv = commands.node_argv(
        ["vtysh", "-c", "show bgp summary"], role="frr", binds={}, vty_dir="/run/x/rr"
    )
    assert argv == ["vtysh", "--vty_socket", "/run/x/rr", "-c", "show bgp summary"]
    # Not on other nodes: there is no FRR there to talk to.
    assert commands.node_argv(["vtysh"], role="namespace", binds={}) == ["vtysh"]


def test_evpnd_command_maps_to_this_checkout() -> None:
    argv = commands.node_argv(["evpnd", "show"], role="evpnd", binds={}, python="/v/python")
    assert argv == ["/v/python", "-m", "evpnd", "show"]
    assert program.evpnd_command(Path("/c/e.yaml"), python="/v/python") == [
        "/v/python", "-m", "evpnd", "run", "-c", "/c/e.yaml",
    ]  # fmt: skip
    assert program.evpnd_command(Path("/c/e.yaml"))[0] == sys.executable


def test_gobgpd_command_listens_only_inside_the_node() -> None:
    assert gobgp.gobgpd_command(Path("/c/gobgpd.conf"), gobgpd="/usr/bin/gobgpd") == [
        "/usr/bin/gobgpd", "-f", "/c/gobgpd.conf", "-t", "toml",
        "--api-hosts", "127.0.0.1:50051", "--pprof-disable", "--log-plain",
    ]  # fmt: skip
    assert gobgp.gobgpd_command(Path("/c/gobgpd.yml"))[3:5] == ["-t", "yaml"]
    with pytest.raises(gobgp.GobgpError, match="config type"):
        gobgp.gobgpd_command(Path("/c/gobgpd.ini"))


def test_gobgp_node_needs_its_config(tmp_path: Path) -> None:
    text = minimal().replace("image: alpine:3", "image: jauderho/gobgp:v3.10.0", 1)
    with pytest.raises(LabError, match=re.escape("GoBGP node needs its config")):
        topology.load(write_topo(tmp_path, text))
    (tmp_path / "g.yaml").write_text("global: {config: {as: 65000, router-id: 10.0.0.1}}\n")
    bound = text.replace(
        "image: jauderho/gobgp:v3.10.0",
        "image: jauderho/gobgp:v3.10.0\n      binds: [g.yaml:/etc/gobgp/gobgpd.yaml]",
    )
    node = topology.load(write_topo(tmp_path, bound)).nodes["a"]
    assert node.gobgp_config == (tmp_path / "g.yaml").resolve()


def test_bind_targets_in_commands_become_host_paths() -> None:
    binds = {"/lab/attach-ports.sh": "/repo/containerlab/configs/common/attach-ports.sh"}
    argv = commands.node_argv(
        shlex.split("sh /lab/attach-ports.sh br100 eth2"), role="evpnd", binds=binds
    )
    assert argv == ["sh", binds["/lab/attach-ports.sh"], "br100", "eth2"]


# ---------------------------------------------------------------------------
# State file and CLI wiring


def test_state_round_trips(tmp_path: Path) -> None:
    st = state.LabState(lab="l", topology="/t.clab.yml", namespaces=["clab-l-a"])
    st.nodes["a"] = state.NodeState(
        name="a", netns="clab-l-a", kind="linux", image="alpine:3", role="namespace",
        runtime_dir="/run/x", pids=[1, 2],
    )  # fmt: skip
    state.save(st, tmp_path)
    loaded = state.load("l", tmp_path)
    assert loaded == st
    assert loaded is not None and loaded.node("clab-l-a") == st.nodes["a"]
    assert state.load("other", tmp_path) is None
    assert [s.lab for s in state.all_labs(tmp_path)] == ["l"]


def test_cli_hooks_into_a_parent_parser() -> None:
    parser = argparse.ArgumentParser(prog="evpnd")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_subparsers(sub)
    args = parser.parse_args(["lab", "exec", "rr", "--", "vtysh", "-c", "show bgp summary"])
    assert args.handler is cli.cmd_exec
    # argparse drops the "--"; cmd_exec also strips one, for older Pythons.
    assert (args.node, args.command) == ("rr", ["vtysh", "-c", "show bgp summary"])
    assert parser.parse_args(["lab", "up", "f.clab.yml"]).handler is cli.cmd_up
    assert parser.parse_args(["lab", "down", "f.clab.yml"]).handler is cli.cmd_down
    assert parser.parse_args(["lab", "inspect"]).handler is cli.cmd_inspect


def test_cli_up_reports_a_bad_file_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_topo(tmp_path, minimal(extra_node="      cpu: 1\n"))
    assert cli.main(["up", str(path)]) == 1
    assert "key 'cpu' is not supported" in capsys.readouterr().err


def test_cli_exec_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["exec", "rr", "--"]) == 2
    assert "give the command" in capsys.readouterr().err


def test_missing_schema_support_is_noted_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(data: object, path: Path | None = None) -> list[str]:
        raise schema.SchemaUnavailable("the Python package 'jsonschema' is not installed")

    monkeypatch.setattr(schema, "validate", unavailable)
    topo = topology.load(write_topo(tmp_path, minimal()))
    assert topo.notes == (
        "containerlab schema not checked: the Python package 'jsonschema' is not installed",
    )
    # The lab's own checks still run.
    with pytest.raises(LabError, match="key 'cpu'"):
        topology.load(write_topo(tmp_path, minimal(extra_node="      cpu: 1\n")))


def test_mosquitto_node_needs_its_config_and_runs_the_host_broker(tmp_path: Path) -> None:
    path = write_topo(tmp_path, (
        "name: m\ntopology:\n  nodes:\n    b: {kind: linux, image: eclipse-mosquitto:2.0.11}\n"
        "    c: {kind: linux, image: 'alpine:3'}\n"
        "  links:\n    - endpoints: ['b:eth1', 'c:eth1']\n"
    ))  # fmt: skip
    with pytest.raises(LabError, match=r"mosquitto node needs a bind to "
                                       r"/mosquitto/config/mosquitto\.conf"):
        topology.load(path)
    conf = REPO / "containerlab" / "configs" / "evpn-ops" / "broker" / "mosquitto.conf"
    assert mosquitto.mosquitto_command(conf, "/usr/sbin/mosquitto") == [
        "/usr/sbin/mosquitto", "-c", str(conf)]
    assert "listener 1883 0.0.0.0" in conf.read_text()
