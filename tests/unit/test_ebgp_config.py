"""eBGP to a top-of-rack switch or route server: TTL, 4-byte ASNs, `auto` route targets
across ASNs, and the config's rules for them. ExaBGP's own parser reads what is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from evpnd import config
from evpnd.config import Config, ConfigError
from evpnd.derived import vni_policies
from evpnd.speaker import exabgp_config
from tests.unit.test_exabgp_config import neighbor_block, parse_with_exabgp

HOST_ASN = 4200000001  # RFC 6996 private 4-byte ASNs
TOR_ASN = 65100


def host(peers: list[dict], **extra: object) -> Config:
    return Config.model_validate({
        "router_id": "10.1.0.1", "asn": HOST_ASN,
        "vtep": {"address": "10.1.0.1", "device": "lo"},
        "bgp": {"peers": peers, **extra},
        "vnis": [{"vni": 100}, {"vni": 200, "accept_label_mismatch": True}],
    })  # fmt: skip


TOR1 = {"address": "10.2.1.1", "remote_asn": TOR_ASN, "local_address": "10.2.1.2"}
TOR2 = {"address": "10.3.1.1", "remote_asn": TOR_ASN, "ebgp_multihop": 2}
RR = {"address": "10.1.0.254", "remote_asn": HOST_ASN}


def test_ebgp_sends_with_ttl_1_unless_multihop_and_ibgp_keeps_the_default() -> None:
    text = exabgp_config.render(host([TOR1, TOR2, RR]), ["relay"])
    assert "outgoing-ttl 1;" in neighbor_block(text, "10.2.1.1")
    assert "outgoing-ttl 2;" in neighbor_block(text, "10.3.1.1")
    assert "ttl" not in neighbor_block(text, "10.1.0.254")
    assert f"local-as {HOST_ASN};" in neighbor_block(text, "10.2.1.1")
    assert f"peer-as {TOR_ASN};" in neighbor_block(text, "10.2.1.1")


def test_exabgp_reads_the_ebgp_neighbors(tmp_path: Path) -> None:
    parsed = parse_with_exabgp(tmp_path, host([TOR1, TOR2, RR]))
    assert "error" not in parsed, parsed
    tor1, tor2, rr = (parsed["neighbors"][a] for a in ("10.2.1.1", "10.3.1.1", "10.1.0.254"))
    assert (tor1["local-as"], tor1["peer-as"], tor1["outgoing-ttl"]) == (HOST_ASN, TOR_ASN, 1)
    assert tor1["local-address"] == "10.2.1.2" and tor1["incoming-ttl"] is None
    assert tor2["outgoing-ttl"] == 2
    assert rr["outgoing-ttl"] is None  # iBGP


@pytest.mark.parametrize(
    ("peer", "message"),
    [
        ({**RR, "ebgp_multihop": 3}, "ebgp_multihop is for eBGP peers"),
        ({**TOR2, "ttl_security": 1}, "set ebgp_multihop or ttl_security, not both"),
        ({**TOR2, "ebgp_multihop": 0}, "greater than or equal to 1"),
        ({**TOR2, "ebgp_multihop": 256}, "less than or equal to 255"),
    ],
)
def test_ebgp_multihop_rules(peer: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        host([peer])


def test_auto_route_targets_in_an_ebgp_fabric() -> None:
    """Each host its own ASN: exports carry ours, imports match any ASN."""
    cfg = host([TOR1])  # import_any_asn is the default
    v100 = cfg.vni(100)
    assert cfg.export_targets(v100) == [f"{HOST_ASN & 0xFFFF}:100"]
    assert cfg.import_targets(v100) == ["*:100"]
    rfc = host([TOR1], auto_route_targets={"format": "rfc8365", "import_any_asn": True})
    assert rfc.export_targets(v100) == [f"{HOST_ASN & 0xFFFF}:{0x10000000 + 100}"]
    assert rfc.import_targets(v100) == [f"*:{0x10000000 + 100}"]
    # exact: our ASN only (FRR imports any ASN for an automatic target, so does the default)
    exact = host([TOR1], auto_route_targets={"import_any_asn": False})
    assert exact.import_targets(v100) == [f"{HOST_ASN & 0xFFFF}:100"]
    policies = {p.vni: p for p in vni_policies(cfg)}
    assert policies[100].import_rts == frozenset({"*:100"})
    assert (policies[100].accept_label_mismatch, policies[200].accept_label_mismatch) == (
        False, True)


YAML = """
router_id: 10.1.0.1
asn: 4200000001
vtep: {address: 10.1.0.1, device: lo}
vnis:
  - vni: 100
    route_targets:
      import: ["*:100", "65000:100", "auto"]
      export: [auto]
"""


def test_wildcard_import_targets_from_yaml_and_their_errors() -> None:
    cfg = config.parse(YAML)
    assert cfg.import_targets(cfg.vni(100)) == ["*:100", "65000:100", "*:100"]
    for bad, why in (("*:x", "not a decimal number"), ("*:4294967296", "NN <= 4294967295"),
                     ("*:-1", "not a decimal number")):  # fmt: skip
        with pytest.raises(ConfigError, match=why):
            config.parse(YAML.replace('"*:100"', f'"{bad}"'))
    # an export target names the ASN it is sent with: no wildcard there
    with pytest.raises(ConfigError, match=r"route_targets\.export"):
        config.parse(YAML.replace("export: [auto]", 'export: ["*:100"]'))


def test_the_example_file_documents_the_fabric_settings() -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "evpnd.example.yaml").read_text()
    for name in (*config.AutoRouteTargets.model_fields, "auto_route_targets", "ebgp_multihop",
                 "accept_label_mismatch"):
        assert f"{name}:" in text, name
