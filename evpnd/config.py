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
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evpnd import validate
from evpnd.control.settings import ControlConfig
from evpnd.docker.settings import DockerConfig
from evpnd.metrics.settings import MetricsConfig
from evpnd.model import IPAddress
from evpnd.mqtt.settings import MqttConfig

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


def _check_vtep(value: IPAddress) -> IPAddress:
    # Loopback is allowed for single-host setups (and tests); received routes refuse it.
    return validate.usable_vtep(value, allow_loopback=True)


class Vtep(Strict):
    address: IPAddress
    device: IfName

    _ifname = field_validator("device")(_check_ifname)
    _address = field_validator("address")(_check_vtep)


# Routes one peer may make us hold by default (README "Route limits" says why).
DEFAULT_MAX_ROUTES = 100_000


class Peer(Strict):
    address: IPAddress
    remote_asn: int = Field(ge=1, le=4_294_967_295)
    description: str | None = None
    # Never shown: repr, error reports and logs print *** (see ConfigIssue).
    md5_password: str | None = Field(default=None, min_length=1, max_length=80, repr=False)
    # GTSM (RFC 5082): the number of hops the peer may be away; 1 = directly connected.
    ttl_security: int | None = Field(default=None, ge=1, le=254)
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


class Bgp(Strict):
    peers: list[Peer] = Field(default_factory=list)
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
        seen: set[IPAddress] = set()
        for peer in self.peers:
            if peer.address in seen:
                raise ValueError(f"peer {peer.address} is listed twice")
            seen.add(peer.address)
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
            raise ValueError("set either 'ageing' or 'noage', not both")
        return self

    def ageing_seconds(self) -> int | None:
        """The IFLA_VXLAN_AGEING value to program (None = kernel default).

        The kernel turns an ageing of 0 back into its 300 s default, so "never
        age" is the longest interval the kernel accepts.
        """
        return NOAGE_SECONDS if self.noage else self.ageing


RouteTarget = str  # "ASN:NN" or "A.B.C.D:NN"; "auto" = <asn>:<vni>


