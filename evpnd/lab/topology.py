"""containerlab topology files: parse, validate, resolve inheritance, refuse what we cannot do.

The files are written for real containerlab users; this module reads the
subset the namespace lab can realize faithfully and names every key it does
not implement, with the node it sits on, instead of ignoring it.

Inheritance follows containerlab: a node's settings come from `defaults`,
then `kinds.<kind>`, then `groups.<group>`, then the node itself. Scalars and
`exec` are taken from the most specific layer that sets them; `binds` are
merged by container path (more specific wins); `env` and `sysctls` are
merged key by key.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from evpnd.lab import images, schema
from evpnd.lab.support import SUPPORTED_KINDS, describe_link, unsupported_keys

IFNAMSIZ = 15
CONTAINERLAB_DEFAULT_MTU = 9500  # containerlab's MTU for veth links without `mtu`

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_IFNAME_RE = re.compile(r"^[^\s/:]{1,15}$")
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
# containerlab expands environment variables in the whole file before parsing:
# $VAR, ${VAR}, ${VAR:=default}, ${VAR:-default}; "$$" is a literal "$".
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?::[-=]([^}]*))?\}|\$([A-Za-z_]\w*)")


class LabError(Exception):
    """A problem with a lab: every line of `problems` is shown to the user."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        # Problems may carry several lines (a log tail); keep them under their bullet.
        items = [f"  - {p}".replace("\n", "\n      ") for p in self.problems]
        return "\n".join([f"{self.source}: {len(self.problems)} problem(s)", *items])


@dataclass(frozen=True)
class Bind:
    source: Path  # absolute host path
    target: str  # the path inside the (imagined) container
    read_only: bool = False


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    image: str | None
    startup_config: Path | None = None
    exec: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    group: str | None = None

    @property
    def role(self) -> images.Role | None:
        """What the image stands for; None for bridge nodes (no program at all)."""
        return images.lookup(self.image).role if self.image else None

    @property
    def gobgp_config(self) -> Path | None:
        """The host file bound to one of gobgpd's config paths, if any."""
        return next(filter(None, map(self.bound, images.GOBGP_CONFIGS)), None)

    def bound(self, target: str) -> Path | None:
        """The host path bound to `target` inside the container, if any."""
        for bind in self.binds:
            if bind.target == target:
                return bind.source
        return None


