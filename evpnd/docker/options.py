"""What dockerd hands the driver, checked. Pure.

`docker network create -o KEY=VALUE` options -> one evpnd VNI. Names follow
docker-vxlan-plugin where they fit (case-sensitive, as there), plus evpnd's
own in lower case. Everything is validated into the same `Vni` model the
config file uses, so a Docker network and a configured VNI obey the same
rules; every message names the option and the value, because it is what
`docker network create` prints.

The addresses of CreateNetwork (gateways) and CreateEndpoint (the
container's addresses and MAC) go through the same validators
(evpnd/validate.py): a value the driver stores is one it can always read
back, so Leave, DeleteEndpoint, DeleteNetwork and recovery never trip on it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Literal

from pydantic import ValidationError

from evpnd import validate
from evpnd.config import VNI_MAX, Vni

GatewayMode = Literal["external", "local"]


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    path: tuple[str, ...]  # where the value goes in the Vni model; () = not a Vni field
    kind: str  # int | bool | str | ttl | list | special
    help: str


# name -> Option; the order is the README's table order.
OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        # docker-vxlan-plugin's names
        Option("VxlanId", ("vni",), "int", f"the VNI, 1..{VNI_MAX} (required)"),
        Option("vxlanName", ("vxlan_device",), "str", "vxlan device name (default vxlan<VNI>)"),
        Option("vxlanMTU", ("mtu",), "int", "MTU of bridge, vxlan device and container "
               "interfaces (default: underlay MTU - 50/70)"),
        Option("vxlanHardwareAddr", ("vxlan", "mac"), "str", "MAC address of the vxlan device"),
        Option("vxlanTxQLen", ("vxlan", "txqueuelen"), "int", "transmit queue length"),
        Option("VtepDev", (), "special", "underlay device; must be evpnd's vtep.device"),
        Option("SrcAddr", (), "special", "VXLAN source address; must be evpnd's vtep.address"),
        Option("Group", ("group",), "str", "multicast group: floods BUM traffic by multicast "
               "instead of EVPN (sets flood=multicast)"),
        Option("TTL", ("vxlan", "ttl"), "ttl", "1..255 or inherit"),
        Option("TOS", ("vxlan", "tos"), "ttl", "0..255 or inherit"),
        Option("Learning", ("vxlan", "learning"), "bool", "data-plane learning (default false)"),
        Option("Proxy", ("vxlan", "proxy"), "bool", "ARP proxy on the vxlan device"),
        Option("RSC", ("vxlan", "rsc"), "bool", "route short circuit"),
        Option("L2miss", ("vxlan", "l2miss"), "bool", "netlink L2 miss notifications"),
        Option("L3miss", ("vxlan", "l3miss"), "bool", "netlink L3 miss notifications"),
        Option("NoAge", ("vxlan", "noage"), "bool", "never age learnt FDB entries"),
        Option("GBP", ("vxlan", "gbp"), "bool", "Group Based Policy extension"),
        Option("Age", ("vxlan", "ageing"), "int", "FDB ageing in seconds"),
        Option("Limit", ("vxlan", "limit"), "int", "maximum FDB entries"),
        Option("PortLow", ("vxlan", "port_range"), "int", "UDP source port range start "
               "(with PortHigh)"),
        Option("PortHigh", ("vxlan", "port_range"), "int", "UDP source port range end "
               "(with PortLow)"),
        Option("Port", ("vxlan", "dstport"), "int", "UDP destination port (default 4789)"),
        # evpnd's own
        Option("bridge", ("bridge",), "str", "bridge name (default br<VNI>)"),
        Option("gateway", (), "special", "external (default): containers route via the "
               "network's gateway, owned by a router on the segment; local: this host's "
               "bridge owns the gateway IP with the same MAC on every host"),
        Option("arp_suppression", ("arp_suppression",), "bool", "bridge answers ARP/ND for "
               "remote MAC+IPs (default true)"),
        Option("rd", ("rd",), "str", "route distinguisher (default auto)"),
        Option("rt", (), "list", "route targets to import and export, comma-separated "
               "(default auto = ASN:VNI)"),
        Option("rt_import", ("route_targets", "import"), "list", "import route targets"),
        Option("rt_export", ("route_targets", "export"), "list", "export route targets"),
        Option("flood", ("flood",), "str", "evpn (default) | multicast | static"),
        Option("flood_peers", ("flood_peers",), "list", "remote VTEPs for flood=static, "
               "comma-separated"),
    )
}

_HEX = re.compile(r"0[xX][0-9a-fA-F]+")
_TRUE = {"1", "true", "yes", "on", "t", "y"}
_FALSE = {"0", "false", "no", "off", "f", "n", ""}


class OptionsError(ValueError):
    """Every problem of one set of options; str() is what dockerd shows."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    vni: Vni
    gateway: GatewayMode = "external"


