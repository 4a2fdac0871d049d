"""Per-VNI devices against a real kernel, each test in a throwaway namespace.

The underlay is a bridge named eth0 (this kernel has no dummy link type).
Results are checked with iproute2 (`ip -d -j link show`), not with the code
under test, so a pyroute2 encoding mistake cannot hide itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import AsyncIPRoute

from evpnd import netns
from evpnd.config import Config, parse
from evpnd.dataplane import links
from evpnd.dataplane.linkplan import CreateVxlan, DeleteLink

pytestmark = pytest.mark.netns

HEAD = """
router_id: 192.0.2.11
asn: 65000
vtep: {address: 192.0.2.11, device: eth0}
"""
TWO = """
vnis:
  - vni: 100
    vxlan: {ttl: 64}
  - vni: 200
    arp_suppression: false
"""


def config(body: str, tmp_path: Path, head: str = HEAD) -> Config:
    return parse(head + f"state_dir: {tmp_path / 'state'}\n" + body)


def ip(ns: str, *args: str) -> str:
    return netns.run(ns, ["ip", *args]).stdout


def underlay(ns: str, mtu: int = 1500, address: str = "192.0.2.11/24") -> None:
    ip(ns, "link", "add", "eth0", "mtu", str(mtu), "type", "bridge")
    ip(ns, "addr", "add", address, "dev", "eth0")
    ip(ns, "link", "set", "eth0", "up")


def dump(ns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in json.loads(ip(ns, "-d", "-j", "link", "show"))}


def stable(ns: str) -> dict[str, Any]:
    """The dump without the counters and timers that move on their own."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if "timer" not in k}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(dump(ns))


def vx(link: dict[str, Any]) -> dict[str, Any]:
    return link["linkinfo"]["info_data"]


def port(link: dict[str, Any]) -> dict[str, Any]:
    return link["linkinfo"]["info_slave_data"]


