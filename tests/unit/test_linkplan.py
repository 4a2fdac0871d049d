"""The pure link planner against fake kernel tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.config import Config, parse
from evpnd.dataplane import linkplan, links
from evpnd.dataplane.linkplan import (
    ADDRGENMODE_NONE,
    NOAGE_SECONDS,
    BrportAttrs,
    CreateBridge,
    CreateVxlan,
    DeleteLink,
    LinkInfo,
    Plan,
    SetBrport,
    SetLink,
    SetMaster,
    SetUp,
    VxlanAttrs,
    alias_vni,
    desired_brport,
    desired_vxlan,
    owner_alias,
    static_floods,
)
from evpnd.dataplane.state import FloodEntry

HEAD = """
router_id: 192.0.2.11
asn: 65000
vtep: {address: 192.0.2.11, device: eth0}
"""


def config(vnis: str, head: str = HEAD) -> Config:
    return parse(head + "vnis:\n" + vnis)


TWO = config(
    """
  - vni: 100
  - vni: 200
    arp_suppression: false
"""
)

ETH0 = LinkInfo(name="eth0", index=2, kind=None, mtu=1500, up=True)


def table(*links: LinkInfo) -> dict[str, LinkInfo]:
    return {link.name: link for link in links}


def realized(cfg: Config, underlay: LinkInfo = ETH0, marked: bool = True) -> dict[str, LinkInfo]:
    """The links a successful apply of `cfg` leaves behind."""
    links = [underlay]
    index = 10
    for vni in cfg.vnis:
        mtu = vni.mtu if isinstance(vni.mtu, int) else underlay.mtu - 50
        alias = owner_alias(vni.vni) if marked else None
        if not vni.adopt_bridge:
            links.append(LinkInfo(vni.bridge_name, index, "bridge", mtu, True, alias=alias))
        links.append(
            LinkInfo(
                vni.vxlan_name,
                index + 1,
                "vxlan",
                mtu,
                True,
                txqlen=1000 if vni.vxlan.txqueuelen is None else vni.vxlan.txqueuelen,
                address=vni.vxlan.mac or "02:aa:bb:cc:dd:ee",
                alias=alias,
                master=vni.bridge_name,
                addrgenmode=ADDRGENMODE_NONE,
                vxlan=desired_vxlan(cfg, vni),
                brport=desired_brport(vni),
            )
        )
        index += 2
    return table(*links)


def owned_in(links: dict[str, LinkInfo]) -> set[str]:
    return {name for name, link in links.items() if alias_vni(link.alias) is not None}


def texts(plan: Plan) -> list[str]:
    return [str(a) for a in plan.actions]


def problems(plan: Plan) -> list[str]:
    return [str(p) for p in plan.problems]


def of_type(plan: Plan, kinds: type | tuple[type, ...]) -> list:
    return [a for a in plan.actions if isinstance(a, kinds)]


# -- creating ---------------------------------------------------------------


def test_fresh_host_creates_bridge_and_vxlan_per_vni_in_order() -> None:
    plan = linkplan.plan(TWO, table(ETH0), set())
    assert plan.problems == []
    assert texts(plan) == [
        "create bridge br100 mtu 1450",
        "create vxlan vxlan100 id 100 local 192.0.2.11 dev eth0 dstport 4789 nolearning "
        "mtu 1450 addrgenmode none",
        "set vxlan100 master br100",
        "set bridge_slave vxlan100 learning off neigh_suppress on",
        "set link br100 up",
        "set link vxlan100 up",
        "create bridge br200 mtu 1450",
        "create vxlan vxlan200 id 200 local 192.0.2.11 dev eth0 dstport 4789 nolearning "
        "mtu 1450 addrgenmode none",
        "set vxlan200 master br200",
        "set bridge_slave vxlan200 learning off neigh_suppress off",
        "set link br200 up",
        "set link vxlan200 up",
    ]
    assert {a.vni for a in plan.actions} == {100, 200}


def test_mtu_auto_follows_the_underlay_and_its_family() -> None:
    jumbo = replace(ETH0, mtu=9000)
    assert of_type(linkplan.plan(TWO, table(jumbo), set()), CreateBridge)[0].mtu == 8950
    v6 = config("  - vni: 100\n", HEAD.replace("address: 192.0.2.11", "address: 2001:db8::11"))
    plan = linkplan.plan(v6, table(ETH0), set())
    create = of_type(plan, CreateVxlan)[0]
    assert create.spec.mtu == 1430
    assert create.spec.attrs.local == "2001:db8::11"
    fixed = config("  - vni: 100\n    mtu: 1400\n")
    assert of_type(linkplan.plan(fixed, table(ETH0), set()), CreateVxlan)[0].spec.mtu == 1400


def test_every_vxlan_option_reaches_the_spec() -> None:
    cfg = config(
        """
  - vni: 100
    vxlan: {ttl: 64, tos: 16, ageing: 120, limit: 100, port_range: [32768, 61000],
            mac: "02:00:00:00:01:00", txqueuelen: 500, learning: true}
  - vni: 200
    flood: multicast
    group: 239.1.1.1
    vxlan: {dstport: 4790, ttl: inherit, tos: inherit, proxy: true, rsc: true, l2miss: true,
            l3miss: true, noage: true, gbp: true}
