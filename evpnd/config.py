"""The one YAML config file, validated with pydantic.

Every field is documented in `config/evpnd.example.yaml`. Validation collects
*all* errors (pydantic does) and reports each with its field path, the
offending value and, when the file came from YAML, the line it sits on.
Nothing here touches the kernel: a config that does not validate never
reaches the dataplane.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from evpnd import validate, yaml12
from evpnd.control.settings import ControlConfig
from evpnd.docker.settings import DockerConfig
from evpnd.l3.settings import AnycastGateway, L3Vni, gateway_problems, l3vni_problems
from evpnd.metrics.settings import MetricsConfig
from evpnd.model import IPAddress
from evpnd.mqtt.settings import MqttConfig
from evpnd.rib import auto_route_target
from evpnd.targets import RouteTargets

IFNAMSIZ = validate.IFNAMSIZ  # the kernel's limit on interface names, without the NUL
VNI_MAX = validate.VNI_MAX
NOAGE_SECONDS = 2_147_483  # the kernel's maximum vxlan ageing (INT_MAX / HZ at HZ=1000)
# Fields whose values never appear in an error report, a log or a repr: any
# field (or unknown key, a misspelt secret is still a secret) whose name has these.
_SECRET_NAME = re.compile(r"pa?s{1,2}w|pwd|secret", re.IGNORECASE)
REDACTED = "***"


def _check_ifname(value: str) -> str:
    # The same rule for every interface name evpnd is given (evpnd/validate.py).
    try:
        return validate.interface_name(value)
    except ValueError:
        raise ValueError(
            f"not a valid interface name (1-{IFNAMSIZ} printable ASCII characters, "
            "no spaces, '/' or ':')"
        ) from None


IfName = Annotated[str, Field(min_length=1, max_length=IFNAMSIZ)]


class Strict(BaseModel):
    # Unknown keys are typos an operator wants to hear about, not silently drop.
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Problem:
    """One rule between fields broken: where (relative to the model that checks it), the
    offending value, and why."""

    loc: tuple[str | int, ...]
    value: Any
    message: str


class CrossFieldError(ValueError):
    """Raised by a model validator with every problem it found; the error report gives
    each its own path, value and line (see `_issues`) instead of the whole section."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def _raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise CrossFieldError(problems)


def _check_vtep(value: IPAddress) -> IPAddress:
    # Loopback is allowed for single-host setups (and tests); received routes refuse it.
    return validate.usable_vtep(value, allow_loopback=True)


class Vtep(Strict):
    address: IPAddress
    device: IfName

    _ifname = field_validator("device")(_check_ifname)
    _address = field_validator("address")(_check_vtep)


# Routes one peer may make us hold by default (README "Route limits" says why).
DEFAULT_MAX_ROUTES = 500_000


class Peer(Strict):
    address: IPAddress
    remote_asn: int = Field(ge=1, le=4_294_967_295)
    description: str | None = None
    # Never shown: repr, error reports and logs print *** (see ConfigIssue).
    md5_password: str | None = Field(default=None, min_length=1, max_length=80, repr=False)
    # GTSM (RFC 5082): the number of hops the peer may be away; 1 = directly connected.
    ttl_security: int | None = Field(default=None, ge=1, le=254)
    # eBGP only: the TTL our packets to the peer leave with, for a peer that is not
    # directly connected (a loopback, a route server). Unset, eBGP sends with TTL 1,
    # as FRR and most routers do; iBGP keeps the kernel's default.
    ebgp_multihop: int | None = Field(default=None, ge=1, le=255)
    hold_time: int = Field(default=90)
    passive: bool = False
    local_address: IPAddress | None = None
    # Route limit (README "Route limits"): at most this many routes held from the
    # peer, 0 = none; a warning at max_routes_warning percent of it; past it
    # `teardown` closes the session (Cease/1, RFC 4486) for max_routes_restart
    # seconds, `warning` only logs. Either way routes past the limit are refused.
    max_routes: int = Field(default=DEFAULT_MAX_ROUTES, ge=0, le=4_294_967_295)
    max_routes_warning: int = Field(default=75, ge=1, le=100)
    max_routes_action: Literal["teardown", "warning"] = "teardown"
    max_routes_restart: int = Field(default=300, ge=1, le=86_400)

    @field_validator("md5_password", "description")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        # ExaBGP's config parser cannot carry a quote or a line break in a value.
        if value is not None and any(c in value for c in "\"'\n\r"):
            raise ValueError("must not contain quotes or line breaks")
        if value is not None and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("md5_password")
    @classmethod
    def _md5_ascii(cls, value: str | None) -> str | None:
        # ExaBGP hands the key to the kernel as ASCII bytes (at most 80 of them).
        return None if value is None else validate.printable_ascii(value, "md5_password")

    @field_validator("hold_time")
    @classmethod
    def _hold_time(cls, value: int) -> int:
        # RFC 4271 4.2: zero (no keepalives) or at least three seconds.
        if value != 0 and not 3 <= value <= 65535:
            raise ValueError("must be 0 or between 3 and 65535 seconds")
        return value