@dataclass(frozen=True)
class Endpoint:
    node: str
    interface: str
    mac: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None

    def __str__(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int = CONTAINERLAB_DEFAULT_MTU


@dataclass(frozen=True)
class Topology:
    name: str
    prefix: str | None  # None = containerlab's default "clab"
    path: Path
    nodes: Mapping[str, Node]  # in file order
    links: tuple[Link, ...]
    notes: tuple[str, ...] = ()  # what could not be checked, for the `up` report

    def netns_name(self, node: str) -> str:
        """The container name containerlab would use, so `ip netns` shows familiar names."""
        if self.prefix is None:
            return f"clab-{self.name}-{node}"
        if self.prefix == "":
            return node
        if self.prefix == "__lab-name":
            return f"{self.name}-{node}"
        return f"{self.prefix}-{self.name}-{node}"


# ---------------------------------------------------------------------------


def load(path: str | Path, *, check_schema: bool = True) -> Topology:
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabError(str(path), [exc.strerror or str(exc)]) from None
    return parse(text, path, check_schema=check_schema)


def parse(text: str, path: Path, *, check_schema: bool = True) -> Topology:
    source = str(path)
    data = _yaml(text, source)
    notes: tuple[str, ...] = ()
    if check_schema:
        try:
            problems = schema.validate(data)
        except schema.SchemaUnavailable as exc:
            # The schema is an extra check (containerlab itself never uses it);
            # every key the lab acts on is checked below regardless.
            problems, notes = [], (f"containerlab schema not checked: {exc}",)
        if problems:
            raise LabError(source, [f"not a valid containerlab topology: {p}" for p in problems])
    problems = unsupported_keys(data)
    if problems:
        raise LabError(source, problems)
    return replace(_build(data, path), notes=notes)


def read_identity(path: str | Path) -> tuple[str, str | None, list[str]]:
    """Lab name, prefix and node names with no validation, so `down` works on a file
    that was edited (or broken) after `up`."""
    data = _yaml(Path(path).read_text(), str(path))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise LabError(str(path), ["no lab 'name'"])
    prefix = data.get("prefix")
    nodes = (data.get("topology") or {}).get("nodes") or {}
    return name, prefix if isinstance(prefix, str) else None, [str(n) for n in nodes]


def expand_env(text: str, source: str, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match[1] or match[3]
        if name in env:
            return env[name]
        if match[2] is not None:
            return match[2]
        missing.append(name)
        return ""

    expanded = _ENV_REF.sub(substitute, text)
    if missing:
        raise LabError(source, [
            f"environment variable {name} is not set (containerlab expands $VAR in "
            "topology files; write $$ for a literal $)" for name in dict.fromkeys(missing)
        ])  # fmt: skip
    return expanded


def _yaml(text: str, source: str) -> dict[str, Any]:
    text = expand_env(text, source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabError(source, [f"invalid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise LabError(source, ["a topology file must be a YAML mapping"])
    return data


# ---------------------------------------------------------------------------


def _build(data: Mapping[str, Any], path: Path) -> Topology:
    source = str(path)
    problems: list[str] = []
    name = str(data["name"])
    prefix = data.get("prefix")
    topo = data["topology"] or {}
    defaults = topo.get("defaults") or {}
    kinds = topo.get("kinds") or {}
    groups = topo.get("groups") or {}

    nodes: dict[str, Node] = {}
    for node_name, own in (topo.get("nodes") or {}).items():
        node_name = str(node_name)
        if not _NAME_RE.match(node_name):
            problems.append(f"node {node_name!r}: use letters, digits, '.', '_' and '-' only")
            continue
        try:
            nodes[node_name] = _resolve_node(
                node_name, own or {}, defaults, kinds, groups, path.parent
            )
        except ValueError as exc:
            problems.append(f"node {node_name!r}: {exc}")
    declared = {str(n) for n in topo.get("nodes") or {}}
    links = _build_links(topo.get("links") or [], nodes, declared, problems)
    if problems:
        raise LabError(source, problems)
    return Topology(
        name=name,
        prefix=prefix if isinstance(prefix, str) else None,
        path=path,
        nodes=nodes,
        links=tuple(links),
    )


def _resolve_node(
    name: str,
    own: Mapping[str, Any],
    defaults: Mapping[str, Any],
    kinds: Mapping[str, Any],
    groups: Mapping[str, Any],
    base: Path,
) -> Node:
    group = own.get("group") or defaults.get("group")
    group_cfg = (groups.get(group) or {}) if group else {}
    kind = own.get("kind") or group_cfg.get("kind") or defaults.get("kind")
    if not kind:
        raise ValueError("no 'kind' (set it on the node, its group or topology.defaults)")
    if kind not in SUPPORTED_KINDS:
        raise ValueError(
            f"kind {kind!r} is not supported by the evpnd namespace lab "
            f"(supported kinds: {', '.join(SUPPORTED_KINDS)})"
        )
    layers = [defaults, kinds.get(kind) or {}, group_cfg, own]
    if kind == "bridge":
        # Runs nothing: settings inherited from `defaults` do not apply (as in
        # containerlab), settings written for it are a mistake worth reporting.
        _refuse_program_keys([kinds.get(kind) or {}, group_cfg, own])
        if len(name) > IFNAMSIZ:
            raise ValueError(f"a bridge node's name is its device name: at most {IFNAMSIZ} chars")
        return Node(name=name, kind=kind, image=None, group=str(group) if group else None)

    def last(key: str) -> Any:
        value = None
        for layer in layers:
            if layer.get(key) is not None:
                value = layer[key]
        return value

    binds: dict[str, Bind] = {}
    env: dict[str, str] = {}
    sysctls: dict[str, str] = {}
    for layer in layers:
        for spec in layer.get("binds") or []:
            bind = _parse_bind(str(spec), base)
            binds[bind.target] = bind
        env.update({str(k): _scalar(v) for k, v in (layer.get("env") or {}).items()})
        sysctls.update({str(k): _scalar(v) for k, v in (layer.get("sysctls") or {}).items()})

    for key in sysctls:
        if not key.startswith("net."):
            raise ValueError(
                f"sysctl {key!r} is not per network namespace; setting it would change "
                "the host (only net.* sysctls are supported)"
            )

    exec_lines = tuple(str(line) for line in (last("exec") or []))
    for line in exec_lines:
        try:
            shlex.split(line)
        except ValueError as exc:
            raise ValueError(f"exec line {line!r} cannot be split into words: {exc}") from None

    startup = last("startup-config")
    startup_path = _host_path(str(startup), base) if startup else None
    if startup_path is not None and not startup_path.is_file():
        raise ValueError(f"startup-config {startup_path} does not exist")

    image = last("image")
    node = Node(
        name=name,
        kind=kind,
        image=str(image) if image is not None else None,
        startup_config=startup_path,
        exec=exec_lines,
        binds=tuple(binds.values()),
        env=env,
        sysctls=sysctls,
        group=str(group) if group else None,
    )
    _check_role(node)
    return node


def _refuse_program_keys(layers: list[Mapping[str, Any]]) -> None:
    keys = ("image", "exec", "binds", "startup-config", "env", "sysctls")
    extra = sorted({key for layer in layers for key in keys if layer.get(key)})
    if extra:
        raise ValueError(f"kind bridge takes no {', '.join(extra)} (it runs nothing)")


def _check_role(node: Node) -> None:
    if not node.image:
        raise ValueError("kind linux needs an 'image'")
    try:
        role = images.lookup(node.image).role
    except images.UnknownImage as exc:
        raise ValueError(str(exc)) from None
    if (
        role is images.Role.FRR
        and node.startup_config is None
        and not node.bound(images.FRR_CONFIG)
    ):
        raise ValueError(
            f"FRR node needs its config: 'startup-config' or a bind to {images.FRR_CONFIG}"
        )
    if role is images.Role.EVPND and not node.bound(images.EVPND_CONFIG):
        raise ValueError(f"evpnd node needs a bind to {images.EVPND_CONFIG} (its config)")
    if role is images.Role.MOSQUITTO and not node.bound(images.MOSQUITTO_CONFIG):
        raise ValueError(f"mosquitto node needs a bind to {images.MOSQUITTO_CONFIG} (its config)")
    if role is images.Role.GOBGP and node.gobgp_config is None:
        raise ValueError(
            f"GoBGP node needs its config: a bind to one of {', '.join(images.GOBGP_CONFIGS)}"
        )


def _parse_bind(spec: str, base: Path) -> Bind:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"bind {spec!r}: expected SOURCE:TARGET or SOURCE:TARGET:ro|rw")
    source, target = _host_path(parts[0], base), parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f"bind {spec!r}: mode {mode!r} is not supported (ro or rw)")
    if not target.startswith("/"):
        raise ValueError(f"bind {spec!r}: the target must be an absolute path")
    if not source.exists():
        # Docker would create an empty directory here, which is never what was meant.
        raise ValueError(f"bind {spec!r}: {source} does not exist")
    return Bind(source=source, target=target, read_only=mode == "ro")


def _host_path(value: str, base: Path) -> Path:
    # containerlab resolves relative paths against the topology file's directory.
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _build_links(
    raw: list[Any], nodes: Mapping[str, Node], declared: set[str], problems: list[str]
) -> list[Link]:
    links: list[Link] = []
    used: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw):
        where = f"link {index + 1} ({describe_link(item)})"
        try:
            link = _parse_link(item)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for end in (link.a, link.b):
            node = nodes.get(end.node)
            if node is None:
                if end.node not in declared:  # else its own problem is reported already
                    problems.append(f"{where}: node {end.node!r} is not defined in topology.nodes")
                continue
            if not _IFNAME_RE.match(end.interface):
                problems.append(
                    f"{where}: {end.interface!r} is not a valid interface name "
                    f"(1-{IFNAMSIZ} characters, no spaces, '/' or ':')"
                )
            if node.kind == "linux" and end.interface == "eth0":
                problems.append(
                    f"{where}: eth0 is containerlab's management interface; use eth1 and up"
                )
            key = (end.node, end.interface)
            if key in used:
                problems.append(f"{where}: {end} is already used by link {used[key]}")
            used[key] = index + 1
        links.append(link)
    return links


def _parse_link(item: Mapping[str, Any]) -> Link:
    ends = item.get("endpoints") or []
    if len(ends) != 2:
        raise ValueError("a veth link needs exactly two endpoints")
    v4 = [*(item.get("ipv4") or []), None, None]
    v6 = [*(item.get("ipv6") or []), None, None]
    parsed = [_parse_endpoint(end, v4[i] or None, v6[i] or None) for i, end in enumerate(ends)]
    mtu = int(item.get("mtu") or CONTAINERLAB_DEFAULT_MTU)
    return Link(a=parsed[0], b=parsed[1], mtu=mtu)


def _parse_endpoint(end: Any, ipv4: str | None, ipv6: str | None) -> Endpoint:
    if isinstance(end, str):
        node, sep, interface = end.partition(":")
        if not sep or not node or not interface:
            raise ValueError(f"endpoint {end!r}: expected NODE:INTERFACE")
        return Endpoint(node=node, interface=interface, ipv4=ipv4, ipv6=ipv6)
    if isinstance(end, Mapping):
        mac = end.get("mac")
        if mac is not None and not _MAC_RE.match(str(mac)):
            raise ValueError(f"endpoint mac {mac!r} is not a MAC address")
        return Endpoint(
            node=str(end["node"]),
            interface=str(end["interface"]),
            mac=str(mac).lower() if mac else None,
            ipv4=end.get("ipv4") or ipv4,
            ipv6=end.get("ipv6") or ipv6,
        )
    raise ValueError(f"endpoint {end!r}: expected NODE:INTERFACE or a mapping")