def _show(name: str, value: str) -> str:
    return f"-o {name}={value!r}" if value == "" or " " in value else f"-o {name}={value}"


def _int(name: str, value: str) -> int:
    # ASCII digits (or 0x hex): int() alone would also take other scripts' digits,
    # a sign or '1_000'.
    text = value.strip()
    if _HEX.fullmatch(text):
        return int(text, 16)
    try:
        return validate.decimal(text)
    except ValueError:
        raise ValueError(f"{_show(name, value)}: not an integer") from None


def _bool(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{_show(name, value)}: not a boolean (true/false, yes/no, on/off, 1/0)")


def _list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse(
    options: Mapping[str, str],
    vtep_address: str | None = None,
    vtep_device: str | None = None,
) -> NetworkOptions:
    """Options of `docker network create` -> NetworkOptions; OptionsError lists every problem.

    `vtep_address`/`vtep_device` are the host's (evpnd has one VTEP per host):
    SrcAddr and VtepDev are accepted only when they name those.
    """
    problems: list[str] = []
    data: dict[str, Any] = {}
    gateway: GatewayMode = "external"
    origin: dict[tuple[str, ...], str] = {}  # Vni path -> the option that set it

    def put(path: tuple[str, ...], value: Any, name: str) -> None:
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
        origin[path] = name

    for name, raw in sorted(options.items()):
        option = OPTIONS.get(name)
        value = str(raw)
        if option is None:
            problems.append(_unknown(name, value))
            continue
        try:
            if name == "VtepDev":
                if vtep_device is not None and value != vtep_device:
                    raise ValueError(
                        f"{_show(name, value)}: evpnd sends all VXLAN traffic from its "
                        f"vtep.device {vtep_device}; leave VtepDev out or set it to {vtep_device}"
                    )
            elif name == "SrcAddr":
                _check_srcaddr(name, value, vtep_address)
            elif name == "gateway":
                if value not in ("external", "local"):
                    raise ValueError(f"{_show(name, value)}: must be 'external' or 'local'")
                gateway = "local" if value == "local" else "external"
            elif name == "rt":
                targets = _list(value)
                put(("route_targets", "import"), targets, name)
                put(("route_targets", "export"), targets, name)
            elif name in ("PortLow", "PortHigh"):
                continue  # below, as a pair
            elif option.kind == "int":
                put(option.path, _int(name, value), name)
            elif option.kind == "bool":
                put(option.path, _bool(name, value), name)
            elif option.kind == "ttl":
                word = value.strip().lower()
                put(option.path, "inherit" if word == "inherit" else _int(name, value), name)
            elif option.kind == "list":
                put(option.path, _list(value), name)
            else:
                put(option.path, value.strip(), name)
        except ValueError as exc:
            problems.append(str(exc))

    low, high = options.get("PortLow"), options.get("PortHigh")
    if (low is None) != (high is None):
        given = "PortLow" if low is not None else "PortHigh"
        missing = "PortHigh" if low is not None else "PortLow"
        problems.append(f"{_show(given, str(low or high))}: needs {missing} too")
    elif low is not None and high is not None:
        try:
            put(("vxlan", "port_range"), (_int("PortLow", low), _int("PortHigh", high)), "PortLow")
        except ValueError as exc:
            problems.append(str(exc))

    if "Group" in options and "flood" not in options:
        data["flood"] = "multicast"
    if "vni" not in data and not any(p.startswith("-o VxlanId=") for p in problems):
        problems.append(f"-o VxlanId is required: the VNI of this network, 1..{VNI_MAX}")
    # Validate what parsed even when something did not: the user hears every problem at once.
    vni: Vni | None = None
    try:
        vni = Vni.model_validate({"vni": 1, **data})
    except ValidationError as exc:
        problems.extend(_vni_problems(exc, origin, options))
    if problems or vni is None:
        raise OptionsError(problems)
    return NetworkOptions(vni=vni, gateway=gateway)


def _check_srcaddr(name: str, value: str, vtep_address: str | None) -> None:
    try:
        address = ip_address(value.strip())
    except ValueError:
        raise ValueError(f"{_show(name, value)}: not an IP address") from None
    if vtep_address is not None and address != ip_address(vtep_address):
        raise ValueError(
            f"{_show(name, value)}: evpnd sends all VXLAN traffic from its vtep.address "
            f"{vtep_address}; leave SrcAddr out or set it to {vtep_address}"
        )


def _unknown(name: str, value: str) -> str:
    lowered = {o.lower(): o for o in OPTIONS}
    close = [lowered[name.lower()]] if name.lower() in lowered else []
    close = close or difflib.get_close_matches(name, OPTIONS, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{_show(name, value)}: unknown option{hint}"


def _vni_problems(
    exc: ValidationError, origin: Mapping[tuple[str, ...], str], options: Mapping[str, str]
) -> list[str]:
    problems: list[str] = []
    named: set[str] = set()  # union types report once per branch: keep the first
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        loc = tuple("import" if p == "import_" else p for p in loc)
        message = err["msg"].removeprefix("Value error, ")
        name = None
        for end in range(len(loc), 0, -1):
            name = origin.get(loc[:end])
            if name is not None:
                break
        if name is None:
            if message not in problems:
                problems.append(message)
            continue
        if name in named:
            continue
        named.add(name)
        if name == "PortLow":
            shown = f"-o PortLow={options['PortLow']} -o PortHigh={options['PortHigh']}"
        else:
            shown = _show(name, str(options[name]))
        problems.append(f"{shown}: {message}")
    return problems


# ---------------------------------------------------------------------------
# CreateNetwork's gateways and CreateEndpoint's addresses


@dataclass(frozen=True, slots=True)
class EndpointAddresses:
    """A container's addresses as the driver stores them (canonical text)."""

    ipv4: str | None = None  # "10.0.0.2/24"
    ipv6: str | None = None
    mac: str | None = None  # given by dockerd; None = the driver chooses


def endpoint_addresses(address: str, address6: str, mac: str) -> EndpointAddresses:
    """CreateEndpoint's `Interface` -> checked values; ValueError naming every bad field
    and its value (an empty field is "not given")."""
    problems: list[str] = []
    ipv4 = _interface("Interface.Address", address, 4, problems)
    ipv6 = _interface("Interface.AddressIPv6", address6, 6, problems)
    given: str | None = None
    if mac:
        try:
            given = validate.unicast_mac(mac)
        except ValueError as exc:
            problems.append(f"Interface.MacAddress: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    return EndpointAddresses(ipv4, ipv6, given)


def gateway_interface(field: str, text: str | None, version: int) -> str | None:
    """A network's gateway (`IPv4Data[0].Gateway`, "10.0.0.1/24") -> canonical text."""
    problems: list[str] = []
    value = _interface(field, text or "", version, problems)
    if problems:
        raise ValueError(problems[0])
    return value


def _interface(field: str, text: str, version: int, problems: list[str]) -> str | None:
    if not text:
        return None
    try:
        return str(validate.endpoint_interface(text, version))
    except ValueError as exc:
        problems.append(f"{field}: {exc}")  # the message shows the value
        return None