class Dad(Strict):
    """Duplicate-address detection (RFC 7432 15.1), FRR's defaults: 5 moves in 180 s."""

    enabled: bool = True
    max_moves: int = Field(default=5, ge=2, le=1000)
    window: int = Field(default=180, ge=2, le=1800)  # seconds
    # false: report only; seconds (30..3600, as FRR takes): stop advertising the
    # MAC and accepting moves for it that long; "permanent": until `evpnd clear`.
    freeze: Literal[False, "permanent"] | int = False

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, value: Any) -> Any:
        wanted = "must be false, a number of seconds (30 to 3600) or 'permanent'"
        if value is False or value == "permanent":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 30 <= value <= 3600:
            return value
        raise ValueError(wanted)


class AutoRouteTargets(Strict):
    """How a VNI's `auto` route target is derived (README "Fabrics and interoperability").

    format: `asn-vni` is FRR's default, <ASN>:<VNI>; `rfc8365` is RFC 8365 5.1.2.1's
    (the VNI with the VXLAN type bits, FRR's `autort rfc8365-compatible`); either way a
    4-byte ASN contributes its low 16 bits. import_any_asn: `auto` in an import list
    matches the same number under any ASN (`*:NN`), so hosts that each have their own
    ASN (eBGP to a top-of-rack switch) share VNIs; exports keep our ASN. On by default:
    FRR's automatic import target ignores the ASN the same way (bgp_evpn.c,
    map_vni_to_rt: "to facilitate using VNI as the RT for EBGP peering").
    """

    format: Literal["asn-vni", "rfc8365"] = "asn-vni"
    import_any_asn: bool = True


class Bgp(Strict):
    peers: list[Peer] = Field(default_factory=list)
    auto_route_targets: AutoRouteTargets = Field(default_factory=AutoRouteTargets)
    # Seconds a peer may take to come back before its routes are dropped.
    graceful_restart: int = Field(default=120, ge=0, le=4095)
    # Seconds ExaBGP waits for the next daemon after a SIGTERM (hand-over).
    restart_hold: int = Field(default=120, ge=0, le=3600)
    # Seconds to wait for every peer's full table (End-of-RIB, or EoRR after a
    # route refresh) before removing entries no route asks for.
    eor_timeout: int = Field(default=60, ge=1, le=3600)
    receive: Literal["raw", "json"] = Field(
        default="raw",
        description=(
            "How ExaBGP hands received EVPN UPDATEs to evpnd. raw: an UPDATE carrying only "
            "L2VPN/EVPN goes over undecoded as an `=evpn <peer> <base64 body>...` frame line "
            "(ExaBGP neither parses it nor keeps it in its adj-RIB-in: about 80 times less "
            "ExaBGP CPU per UPDATE); json: ExaBGP parses every UPDATE and sends its JSON. "
            "State changes, notifications, route refresh and non-EVPN UPDATEs are JSON "
            "either way."
        ),
    )
    # Bytes of received BGP output held for evpnd while it is busy (in the relay
    # between ExaBGP and evpnd, and as much again in evpnd's own queue). Past it,
    # received UPDATEs are dropped, counted, and their peers asked for a route
    # refresh: memory stays bounded and ExaBGP is never blocked.
    receive_buffer: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024, le=4 * 1024**3)

    @model_validator(mode="after")
    def _unique_peers(self) -> Bgp:
        seen: dict[IPAddress, int] = {}
        problems: list[Problem] = []
        for index, peer in enumerate(self.peers):
            if peer.address in seen:
                problems.append(Problem(
                    ("peers", index, "address"), str(peer.address),
                    f"peer {peer.address} is listed twice (also bgp.peers.{seen[peer.address]})",
                ))  # fmt: skip
            seen.setdefault(peer.address, index)
        _raise_problems(problems)
        return self


