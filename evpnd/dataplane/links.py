"""Per-VNI devices, the I/O part: read links with pyroute2, apply a plan, record ownership.

The decisions live in `evpnd.dataplane.linkplan` (pure); this module only
turns netlink messages into `LinkInfo` values and `Action`s into netlink
requests.

Ownership (what evpnd may delete or recreate) is recorded twice:

* in the kernel, as the link alias `evpnd:vni=N` (IFLA_IFALIAS) set right after
  creation: it lives and dies with the device, so it survives a lost or wiped
  state directory (/run is a tmpfs) and cannot go stale;
* in `<state_dir>/devices.json` (name, ifindex, kind, VNI, netns), which
  covers a device whose alias an admin overwrote or whose alias write failed.
  A record only counts while a link with that name *and* ifindex exists, so a
  device someone recreated under the same name is not mistaken for ours.

A device is owned when either says so. Adopted bridges and pre-existing
devices get neither mark, so evpnd never deletes them.

`DeviceRepair` puts back a VNI's bridge or vxlan device that someone
deleted, within a second or so and without a reload (the reconciler reports
the deletions it sees in its link events), and likewise a gateway address
someone deleted or IP forwarding someone switched off (`host_changed`).

The host part of routing between segments is applied here too: the anycast
gateway addresses (IFA_PROTO RTPROT_EVPND marks them: the kernel keeps it)
and IP forwarding. Which families of forwarding evpnd switched on is
recorded in `<state_dir>/forwarding.json`, so that it switches off only
what it switched on (a host that forwarded before evpnd keeps forwarding).
Under systemd the unit must let evpnd write the two sysctls
(contrib/systemd/evpnd.service: ReadWritePaths).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import ip_address, ip_interface
from pathlib import Path
from typing import Any

import structlog
from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from evpnd import statefiles
from evpnd.config import Config
from evpnd.dataplane import linkplan
from evpnd.dataplane.linkplan import (
    ADDRGENMODE_NONE,
    KERNEL_MIN_MTU,
    MUTABLE,
    Action,
    AddAddress,
    AddressInfo,
    BrportAttrs,
    CreateBridge,
    CreateVxlan,
    DelAddress,
    DeleteLink,
    Forwarding,
    LinkInfo,
    Plan,
    Problem,
    SetBrport,
    SetForwarding,
    SetLink,
    SetMaster,
    SetUp,
    VxlanAttrs,
    alias_vni,
    owner_alias,
)
from evpnd.dataplane.netlink.routesocket import RouteSocket, inside_netns
from evpnd.dataplane.netlink.wire import IFINFOMSG, RTPROT_EVPND, rtattr

log = structlog.get_logger(__name__)

STATE_FILE = "devices.json"
STATE_VERSION = 1
FORWARDING_FILE = "forwarding.json"
IFF_UP = 0x1
IFA_F_NODAD = 0x02
# /proc/sys paths of the forwarding sysctls (per network namespace).
FORWARDING_PATHS = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}


# ---------------------------------------------------------------------------
# Reading the kernel


@contextlib.asynccontextmanager
async def open_iproute(netns: str | None = None) -> AsyncIterator[AsyncIPRoute]:
    """An rtnetlink socket, in `netns` when given (which must exist: flags=0)."""
    kwargs: dict[str, Any] = {"ext_ack": True}
    if netns is not None:
        path = netns if netns.startswith("/") else f"/run/netns/{netns}"
        if not os.path.exists(path):
            raise FileNotFoundError(f"network namespace {netns!r} does not exist")
        # flags=0: never create the namespace as a side effect of a typo.
        kwargs.update(netns=netns, flags=0)
    async with AsyncIPRoute(**kwargs) as ipr:
        yield ipr


async def read_links(ipr: AsyncIPRoute) -> dict[str, LinkInfo]:
    messages = [msg async for msg in await ipr.link("dump")]
    names = {msg["index"]: msg.get_attr("IFLA_IFNAME") for msg in messages}
    addresses = await read_addresses(ipr)
    links = (
        replace(link, addresses=tuple(addresses.get(link.index, ())))
        for link in (link_from_message(msg, names) for msg in messages)
    )
    return {link.name: link for link in links}


async def read_addresses(ipr: AsyncIPRoute) -> dict[int, list[AddressInfo]]:
    """Every global address (IPv4 and IPv6) by ifindex, with its IFA_PROTO."""
    out: dict[int, list[AddressInfo]] = {}
    async for msg in await ipr.addr("dump"):
        address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if address is None or msg["scope"] != 0:  # link-local and host scope: not ours
            continue
        iface = ip_interface(f"{address}/{msg['prefixlen']}")
        proto = msg.get_attr("IFA_PROTO") or 0
        out.setdefault(msg["index"], []).append(AddressInfo(iface, proto))
    return out


def link_from_message(msg: Any, names: Mapping[int, str]) -> LinkInfo:
    """One RTM_NEWLINK message as a LinkInfo; `names` resolves ifindexes."""
    get = msg.get_attr
    linkinfo = get("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    vxlan = None
    brport = None
    if linkinfo is not None:
        data = linkinfo.get_attr("IFLA_INFO_DATA")
        if kind == "vxlan" and data is not None:
            vxlan = _vxlan_from(data, names)
        slave = linkinfo.get_attr("IFLA_INFO_SLAVE_DATA")
        if linkinfo.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge" and slave is not None:
            brport = BrportAttrs(
                learning=bool(slave.get_attr("IFLA_BRPORT_LEARNING")),
                neigh_suppress=bool(slave.get_attr("IFLA_BRPORT_NEIGH_SUPPRESS")),
            )
    master = get("IFLA_MASTER")
    return LinkInfo(
        name=get("IFLA_IFNAME"),
        index=msg["index"],
        kind=kind,
        mtu=get("IFLA_MTU"),
        up=bool(msg["flags"] & IFF_UP),
        txqlen=get("IFLA_TXQLEN"),
        address=get("IFLA_ADDRESS"),
        alias=get("IFLA_IFALIAS"),
        master=names.get(master) if master else None,
        addrgenmode=_addrgenmode(msg),
        vxlan=vxlan,
        brport=brport,
    )


def _addrgenmode(msg: Any) -> int | None:
    try:
        return msg.get_nested("IFLA_AF_SPEC", "AF_INET6", "IFLA_INET6_ADDR_GEN_MODE")
    except (AttributeError, KeyError, TypeError):
        return None


def _vxlan_from(data: Any, names: Mapping[int, str]) -> VxlanAttrs:
    get = data.get_attr
    link = get("IFLA_VXLAN_LINK")
    port_range = get("IFLA_VXLAN_PORT_RANGE")
    # pyroute2 decodes TTL_INHERIT as a presence flag, but the kernel always
    # sends it as a u8 (0 or 1) in dumps: read the byte itself.
    inherit = _raw_u8(data, "IFLA_VXLAN_TTL_INHERIT")
    return VxlanAttrs(
        vni=get("IFLA_VXLAN_ID"),
        port=get("IFLA_VXLAN_PORT"),
        local=_ip(get("IFLA_VXLAN_LOCAL") or get("IFLA_VXLAN_LOCAL6")),
        link=names.get(link) if link else None,
        group=_ip(get("IFLA_VXLAN_GROUP") or get("IFLA_VXLAN_GROUP6")),
        ttl="inherit" if inherit else (get("IFLA_VXLAN_TTL") or 0),
        tos=get("IFLA_VXLAN_TOS") or 0,
        learning=bool(get("IFLA_VXLAN_LEARNING")),
        proxy=bool(get("IFLA_VXLAN_PROXY")),
        rsc=bool(get("IFLA_VXLAN_RSC")),
        l2miss=bool(get("IFLA_VXLAN_L2MISS")),
        l3miss=bool(get("IFLA_VXLAN_L3MISS")),
        ageing=get("IFLA_VXLAN_AGEING") or 0,
        limit=get("IFLA_VXLAN_LIMIT") or 0,
        gbp=bool(get("IFLA_VXLAN_GBP")),
        port_range=(port_range["low"], port_range["high"]) if port_range else (0, 0),
    )


def _raw_u8(nla: Any, name: str) -> bool:
    for slot in nla["attrs"]:
        if slot.name != name:
            continue
        cell = slot.cell[1]
        if cell.length <= 4:  # a real zero-length flag: presence means set
            return True
        return bool(cell.data[cell.offset + 4])
    return False


def _ip(value: str | None) -> str | None:
    if not value:
        return None
    address = ip_address(value)
    return None if address.is_unspecified else str(address)


# ---------------------------------------------------------------------------
# Ownership records


@dataclass(frozen=True, slots=True)
class OwnedDevice:
    name: str
    ifindex: int
    kind: str | None
    vni: int | None
    netns: str | None = None


def state_file(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load_records(state_dir: Path | None) -> list[OwnedDevice]:
    """The recorded devices; an unreadable file is logged and treated as empty
    (the kernel aliases still mark what evpnd created)."""
    if state_dir is None:
        return []
    path = state_file(state_dir)
    try:
        data = json.loads(statefiles.read_private(path))
        return [OwnedDevice(**entry) for entry in data["devices"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning(
            "ownership records unreadable, relying on link aliases", path=str(path), error=str(exc)
        )
        return []


def save_records(state_dir: Path, devices: Iterable[OwnedDevice]) -> None:
    path = state_file(state_dir)
    statefiles.secure_dir(path.parent)
    body = {
        "version": STATE_VERSION,
        "devices": [
            {"name": d.name, "ifindex": d.ifindex, "kind": d.kind, "vni": d.vni, "netns": d.netns}
            for d in sorted(devices, key=lambda d: d.name)
        ],
    }
    # Write then rename: a crash mid-write must not leave half a file.
    statefiles.write_private(path, json.dumps(body, indent=2) + "\n")


def owned_devices(
    current: Mapping[str, LinkInfo], records: Iterable[OwnedDevice], netns: str | None = None
) -> set[str]:
    # Only VNI devices: the Docker driver's veths carry "evpnd:docker=..." and are
    # its own (a container's interface), never a candidate for removal here.
    owned = {name for name, link in current.items() if alias_vni(link.alias) is not None}
    for record in records:
        link = current.get(record.name)
        if record.netns == netns and link is not None and link.index == record.ifindex:
            owned.add(record.name)
    return owned


# ---------------------------------------------------------------------------
# Planning and applying


async def plan_for(
    config: Config, netns: str | None = None, state_dir: Path | str | None = None
) -> Plan:
    """Read the kernel and compute the plan of the whole host; changes nothing."""
    where = Path(state_dir) if state_dir is not None else config.state_dir
    async with open_iproute(netns) as ipr:
        current = await read_links(ipr)
    owned = owned_devices(current, load_records(where), netns)
    host = Forwarding(read_forwarding(netns), load_forwarding(where))
    return replace(linkplan.plan(config, current, owned, host=host), state_dir=where)


async def bridge_mac(name: str, netns: str | None = None) -> str | None:
    """The MAC of a link (the L3VNI bridge's is the default router MAC); None if missing."""
    async with open_iproute(netns) as ipr:
        link = (await read_links(ipr)).get(name)
    return None if link is None or not link.address else link.address.lower()


# ---------------------------------------------------------------------------
# IP forwarding


def read_forwarding(netns: str | None = None) -> dict[int, bool]:
    """The forwarding sysctls of `netns` (a family whose file is missing is left out)."""
    out: dict[int, bool] = {}
    with inside_netns(netns):
        for family, path in FORWARDING_PATHS.items():
            try:
                with open(path) as f:
                    out[family] = f.read().strip() not in ("", "0")
            except OSError:
                continue
    return out


def write_forwarding(family: int, on: bool, netns: str | None = None) -> None:
    with inside_netns(netns), open(FORWARDING_PATHS[family], "w") as f:
        f.write("1\n" if on else "0\n")


def forwarding_file(state_dir: Path) -> Path:
    return Path(state_dir) / FORWARDING_FILE


def load_forwarding(state_dir: Path | None) -> frozenset[int]:
    """The families evpnd switched forwarding on for (and may switch off again)."""
    if state_dir is None:
        return frozenset()
    try:
        data = json.loads(statefiles.read_private(forwarding_file(state_dir)))
        return frozenset(int(f) for f in data["switched_on"] if f in (4, 6))
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("forwarding record unreadable", path=str(forwarding_file(state_dir)),
                    error=str(exc))  # fmt: skip
        return frozenset()


def save_forwarding(state_dir: Path, families: Iterable[int]) -> None:
    path = forwarding_file(state_dir)
    statefiles.secure_dir(path.parent)
    body = {"version": 1, "switched_on": sorted(set(families))}
    statefiles.write_private(path, json.dumps(body) + "\n")


@dataclass(frozen=True, slots=True)
class ActionError:
    action: Action
    error: str

    def __str__(self) -> str:
        return f"{self.action.device}: {self.action} failed: {self.error}"


@dataclass(slots=True)
class ApplyResult:
    applied: list[Action] = field(default_factory=list)
    errors: list[ActionError] = field(default_factory=list)
    # Not attempted because an earlier step of the same VNI failed.
    skipped: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.problems

    def lines(self) -> list[str]:
        out = [f"done: {a}" for a in self.applied]
        out += [f"error: {e}" for e in self.errors]
        out += [f"skipped: {a}" for a in self.skipped]
        out += [f"problem: {p}" for p in self.problems]
        out += [f"warning: {w}" for w in self.warnings]
        return out


class LinkMissing(LookupError):
    pass


async def apply(
    plan: Plan, netns: str | None = None, state_dir: Path | str | None = None
) -> ApplyResult:
    """Execute `plan`; a failed step skips the rest of its VNI, not other VNIs.

    Ownership records go to `state_dir` (default: the plan's); with neither,
    only the kernel aliases mark the created devices.
    """
    where = Path(state_dir) if state_dir is not None else plan.state_dir
    result = ApplyResult(problems=list(plan.problems))
    created: dict[str, int | None] = {}
    failed: set[tuple[str, int | str]] = set()
    async with open_iproute(netns) as ipr:
        for action in plan.actions:
            if action.group in failed:
                result.skipped.append(action)
                continue
            if isinstance(action, SetForwarding):
                try:
                    _set_forwarding(action, netns, where)
                except OSError as exc:
                    failed.add(action.group)
                    result.errors.append(ActionError(action, f"{exc}{_forwarding_hint(exc)}"))
                    log.error("link action failed", action=str(action), error=str(exc))
                else:
                    result.applied.append(action)
                    log.info("link action", action=str(action))
                continue
            try:
                await _execute(ipr, action, created, result.warnings, netns)
            except (NetlinkError, LinkMissing) as exc:
                failed.add(action.group)
                result.errors.append(ActionError(action, _describe(exc)))
                log.error("link action failed", action=str(action), error=_describe(exc))
            else:
                result.applied.append(action)
                log.info("link action", action=str(action))
        if where is not None and plan.actions:
            await _record(ipr, where, netns, created, result)
    return result


async def reconcile(
    config: Config, netns: str | None = None, state_dir: Path | str | None = None
) -> ApplyResult:
    """plan_for + apply, for the daemon."""
    return await apply(await plan_for(config, netns, state_dir), netns, state_dir)


def plan_for_sync(
    config: Config, netns: str | None = None, state_dir: Path | str | None = None
) -> Plan:
    """`plan_for` for callers without an event loop (the CLI)."""
    return asyncio.run(plan_for(config, netns, state_dir))


def apply_sync(
    plan: Plan, netns: str | None = None, state_dir: Path | str | None = None
) -> ApplyResult:
    return asyncio.run(apply(plan, netns, state_dir))


def _set_forwarding(action: SetForwarding, netns: str | None, where: Path | None) -> None:
    write_forwarding(action.family, action.on, netns)
    if where is None:
        return
    ours = set(load_forwarding(where))
    if action.on:
        ours.add(action.family)
    else:
        ours.discard(action.family)
    save_forwarding(where, ours)


def _forwarding_hint(exc: OSError) -> str:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (" (under systemd, ProtectKernelTunables=yes makes /proc/sys read-only: "
                "the unit needs ReadWritePaths= for the forwarding sysctls, see "
                "contrib/systemd/evpnd.service)")  # fmt: skip
    return ""


def _describe(exc: Exception) -> str:
    if isinstance(exc, NetlinkError):
        text = f"{os.strerror(exc.code)} (errno {exc.code})"
        # With ext_ack the kernel says which attribute it refused; pyroute2
        # puts that text where the strerror would be.
        detail = exc.args[1] if len(exc.args) > 1 else None
        if detail and detail != os.strerror(exc.code):
            text += f": {detail}"
        return text
    return str(exc)


async def _record(
    ipr: AsyncIPRoute,
    where: Path,
    netns: str | None,
    created: dict[str, int | None],
    result: ApplyResult,
) -> None:
    current = await read_links(ipr)
    owned = owned_devices(current, load_records(where), netns) | (created.keys() & current.keys())
    devices = []
    for name in owned:
        link = current[name]
        vni = created[name] if name in created else alias_vni(link.alias)
        devices.append(OwnedDevice(name, link.index, link.kind, vni, netns))
    try:
        save_records(where, devices)
    except OSError as exc:
        result.warnings.append(f"could not record owned devices in {state_file(where)}: {exc}")


async def _index(ipr: AsyncIPRoute, name: str) -> int:
    found = await ipr.link_lookup(ifname=name)
    if not found:
        raise LinkMissing(f"device {name} does not exist")
    return found[0]


async def _execute(
    ipr: AsyncIPRoute,
    action: Action,
    created: dict[str, int | None],
    warnings: list[str],
    netns: str | None = None,
) -> None:
    match action:
        case CreateBridge(vni=vni, device=name, mtu=mtu, address=address, pin_address=pin):
            # An MTU given at creation is not "set by the user": the bridge
            # would follow its smallest port (a 1500-byte container veth) and
            # the next start would set it back. Only a real change of MTU
            # marks it (BROPT_MTU_SET_BY_USER; setting the same value is a
            # no-op), so the bridge is born at the minimum and then raised.
            # A MAC given at creation is "set" (NET_ADDR_SET): the bridge keeps
            # it when ports come and go (a gateway's or the router MAC).
            extra = {"address": address} if address else {}
            await ipr.link("add", ifname=name, kind="bridge", mtu=KERNEL_MIN_MTU, **extra)
            created[name] = vni
            await _mark(ipr, name, vni)
            if pin and not address:
                # Setting its own MAC makes it "set" too (dev_set_mac_address).
                mac = (await read_links(ipr))[name].address
                await ipr.link("set", index=await _index(ipr, name), address=mac)
            await ipr.link("set", index=await _index(ipr, name), mtu=mtu)
        case CreateVxlan(vni=vni, device=name):
            await ipr.link("add", **await _vxlan_request(ipr, action))
            created[name] = vni
            await _mark(ipr, name, vni)
            try:
                await _set_addrgenmode(ipr, await _index(ipr, name))
            except NetlinkError as exc:
                # Only costs an unused IPv6 link-local address on the port.
                warnings.append(f"{name}: addrgenmode none not set: {_describe(exc)}")
        case DeleteLink(device=name):
            await ipr.link("del", index=await _index(ipr, name))
        case SetLink(device=name, changes=changes):
            await _set_link(ipr, await _index(ipr, name), dict(changes))
        case SetMaster(device=name, master=master):
            await ipr.link("set", index=await _index(ipr, name), master=await _index(ipr, master))
        case SetBrport(device=name, learning=learning, neigh_suppress=suppress):
            await ipr.brport(
                "set",
                index=await _index(ipr, name),
                learning=int(learning),
                neigh_suppress=int(suppress),
            )
        case SetUp(device=name):
            await ipr.link("set", index=await _index(ipr, name), state="up")
        case AddAddress(device=name, interface=iface):
            # nodad: every host holds the anycast address, DAD would fail on each.
            flags = IFA_F_NODAD if iface.version == 6 else 0
            await ipr.addr("add", index=await _index(ipr, name), address=str(iface.ip),
                           prefixlen=iface.network.prefixlen, IFA_PROTO=RTPROT_EVPND,
                           flags=flags)  # fmt: skip
        case DelAddress(device=name, interface=iface):
            index = await _index(ipr, name)
            if iface.version == 4:
                # Deleting a primary IPv4 address deletes the secondaries of its subnet
                # (an admin's 10.100.0.254/24 beside our 10.100.0.1/24) unless they
                # are promoted: switch that on for the device first.
                await asyncio.to_thread(promote_secondaries, netns, index)
            await ipr.addr("del", index=index, address=str(iface.ip),
                           prefixlen=iface.network.prefixlen)  # fmt: skip
        case _:
            raise TypeError(f"unknown action {action!r}")


# RTM_SETLINK with IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF / IPV4_DEVCONF_PROMOTE_SECONDARIES:
# netlink sets one device's IPv4 setting (no /proc/sys write, which systemd's
# ProtectKernelTunables would refuse).
_RTM_SETLINK = 19
_IFLA_AF_SPEC = 26
_IFLA_INET_CONF = 1
_IPV4_DEVCONF_PROMOTE_SECONDARIES = 20


def promote_secondaries(netns: str | None, ifindex: int) -> None:
    conf = rtattr(_IPV4_DEVCONF_PROMOTE_SECONDARIES, struct.pack("=I", 1))
    spec = rtattr(_IFLA_AF_SPEC, rtattr(socket.AF_INET, rtattr(_IFLA_INET_CONF, conf)))
    payload = IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + spec
    with RouteSocket(netns) as sock:
        failures = sock.transact([(_RTM_SETLINK, 0, payload)])
    if failures:
        error = failures[0]
        raise NetlinkError(error.errno, error.message or os.strerror(error.errno))


async def _mark(ipr: AsyncIPRoute, name: str, vni: int | None) -> None:
    # The kernel ignores IFLA_IFALIAS in RTM_NEWLINK for a new device: set it after.
    if vni is not None:
        await ipr.link("set", index=await _index(ipr, name), ifalias=owner_alias(vni))


async def _set_addrgenmode(ipr: AsyncIPRoute, index: int) -> None:
    # Not accepted together with the create (EAFNOSUPPORT): a separate set,
    # before the link goes up so no link-local address is generated.
    spec = {"attrs": [["AF_INET6", {"attrs": [["IFLA_INET6_ADDR_GEN_MODE", ADDRGENMODE_NONE]]}]]}
    await ipr.link("set", index=index, IFLA_AF_SPEC=spec)


async def _set_link(ipr: AsyncIPRoute, index: int, changes: dict[str, Any]) -> None:
    plain = {k: changes[k] for k in ("mtu", "txqlen", "address") if k in changes}
    if plain:
        await ipr.link("set", index=index, **plain)
    if "addrgenmode" in changes:
        await _set_addrgenmode(ipr, index)
    tunnel = {f"vxlan_{k}": _netlink_value(changes[k]) for k in MUTABLE if k in changes}
    if tunnel:
        await ipr.link("set", index=index, kind="vxlan", **tunnel)


def _netlink_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


async def _vxlan_request(ipr: AsyncIPRoute, action: CreateVxlan) -> dict[str, Any]:
    spec = action.spec
    a = spec.attrs
    request: dict[str, Any] = {
        "ifname": action.device,
        "kind": "vxlan",
        "mtu": spec.mtu,
        "vxlan_id": a.vni,
        # pyroute2 encodes IFLA_VXLAN_PORT as be16 itself: pass the plain number.
        "vxlan_port": a.port,
        "vxlan_tos": a.tos,
        "vxlan_learning": int(a.learning),
        "vxlan_proxy": int(a.proxy),
        "vxlan_rsc": int(a.rsc),
        "vxlan_l2miss": int(a.l2miss),
        "vxlan_l3miss": int(a.l3miss),
        "vxlan_ageing": a.ageing,
        "vxlan_limit": a.limit,
    }
    if a.link:
        request["vxlan_link"] = await _index(ipr, a.link)
    if a.local:
        request["vxlan_local6" if ip_address(a.local).version == 6 else "vxlan_local"] = a.local
    if a.group:
        request["vxlan_group6" if ip_address(a.group).version == 6 else "vxlan_group"] = a.group
    if a.ttl == "inherit":
        request["vxlan_ttl_inherit"] = True
    else:
        request["vxlan_ttl"] = a.ttl
    if a.gbp:
        request["vxlan_gbp"] = True  # a flag attribute: present = on
    if a.port_range != (0, 0):
        request["vxlan_port_range"] = {"low": a.port_range[0], "high": a.port_range[1]}
    if spec.txqlen is not None:
        request["txqlen"] = spec.txqlen
    if spec.address is not None:
        request["address"] = spec.address
    return request


# ---------------------------------------------------------------------------
# Repair


@dataclass(slots=True)
class RepairCounters:
    deletions: int = 0  # VNI devices seen deleted by someone else
    repairs: int = 0  # reconcile runs that put them back
    failures: int = 0  # runs that could not (tried again with a backoff)


class DeviceRepair:
    """Puts back the VNI devices someone deletes (`ip link del vxlan100`), without a reload.

    The reconciler's link events say which devices went (`devices_gone`);
    when one is a bridge or vxlan device of the config (adopted bridges are
    not ours to create), `reconcile(config())` runs `delay` seconds later (a
    burst of deletions is one run), under `lock` (the daemon's reload lock: a
    reload applies devices too). A run that leaves one of them missing is
    tried again with a backoff up to `retry_max`. The entries come back by
    themselves: the reconciler writes again what the kernel refused for want
    of a device once a device appears.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        *,
        netns: str | None = None,
        state_dir: Path | str | None = None,
        lock: asyncio.Lock | None = None,
        delay: float = 0.2,
        retry_max: float = 30.0,
    ) -> None:
        self.config = config
        self.netns = netns
        self.state_dir = state_dir
        self.delay = delay
        self.retry_max = retry_max
        self.counters = RepairCounters()
        self._lock = lock or asyncio.Lock()
        self._missing: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def devices_gone(self, names: Iterable[str]) -> None:
        """Links that were deleted (any: the ones that are not VNI devices are ignored)."""
        if self._stopped:
            return
        ours = set(names) & wanted_devices(self.config())
        if not ours:
            return
        self.counters.deletions += len(ours)
        log.warning("vni device deleted by someone else: recreating it", devices=sorted(ours))
        self._missing |= ours
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._repair(), name="device-repair"
            )

    def host_changed(self, why: str) -> None:
        """Someone changed what routing between segments set up on the host (a gateway
        address deleted, forwarding switched off): the same reconcile puts it back."""
        if self._stopped:
            return
        cfg = self.config()
        if cfg.l3vni is None and not any(v.gateway is not None for v in cfg.vnis):
            return
        log.warning("routing settings changed by someone else: putting them back", why=why)
        self._missing.add(HOST_SETTINGS)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._repair(), name="device-repair"
            )

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _repair(self) -> None:
        wait = self.delay
        while self._missing and not self._stopped:
            await asyncio.sleep(wait)
            names, self._missing = self._missing, set()
            try:
                async with self._lock:
                    result = await reconcile(self.config(), self.netns, self.state_dir)
            except (OSError, NetlinkError) as exc:
                still = names
                log.error("vni devices not recreated", devices=sorted(names), error=str(exc))
            else:
                for line in result.lines():
                    (log.info if line.startswith("done") else log.warning)("device", change=line)
                failed = [*(e.action for e in result.errors), *result.skipped]
                still = names & {action.device for action in failed}
            if still:
                self.counters.failures += 1
                self._missing |= still & wanted_devices(self.config())
                wait = min(max(wait * 2, 1.0), self.retry_max)
            else:
                self.counters.repairs += 1
                wait = self.delay


# Stands for the gateway addresses and forwarding among the devices to repair.
HOST_SETTINGS = "(gateway addresses, forwarding)"


def wanted_devices(config: Config) -> set[str]:
    """The devices evpnd creates for the config's VNIs and the L3VNI (an adopted bridge is
    not one)."""
    names: set[str] = set()
    for vni in linkplan.device_vnis(config):
        names.add(vni.vxlan_name)
        if not vni.adopt_bridge:
            names.add(vni.bridge_name)
    return names
