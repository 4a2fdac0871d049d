"""A fake kernel for the Docker driver's unit tests: links as plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from evpnd.config import Config, Vni
from evpnd.dataplane.linkplan import LinkInfo, owner_alias, underlay_mtu_overhead
from evpnd.docker.driver import DriverError

HOST = """
router_id: 192.0.2.11
asn: 65000
vtep: {address: 192.0.2.11, device: eth0}
"""


class FakeKernel:
    def __init__(self) -> None:
        self.table: dict[str, LinkInfo] = {
            "lo": LinkInfo("lo", 1, None, 65536, True),
            "eth0": LinkInfo("eth0", 2, "bridge", 1500, True),
        }
        self.addresses: dict[str, set[str]] = {}
        self.next_index = 10
        self.writes = 0
        self.fail: dict[str, str] = {}  # method -> DriverError message, once

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise DriverError(self.fail.pop(method))

    def _add(self, name: str, kind: str | None, mtu: int, **kw: object) -> None:
        if name in self.table:
            raise DriverError(f"{name} exists")
        self.next_index += 1
        self.table[name] = LinkInfo(name, self.next_index, kind, mtu, True, **kw)  # type: ignore[arg-type]
        self.writes += 1

    async def links(self) -> Mapping[str, LinkInfo]:
        return dict(self.table)

    async def ensure_vni(self, config: Config, vni: Vni) -> None:
        self._maybe_fail("ensure_vni")
        mtu = vni.mtu if isinstance(vni.mtu, int) else \
            self.table[config.vtep.device].mtu - underlay_mtu_overhead(config)
        alias = owner_alias(vni.vni)
        for name, kind in ((vni.bridge_name, "bridge"), (vni.vxlan_name, "vxlan")):
            link = self.table.get(name)
            if link is not None and link.alias != alias:
                raise DriverError(f"evpnd: {name} exists and is not evpnd's")
            if link is None:
                master = vni.bridge_name if kind == "vxlan" else None
                self._add(name, kind, mtu, alias=alias, master=master)
            elif link.mtu != mtu:
                self.table[name] = replace(link, mtu=mtu)
                self.writes += 1

    async def set_gateway(self, bridge: str, mac: str, addresses: Sequence[str]) -> None:
        link = self.table[bridge]
        if link.address != mac:
            self.table[bridge] = replace(link, address=mac)
            self.writes += 1
        have = self.addresses.setdefault(bridge, set())
        for address in addresses:
            if address not in have:
                have.add(address)
                self.writes += 1

    async def add_veth(self, host: str, peer: str, *, bridge: str, mtu: int, mac: str,
                       alias: str) -> None:
        self._maybe_fail("add_veth")
        if bridge not in self.table:
            raise DriverError(f"bridge {bridge} does not exist")
        self._add(host, "veth", mtu, alias=alias, master=bridge)
        self._add(peer, "veth", mtu, address=mac)

    async def set_master(self, name: str, bridge: str) -> None:
        self.table[name] = replace(self.table[name], master=bridge)
        self.writes += 1

    async def delete_links(self, names: Sequence[str]) -> None:
        for name in names:
            link = self.table.pop(name, None)
            if link is None:
                continue
            self.writes += 1
            if link.kind == "veth":  # a veth pair dies together
                peer = "evc" + name[3:] if name.startswith("evh") else None
                if peer:
                    self.table.pop(peer, None)
            if link.kind == "bridge":
                self.addresses.pop(name, None)
                for other, info in list(self.table.items()):
                    if info.master == name:
                        self.table[other] = replace(info, master=None)

    def foreign(self) -> set[str]:
        """Links beyond the fixed underlay ones: what a test must not leave behind."""
        return set(self.table) - {"lo", "eth0"}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    async def vni_added(self, info: object) -> None:
        self.events.append(("vni_added", info))

    async def vni_removed(self, info: object) -> None:
        self.events.append(("vni_removed", info))

    async def endpoint_added(self, info: object) -> None:
        self.events.append(("endpoint_added", info))

    async def endpoint_removed(self, info: object) -> None:
        self.events.append(("endpoint_removed", info))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]