def _check_route_target(value: str) -> str:
    # The encoder's own rule (evpnd/validate.py): ASCII digits, ranges, whole string.
    if value == "auto":
        return value
    try:
        return validate.route_target(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (or 'auto' for ASN:VNI)") from None


class RouteTargets(Strict):
    import_: list[str] = Field(default_factory=lambda: ["auto"], alias="import")
    export: list[str] = Field(default_factory=lambda: ["auto"])

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("import_", "export")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one route target (use 'auto' for ASN:VNI)")
        return [_check_route_target(v) for v in value]


FloodMode = Literal["evpn", "multicast", "static"]


class Vni(Strict):
    vni: int = Field(ge=1, le=VNI_MAX)
    # The bridge evpnd creates, or with adopt_bridge an existing one (a Docker
    # br-...) that evpnd only attaches its vxlan device to and never deletes.
    bridge: IfName | None = None
    adopt_bridge: bool = False
    vxlan_device: IfName | None = None
    mtu: int | Literal["auto"] = "auto"
    arp_suppression: bool = True
    rd: str = "auto"
    route_targets: RouteTargets = Field(default_factory=RouteTargets)
    vxlan: VxlanOptions = Field(default_factory=VxlanOptions)
    # How BUM traffic is flooded: evpn = head-end replication to the VTEPs
    # learned from Type-3 routes; the two others work without BGP.
    flood: FloodMode = "evpn"
    group: IPAddress | None = None
    flood_peers: list[IPAddress] = Field(default_factory=list)

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
        if value == "auto":
            return value
        try:
            return validate.route_distinguisher(value)
        except ValueError as exc:
            raise ValueError(f"{exc} (or 'auto' for <router_id>:<VNI>)") from None

    @field_validator("vni", mode="before")
    @classmethod
    def _vni_not_bool(cls, value: Any) -> Any:
        # YAML reads `yes`/`true` as a boolean, which pydantic would take as VNI 1.
        if isinstance(value, bool):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value

    @field_validator("flood_peers")
    @classmethod
    def _flood_peers(cls, value: list[IPAddress]) -> list[IPAddress]:
        return [validate.usable_vtep(peer, allow_loopback=True) for peer in value]

    @model_validator(mode="after")
    def _flood_mode(self) -> Vni:
        if self.flood == "multicast":
            if self.group is None:
                raise ValueError("flood: multicast needs 'group' (a multicast address)")
            if not self.group.is_multicast:
                raise ValueError(f"group {self.group} is not a multicast address")
        elif self.group is not None:
            raise ValueError("'group' is only used with flood: multicast")
        if self.flood == "static" and not self.flood_peers:
            raise ValueError("flood: static needs 'flood_peers' (the remote VTEP addresses)")
        if self.flood != "static" and self.flood_peers:
            raise ValueError("'flood_peers' is only used with flood: static")
        if self.adopt_bridge and not self.bridge:
            raise ValueError("adopt_bridge needs 'bridge' (the name of the bridge to adopt)")
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

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        problems: list[str] = []
        seen_vni: set[int] = set()
        seen_dev: dict[str, int] = {}
        gbp_by_port: dict[int, tuple[bool, int]] = {}
        for vni in self.vnis:
            # The kernel refuses to bring up a gbp and a non-gbp device on one port.
            port = vni.vxlan.dstport
            if port in gbp_by_port and gbp_by_port[port][0] != vni.vxlan.gbp:
                problems.append(
                    f"VNI {vni.vni} and VNI {gbp_by_port[port][1]} share dstport {port} "
                    "but differ in gbp"
                )
            gbp_by_port.setdefault(port, (vni.vxlan.gbp, vni.vni))
            if vni.group is not None and vni.group.version != self.vtep.address.version:
                problems.append(
                    f"VNI {vni.vni}: group {vni.group} and vtep.address "
                    f"{self.vtep.address} are of different address families"
                )
            if vni.vni in seen_vni:
                problems.append(f"VNI {vni.vni} is listed twice")
            seen_vni.add(vni.vni)
            for name in {vni.vxlan_name, vni.bridge_name}:
                if name in seen_dev and seen_dev[name] != vni.vni:
                    problems.append(
                        f"device {name!r} is used by VNI {seen_dev[name]} and VNI {vni.vni}"
                    )
                seen_dev[name] = vni.vni
            if vni.vxlan_name == vni.bridge_name:
                problems.append(
                    f"VNI {vni.vni}: bridge and vxlan device are both {vni.bridge_name!r}"
                )
        for peer in self.bgp.peers:
            if peer.address.version != self.vtep.address.version and peer.local_address is None:
                problems.append(
                    f"peer {peer.address}: address family differs from vtep.address; "
                    "set local_address"
                )
        if problems:
            raise ValueError("; ".join(problems))
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
        return [self._expand_rt(rt, vni) for rt in vni.route_targets.import_]

    def export_targets(self, vni: Vni) -> list[str]:
        return [self._expand_rt(rt, vni) for rt in vni.route_targets.export]

    def _expand_rt(self, rt: str, vni: Vni) -> str:
        # FRR's auto RT is ASN:VNI (with a 2-byte ASN; 4-byte ASNs use AS_TRANS
        # there, we keep the low 16 bits like FRR does).
        if rt != "auto":
            return rt
        asn = self.asn if self.asn <= 65535 else self.asn & 0xFFFF
        return f"{asn}:{vni.vni}"

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


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        issue = ConfigIssue("", str(path), exc.strerror or str(exc))
        raise ConfigError(str(path), [issue]) from None
    return parse(text, source=str(path))


def parse(text: str, source: str = "<config>") -> Config:
    try:
        data = yaml.safe_load(text)
        lines = _line_map(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        issue = ConfigIssue("", _MISSING, f"invalid YAML: {_yaml_problem(exc)}", line)
        raise ConfigError(source, [issue]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigIssue("", data, "the file must be a YAML mapping of settings")]
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _issues(exc, data, lines)) from None


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
        message = err["msg"].removeprefix("Value error, ")
        if "valid IPv4 address" in message or "valid IPv6 address" in message:
            message = "not a valid IPv4 or IPv6 address"
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


def _line_map(text: str) -> dict[tuple, int]:
    """Map each YAML path to the line it starts on, for error messages."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(value, (*path, key.value))
                lines[(*path, key.value)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for end in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None


def underlay_family(config: Config) -> int:
    return ip_address(config.vtep.address).version
