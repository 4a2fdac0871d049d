"""Every config that validates encodes: what `config.parse` accepts, the route encoder,
the command parser inside ExaBGP and the ExaBGP config writer accept too.

Before one validator served all of them, `65001:\u0661\u0660\u0660` (Arabic-Indic
digits) or `'65001:100\\n'` passed the config and crashed the daemon at its first
announcement, at start or on a SIGHUP reload.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import yaml
from exabgp.bgp.message import Action
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evpnd import config
from evpnd.originate import imet_routes, mac_route
from evpnd.rib import LocalAdvert
from evpnd.speaker import commands, encode, exabgp_config

# Characters that int(), str.isdigit() or a `$` anchor let through.
TRICKY = "\u0661\u0660\u00b2\uff11\u0969 +-_\n\t"
digits = st.text(alphabet="0123456789" + TRICKY, min_size=0, max_size=7)
ascii_numbers = st.integers(0, 2**32 + 5).map(str)
ipv4_texts = st.integers(0, 2**32 - 1).map(lambda n: str(IPv4Address(n)))
admins = st.one_of(ascii_numbers, ipv4_texts, digits, st.just("1.2.3"))
admin_numbers = st.builds(
    lambda admin, number, tail: f"{admin}:{number}{tail}",
    admins, st.one_of(ascii_numbers, digits), st.sampled_from(["", "", "", "\n", " "]),
)
plain_admin_numbers = st.builds(lambda a, n: f"{a}:{n}", st.one_of(ascii_numbers, ipv4_texts),
                                st.integers(0, 70000))
route_values = st.one_of(st.just("auto"), plain_admin_numbers, plain_admin_numbers,
                         admin_numbers)
names = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0,
            max_size=17),
    st.from_regex(r"[a-z][a-z0-9-]{0,14}", fullmatch=True),
    st.sampled_from(["br100\n", "br 1", "br/1", "br:1", ".", "x" * 16, "vx\u00e9"]),
)
free_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=90),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=90),
)
vnis = st.fixed_dictionaries(
    {"vni": st.one_of(st.integers(1, 2**24 - 1), st.sampled_from([1, 65535, 65536, 2**24 - 1]))},
    optional={
        "rd": route_values,
        "route_targets": st.fixed_dictionaries(
            {}, optional={"import": st.lists(route_values, min_size=1, max_size=3),
                          "export": st.lists(route_values, min_size=1, max_size=3)}),
        "bridge": names,
        "vxlan_device": names,
    },
)
peers = st.fixed_dictionaries(
    {"address": st.sampled_from(["192.0.2.9", "192.0.2.10", "2001:db8::9"]),
     "remote_asn": st.integers(1, 2**32 - 1)},
    optional={"description": free_text, "md5_password": free_text,
              "local_address": st.just("192.0.2.1")},
)  # fmt: skip
configs = st.fixed_dictionaries({
    "router_id": st.sampled_from(["192.0.2.1", "10.0.0.1"]),
    "asn": st.integers(1, 2**32 - 1),
    "vtep": st.fixed_dictionaries({"address": st.sampled_from(["192.0.2.1", "10.0.0.1"]),
                                   "device": st.sampled_from(["eth0", "lo"])}),
    "vnis": st.lists(vnis, max_size=3, unique_by=lambda v: v["vni"]),
    "bgp": st.fixed_dictionaries({"peers": st.lists(peers, max_size=2)}),
})  # fmt: skip


def everything_encodes(cfg: config.Config) -> None:
    routes = list(imet_routes(cfg))
    for vni in cfg.vnis:
        for ip in (None, ip_address("10.0.0.5")):
            routes.append(mac_route(cfg, LocalAdvert(vni.vni, "02:00:00:00:00:01", ip, 1, False)))
    for route in routes:
        token = encode.route_token(route)
        # ... and ExaBGP's side reads it back (launcher: `announce evpn <token>`).
        change = commands.parse_change(token, Action.ANNOUNCE)
        assert change.nlri.action == Action.ANNOUNCE
        commands.parse_change(token, Action.WITHDRAW)
    exabgp_config.render(cfg, ["/usr/bin/python3", "-m", exabgp_config.RELAY_MODULE, "/run/s"])


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(configs)
def test_every_config_that_validates_encodes(data: dict) -> None:
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        cfg = config.parse(text)
    except config.ConfigError:
        return  # refused, with a report: fine
    everything_encodes(cfg)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(vnis, st.integers(1, 2**32 - 1))
def test_every_vni_that_validates_encodes(vni: dict, asn: int) -> None:
    """One VNI at a time: its RD, route targets and names get the whole budget."""
    data = {"router_id": "192.0.2.1", "asn": asn,
            "vtep": {"address": "192.0.2.1", "device": "eth0"}, "vnis": [vni]}
    try:
        cfg = config.parse(yaml.safe_dump(data, allow_unicode=True))
    except config.ConfigError:
        return
    everything_encodes(cfg)


def test_the_generator_reaches_both_outcomes() -> None:
    """Not vacuous: tricky values validate when right and are refused when not."""
    base = {"router_id": "192.0.2.1", "asn": 65000,
            "vtep": {"address": "192.0.2.1", "device": "eth0"}}
    good = config.parse(yaml.safe_dump({**base, "vnis": [
        {"vni": 70000, "rd": "4200000000:7", "bridge": "br-x",
         "route_targets": {"import": ["192.0.2.1:65535", "065000:0100"], "export": ["auto"]}},
    ], "bgp": {"peers": [{"address": "192.0.2.9", "remote_asn": 65001,
                          "description": "spine \u00e9 1", "md5_password": "a b\\c"}]}}))
    everything_encodes(good)
    for vni in ({"vni": 5, "route_targets": {"import": ["65001:\u0661\u0660\u0660"]}},
                {"vni": 5, "rd": "65001:5\n"}, {"vni": 5, "bridge": "br100\n"},
                {"vni": 5, "route_targets": {"export": ["65001:\u00b2"]}}):
        try:
            config.parse(yaml.safe_dump({**base, "vnis": [vni]}, allow_unicode=True))
        except config.ConfigError:
            continue
        raise AssertionError(f"{vni} validated")
