"""`docker network create -o` options -> evpnd's Vni model, and the messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from evpnd.docker.options import OPTIONS, OptionsError, parse

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "docker.md"


def test_every_docker_vxlan_plugin_option_maps() -> None:
    vni = parse({
        "VxlanId": "4242", "vxlanName": "vx-a", "bridge": "br-a", "vxlanMTU": "1400",
        "vxlanHardwareAddr": "02:AA:00:00:00:01", "vxlanTxQLen": "500",
        "VtepDev": "eth0", "SrcAddr": "192.0.2.11", "TTL": "inherit", "TOS": "16",
        "Learning": "true", "Proxy": "yes", "RSC": "on", "L2miss": "1", "L3miss": "true",
        "GBP": "true", "Age": "600", "Limit": "1000", "PortLow": "32768",
        "PortHigh": "61000", "Port": "8472",
    }, "192.0.2.11", "eth0").vni
    assert (vni.vni, vni.vxlan_name, vni.bridge_name, vni.mtu) == (4242, "vx-a", "br-a", 1400)
    x = vni.vxlan
    assert (x.mac, x.txqueuelen, x.ttl, x.tos, x.dstport) == (
        "02:aa:00:00:00:01", 500, "inherit", 16, 8472)
    assert (x.learning, x.proxy, x.rsc, x.l2miss, x.l3miss, x.gbp) == (True,) * 6
    assert (x.ageing, x.limit, x.port_range) == (600, 1000, (32768, 61000))
    assert parse({"VxlanId": "1", "NoAge": "true"}).vni.vxlan.noage


def test_evpnd_options() -> None:
    opts = parse({"VxlanId": "5", "gateway": "local", "arp_suppression": "off",
                  "rd": "65000:5", "rt_import": "65000:5, 65000:9", "rt_export": "auto"})
    assert opts.gateway == "local"
    v = opts.vni
    assert not v.arp_suppression and v.rd == "65000:5"
    assert v.route_targets.import_ == ["65000:5", "65000:9"]
    assert v.route_targets.export == ["auto"]
    both = parse({"VxlanId": "5", "rt": "65000:7"}).vni.route_targets
    assert both.import_ == both.export == ["65000:7"]
    static = parse({"VxlanId": "5", "flood": "static", "flood_peers": "192.0.2.2,192.0.2.3"})
    assert [str(a) for a in static.vni.flood_peers] == ["192.0.2.2", "192.0.2.3"]
    group = parse({"VxlanId": "5", "Group": "239.1.1.1"}).vni
    assert group.flood == "multicast" and str(group.group) == "239.1.1.1"
    plain = parse({"VxlanId": "5"})
    assert plain.gateway == "external" and plain.vni.flood == "evpn" and plain.vni.mtu == "auto"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "-o VxlanId is required"),
        ({"VxlanId": "x"}, "-o VxlanId=x: not an integer"),
        ({"VxlanId": "0"}, "-o VxlanId=0: Input should be greater than or equal to 1"),
        ({"VxlanId": "16777216"}, "-o VxlanId=16777216: Input should be less than or equal"),
        ({"VxlanId": "5", "TTL": "300"}, "-o TTL=300: must be 1..255 or 'inherit'"),
        ({"VxlanId": "5", "Learning": "maybe"}, "-o Learning=maybe: not a boolean"),
        ({"VxlanId": "5", "vxlanmtu": "1"},
         "-o vxlanmtu=1: unknown option (did you mean vxlanMTU?)"),
        ({"VxlanId": "5", "s4.vni": "1"}, "-o s4.vni=1: unknown option"),
        ({"VxlanId": "5", "vxlanMTU": "20"}, "-o vxlanMTU=20: must be 'auto' or 68..65535"),
        ({"VxlanId": "5", "vxlanName": "a b"}, "-o vxlanName='a b': not a valid interface name"),
        ({"VxlanId": "5", "vxlanHardwareAddr": "01:00:00:00:00:01"},
         "-o vxlanHardwareAddr=01:00:00:00:00:01: must be a unicast MAC"),
        ({"VxlanId": "5", "PortLow": "100"}, "-o PortLow=100: needs PortHigh too"),
        ({"VxlanId": "5", "PortLow": "200", "PortHigh": "100"},
         "-o PortLow=200 -o PortHigh=100: must be [low, high]"),
        ({"VxlanId": "5", "Age": "10", "NoAge": "true"}, "set either 'ageing' or 'noage'"),
        ({"VxlanId": "5", "gateway": "remote"}, "-o gateway=remote: must be 'external' or 'local'"),
        ({"VxlanId": "5", "rt": "nonsense"}, "-o rt=nonsense: route target must be"),
        ({"VxlanId": "5", "Group": "10.0.0.1"}, "group 10.0.0.1 is not a multicast address"),
        ({"VxlanId": "5", "flood": "static"}, "flood: static needs 'flood_peers'"),
        ({"VxlanId": "5", "VtepDev": "lo"}, "-o VtepDev=lo: evpnd sends all VXLAN traffic from "
                                            "its vtep.device eth0"),
        ({"VxlanId": "5", "SrcAddr": "192.0.2.99"}, "vtep.address 192.0.2.11"),
        ({"VxlanId": "5", "SrcAddr": "nope"}, "-o SrcAddr=nope: not an IP address"),
        # int() takes these; the kernel, ExaBGP and the config file do not
        ({"VxlanId": "\u0661\u0660\u0660"}, "not an integer"),
        ({"VxlanId": "1_00"}, "-o VxlanId=1_00: not an integer"),
        ({"VxlanId": "+5"}, "-o VxlanId=+5: not an integer"),
        ({"VxlanId": "5", "rt": "65001:\u0661\u0660\u0660"}, "route target must be"),
        ({"VxlanId": "5", "rd": "65001:1\u0662"}, "route distinguisher must be"),
        ({"VxlanId": "5", "bridge": "br\u00e9"}, "not a valid interface name"),
        ({"VxlanId": "5", "vxlanHardwareAddr": "00:00:00:00:00:00"}, "all-zero"),
        ({"VxlanId": "5", "flood": "static", "flood_peers": "0.0.0.0"}, "unspecified"),
    ],
)
def test_messages_name_option_and_value(options: dict[str, str], message: str) -> None:
    with pytest.raises(OptionsError) as caught:
        parse(options, "192.0.2.11", "eth0")
    assert message in str(caught.value)


def test_all_problems_at_once() -> None:
    with pytest.raises(OptionsError) as caught:
        parse({"VxlanId": "0", "TTL": "300", "bogus": "1"})
    assert len(caught.value.problems) == 3


def test_the_docs_document_every_option() -> None:
    text = DOCS.read_text()
    section = text[text.index("## Network options") :]
    section = section[: section.index("\n## ", 1)]
    for name in OPTIONS:
        assert f"| `{name}` |" in section, f"option {name} missing from docs/docker.md's table"


def test_numbers_in_hex_and_route_values_canonical() -> None:
    vni = parse({"VxlanId": "0x10", "rt": "065000:0100", "rd": "192.0.2.1:07"}).vni
    assert (vni.vni, vni.rd, vni.route_targets.import_) == (16, "192.0.2.1:7", ["65000:100"])