class VxlanOptions(Strict):
    """The `ip link add ... type vxlan` options, named as iproute2 names them."""

    dstport: int = Field(default=4789, ge=1, le=65535)
    ttl: int | Literal["inherit"] | None = None
    tos: int | Literal["inherit"] | None = None
    learning: bool = False
    proxy: bool = False
    rsc: bool = False
    l2miss: bool = False
    l3miss: bool = False
    ageing: int | None = Field(default=None, ge=1, le=NOAGE_SECONDS)
    noage: bool = False
    limit: int | None = Field(default=None, ge=0, le=4_294_967_295)  # "maxaddress"
    gbp: bool = False
    port_range: tuple[int, int] | None = None
    mac: str | None = None
    txqueuelen: int | None = Field(default=None, ge=0, le=4_294_967_295)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 255:
            raise ValueError("must be 1..255 or 'inherit'")
        return value

    @field_validator("tos")
    @classmethod
    def _tos(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 0 <= value <= 255:
            raise ValueError("must be 0..255 or 'inherit'")
        return value

    @field_validator("port_range")
    @classmethod
    def _port_range(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None:
            low, high = value
            if not (1 <= low <= high <= 65535):
                raise ValueError("must be [low, high] with 1 <= low <= high <= 65535")
        return value

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        return None if value is None else validate.unicast_mac(value)

    @model_validator(mode="after")
    def _ageing(self) -> VxlanOptions:
        if self.noage and self.ageing is not None:
            _raise_problems([Problem(("ageing",), self.ageing,
                                     "set either 'ageing' or 'noage', not both")])
        return self

    def ageing_seconds(self) -> int | None:
        """The IFLA_VXLAN_AGEING value to program (None = kernel default).

        The kernel turns an ageing of 0 back into its 300 s default, so "never
        age" is the longest interval the kernel accepts.
        """
        return NOAGE_SECONDS if self.noage else self.ageing


RouteTarget = str  # "ASN:NN" or "A.B.C.D:NN"; "auto" = <asn>:<vni>


FloodMode = Literal["evpn", "multicast", "static"]
# One static flood peer; checked one by one, so an error names the bad address.
FloodPeer = Annotated[
    IPAddress, AfterValidator(lambda peer: validate.usable_vtep(peer, allow_loopback=True))
]


class Vni(Strict):
    vni: int = Field(ge=1, le=VNI_MAX)
    # The bridge evpnd creates, or with adopt_bridge an existing one (a Docker
    # br-...) that evpnd only attaches its vxlan device to and never deletes.
    bridge: IfName | None = None
    adopt_bridge: bool = False
    vxlan_device: IfName | None = None
    mtu: int | Literal["auto"] = "auto"
    arp_suppression: bool = True
    # RFC 8365 5.1.3: a received route's label is its VNI, and a route whose label
    # names another VNI is refused (counted). true: import by route target alone (a
    # peer that puts something else in the label); frames still leave with this VNI.
    accept_label_mismatch: bool = False
    rd: str = "auto"
    route_targets: RouteTargets = Field(default_factory=RouteTargets)
    vxlan: VxlanOptions = Field(default_factory=VxlanOptions)
    # How BUM traffic is flooded: evpn = head-end replication to the VTEPs
    # learned from Type-3 routes; the two others work without BGP.
    flood: FloodMode = "evpn"
    group: IPAddress | None = None
    flood_peers: list[FloodPeer] = Field(default_factory=list)
    # The distributed anycast gateway on the bridge (README "Routing between segments").
    gateway: AnycastGateway | None = None

    _ifnames = field_validator("bridge", "vxlan_device")(
        lambda v: None if v is None else _check_ifname(v)
    )

    @field_validator("mtu")
    @classmethod
    def _mtu(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 68 <= value <= 65535:
            raise ValueError("must be 'auto' or 68..65535")
        return value

    @field_validator("rd")
    @classmethod
    def _rd(cls, value: str) -> str:
        return validate.route_distinguisher_setting(value, "<router_id>:<VNI>")

    @field_validator("vni", mode="before")
    @classmethod
    def _vni_not_bool(cls, value: Any) -> Any:
        # YAML reads `yes`/`true` as a boolean, which pydantic would take as VNI 1.
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value

    @model_validator(mode="after")
    def _flood_mode(self) -> Vni:
        problems: list[Problem] = []
        if self.flood == "multicast":
            if self.group is None:
                problems.append(Problem(("flood",), self.flood,
                                        "flood: multicast needs 'group' (a multicast address)"))
            elif not self.group.is_multicast:
                problems.append(Problem(("group",), str(self.group),
                                        f"group {self.group} is not a multicast address"))
        elif self.group is not None:
            problems.append(Problem(("group",), str(self.group),
                                    "'group' is only used with flood: multicast"))
        if self.flood == "static" and not self.flood_peers:
            problems.append(Problem(
                ("flood",), self.flood,
                "flood: static needs 'flood_peers' (the remote VTEP addresses)"))
        if self.flood != "static" and self.flood_peers:
            problems.append(Problem(("flood_peers",), [str(p) for p in self.flood_peers],
                                    "'flood_peers' is only used with flood: static"))
        if self.adopt_bridge and not self.bridge:
            problems.append(Problem(
                ("adopt_bridge",), True,
                "adopt_bridge needs 'bridge' (the name of the bridge to adopt)"))
        _raise_problems(problems)
        return self

    @property
    def bridge_name(self) -> str:
        return self.bridge or f"br{self.vni}"[:IFNAMSIZ]

    @property
    def vxlan_name(self) -> str:
        return self.vxlan_device or f"vxlan{self.vni}"[:IFNAMSIZ]


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(Strict):
    router_id: IPv4Address
    asn: int = Field(ge=1, le=4_294_967_295)
    vtep: Vtep
    bgp: Bgp = Field(default_factory=Bgp)
    vnis: list[Vni] = Field(default_factory=list)
    state_dir: Path = Path("/run/evpnd")
    logging: Logging = Field(default_factory=Logging)
    control: ControlConfig = Field(default_factory=ControlConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    mqtt: MqttConfig | None = None  # None: no MQTT at all
    dad: Dad = Field(default_factory=Dad)  # duplicate MACs (README "Duplicate MACs")
    # The Docker network driver; its networks' VNIs join these (checks in evpnd/docker/driver.py).
    docker: DockerConfig = Field(default_factory=DockerConfig)
    # Routing between segments: the L3VNI and the Type-5 prefixes (evpnd/l3/settings.py).
    l3vni: L3Vni | None = None

    @field_validator("router_id", mode="before")
    @classmethod
    def _router_id(cls, value: Any) -> IPv4Address:
        return validate.router_id(value)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: Path) -> Path:
        # A relative path would depend on the directory evpnd was started from.
        if not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @field_validator("vnis")
    @classmethod
    def _gateways(cls, vnis: list[Vni], info: ValidationInfo) -> list[Vni]:
        # Anycast gateways against each other and the VTEP (evpnd/l3/settings.py).
        vtep = info.data.get("vtep")
        problems = gateway_problems(vnis, None if vtep is None else vtep.address)
        if problems:
            raise ValueError("; ".join(problems))
        return vnis

    @field_validator("l3vni")
    @classmethod
    def _l3vni(cls, l3vni: L3Vni | None, info: ValidationInfo) -> L3Vni | None:
        # The L3VNI against the VNIs and the VTEP (evpnd/l3/settings.py).
        vtep = info.data.get("vtep")
        if l3vni is not None:
            problems = l3vni_problems(l3vni, info.data.get("vnis") or [],
                                      None if vtep is None else vtep.address)  # fmt: skip
            if problems:
                raise ValueError("; ".join(problems))
        return l3vni

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        # Each problem points at the later of the two items that clash (its path, value
        # and line in the error report) and names the earlier one.
        problems: list[Problem] = []
        first_vni: dict[int, int] = {}  # VNI -> index of its first item
        seen_dev: dict[str, tuple[int, int]] = {}  # device -> (VNI, index)
        gbp_by_port: dict[int, tuple[bool, int]] = {}
        for i, vni in enumerate(self.vnis):
            # The kernel refuses to bring up a gbp and a non-gbp device on one port.
            port = vni.vxlan.dstport
            if port in gbp_by_port and gbp_by_port[port][0] != vni.vxlan.gbp:
                problems.append(Problem(
                    ("vnis", i, "vxlan", "gbp"), vni.vxlan.gbp,
                    f"VNI {vni.vni} and VNI {gbp_by_port[port][1]} share dstport {port} "
                    "but differ in gbp",
                ))  # fmt: skip
            gbp_by_port.setdefault(port, (vni.vxlan.gbp, vni.vni))
            if vni.group is not None and vni.group.version != self.vtep.address.version:
                problems.append(Problem(
                    ("vnis", i, "group"), str(vni.group),
                    f"VNI {vni.vni}: group {vni.group} and vtep.address "
                    f"{self.vtep.address} are of different address families",
                ))  # fmt: skip
            if vni.vni in first_vni:
                problems.append(Problem(
                    ("vnis", i, "vni"), vni.vni,
                    f"VNI {vni.vni} is listed twice (also vnis.{first_vni[vni.vni]})",
                ))  # fmt: skip
            first_vni.setdefault(vni.vni, i)
            for field, name in (("bridge", vni.bridge_name), ("vxlan_device", vni.vxlan_name)):
                other = seen_dev.get(name)
                if other is not None and other[0] != vni.vni:
                    problems.append(Problem(
                        ("vnis", i, field), name,
                        f"device {name!r} is used by VNI {other[0]} (vnis.{other[1]}) "
                        f"and VNI {vni.vni}",
                    ))  # fmt: skip
                seen_dev[name] = (vni.vni, i)
            if vni.vxlan_name == vni.bridge_name:
                problems.append(Problem(
                    ("vnis", i, "vxlan_device"), vni.vxlan_name,
                    f"VNI {vni.vni}: bridge and vxlan device are both {vni.bridge_name!r}",
                ))  # fmt: skip
        for i, peer in enumerate(self.bgp.peers):
            if peer.ebgp_multihop is not None and peer.remote_asn == self.asn:
                problems.append(Problem(
                    ("bgp", "peers", i, "ebgp_multihop"), peer.ebgp_multihop,
                    f"peer {peer.address}: ebgp_multihop is for eBGP peers "
                    f"(remote_asn {peer.remote_asn} is our own ASN)",
                ))  # fmt: skip
            if peer.ebgp_multihop is not None and peer.ttl_security is not None:
                problems.append(Problem(
                    ("bgp", "peers", i, "ebgp_multihop"), peer.ebgp_multihop,
                    f"peer {peer.address}: set ebgp_multihop or ttl_security, not both "
                    "(GTSM sends with TTL 255)",
                ))  # fmt: skip
            if peer.address.version != self.vtep.address.version and peer.local_address is None:
                problems.append(Problem(
                    ("bgp", "peers", i, "address"), str(peer.address),
                    f"peer {peer.address}: address family differs from vtep.address; "
                    "set local_address",
                ))  # fmt: skip
        _raise_problems(problems)
        return self

    # Derived values: one place, so BGP, the dataplane and `show` agree.

    def rd_for(self, vni: Vni) -> str:
        if vni.rd != "auto":
            return vni.rd
        return f"{self.router_id}:{self.rd_index(vni)}"

    def rd_index(self, vni: Vni) -> int:
        """Stable per-VNI RD number: the VNI itself when it fits in 16 bits.

        Larger VNIs take the lowest number no other VNI of this config uses, so
        the RD does not change when unrelated VNIs are added or reordered.
        """
        if vni.vni <= 65535:
            return vni.vni
        taken = {v.vni for v in self.vnis if v.vni <= 65535}
        large = sorted(v.vni for v in self.vnis if v.vni > 65535)
        index = 0
        for big in large:
            index += 1
            while index in taken:
                index += 1
            if big == vni.vni:
                return index
        raise ValueError(f"VNI {vni.vni} is not in this config")

    def import_targets(self, vni: Vni) -> list[str]:
        return [self._expand_rt(rt, vni, importing=True) for rt in vni.route_targets.import_]

    def export_targets(self, vni: Vni) -> list[str]:
        return [self._expand_rt(rt, vni) for rt in vni.route_targets.export]

    def _expand_rt(self, rt: str, vni: Vni, *, importing: bool = False) -> str:
        # The one derivation of `auto` (evpnd/rib.py), as FRR does it.
        if rt != "auto":
            return rt
        auto = self.bgp.auto_route_targets
        return auto_route_target(self.asn, vni.vni, auto.format,
                                 any_asn=importing and auto.import_any_asn)  # fmt: skip

    def vni(self, number: int) -> Vni:
        for vni in self.vnis:
            if vni.vni == number:
                return vni
        raise KeyError(number)


# ---------------------------------------------------------------------------
# Loading and error reporting


@dataclass(frozen=True)
class ConfigIssue:
    """One problem of a config. The value of a secret field (`md5_password`, the
    MQTT `password`, any key named like one) is `***` here, so no report, log
    line or MQTT error event built from an issue can show it."""

    path: str
    value: Any
    message: str
    line: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", redacted(self.path, self.value))

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        shown = "<missing>" if self.value is _MISSING else repr(self.value)
        return f"{where}{self.path or '<top>'}: {self.message} (value: {shown})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (`check-config --json`): `value` is left out when there is none."""
        data: dict[str, Any] = {"path": self.path, "line": self.line, "message": self.message}
        if self.value is not _MISSING:
            data["value"] = _jsonable(self.value)
        return data


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


_MISSING = object()


def is_secret(name: object) -> bool:
    return isinstance(name, str) and _SECRET_NAME.search(name) is not None


def redacted(path: str, value: Any) -> Any:
    """`value` as an error report may show it: secrets replaced by `***`, also inside
    mappings and lists (pydantic hands whole sections to model-level errors)."""
    if value is _MISSING:
        return value
    if is_secret(path.rsplit(".", 1)[-1]):
        return REDACTED
    if isinstance(value, dict):
        return {k: redacted(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redacted("", v) for v in value)
    return value


class ConfigError(Exception):
    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: {len(self.issues)} error(s)"
        return "\n".join([head, *(f"  {issue}" for issue in self.issues)])


@dataclass(frozen=True)
class Checked:
    """A config that loads, and what in it deserves a look (`config_warnings`)."""

    config: Config
    warnings: list[ConfigIssue]


def load(path: str | Path) -> Config:
    return check_file(path).config


def parse(text: str, source: str = "<config>") -> Config:
    return check(text, source).config


def check_file(path: str | Path) -> Checked:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else None
        issue = ConfigIssue("", str(path), reason or str(exc))
        raise ConfigError(str(path), [issue]) from None
    return check(text, source=str(path))


def check(text: str, source: str = "<config>") -> Checked:
    """The config in `text` and its warnings; ConfigError with every problem if it is invalid.

    YAML 1.2 rules (evpnd/yaml12.py): `065000` is 65000, `65000:10` a string.
    """
    try:
        document = yaml12.read(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        issue = ConfigIssue("", _MISSING, f"invalid YAML: {_yaml_problem(exc)}", line)
        raise ConfigError(source, [issue]) from None
    data, lines = document.data, document.lines
    if document.duplicates:
        # The last one would win silently: refuse, naming both lines.
        raise ConfigError(source, [
            ConfigIssue(".".join(str(p) for p in dup.path), _MISSING,
                        f"duplicate key {dup.path[-1]!r} (first on line {dup.first_line})",
                        dup.line)
            for dup in document.duplicates
        ])  # fmt: skip
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigIssue("", data, "the file must be a YAML mapping of settings")]
        )
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _issues(exc, data, lines)) from None
    return Checked(cfg, config_warnings(cfg, data, lines))


def json_schema() -> dict[str, Any]:
    """The config file's JSON Schema (draft 2020-12), for editors (`evpnd config-schema`).

    It checks types, ranges and unknown keys; the rules between fields (a VNI listed
    twice, ...) and the value checks of evpnd/validate.py are `check-config`'s.
    """
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **schema, "title": "evpnd configuration file"}


def config_warnings(cfg: Config, data: dict[str, Any],
                    lines: dict[tuple, int] | None = None) -> list[ConfigIssue]:
    """What makes a valid config do nothing: no way to reach another VTEP (no BGP peer and
    no VNI with a static or multicast flood list), or nothing to forward (no VNI and no
    Docker driver). `data` is the file as read: a missing `bgp:` section is worth naming."""
    lines = lines or {}
    warnings: list[ConfigIssue] = []

    def warn(loc: tuple, value: Any, message: str) -> None:
        path = ".".join(str(p) for p in loc)
        warnings.append(ConfigIssue(path, value, message, _line_for(loc, lines)))

    without_bgp = [v for v in cfg.vnis if v.flood != "evpn"]
    if not cfg.bgp.peers:
        if "bgp" not in data:
            where: tuple = ("bgp",)
            what = "there is no 'bgp:' section, so no BGP peer"
        else:
            where, what = ("bgp", "peers"), "no BGP peer is configured"
        if not without_bgp:
            warn(where, _MISSING, f"{what}: no route is learned or announced, and no VNI "
                                  "has a static or multicast flood list; this host reaches "
                                  "no other VTEP")
        for i, vni in enumerate(cfg.vnis):
            if vni.flood == "evpn" and without_bgp:
                warn(("vnis", i, "flood"), vni.flood,
                     f"VNI {vni.vni} floods to the VTEPs EVPN routes announce, but {what}")
    if not cfg.vnis and not cfg.docker.enabled:
        warn(("vnis",), _MISSING, "no VNI is configured and the Docker driver is off: "
                                  "nothing to forward")
    return warnings


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message without the quoted source line it appends (`str(exc)`), which
    may be the line holding a password."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    parts = []
    for text, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
        if text:
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            parts.append(f"{text}{where}")
    return "; ".join(parts) or type(exc).__name__


def _issues(exc: ValidationError, data: Any, lines: dict[tuple, int]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for err in exc.errors():
        loc = _clean_loc(err["loc"], data)
        cross = (err.get("ctx") or {}).get("error")
        if isinstance(cross, CrossFieldError):
            # One issue per problem, at the offending item (its path, value and line).
            for problem in cross.problems:
                where = (*loc, *problem.loc)
                issues.append(ConfigIssue(".".join(str(p) for p in where), problem.value,
                                          problem.message, _line_for(where, lines)))
            continue
        message = err["msg"].removeprefix("Value error, ")
        if _from_address_union(err["loc"]):
            # An IPv4-or-IPv6 field: pydantic reports each alternative; say it once.
            message = "not a valid IPv4 or IPv6 address"
        elif message.startswith("Input is not a valid IPv"):
            message = message.replace("Input is not", "not")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        value = err.get("input", _MISSING) if err["type"] != "missing" else _MISSING
        if isinstance(value, dict) and err["type"] != "extra_forbidden" and loc:
            # Model-level errors carry the whole mapping as input; it is noise.
            value = _MISSING if err["type"] == "value_error" else value
        issues.append(
            ConfigIssue(".".join(str(p) for p in loc), value, message, _line_for(loc, lines))
        )
    # Union types produce one error per alternative; keep the first per path+value.
    unique: dict[tuple[str, str], ConfigIssue] = {}
    for issue in issues:
        unique.setdefault((issue.path, repr(issue.value)), issue)
    return list(unique.values())


def _clean_loc(loc: tuple, data: Any) -> tuple:
    """Drop pydantic's union-branch and function markers so paths match the YAML."""
    cleaned: list[Any] = []
    node = data
    for part in loc:
        if _has_child(node, part):
            cleaned.append(part)
            node = node[part]
        elif part == "import_":
            cleaned.append("import")
            node = node.get("import") if isinstance(node, dict) else None
        elif isinstance(part, str) and _is_pydantic_marker(part):
            continue
        else:
            cleaned.append(part)
            node = None
    return tuple(cleaned)


def _has_child(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


_MARKERS = frozenset(
    {"int", "str", "bool", "list", "tuple", "IPv4Address", "IPv6Address", "function-after"}
)


def _is_pydantic_marker(part: str) -> bool:
    return "[" in part or part in _MARKERS or part.startswith(("literal[", "function-"))


def _from_address_union(loc: tuple) -> bool:
    """The error is one branch of an `IPv4Address | IPv6Address` field."""
    return any(isinstance(p, str) and "_address_validator" in p for p in loc)


def _line_map(text: str) -> dict[tuple, int]:
    """Each YAML path -> the line it starts on (evpnd/yaml12.py)."""
    return yaml12.read(text).lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for end in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


def underlay_family(config: Config) -> int:
    return ip_address(config.vtep.address).version