"""
    )
    plan = linkplan.plan(cfg, table(ETH0), set())
    assert plan.problems == []
    one, two = of_type(plan, CreateVxlan)
    assert one.spec.attrs == VxlanAttrs(
        vni=100, port=4789, local="192.0.2.11", link="eth0", ttl=64, tos=16, learning=True,
        ageing=120, limit=100, port_range=(32768, 61000),
    )
    assert (one.spec.txqlen, one.spec.address) == (500, "02:00:00:00:01:00")
    assert str(one).endswith(
        "dstport 4789 learning ttl 64 tos 16 ageing 120 maxaddress 100 srcport 32768 61000 "
        "mtu 1450 txqueuelen 500 address 02:00:00:00:01:00 addrgenmode none"
    )
    assert two.spec.attrs == VxlanAttrs(
        vni=200, port=4790, local="192.0.2.11", link="eth0", group="239.1.1.1", ttl="inherit",
        tos=1, proxy=True, rsc=True, l2miss=True, l3miss=True, ageing=NOAGE_SECONDS, gbp=True,
    )
    assert "group 239.1.1.1" in str(two) and "tos inherit" in str(two)
    # Data-plane learning on: the bridge learns on the vxlan port too.
    assert of_type(plan, SetBrport)[0] == SetBrport(100, "vxlan100", True, True)


# -- idempotence ------------------------------------------------------------


def test_realized_config_needs_nothing() -> None:
    links = realized(TWO)
    plan = linkplan.plan(TWO, links, owned_in(links))
    assert plan.actions == [] and plan.problems == []


def test_foreign_devices_that_match_are_used_as_they_are() -> None:
    links = realized(TWO, marked=False)
    plan = linkplan.plan(TWO, links, set())
    assert plan.actions == [] and plan.problems == []


vxlan_options = st.fixed_dictionaries(
    {},
    optional={
        "dstport": st.integers(1, 65535),
        "ttl": st.one_of(st.integers(1, 255), st.just("inherit")),
        "tos": st.one_of(st.integers(0, 255), st.just("inherit")),
        "learning": st.booleans(),
        "proxy": st.booleans(),
        "rsc": st.booleans(),
        "l2miss": st.booleans(),
        "l3miss": st.booleans(),
        "ageing": st.integers(1, 100_000),
        "limit": st.integers(0, 10_000),
        "port_range": st.tuples(st.integers(1, 1000), st.integers(1000, 65535)).map(list),
        "txqueuelen": st.integers(0, 10_000),
    },
)


@settings(max_examples=60, deadline=None)
@given(options=st.lists(vxlan_options, min_size=1, max_size=3), arp=st.booleans())
def test_any_realized_config_is_a_fixed_point(options: list[dict], arp: bool) -> None:
    vnis = [
        {"vni": 100 + i, "arp_suppression": arp, "vxlan": opts} for i, opts in enumerate(options)
    ]
    cfg = parse(HEAD + yaml.safe_dump({"vnis": vnis}))
    fresh = linkplan.plan(cfg, table(ETH0), set())
    assert len(of_type(fresh, CreateVxlan)) == len(vnis)
    links = realized(cfg)
    again = linkplan.plan(cfg, links, owned_in(links))
    assert again.actions == [] and again.problems == []


# -- in-place changes -------------------------------------------------------


def test_tunable_settings_change_in_place() -> None:
    links = realized(TWO)
    vx = links["vxlan100"]
    assert vx.vxlan is not None
    links["vxlan100"] = replace(
        vx,
        mtu=1400,
        up=False,
        master="br999",
        addrgenmode=0,
        vxlan=replace(vx.vxlan, ttl=10, tos=4, learning=True, ageing=60),
    )
    links["br100"] = replace(links["br100"], mtu=1500, up=False)
    links["vxlan200"] = replace(links["vxlan200"], brport=BrportAttrs(True, True))
    plan = linkplan.plan(TWO, links, owned_in(links))
    assert problems(plan) == []
    assert texts(plan) == [
        "set br100 mtu 1450",
        "set vxlan100 mtu 1450 addrgenmode none ttl auto tos 0 learning off ageing 300",
        "set vxlan100 master br100",
        # A port joining a bridge starts with the bridge's defaults: set the flags again.
        "set bridge_slave vxlan100 learning off neigh_suppress on",
        "set link br100 up",
        "set link vxlan100 up",
        "set bridge_slave vxlan200 learning off neigh_suppress off",
    ]
    change = of_type(plan, SetLink)[1]
    assert dict(change.changes) == {
        "mtu": 1450, "addrgenmode": ADDRGENMODE_NONE, "ttl": 0, "tos": 0, "learning": False,
        "ageing": 300,
    }


def test_new_master_means_brport_flags_are_set_again() -> None:
    links = realized(TWO)
    links["vxlan100"] = replace(links["vxlan100"], master=None, brport=None)
    plan = linkplan.plan(TWO, links, owned_in(links))
    assert of_type(plan, (SetMaster, SetBrport)) == [
        SetMaster(100, "vxlan100", "br100"),
        SetBrport(100, "vxlan100", False, True),
    ]


def test_txqueuelen_and_mac_only_compared_when_configured() -> None:
    cfg = config('  - vni: 100\n    vxlan: {txqueuelen: 500, mac: "02:00:00:00:01:00"}\n')
    links = realized(cfg)
    links["vxlan100"] = replace(links["vxlan100"], txqlen=1000, address="02:00:00:00:99:99")
    plan = linkplan.plan(cfg, links, owned_in(links))
    assert texts(plan) == ["set vxlan100 txqueuelen 500 address 02:00:00:00:01:00"]
    links = realized(TWO)
    links["vxlan100"] = replace(links["vxlan100"], txqlen=7, address="02:12:34:56:78:9a")
    assert linkplan.plan(TWO, links, owned_in(links)).actions == []


# -- conflicts and recreation -------------------------------------------------


def test_foreign_vxlan_with_other_id_is_a_conflict_and_left_alone() -> None:
    links = realized(TWO, marked=False)
    vx = links["vxlan100"]
    assert vx.vxlan is not None
    links["vxlan100"] = replace(vx, vxlan=replace(vx.vxlan, vni=101, port=8472), mtu=9000)
    plan = linkplan.plan(TWO, links, set())
    assert problems(plan) == [
        "vxlan100: id is 101, config wants 100",
        "vxlan100: dstport is 8472, config wants 4789",
    ]
    assert plan.problems[0].device == "vxlan100" and plan.problems[0].field == "id"
    assert plan.blocked_vnis == {100}
    assert plan.actions == []  # not even the MTU: the whole VNI waits for the operator


def test_conflict_blocks_only_its_vni() -> None:
    links = table(ETH0, LinkInfo("vxlan100", 5, "veth", 1500, True))
    plan = linkplan.plan(TWO, links, set())
    assert problems(plan) == ["vxlan100: kind is veth, config wants vxlan"]
    assert {a.vni for a in plan.actions} == {200}


def test_bridge_name_taken_by_a_veth_is_a_conflict() -> None:
    links = table(ETH0, LinkInfo("br100", 5, "veth", 1500, True))
    plan = linkplan.plan(TWO, links, set())
    assert problems(plan) == ["br100: kind is veth, config wants bridge"]
    assert plan.problems[0].field == "kind"


def test_foreign_vxlan_with_other_immutable_setting_is_a_conflict() -> None:
    links = realized(TWO, marked=False)
    vx = links["vxlan100"]
    assert vx.vxlan is not None
    links["vxlan100"] = replace(vx, vxlan=replace(vx.vxlan, proxy=True, local="192.0.2.99"))
    assert problems(linkplan.plan(TWO, links, set())) == [
        "vxlan100: local is 192.0.2.99, config wants 192.0.2.11",
        "vxlan100: proxy is on, config wants off",
    ]


def test_owned_vxlan_with_changed_identity_is_recreated() -> None:
    links = realized(TWO)
    vx = links["vxlan100"]
    assert vx.vxlan is not None
    links["vxlan100"] = replace(vx, vxlan=replace(vx.vxlan, vni=101))
    plan = linkplan.plan(TWO, links, owned_in(links))
    assert problems(plan) == []
    assert texts(plan) == [
        "delete vxlan vxlan100 (created by evpnd; recreated because id is 101, config "
        "wants 100)",
        "create vxlan vxlan100 id 100 local 192.0.2.11 dev eth0 dstport 4789 nolearning "
        "mtu 1450 addrgenmode none",
        "set vxlan100 master br100",
        "set bridge_slave vxlan100 learning off neigh_suppress on",
        "set link vxlan100 up",
    ]


def test_ttl_inherit_cannot_be_toggled_in_place() -> None:
    cfg = config("  - vni: 100\n    vxlan: {ttl: inherit}\n")
    links = realized(cfg)
    vx = links["vxlan100"]
    assert vx.vxlan is not None
    links["vxlan100"] = replace(vx, vxlan=replace(vx.vxlan, ttl=64))
    plan = linkplan.plan(cfg, links, owned_in(links))
    assert of_type(plan, DeleteLink)[0].reason.endswith("ttl is 64, config wants inherit")
    assert problems(linkplan.plan(cfg, links, set())) == [
        "vxlan100: ttl is 64, config wants inherit"
    ]


def test_owned_bridge_of_wrong_kind_is_recreated_and_vxlan_rejoins() -> None:
    links = realized(TWO)
    links["br100"] = replace(links["br100"], kind="veth")
    plan = linkplan.plan(TWO, links, owned_in(links))
    assert texts(plan)[:3] == [
        "delete veth br100 (created by evpnd; recreated because kind is veth, config "
        "wants bridge)",
        "create bridge br100 mtu 1450",
        "set vxlan100 master br100",
    ]
    assert SetUp(100, "br100") in plan.actions


def test_vni_already_carried_by_another_device() -> None:
    other = LinkInfo(
        "vx-frr", 7, "vxlan", 1450, True, vxlan=VxlanAttrs(vni=100, port=4789, local="192.0.2.11")
    )
    plan = linkplan.plan(TWO, table(ETH0, other), set())
    assert problems(plan) == [
        "VNI 100: vx-frr already carries id 100 dstport 4789; the kernel allows one device "
        "per VNI and port"
    ]
    # Another port is another socket: no clash.
    moved = replace(other, vxlan=VxlanAttrs(vni=100, port=8472))
    assert linkplan.plan(TWO, table(ETH0, moved), set()).problems == []


def test_gbp_and_plain_devices_cannot_share_a_port() -> None:
    foreign = LinkInfo("vx9", 9, "vxlan", 1450, True, vxlan=VxlanAttrs(5, 4789, gbp=True))
    assert problems(linkplan.plan(TWO, table(ETH0, foreign), set()))[0].startswith(
        "VNI 100: vx9 uses dstport 4789 with gbp on, config wants gbp off"
    )


def test_missing_underlay_blocks_every_vni() -> None:
    plan = linkplan.plan(TWO, {}, set())
    assert plan.actions == []
    assert problems(plan) == [
        "VNI 100: underlay device eth0 (vtep.device) does not exist",
        "VNI 200: underlay device eth0 (vtep.device) does not exist",
    ]


def test_mtu_auto_below_minimum() -> None:
    plan = linkplan.plan(TWO, table(replace(ETH0, mtu=100)), set())
    assert problems(plan)[0] == (
        "VNI 100: mtu auto gives 50 (underlay eth0 mtu 100), below the minimum 68"
    )


# -- adoption and removal -----------------------------------------------------

ADOPT = config(
    """
  - vni: 100
  - vni: 200
    bridge: br-docker
    adopt_bridge: true