def records(tmp_path: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((tmp_path / "state" / "devices.json").read_text())
    return {d["name"]: d for d in data["devices"]}


async def converge(cfg: Config, ns: str) -> links.ApplyResult:
    plan = await links.plan_for(cfg, ns)
    assert plan.problems == [], plan.lines()
    result = await links.apply(plan, ns)
    assert result.ok, result.lines()
    return result


async def test_a_smaller_port_does_not_pull_the_bridge_mtu_down(ns: str, tmp_path: Path) -> None:
    """Containers' 1500-byte veths join the bridge after evpnd made it; the next start
    must find nothing to change (the MTU given at creation alone would not stick)."""
    underlay(ns)
    cfg = config(TWO, tmp_path)
    await converge(cfg, ns)
    ip(ns, "link", "add", "c0", "mtu", "1400", "type", "veth", "peer", "name", "c1")
    ip(ns, "link", "set", "c0", "master", "br100")
    assert dump(ns)["br100"]["mtu"] == 1450
    plan = await links.plan_for(cfg, ns)
    assert plan.lines() == [], plan.lines()


async def test_two_vnis_are_created_with_their_attributes(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    cfg = config(TWO, tmp_path)
    await converge(cfg, ns)
    state = dump(ns)
    for number, suppress in ((100, True), (200, False)):
        bridge, vxlan = state[f"br{number}"], state[f"vxlan{number}"]
        assert bridge["linkinfo"]["info_kind"] == "bridge"
        assert bridge["mtu"] == 1450 and "UP" in bridge["flags"]
        assert vxlan["mtu"] == 1450 and "UP" in vxlan["flags"]
        assert vxlan["master"] == f"br{number}"
        data = vx(vxlan)
        assert data["id"] == number
        assert data["port"] == 4789
        assert data["local"] == "192.0.2.11"
        assert data["link"] == "eth0"
        assert data["learning"] is False
        assert port(vxlan)["learning"] is False
        assert port(vxlan)["neigh_suppress"] is suppress
        assert vxlan["inet6_addr_gen_mode"] == "none"
        assert vxlan["ifalias"] == bridge["ifalias"] == f"evpnd:vni={number}"
    assert vx(state["vxlan100"])["ttl"] == 64
    assert set(records(tmp_path)) == {"br100", "vxlan100", "br200", "vxlan200"}
    assert records(tmp_path)["vxlan100"]["ifindex"] == state["vxlan100"]["ifindex"]

    again = await links.plan_for(cfg, ns)
    assert again.actions == [] and again.problems == []


async def test_every_vxlan_option_reaches_the_kernel(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    cfg = config(
        """
vnis:
  - vni: 100
    vxlan: {ttl: 64, tos: 16, ageing: 120, limit: 100, port_range: [32768, 61000],
            mac: "02:00:00:00:01:00", txqueuelen: 500}
  - vni: 200
    flood: multicast
    group: 239.1.1.1
    vxlan: {dstport: 4790, ttl: inherit, tos: inherit, proxy: true, rsc: true,
            l2miss: true, l3miss: true, noage: true, gbp: true, learning: true}
""",
        tmp_path,
    )
    await converge(cfg, ns)
    state = dump(ns)
    one, two = state["vxlan100"], state["vxlan200"]
    assert (vx(one)["ttl"], vx(one)["tos"], vx(one)["ageing"], vx(one)["limit"]) == (
        64, "0x10", 120, 100
    )
    assert vx(one)["port_range"] == {"low": 32768, "high": 61000}
    assert (one["address"], one["txqlen"]) == ("02:00:00:00:01:00", 500)
    for flag in ("proxy", "rsc", "l2miss", "l3miss", "gbp"):
        assert vx(one).get(flag, False) is False
        assert vx(two)[flag] is True
    assert vx(two)["group"] == "239.1.1.1"
    assert vx(two)["port"] == 4790
    assert vx(two)["learning"] is True and port(two)["learning"] is True
    assert vx(two)["ageing"] == 2_147_483  # noage: the kernel has no "never"
    text = ip(ns, "-d", "link", "show", "vxlan200")
    assert "ttl inherit" in text and "tos inherit" in text
    assert "UP" in two["flags"]

    again = await links.plan_for(cfg, ns)
    assert again.actions == [] and again.problems == []


async def test_plan_changes_nothing(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    cfg = config(TWO, tmp_path)
    before = stable(ns)
    plan = await links.plan_for(cfg, ns)
    assert len(plan.actions) == 12
    assert stable(ns) == before
    assert not (tmp_path / "state").exists()


def test_sync_wrappers_plan_and_apply(ns: str, tmp_path: Path) -> None:
    """For the CLI, which has no event loop."""
    underlay(ns)
    cfg = config(TWO, tmp_path)
    before = stable(ns)
    assert len(links.plan_for_sync(cfg, ns).actions) == 12
    assert stable(ns) == before
    result = links.apply_sync(links.plan_for_sync(cfg, ns), ns)
    assert result.ok and len(result.applied) == 12
    assert links.plan_for_sync(cfg, ns).actions == []


async def test_adopted_bridge_gets_the_vxlan_and_outlives_the_vni(
    ns: str, tmp_path: Path
) -> None:
    underlay(ns)
    async with AsyncIPRoute(netns=ns) as ipr:
        await ipr.link("add", ifname="br-docker", kind="bridge")
        index = (await ipr.link_lookup(ifname="br-docker"))[0]
        await ipr.link("set", index=index, state="up")
    cfg = config(
        TWO + "  - vni: 300\n    bridge: br-docker\n    adopt_bridge: true\n", tmp_path
    )
    await converge(cfg, ns)
    state = dump(ns)
    assert state["vxlan300"]["master"] == "br-docker"
    assert port(state["vxlan300"])["neigh_suppress"] is True
    assert "ifalias" not in state["br-docker"]
    assert "br-docker" not in records(tmp_path)
    assert "br300" not in state

    result = await converge(config(TWO, tmp_path), ns)
    assert [str(a) for a in result.applied] == [
        "delete vxlan vxlan300 (created by evpnd, VNI 300 removed from config)"
    ]
    state = dump(ns)
    assert "vxlan300" not in state
    assert state["br-docker"]["ifindex"] == index
    assert "vxlan300" not in records(tmp_path)


async def test_adopting_a_missing_bridge_is_reported(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    cfg = config(TWO + "  - vni: 300\n    bridge: br-gone\n    adopt_bridge: true\n", tmp_path)
    plan = await links.plan_for(cfg, ns)
    assert [str(p) for p in plan.problems] == [
        "VNI 300: adopt_bridge is set but bridge br-gone does not exist"
    ]
    result = await links.apply(plan, ns)
    assert not result.ok and result.errors == []
    assert "vxlan100" in dump(ns) and "vxlan300" not in dump(ns)


async def test_removed_vni_takes_only_its_own_devices(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    await converge(config(TWO, tmp_path), ns)
    ip(ns, "link", "add", "vxlan999", "type", "vxlan", "id", "999", "dstport", "4789")
    before = dump(ns)
    result = await converge(config("vnis:\n  - vni: 100\n    vxlan: {ttl: 64}\n", tmp_path), ns)
    assert [str(a) for a in result.applied] == [
        "delete vxlan vxlan200 (created by evpnd, VNI 200 removed from config)",
        "delete bridge br200 (created by evpnd, VNI 200 removed from config)",
    ]
    after = dump(ns)
    assert set(before) - set(after) == {"br200", "vxlan200"}
    for name in ("br100", "vxlan100", "vxlan999"):
        assert after[name]["ifindex"] == before[name]["ifindex"]
    assert set(records(tmp_path)) == {"br100", "vxlan100"}


async def test_foreign_vxlan_with_other_id_is_reported_and_untouched(
    ns: str, tmp_path: Path
) -> None:
    underlay(ns)
    ip(ns, "link", "add", "vxlan100", "type", "vxlan", "id", "101", "dstport", "4789",
       "local", "192.0.2.11", "dev", "eth0")
    before = stable(ns)["vxlan100"]
    cfg = config(TWO, tmp_path)
    plan = await links.plan_for(cfg, ns)
    assert [str(p) for p in plan.problems] == ["vxlan100: id is 101, config wants 100"]
    assert (plan.problems[0].device, plan.problems[0].field) == ("vxlan100", "id")
    result = await links.apply(plan, ns)
    assert result.errors == [] and not result.ok
    state = stable(ns)
    assert state["vxlan100"] == before
    assert "br100" not in state  # the blocked VNI gets nothing at all
    assert vx(state["vxlan200"])["id"] == 200  # the other VNI is not held up


async def test_bridge_name_taken_by_a_veth_is_reported(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    ip(ns, "link", "add", "br100", "type", "veth", "peer", "name", "br100p")
    plan = await links.plan_for(config(TWO, tmp_path), ns)
    assert [str(p) for p in plan.problems] == ["br100: kind is veth, config wants bridge"]
    await links.apply(plan, ns)
    assert dump(ns)["br100"]["linkinfo"]["info_kind"] == "veth"


async def test_owned_vxlan_with_new_dstport_is_recreated(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    await converge(config(TWO, tmp_path), ns)
    old = dump(ns)["vxlan100"]["ifindex"]
    cfg = config(TWO.replace("{ttl: 64}", "{ttl: 64, dstport: 8472}"), tmp_path)
    plan = await links.plan_for(cfg, ns)
    assert isinstance(plan.actions[0], DeleteLink)
    assert str(plan.actions[0]) == (
        "delete vxlan vxlan100 (created by evpnd; recreated because dstport is 4789, "
        "config wants 8472)"
    )
    assert isinstance(plan.actions[1], CreateVxlan)
    result = await links.apply(plan, ns)
    assert result.ok, result.lines()
    new = dump(ns)["vxlan100"]
    assert vx(new)["port"] == 8472 and new["ifindex"] != old
    assert new["master"] == "br100" and port(new)["neigh_suppress"] is True
    assert records(tmp_path)["vxlan100"]["ifindex"] == new["ifindex"]
    assert (await links.plan_for(cfg, ns)).actions == []


async def test_tunable_settings_change_in_place(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    await converge(config(TWO, tmp_path), ns)
    index = dump(ns)["vxlan100"]["ifindex"]
    ip(ns, "link", "set", "vxlan100", "type", "vxlan", "ttl", "5", "learning")
    ip(ns, "link", "set", "vxlan100", "mtu", "1300", "nomaster")
    ip(ns, "link", "set", "br200", "down")
    assert dump(ns)["br100"]["mtu"] == 1450  # evpnd set it: a smaller port does not lower it
    plan = await links.plan_for(config(TWO, tmp_path), ns)
    assert [str(a) for a in plan.actions] == [
        "set vxlan100 mtu 1450 ttl 64 learning off",
        "set vxlan100 master br100",
        "set bridge_slave vxlan100 learning off neigh_suppress on",
        "set link br200 up",
    ]
    await links.apply(plan, ns)
    state = dump(ns)
    assert state["vxlan100"]["ifindex"] == index
    assert (vx(state["vxlan100"])["ttl"], state["vxlan100"]["mtu"]) == (64, 1450)
    assert state["br100"]["mtu"] == 1450
    assert "UP" in state["br200"]["flags"]


async def test_ownership_survives_a_lost_state_dir(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    await converge(config(TWO, tmp_path), ns)
    (tmp_path / "state" / "devices.json").unlink()
    # An admin rewrites one alias: the record file no longer exists either,
    # so that device is no longer known as evpnd's and must be left alone.
    ip(ns, "link", "set", "br200", "alias", "admin-owned")
    plan = await links.plan_for(config("vnis: []\n", tmp_path), ns)
    assert sorted(a.device for a in plan.actions) == ["br100", "vxlan100", "vxlan200"]


async def test_record_file_covers_an_overwritten_alias(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    await converge(config(TWO, tmp_path), ns)
    ip(ns, "link", "set", "br200", "alias", "admin-owned")
    plan = await links.plan_for(config("vnis:\n  - vni: 100\n    vxlan: {ttl: 64}\n", tmp_path), ns)
    assert sorted(a.device for a in plan.actions) == ["br200", "vxlan200"]
    # Same name, new device: the record's ifindex no longer matches.
    ip(ns, "link", "del", "br200")
    ip(ns, "link", "add", "br200", "type", "bridge")
    plan = await links.plan_for(config("vnis:\n  - vni: 100\n    vxlan: {ttl: 64}\n", tmp_path), ns)
    assert [a.device for a in plan.actions] == ["vxlan200"]


async def test_a_failing_step_skips_its_vni_only(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    cfg = config(TWO, tmp_path)
    plan = await links.plan_for(cfg, ns)
    # Someone takes the name between plan and apply: the create fails (EEXIST).
    ip(ns, "link", "add", "vxlan100", "type", "veth", "peer", "name", "vxlan100p")
    result = await links.apply(plan, ns)
    assert [str(e) for e in result.errors] == [
        "vxlan100: create vxlan vxlan100 id 100 local 192.0.2.11 dev eth0 dstport 4789 "
        "nolearning ttl 64 mtu 1450 addrgenmode none failed: File exists (errno 17)"
    ]
    assert {a.vni for a in result.skipped} == {100} and len(result.skipped) == 4
    state = dump(ns)
    assert state["vxlan100"]["linkinfo"]["info_kind"] == "veth"
    assert "UP" in state["vxlan200"]["flags"]
    assert "br100" in records(tmp_path)  # created before the failure: still ours
    assert "vxlan100" not in records(tmp_path)


async def test_ipv6_underlay(ns: str, tmp_path: Path) -> None:
    underlay(ns, address="2001:db8::11/64")
    head = HEAD.replace("address: 192.0.2.11", "address: 2001:db8::11")
    cfg = config("vnis:\n  - vni: 100\n", tmp_path, head)
    await converge(cfg, ns)
    state = dump(ns)
    assert vx(state["vxlan100"])["local6"] == "2001:db8::11"
    assert state["vxlan100"]["mtu"] == state["br100"]["mtu"] == 1430
    assert (await links.plan_for(cfg, ns)).actions == []


async def test_missing_namespace_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="evt-does-not-exist"):
        await links.plan_for(config(TWO, tmp_path), "evt-does-not-exist")
