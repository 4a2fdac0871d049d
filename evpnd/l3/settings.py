"""The config sections of routing between segments: `l3vni:` and a VNI's `gateway:`.

Standalone on purpose, like `evpnd.metrics.settings`: `evpnd/config.py`
imports these models, so this module must not import `evpnd.config` (the
functions at the end take the config as a duck-typed value). Same
conventions: unknown keys are errors, models are frozen, every error names
its field and value. Documented in `config/evpnd.example.yaml` and the
README ("Routing between segments").

* `l3vni:` the L3VNI of symmetric IRB (RFC 9135) in the default VRF (this
  kernel has no VRF): one bridge and one vxlan device, the router MAC other
  VTEPs send routed traffic to, the route targets of the routing table, and
  the prefixes announced as Type-5 routes (RFC 9136).
* a VNI's `gateway:` the distributed anycast gateway: the same addresses and
  the same MAC on that VNI's bridge on every host, so an endpoint's default
  gateway is always its own host, wherever it moves.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
    ip_interface,
    ip_network,
)
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evpnd import validate
from evpnd.targets import RouteTargets

IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network
CONNECTED = "connected"  # `advertise:` word for the gateway subnets of the L2 VNIs
DEFAULT_DSTPORT = 4789


def anycast_mac(vni: int) -> str:
    """The default gateway MAC of a VNI: 02:ed:<VNI, 3 bytes>:01, the same on every host.

    The Docker driver's `gateway=local` MAC is the same function of the VNI
    (evpnd/docker/driver.py `gateway_mac`), so a configured gateway and a
    Docker network's agree by default.
    """
    return "02:ed:" + ":".join(f"{(vni >> s) & 0xFF:02x}" for s in (16, 8, 0)) + ":01"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _gateway_interface(value: Any) -> IPInterface:
    """`10.100.0.1/24`: a unicast host address of its subnet, with its prefix length."""
    text = str(value) if isinstance(value, IPv4Interface | IPv6Interface) else value
    if not isinstance(text, str) or "/" not in text or "%" in text:
        raise ValueError(f"{value!r} is not an address with a prefix length (10.100.0.1/24)")
    try:
        iface = ip_interface(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an address with a prefix length") from None
    validate.endpoint_ip(iface.ip)
    net = iface.network
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address):
        what = "network" if iface.ip == net.network_address else "broadcast"
        raise ValueError(f"{text!r} is the {what} address of {net}, not a host address")
    return iface


class AnycastGateway(_Strict):
    """A VNI's distributed gateway: these addresses and this MAC on its bridge, on every host."""

    addresses: list[IPInterface] = Field(min_length=1)
    # None: anycast_mac(VNI). Must be the same on every host of the VNI.
    mac: str | None = None

    @field_validator("addresses", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value  # pydantic says "must be a list"
        found = [_gateway_interface(item) for item in value]
        seen: set[IPv4Address | IPv6Address] = set()
        for iface in found:
            if iface.ip in seen:
                raise ValueError(f"{iface} is listed twice")
            seen.add(iface.ip)
        return found

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return None if value is None else validate.unicast_mac(value)

    def mac_for(self, vni: int) -> str:
        return self.mac or anycast_mac(vni)

    @property
    def subnets(self) -> tuple[IPNetwork, ...]:
        return tuple(dict.fromkeys(iface.network for iface in self.addresses))


class L3Vni(_Strict):
    """The L3VNI: routed traffic between hosts crosses it (symmetric IRB, RFC 9135)."""

    vni: int = Field(ge=1, le=validate.VNI_MAX)
    bridge: str | None = None  # default br<VNI>; its MAC is the router MAC by default
    vxlan_device: str | None = None  # default vxlan<VNI>
    # The MAC other VTEPs send routed packets to (RFC 9135 router's MAC extended
    # community); None: the L3VNI bridge's own MAC, read from the kernel.
    router_mac: str | None = None
    rd: str = "auto"  # auto: <router_id>:<L3VNI> (a free index when the L3VNI > 65535)
    route_targets: RouteTargets = Field(default_factory=RouteTargets)
    # Type-5 routes we announce: prefixes, and `connected` for every gateway subnet.
    advertise: list[str] = Field(default_factory=lambda: [CONNECTED])
    mtu: int | Literal["auto"] = "auto"
    dstport: int = Field(default=DEFAULT_DSTPORT, ge=1, le=65535)

    @field_validator("vni", mode="before")
    @classmethod
    def _vni_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value

    @field_validator("bridge", "vxlan_device")
    @classmethod
    def _ifname(cls, value: str | None) -> str | None:
        return None if value is None else validate.interface_name(value)

    @field_validator("router_mac")
    @classmethod
    def _router_mac(cls, value: str | None) -> str | None:
        return None if value is None else validate.unicast_mac(value)

    @field_validator("rd")
    @classmethod
    def _rd(cls, value: str) -> str:
        return validate.route_distinguisher_setting(value, "<router_id>:<L3VNI>")

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for item in value:
            if item == CONNECTED:
                word = item
            else:
                try:
                    word = str(ip_network(item, strict=True))
                except (ValueError, TypeError):
                    raise ValueError(
                        f"{item!r} is neither a prefix (10.50.0.0/24, host bits zero) "
                        f"nor '{CONNECTED}'"
                    ) from None
            if word in out:
                raise ValueError(f"{item!r} is listed twice")
            out.append(word)
        return out

    @field_validator("mtu")
    @classmethod
    def _mtu(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 68 <= value <= 65535:
            raise ValueError("must be 'auto' or 68..65535")
        return value

    @model_validator(mode="after")
    def _devices(self) -> L3Vni:
        if self.bridge_name == self.vxlan_name:
            raise ValueError(f"bridge and vxlan_device are both {self.bridge_name!r}")
        return self

    @property
    def bridge_name(self) -> str:
        return self.bridge or f"br{self.vni}"[: validate.IFNAMSIZ]

    @property
    def vxlan_name(self) -> str:
        return self.vxlan_device or f"vxlan{self.vni}"[: validate.IFNAMSIZ]

    @property
    def connected(self) -> bool:
        return CONNECTED in self.advertise

    @property
    def prefixes(self) -> tuple[IPNetwork, ...]:
        return tuple(ip_network(item) for item in self.advertise if item != CONNECTED)


# ---------------------------------------------------------------------------
# What the rest of evpnd derives from the config (duck-typed `cfg`: evpnd.config.Config)


def _auto_target(cfg: Any, number: int, *, importing: bool = False) -> str:
    # The one derivation of `auto` (evpnd/rib.py), as for the VNIs: <ASN>:<L3VNI> by
    # default, as FRR derives an L3VNI's route targets.
    from evpnd.rib import auto_route_target

    auto = cfg.bgp.auto_route_targets
    return auto_route_target(cfg.asn, number, auto.format,
                             any_asn=importing and auto.import_any_asn)  # fmt: skip


def import_targets(cfg: Any) -> list[str]:
    l3 = cfg.l3vni
    return [_auto_target(cfg, l3.vni, importing=True) if t == "auto" else t
            for t in l3.route_targets.import_]  # fmt: skip


def export_targets(cfg: Any) -> list[str]:
    l3 = cfg.l3vni
    return [_auto_target(cfg, l3.vni) if t == "auto" else t for t in l3.route_targets.export]


def route_distinguisher(cfg: Any) -> str:
    """`<router_id>:<L3VNI>`, or for an L3VNI above 65535 the lowest index no L2 VNI's RD
    uses (config.rd_index gives those)."""
    l3 = cfg.l3vni
    if l3.rd != "auto":
        return str(l3.rd)
    if l3.vni <= 65535:
        return f"{cfg.router_id}:{l3.vni}"
    taken = {cfg.rd_index(v) for v in cfg.vnis}
    index = 1
    while index in taken:
        index += 1
    return f"{cfg.router_id}:{index}"


def gateway_subnets(vnis: Iterable[Any]) -> list[IPNetwork]:
    """Every gateway subnet of the L2 VNIs, in config order."""
    out: dict[IPNetwork, None] = {}
    for vni in vnis:
        if vni.gateway is not None:
            out.update(dict.fromkeys(vni.gateway.subnets))
    return list(out)


def advertised_prefixes(cfg: Any) -> list[IPNetwork]:
    """The prefixes announced as Type-5: explicit ones, then (`connected`) the gateway
    subnets; each once."""
    l3 = cfg.l3vni
    if l3 is None:
        return []
    out: dict[IPNetwork, None] = dict.fromkeys(l3.prefixes)
    if l3.connected:
        out.update(dict.fromkeys(gateway_subnets(cfg.vnis)))
    return list(out)


def gateway_problems(vnis: list[Any], vtep: IPv4Address | IPv6Address | None) -> list[str]:
    """Rules between the VNIs' gateways (and the VTEP address): paths are under `vnis`."""
    problems: list[str] = []
    for index, vni in enumerate(vnis):
        gateway = vni.gateway
        if gateway is None:
            continue
        if vni.adopt_bridge:
            problems.append(
                f"vnis.{index}.gateway: VNI {vni.vni} adopts bridge {vni.bridge_name!r}; "
                "a gateway needs a bridge evpnd creates (adopt_bridge: false)"
            )
        for n, iface in enumerate(gateway.addresses):
            if vtep is not None and vtep in iface.network:
                problems.append(
                    f"vnis.{index}.gateway.addresses.{n}: {iface} contains vtep.address {vtep}"
                )
            for other_index, other in enumerate(vnis[:index]):
                if other.gateway is None:
                    continue
                for theirs in other.gateway.addresses:
                    if iface.version == theirs.version and iface.network.overlaps(theirs.network):
                        problems.append(
                            f"vnis.{index}.gateway.addresses.{n}: {iface} overlaps "
                            f"{theirs} of VNI {other.vni} (vnis.{other_index})"
                        )
    return problems


def l3vni_problems(
    l3: L3Vni, vnis: list[Any], vtep: IPv4Address | IPv6Address | None
) -> list[str]:
    """Rules between `l3vni:` and the VNIs (and the VTEP address)."""
    problems: list[str] = []
    for index, vni in enumerate(vnis):
        if vni.vni == l3.vni:
            problems.append(f"l3vni.vni: {l3.vni} is also an L2 VNI (vnis.{index})")
        for field, name in (("bridge", l3.bridge_name), ("vxlan_device", l3.vxlan_name)):
            if name in (vni.bridge_name, vni.vxlan_name):
                problems.append(
                    f"l3vni.{field}: {name!r} is a device of VNI {vni.vni} (vnis.{index})"
                )
        if l3.rd != "auto" and vni.rd == l3.rd:
            problems.append(f"l3vni.rd: {l3.rd} is also the RD of VNI {vni.vni} (vnis.{index})")
    for prefix in l3.prefixes:
        if vtep is not None and prefix.version == vtep.version and vtep in prefix:
            problems.append(
                f"l3vni.advertise: {prefix} contains vtep.address {vtep} (peers would "
                "send the tunnel's own packets into the tunnel)"
            )
    return problems