"""
)


def test_adopted_bridge_only_gets_the_vxlan_port() -> None:
    docker = LinkInfo("br-docker", 7, "bridge", 1500, False)
    plan = linkplan.plan(ADOPT, table(ETH0, docker), set())
    vni200 = [str(a) for a in plan.actions if a.vni == 200]
    assert vni200 == [
        "create vxlan vxlan200 id 200 local 192.0.2.11 dev eth0 dstport 4789 nolearning "
        "mtu 1450 addrgenmode none",
        "set vxlan200 master br-docker",
        "set bridge_slave vxlan200 learning off neigh_suppress on",
        "set link vxlan200 up",
    ]


def test_adopted_bridge_must_exist_and_be_a_bridge() -> None:
    plan = linkplan.plan(ADOPT, table(ETH0), set())
    assert problems(plan) == ["VNI 200: adopt_bridge is set but bridge br-docker does not exist"]
    assert {a.vni for a in plan.actions} == {100}
    veth = LinkInfo("br-docker", 7, "veth", 1500, True)
    assert problems(linkplan.plan(ADOPT, table(ETH0, veth), set())) == [
        "br-docker: kind is veth, config wants bridge"
    ]


def test_removed_vni_deletes_only_what_evpnd_created() -> None:
    links = realized(ADOPT)
    links["br-docker"] = LinkInfo("br-docker", 7, "bridge", 1500, True)
    links["veth-c1"] = LinkInfo("veth-c1", 30, "veth", 1500, True, master="br100")
    links["vxlan999"] = LinkInfo(
        "vxlan999", 31, "vxlan", 1450, True, vxlan=VxlanAttrs(vni=999, port=4789)
    )
    remaining = config("  - vni: 300\n")
    plan = linkplan.plan(remaining, links, owned_in(links))
    deletes = of_type(plan, DeleteLink)
    assert [str(d) for d in deletes] == [
        "delete vxlan vxlan100 (created by evpnd, VNI 100 removed from config)",
        "delete vxlan vxlan200 (created by evpnd, VNI 200 removed from config)",
        "delete bridge br100 (created by evpnd, VNI 100 removed from config; "
        "releases ports veth-c1)",
    ]
    assert plan.actions[: len(deletes)] == deletes  # removals come first
    assert {d.vni for d in deletes} == {100, 200}


def test_owned_without_alias_still_removed_and_underlay_never() -> None:
    links = table(ETH0, LinkInfo("vxlan5", 9, "vxlan", 1450, True, vxlan=VxlanAttrs(5, 4789)))
    plan = linkplan.plan(TWO, links, {"vxlan5", "eth0"})
    deletes = of_type(plan, DeleteLink)
    assert [str(d) for d in deletes] == [
        "delete vxlan vxlan5 (created by evpnd, no longer in config)"
    ]
    assert deletes[0].group == ("device", "vxlan5")


def test_leaving_device_does_not_block_the_vni_it_held() -> None:
    links = table(
        ETH0,
        LinkInfo("old100", 9, "vxlan", 1450, True, alias=owner_alias(100),
                 vxlan=VxlanAttrs(100, 4789)),
    )
    plan = linkplan.plan(TWO, links, {"old100"})
    assert plan.problems == []
    assert str(plan.actions[0]) == (
        "delete vxlan old100 (created by evpnd, VNI 100 now uses other devices)"
    )


# -- odds and ends ------------------------------------------------------------


def test_static_floods_are_listed_for_the_writer() -> None:
    cfg = config(
        """
  - vni: 100
    flood: static
    flood_peers: [192.0.2.21, 192.0.2.20]
  - vni: 200
