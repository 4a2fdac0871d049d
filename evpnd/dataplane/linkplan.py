"""Per-VNI devices, the pure part: kernel links in as plain values, actions out.

`plan()` compares what the config wants (a bridge and a vxlan device per VNI)
with what the kernel holds and returns the actions that close the gap plus the
problems that block it. No I/O: `evpnd.dataplane.links` reads the kernel and
executes the actions, so `evpnd plan` and the unit tests share this code.

Rules (the why is next to each):

* Ownership is decided by the caller (`owned`): only devices evpnd created may
  be deleted or recreated. Anything else with the right kind and identity is
  used as is; its tunable settings are changed in place, as visible actions.
* A vxlan attribute the kernel refuses to change (`IMMUTABLE`, checked on
  kernel 6.18: changelink answers EOPNOTSUPP) or that defines what the device
  is (`IDENTITY`) is a conflict on a foreign device and a recreate on ours.
* A problem blocks only its own VNI: the other VNIs still get their actions.
* Routing between segments (evpnd/l3/settings.py): the L3VNI gets a bridge and
  a vxlan device like a VNI (neigh_suppress off: nothing to suppress there),
  the L3VNI bridge the configured router MAC; a VNI with an anycast gateway
  gets the gateway MAC on its bridge and the gateway addresses, marked with
  IFA_PROTO RTPROT_EVPND (and `nodad` for IPv6: every host holds them). Only
  marked addresses are ever deleted. IP forwarding is switched on while the
  L3VNI or a gateway needs it, and back off only if evpnd switched it on
  (`Forwarding`). Addresses and forwarding are planned only when asked
  (`host`): the Docker driver plans one VNI's devices and leaves them to the
  daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from ipaddress import IPv4Interface, IPv6Interface, ip_address
from pathlib import Path
from typing import Any

from evpnd.config import NOAGE_SECONDS, Config, Vni, VxlanOptions
from evpnd.dataplane.netlink.wire import RTPROT_EVPND
from evpnd.dataplane.state import FloodEntry
from evpnd.l3.settings import advertised_prefixes

IPInterface = IPv4Interface | IPv6Interface

OWNER_PREFIX = "evpnd:"
KERNEL_MIN_MTU = 68
# VXLAN encapsulation: outer Ethernet 14 + IPv4 20 / IPv6 40 + UDP 8 + VXLAN 8.
# The inner frame's own Ethernet header is not part of the MTU, hence 50/70.
OVERHEAD_IPV4 = 50
OVERHEAD_IPV6 = 70
KERNEL_DEFAULT_AGEING = 300
# The kernel has no "never age": it replaces ageing 0 by 300 (vxlan_config_validate).
# `noage` therefore becomes the longest interval config.py accepts (~24.8 days).
ADDRGENMODE_NONE = 1  # IN6_ADDR_GEN_MODE_NONE: no IPv6 link-local on a bridge port
TOS_INHERIT = 1  # the kernel's encoding of "tos inherit"

# What a vxlan device *is*: changing one of these means a different tunnel.
IDENTITY = ("vni", "port", "local", "link", "group")
# Tunable per the kernel, but evpnd's choice was made at creation time.
IMMUTABLE = ("proxy", "rsc", "l2miss", "l3miss", "gbp", "limit", "port_range")
# Accepted by the kernel's vxlan changelink.
MUTABLE = ("ttl", "tos", "learning", "ageing")

# Names as an operator reads them in the config and in `ip -d link`.
FIELD_NAMES = {"vni": "id", "port": "dstport", "link": "dev", "txqlen": "txqueuelen"}


def owner_alias(vni: int) -> str:
    """The IFLA_IFALIAS evpnd puts on the devices it creates."""
    return f"{OWNER_PREFIX}vni={vni}"


def alias_vni(alias: str | None) -> int | None:
    """The VNI an evpnd alias names, or None for a foreign or garbled alias."""
    if not alias or not alias.startswith(f"{OWNER_PREFIX}vni="):
        return None
    try:
        return int(alias.removeprefix(f"{OWNER_PREFIX}vni="))
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Kernel state as plain values


@dataclass(frozen=True, slots=True)
class VxlanAttrs:
    """The vxlan part of a link, normalized so desired and current compare with ==.

    Kernel defaults are spelled out (ttl 0 = auto, ageing 300, limit 0, port
    range (0, 0) = the netns' ephemeral range) so "not set in the config" is a
    value too and a second apply finds nothing to do.
    """

    vni: int
    port: int
    local: str | None = None
    link: str | None = None  # underlay device name (names survive recreation)
    group: str | None = None
    ttl: int | str = 0  # int or "inherit"
    tos: int = 0
    learning: bool = False
    proxy: bool = False
    rsc: bool = False
    l2miss: bool = False
    l3miss: bool = False
    ageing: int = KERNEL_DEFAULT_AGEING
    limit: int = 0
    gbp: bool = False
    port_range: tuple[int, int] = (0, 0)


@dataclass(frozen=True, slots=True)
class BrportAttrs:
    learning: bool
    neigh_suppress: bool


@dataclass(frozen=True, slots=True)
class AddressInfo:
    """One address of a link; `proto` is its IFA_PROTO (RTPROT_EVPND: evpnd's)."""

    interface: IPInterface
    proto: int = 0


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One kernel link, as much as the planner needs."""

    name: str
    index: int
    kind: str | None  # IFLA_INFO_KIND; None for devices without one (physical, lo)
    mtu: int
    up: bool  # administrative state (IFF_UP), not carrier
    txqlen: int | None = None
    address: str | None = None
    alias: str | None = None
    master: str | None = None
    addrgenmode: int | None = None  # None when IPv6 is off on the device
    vxlan: VxlanAttrs | None = None
    brport: BrportAttrs | None = None  # set when the link is a bridge port
    addresses: tuple[AddressInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class Forwarding:
    """IP forwarding as it is (`on`: family -> on), and the families evpnd switched on
    (`ours`, from the state directory): only those it ever switches off."""

    on: Mapping[int, bool] = field(default_factory=dict)
    ours: frozenset[int] = frozenset()


# ---------------------------------------------------------------------------
# Actions


def _show(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if name == "ttl" and value == 0:
        return "auto"
    if name == "tos" and value == TOS_INHERIT:
        return "inherit"
    if name == "port_range":
        low, high = value
        return "default" if (low, high) == (0, 0) else f"{low}-{high}"
    if name == "addrgenmode":
        return "none" if value == ADDRGENMODE_NONE else str(value)
    return str(value)


def _field_name(name: str) -> str:
    return FIELD_NAMES.get(name, name)


@dataclass(frozen=True, slots=True)
class VxlanSpec:
    """Everything needed to create one vxlan device."""

    attrs: VxlanAttrs
    mtu: int
    txqlen: int | None = None
    address: str | None = None

    def describe(self) -> str:
        """iproute2's spelling, so an operator can compare with `ip -d link`."""
        a = self.attrs
        words = [f"id {a.vni}"]
        if a.local:
            words.append(f"local {a.local}")
        if a.group:
            words.append(f"group {a.group}")
        if a.link:
            words.append(f"dev {a.link}")
        words.append(f"dstport {a.port}")
        words.append("learning" if a.learning else "nolearning")
        if a.ttl != 0:
            words.append(f"ttl {a.ttl}")
        if a.tos != 0:
            words.append(f"tos {_show('tos', a.tos)}")
        flags = ("proxy", "rsc", "l2miss", "l3miss", "gbp")
        words.extend(flag for flag in flags if getattr(a, flag))
        if a.ageing == NOAGE_SECONDS:
            words.append(f"ageing {a.ageing} (noage)")
        elif a.ageing != KERNEL_DEFAULT_AGEING:
            words.append(f"ageing {a.ageing}")
        if a.limit:
            words.append(f"maxaddress {a.limit}")
        if a.port_range != (0, 0):
            words.append(f"srcport {a.port_range[0]} {a.port_range[1]}")
        words.append(f"mtu {self.mtu}")
        if self.txqlen is not None:
            words.append(f"txqueuelen {self.txqlen}")
        if self.address is not None:
            words.append(f"address {self.address}")
        words.append("addrgenmode none")
        return " ".join(words)


@dataclass(frozen=True, slots=True)
class Action:
    """One step; `vni` groups the steps that depend on each other (None = standalone)."""

    vni: int | None
    device: str

    @property
    def group(self) -> tuple[str, int | str]:
        return ("vni", self.vni) if self.vni is not None else ("device", self.device)


@dataclass(frozen=True, slots=True)
class CreateBridge(Action):
    mtu: int
    address: str | None = None  # its MAC (a gateway's or the router MAC); None: the kernel's
    # Keep the kernel's MAC for good (the L3VNI bridge without a configured router MAC:
    # its MAC is the router MAC, which must not follow the ports as they come and go).
    pin_address: bool = False

    def __str__(self) -> str:
        mac = f" address {self.address}" if self.address else ""
        pinned = " (its MAC kept)" if self.pin_address and not self.address else ""
        return f"create bridge {self.device} mtu {self.mtu}{mac}{pinned}"


@dataclass(frozen=True, slots=True)
class CreateVxlan(Action):
    spec: VxlanSpec

    def __str__(self) -> str:
        return f"create vxlan {self.device} {self.spec.describe()}"


@dataclass(frozen=True, slots=True)
class DeleteLink(Action):
    kind: str | None
    reason: str

    def __str__(self) -> str:
        return f"delete {self.kind or 'link'} {self.device} ({self.reason})"


@dataclass(frozen=True, slots=True)
class SetLink(Action):
    """In-place changes; names are LinkInfo fields or VxlanAttrs MUTABLE fields."""

    changes: tuple[tuple[str, Any], ...]

    def __str__(self) -> str:
        words = " ".join(f"{_field_name(k)} {_show(k, v)}" for k, v in self.changes)
        return f"set {self.device} {words}"


@dataclass(frozen=True, slots=True)
class SetMaster(Action):
    master: str

    def __str__(self) -> str:
        return f"set {self.device} master {self.master}"


@dataclass(frozen=True, slots=True)
class SetBrport(Action):
    learning: bool
    neigh_suppress: bool

    def __str__(self) -> str:
        return (
            f"set bridge_slave {self.device} learning {_show('', self.learning)} "
            f"neigh_suppress {_show('', self.neigh_suppress)}"
        )


@dataclass(frozen=True, slots=True)
class SetUp(Action):
    def __str__(self) -> str:
        return f"set link {self.device} up"


@dataclass(frozen=True, slots=True)
class AddAddress(Action):
    """An anycast gateway address, marked RTPROT_EVPND (IPv6: nodad)."""

    interface: IPInterface

    def __str__(self) -> str:
        nodad = " nodad" if self.interface.version == 6 else ""
        return f"add address {self.interface} dev {self.device} proto {RTPROT_EVPND}{nodad}"


@dataclass(frozen=True, slots=True)
class DelAddress(Action):
    interface: IPInterface
    reason: str

    def __str__(self) -> str:
        return f"delete address {self.interface} dev {self.device} ({self.reason})"


FORWARDING_SYSCTL = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


@dataclass(frozen=True, slots=True)
class SetForwarding(Action):
    """`device` is the sysctl's name; `on` False only undoes evpnd's own switch."""

    family: int
    on: bool
    reason: str

    def __str__(self) -> str:
        return f"set {self.device} {int(self.on)} ({self.reason})"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something that blocks a VNI (or the whole plan when vni is None)."""

    vni: int | None
    device: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(slots=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # flood: static entries for the FDB writer; links.py does not program them.
    floods: list[FloodEntry] = field(default_factory=list)
    owned: frozenset[str] = frozenset()
    # Where ownership records live; set by links.plan_for, used by links.apply.
    state_dir: Path | None = None

    def lines(self) -> list[str]:
        out = [str(a) for a in self.actions]
        out.extend(f"problem: {p}" for p in self.problems)
        return out

    @property
    def blocked_vnis(self) -> set[int]:
        return {p.vni for p in self.problems if p.vni is not None}


# ---------------------------------------------------------------------------
# Desired state


def underlay_mtu_overhead(config: Config) -> int:
    return OVERHEAD_IPV6 if config.vtep.address.version == 6 else OVERHEAD_IPV4


def desired_vxlan(config: Config, vni: Vni) -> VxlanAttrs:
    opts = vni.vxlan
    ttl: int | str = 0 if opts.ttl is None else opts.ttl
    tos = TOS_INHERIT if opts.tos == "inherit" else (opts.tos or 0)
    ageing = opts.ageing_seconds()
    return VxlanAttrs(
        vni=vni.vni,
        port=opts.dstport,
        local=str(config.vtep.address),
        link=config.vtep.device,
        group=str(vni.group) if vni.flood == "multicast" and vni.group else None,
        ttl=ttl,
        tos=tos,
        learning=opts.learning,
        proxy=opts.proxy,
        rsc=opts.rsc,
        l2miss=opts.l2miss,
        l3miss=opts.l3miss,
        ageing=KERNEL_DEFAULT_AGEING if ageing is None else ageing,
        limit=opts.limit or 0,
        gbp=opts.gbp,
        port_range=opts.port_range or (0, 0),
    )


def desired_brport(vni: Vni) -> BrportAttrs:
    # Bridge learning on the vxlan port follows the vxlan device's data-plane
    # learning: with EVPN (the default, learning off) remote MACs come from BGP
    # as extern_learn entries and the bridge must not learn them from frames.
    return BrportAttrs(learning=vni.vxlan.learning, neigh_suppress=vni.arp_suppression)


def static_floods(config: Config) -> list[FloodEntry]:
    """Flood entries of `flood: static` VNIs, for the FDB writer to program."""
    return sorted(
        FloodEntry(device=vni.vxlan_name, vtep=peer)
        for vni in config.vnis
        if vni.flood == "static"
        for peer in vni.flood_peers
    )


# ---------------------------------------------------------------------------
# Planning


def l3vni_as_vni(config: Config) -> Vni | None:
    """The L3VNI's devices, planned like a VNI's: no ARP suppression, default vxlan options
    but the port."""
    l3 = config.l3vni
    if l3 is None:
        return None
    return Vni(vni=l3.vni, bridge=l3.bridge_name, vxlan_device=l3.vxlan_name, mtu=l3.mtu,
               arp_suppression=False, vxlan=VxlanOptions(dstport=l3.dstport))  # fmt: skip


def device_vnis(config: Config) -> list[Vni]:
    """The VNIs whose devices evpnd plans: the config's, then the L3VNI."""
    l3 = l3vni_as_vni(config)
    return [*config.vnis, *([l3] if l3 is not None else [])]


def forwarding_wanted(config: Config) -> dict[int, str]:
    """Address families routing needs forwarding for, with the reason."""
    wanted: dict[int, str] = {}
    if config.l3vni is not None:
        wanted[4] = f"L3VNI {config.l3vni.vni}"
        if any(p.version == 6 for p in advertised_prefixes(config)):
            wanted[6] = f"L3VNI {config.l3vni.vni}"
    for vni in config.vnis:
        for iface in vni.gateway.addresses if vni.gateway is not None else ():
            wanted.setdefault(iface.version, f"the gateway of VNI {vni.vni}")
    return wanted


def plan(
    config: Config,
    current: Mapping[str, LinkInfo],
    owned: AbstractSet[str],
    *,
    host: Forwarding | None = None,
) -> Plan:
    """Actions that make the kernel match `config`, and the problems that block it.

    `current` maps link names to their state; `owned` names the links evpnd
    created (the only ones it deletes or recreates). With `host` (the daemon's
    plan of the whole host), gateway addresses and IP forwarding too.
    """
    vnis = device_vnis(config)
    wanted = {name for vni in vnis for name in (vni.vxlan_name, vni.bridge_name)}
    leaving = [
        name
        for name in sorted(owned, key=lambda n: (_kind_rank(current.get(n)), n))
        if name in current and name not in wanted and name != config.vtep.device
    ]
    configured = {vni.vni for vni in vnis}
    actions: list[Action] = [
        _removal(current[name], current, owned, configured) for name in leaving
    ]
    problems: list[Problem] = []
    for vni in vnis:
        planner = _VniPlanner(config, vni, current, owned, set(leaving), addresses=host is not None)
        vni_actions, vni_problems = planner.run()
        if vni_problems:
            problems.extend(vni_problems)
        else:
            actions.extend(vni_actions)
    if host is not None:
        actions.extend(_forwarding(config, host))
    return Plan(
        actions=actions,
        problems=problems,
        floods=static_floods(config),
        owned=frozenset(owned),
    )


def _forwarding(config: Config, host: Forwarding) -> list[Action]:
    wanted = forwarding_wanted(config)
    out: list[Action] = []
    for family, sysctl in FORWARDING_SYSCTL.items():
        on = host.on.get(family)
        if on is None:
            continue  # unknown (IPv6 off in this kernel): nothing to do
        if family in wanted and not on:
            out.append(SetForwarding(None, sysctl, family, True, f"routing for {wanted[family]}"))
        elif family not in wanted and on and family in host.ours:
            out.append(SetForwarding(None, sysctl, family, False,
                                     "switched on by evpnd, no longer needed"))  # fmt: skip
    return out


def _kind_rank(link: LinkInfo | None) -> int:
    # Ports before bridges: the log then reads in the order traffic stops.
    return 1 if link is not None and link.kind == "bridge" else 0


def _removal(
    link: LinkInfo,
    current: Mapping[str, LinkInfo],
    owned: AbstractSet[str],
    configured: AbstractSet[int],
) -> DeleteLink:
    vni = alias_vni(link.alias)
    if vni is None:
        why = "no longer in config"
    elif vni in configured:
        why = f"VNI {vni} now uses other devices"
    else:
        why = f"VNI {vni} removed from config"
    ports = sorted(
        other.name
        for other in current.values()
        if other.master == link.name and other.name not in owned
    )
    if link.kind == "bridge" and ports:
        why += f"; releases ports {', '.join(ports)}"
    return DeleteLink(vni=vni, device=link.name, kind=link.kind, reason=f"created by evpnd, {why}")


def _difference(name: str, have: Any, want: Any) -> str:
    return f"{_field_name(name)} is {_show(name, have)}, config wants {_show(name, want)}"


def _mismatch(device: str, name: str, have: Any, want: Any) -> str:
    return f"{device}: {_difference(name, have, want)}"


class _VniPlanner:
    """The actions of one VNI; collects problems instead of raising."""

    def __init__(
        self,
        config: Config,
        vni: Vni,
        current: Mapping[str, LinkInfo],
        owned: AbstractSet[str],
        leaving: set[str],
        *,
        addresses: bool = False,
    ) -> None:
        self.config = config
        self.vni = vni
        self.manage_addresses = addresses
        self.current = current
        self.owned = owned
        self.leaving = leaving
        self.problems: list[Problem] = []
        self.deletes: list[Action] = []
        self.creates: list[Action] = []
        self.changes: list[Action] = []
        self.ups: list[Action] = []

    def problem(self, device: str | None, name: str | None, message: str) -> None:
        self.problems.append(Problem(self.vni.vni, device, name, message))

    def run(self) -> tuple[list[Action], list[Problem]]:
        underlay = self.current.get(self.config.vtep.device)
        if underlay is None:
            self.problem(
                self.config.vtep.device,
                None,
                f"VNI {self.vni.vni}: underlay device {self.config.vtep.device} "
                "(vtep.device) does not exist",
            )
            return [], self.problems
        mtu = self._mtu(underlay)
        self._check_port_sharing()
        bridge_fresh = self._bridge(mtu)
        self._vxlan(mtu, bridge_fresh)
        if self.manage_addresses and not self.vni.adopt_bridge:
            self._addresses(bridge_fresh)
        if self.problems:
            return [], self.problems
        return [*self.deletes, *self.creates, *self.changes, *self.ups], []

    def _is_l3vni(self) -> bool:
        l3 = self.config.l3vni
        return l3 is not None and self.vni.vni == l3.vni and self.vni.bridge_name == l3.bridge_name

    def _bridge_address(self) -> str | None:
        """The MAC the bridge must have: its VNI's gateway MAC, or the L3VNI's router MAC."""
        l3 = self.config.l3vni
        if l3 is not None and self._is_l3vni():
            return l3.router_mac
        gateway = self.vni.gateway
        return None if gateway is None else gateway.mac_for(self.vni.vni)

    def _addresses(self, fresh: bool) -> None:
        name = self.vni.bridge_name
        gateway = self.vni.gateway
        wanted = list(gateway.addresses) if gateway is not None else []
        link = None if fresh else self.current.get(name)
        have = link.addresses if link is not None else ()
        present = {a.interface for a in have}
        for iface in wanted:
            if iface not in present:
                self.changes.append(AddAddress(self.vni.vni, name, iface))
        for address in have:
            if address.proto == RTPROT_EVPND and address.interface not in wanted:
                self.changes.append(DelAddress(
                    self.vni.vni, name, address.interface, "added by evpnd, no longer a gateway"
                ))  # fmt: skip

    def _mtu(self, underlay: LinkInfo) -> int:
        if isinstance(self.vni.mtu, int):
            return self.vni.mtu
        mtu = underlay.mtu - underlay_mtu_overhead(self.config)
        if mtu < KERNEL_MIN_MTU:
            self.problem(
                underlay.name,
                "mtu",
                f"VNI {self.vni.vni}: mtu auto gives {mtu} (underlay {underlay.name} "
                f"mtu {underlay.mtu}), below the minimum {KERNEL_MIN_MTU}",
            )
        return mtu

    def _check_port_sharing(self) -> None:
        # All vxlan devices on one UDP port share one kernel socket, opened
        # with or without GBP: a device that disagrees fails to come up
        # (EADDRINUSE). The gbp side is the odd one out and gets blocked.
        # Two VNIs of one config disagreeing is rejected by config validation;
        # what is left to catch is a foreign device already on the port.
        mine = self.vni.vxlan
        family = self.config.vtep.address.version
        ours = {name for v in device_vnis(self.config) for name in (v.vxlan_name, v.bridge_name)}
        for link in self.current.values():
            o = link.vxlan
            if o is None or not link.up or link.name in ours or link.name in self.leaving:
                continue
            same_family = o.local is None or ip_address(o.local).version == family
            if o.port == mine.dstport and o.gbp != mine.gbp and same_family:
                self.problem(
                    link.name,
                    "gbp",
                    f"VNI {self.vni.vni}: {link.name} uses dstport {o.port} with gbp "
                    f"{_show('gbp', o.gbp)}, config wants gbp {_show('gbp', mine.gbp)} "
                    "on the same port (one kernel socket per port)",
                )
                return

    def _recreate(self, link: LinkInfo, why: str) -> None:
        self.deletes.append(
            DeleteLink(
                self.vni.vni, link.name, link.kind, f"created by evpnd; recreated because {why}"
            )
        )

    # -- bridge ---------------------------------------------------------------

    def _bridge(self, mtu: int) -> bool:
        """Plan the bridge; True when it will be new (so its ports must be re-added)."""
        name = self.vni.bridge_name
        link = self.current.get(name)
        if self.vni.adopt_bridge:
            # An adopted bridge belongs to someone else (Docker): evpnd only
            # plugs its vxlan device in and leaves MTU and state alone.
            if link is None:
                self.problem(
                    name,
                    None,
                    f"VNI {self.vni.vni}: adopt_bridge is set but bridge {name} does not exist",
                )
            elif link.kind != "bridge":
                self.problem(name, "kind", _mismatch(name, "kind", link.kind, "bridge"))
            return False
        if link is not None and link.kind != "bridge":
            if name not in self.owned:
                self.problem(name, "kind", _mismatch(name, "kind", link.kind, "bridge"))
                return False
            self._recreate(link, _difference("kind", link.kind, "bridge"))
            link = None
        address = self._bridge_address()
        if link is None:
            pin = self._is_l3vni() and address is None
            self.creates.append(CreateBridge(self.vni.vni, name, mtu, address, pin))
            self.ups.append(SetUp(self.vni.vni, name))
            return True
        if link.mtu != mtu:
            self.changes.append(SetLink(self.vni.vni, name, (("mtu", mtu),)))
        if address is not None and (link.address or "").lower() != address:
            self.changes.append(SetLink(self.vni.vni, name, (("address", address),)))
        if not link.up:
            self.ups.append(SetUp(self.vni.vni, name))
        return False

    # -- vxlan ----------------------------------------------------------------

    def _vxlan(self, mtu: int, bridge_fresh: bool) -> None:
        name = self.vni.vxlan_name
        want = desired_vxlan(self.config, self.vni)
        spec = VxlanSpec(
            attrs=want,
            mtu=mtu,
            txqlen=self.vni.vxlan.txqueuelen,
            address=self.vni.vxlan.mac,
        )
        link = self.current.get(name)
        owned = name in self.owned
        if link is not None and (link.kind != "vxlan" or link.vxlan is None):
            if not owned:
                self.problem(name, "kind", _mismatch(name, "kind", link.kind, "vxlan"))
                return
            self._recreate(link, _difference("kind", link.kind, "vxlan"))
            link = None
        if link is not None:
            assert link.vxlan is not None
            fixed = _fixed_mismatches(link.vxlan, want)
            if fixed and not owned:
                for attr, have, wanted in fixed:
                    self.problem(name, _field_name(attr), _mismatch(name, attr, have, wanted))
                return
            if fixed:
                self._recreate(link, "; ".join(_difference(*m) for m in fixed))
                link = None
        if link is None:
            self._check_vni_free(name, want)
            self.creates.append(CreateVxlan(self.vni.vni, name, spec))
            self._attach(name, None, None, rejoin=True)
            self.ups.append(SetUp(self.vni.vni, name))
            return
        self._tune(link, spec)
        # A recreated bridge dropped its ports: the dump still shows the old one.
        self._attach(name, link.master, link.brport, rejoin=bridge_fresh)
        if not link.up:
            self.ups.append(SetUp(self.vni.vni, name))

    def _check_vni_free(self, name: str, want: VxlanAttrs) -> None:
        # The kernel allows one device per (VNI, dstport) in a namespace; tell
        # which one holds it instead of letting the create fail with EEXIST.
        for other in self.current.values():
            if other.name == name or other.vxlan is None or other.name in self.leaving:
                continue
            o = other.vxlan
            same_family = o.local is None or _family(o.local) == _family(want.local)
            if (o.vni, o.port, o.gbp) == (want.vni, want.port, want.gbp) and same_family:
                self.problem(
                    other.name,
                    "id",
                    f"VNI {self.vni.vni}: {other.name} already carries id {o.vni} dstport "
                    f"{o.port}; the kernel allows one device per VNI and port",
                )

    def _tune(self, link: LinkInfo, spec: VxlanSpec) -> None:
        assert link.vxlan is not None
        changes: list[tuple[str, Any]] = []
        if link.mtu != spec.mtu:
            changes.append(("mtu", spec.mtu))
        if spec.txqlen is not None and link.txqlen != spec.txqlen:
            changes.append(("txqlen", spec.txqlen))
        if spec.address is not None and (link.address or "").lower() != spec.address:
            changes.append(("address", spec.address))
        if link.addrgenmode is not None and link.addrgenmode != ADDRGENMODE_NONE:
            changes.append(("addrgenmode", ADDRGENMODE_NONE))
        for attr in MUTABLE:
            wanted = getattr(spec.attrs, attr)
            if getattr(link.vxlan, attr) != wanted:
                changes.append((attr, wanted))
        if changes:
            self.changes.append(SetLink(self.vni.vni, link.name, tuple(changes)))

    def _attach(
        self, name: str, master: str | None, brport: BrportAttrs | None, rejoin: bool
    ) -> None:
        bridge = self.vni.bridge_name
        if rejoin or master != bridge:
            self.changes.append(SetMaster(self.vni.vni, name, bridge))
            brport = None  # a new port starts with the bridge's defaults
        want = desired_brport(self.vni)
        if brport != want:
            self.changes.append(SetBrport(self.vni.vni, name, want.learning, want.neigh_suppress))


def _fixed_mismatches(have: VxlanAttrs, want: VxlanAttrs) -> list[tuple[str, Any, Any]]:
    """Differences the kernel cannot change in place (identity and immutable fields)."""
    out: list[tuple[str, Any, Any]] = []
    for f in fields(VxlanAttrs):
        attr = f.name
        old, new = getattr(have, attr), getattr(want, attr)
        if old == new:
            continue
        if attr in ("local", "group") and _same_ip(old, new):
            continue
        # ttl inherit is a flag the kernel only takes at creation time.
        if attr in IDENTITY or attr in IMMUTABLE or (attr == "ttl" and "inherit" in (old, new)):
            out.append((attr, old, new))
    return out


def _family(address: str | None) -> int | None:
    return ip_address(address).version if address else None


def _same_ip(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return ip_address(a) == ip_address(b)
