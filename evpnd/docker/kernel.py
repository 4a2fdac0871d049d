"""The driver's kernel side with pyroute2: VNI devices through links.py, veths, gateways.

A network's devices are planned exactly like a configured VNI's
(`linkplan.plan` on a config holding just that VNI) and applied with
`links.apply`; only the actions of that VNI are kept, so the plan never
touches other VNIs' devices (the daemon's, or other networks'). Every netlink
failure becomes a DriverError whose text reaches the docker CLI.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from ipaddress import ip_interface
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from evpnd.config import Config, Vni
from evpnd.dataplane import linkplan, links
from evpnd.dataplane.linkplan import LinkInfo, Plan
from evpnd.docker.driver import DriverError


def _why(exc: Exception) -> str:
    if isinstance(exc, NetlinkError):
        return f"{os.strerror(exc.code)} (errno {exc.code})"
    return str(exc)


class NetlinkKernel:
    """The real kernel, in `netns` (None = evpnd's own namespace)."""

    def __init__(self, netns: str | None = None, state_dir: Path | None = None) -> None:
        self.netns = netns
        # Where links.apply records the devices it creates (devices.json).
        self.state_dir = state_dir
        self.writes = 0  # netlink changes made, for tests ("recovery touched nothing")

    async def links(self) -> Mapping[str, LinkInfo]:
        async with links.open_iproute(self.netns) as ipr:
            return await links.read_links(ipr)

    async def ensure_vni(self, config: Config, vni: Vni) -> None:
        async with links.open_iproute(self.netns) as ipr:
            current = await links.read_links(ipr)
        owned = links.owned_devices(current, links.load_records(self.state_dir), self.netns)
        full = linkplan.plan(config, current, owned)
        problems = [p for p in full.problems if p.vni in (vni.vni, None)]
        if problems:
            raise DriverError("evpnd: " + "; ".join(str(p) for p in problems))
        actions = [a for a in full.actions if a.vni == vni.vni]
        if not actions:
            return
        result = await links.apply(Plan(actions=actions), self.netns, self.state_dir)
        self.writes += len(result.applied)
        if result.errors:
            raise DriverError("evpnd: " + "; ".join(str(e) for e in result.errors))

    async def set_gateway(self, bridge: str, mac: str, addresses: Sequence[str]) -> None:
        try:
            async with links.open_iproute(self.netns) as ipr:
                found = await ipr.link_lookup(ifname=bridge)
                if not found:
                    raise DriverError(f"bridge {bridge} does not exist")
                index = found[0]
                current = await links.read_links(ipr)
                if (current[bridge].address or "").lower() != mac:
                    await ipr.link("set", index=index, address=mac)
                    self.writes += 1
                have = {
                    (msg.get_attr("IFA_ADDRESS"), msg["prefixlen"])
                    async for msg in await ipr.addr("dump", index=index)
                }
                for address in addresses:
                    iface = ip_interface(address)
                    if (str(iface.ip), iface.network.prefixlen) in have:
                        continue
                    await ipr.addr("add", index=index, address=str(iface.ip),
                                   prefixlen=iface.network.prefixlen)
                    self.writes += 1
        except NetlinkError as exc:
            raise DriverError(f"evpnd: gateway on {bridge}: {_why(exc)}") from None

    async def add_veth(
        self, host: str, peer: str, *, bridge: str, mtu: int, mac: str, alias: str
    ) -> None:
        try:
            async with links.open_iproute(self.netns) as ipr:
                found = await ipr.link_lookup(ifname=bridge)
                if not found:
                    raise DriverError(f"bridge {bridge} does not exist")
                await ipr.link("add", ifname=host, kind="veth", mtu=mtu,
                               peer={"ifname": peer, "mtu": mtu, "address": mac})
                self.writes += 1
                index = (await ipr.link_lookup(ifname=host))[0]
                # The alias first: from here on recovery recognizes the pair as ours.
                await ipr.link("set", index=index, ifalias=alias)
                await ipr.link("set", index=index, master=found[0])
                await ipr.link("set", index=index, state="up")
                self.writes += 3
        except NetlinkError as exc:
            raise DriverError(f"evpnd: veth {host}/{peer} on {bridge}: {_why(exc)}") from None

    async def set_master(self, name: str, bridge: str) -> None:
        try:
            async with links.open_iproute(self.netns) as ipr:
                index = (await ipr.link_lookup(ifname=name))[0]
                master = (await ipr.link_lookup(ifname=bridge))[0]
                await ipr.link("set", index=index, master=master)
                self.writes += 1
        except (NetlinkError, IndexError) as exc:
            raise DriverError(f"evpnd: {name} on {bridge}: {_why(exc)}") from None

    async def delete_links(self, names: Sequence[str]) -> None:
        if not names:
            return
        async with links.open_iproute(self.netns) as ipr:
            for name in names:
                found = await ipr.link_lookup(ifname=name)
                if not found:
                    continue
                try:
                    await ipr.link("del", index=found[0])
                    self.writes += 1
                except NetlinkError as exc:
                    # Gone in between (a veth dies with its peer's namespace): fine.
                    if exc.code not in (errno.ENODEV, errno.ENOENT):
                        raise DriverError(f"evpnd: delete {name}: {_why(exc)}") from None