"""
    )
    expected = [
        FloodEntry("vxlan100", ip_address("192.0.2.20")),
        FloodEntry("vxlan100", ip_address("192.0.2.21")),
    ]
    assert static_floods(cfg) == expected
    assert linkplan.plan(cfg, table(ETH0), set()).floods == expected


def test_alias_round_trip() -> None:
    assert alias_vni(owner_alias(4242)) == 4242
    for foreign in (None, "", "uplink", "evpnd:vni=x", "evpnd:other"):
        assert alias_vni(foreign) is None


def test_plan_lines_show_actions_then_problems() -> None:
    links = table(ETH0, LinkInfo("br100", 5, "veth", 1500, True))
    lines = linkplan.plan(TWO, links, set()).lines()
    assert lines[0] == "create bridge br200 mtu 1450"
    assert lines[-1] == "problem: br100: kind is veth, config wants bridge"


def _names(actions: Iterable[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_action_kinds_of_a_fresh_vni() -> None:
    plan = linkplan.plan(config("  - vni: 100\n"), table(ETH0), set())
    assert _names(plan.actions) == [
        "CreateBridge", "CreateVxlan", "SetMaster", "SetBrport", "SetUp", "SetUp",
    ]


# -- ownership records (links.py, file I/O only) -------------------------------


def test_records_round_trip_and_match_by_name_ifindex_and_netns(tmp_path: Path) -> None:
    links.save_records(
        tmp_path / "state",
        [
            links.OwnedDevice("br100", 10, "bridge", 100, "ns1"),
            links.OwnedDevice("vxlan100", 11, "vxlan", 100, "ns1"),
            links.OwnedDevice("vxlan200", 12, "vxlan", 200, "ns2"),
        ],
    )
    records = links.load_records(tmp_path / "state")
    assert [r.name for r in records] == ["br100", "vxlan100", "vxlan200"]
    current = table(
        ETH0,
        LinkInfo("br100", 10, "bridge", 1450, True),
        LinkInfo("vxlan100", 99, "vxlan", 1450, True),  # recreated by someone else
        LinkInfo("vxlan200", 12, "vxlan", 1450, True),  # record is for another netns
        LinkInfo("vxlan300", 13, "vxlan", 1450, True, alias=owner_alias(300)),
        LinkInfo("up0", 14, "veth", 1500, True, alias="uplink"),
    )
    assert links.owned_devices(current, records, "ns1") == {"br100", "vxlan300"}


def test_unreadable_records_fall_back_to_aliases(tmp_path: Path) -> None:
    assert links.load_records(tmp_path) == []
    assert links.load_records(None) == []
    (tmp_path / links.STATE_FILE).write_text("{not json")
    assert links.load_records(tmp_path) == []
    (tmp_path / links.STATE_FILE).write_text('{"devices": [{"bogus": 1}]}')
    assert links.load_records(tmp_path) == []
