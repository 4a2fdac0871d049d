"""Which topology keys the namespace lab implements, and a message for every other one.

containerlab has many more knobs than a namespace can honour (management
network, published ports, resource limits, other node kinds). Ignoring them
would make a lab quietly differ from its file; each one is named instead,
with where it sits, so the user can decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUPPORTED_TOP_KEYS = ("name", "prefix", "topology")
SUPPORTED_TOPOLOGY_KEYS = ("nodes", "kinds", "defaults", "groups", "links")
SUPPORTED_NODE_KEYS = (
    "kind", "image", "startup-config", "exec", "binds", "env", "sysctls", "group",
)  # fmt: skip
SUPPORTED_KINDS = ("linux", "bridge")
SUPPORTED_LINK_KEYS = ("endpoints", "mtu", "ipv4", "ipv6", "type")
SUPPORTED_ENDPOINT_KEYS = ("node", "interface", "mac", "ipv4", "ipv6")
# Endpoint "nodes" containerlab treats specially; each would put an interface
# into the host's root namespace, which the lab never touches.
HOST_ENDPOINTS = ("host", "mgmt-net", "macvlan")


def unsupported_keys(data: Mapping[str, Any]) -> list[str]:
    """One message per key the namespace lab does not implement, naming where it is."""
    problems: list[str] = []

    def refuse(where: str, key: str, supported: tuple[str, ...]) -> None:
        problems.append(
            f"{where}: key {key!r} is not supported by the evpnd namespace lab "
            f"(supported: {', '.join(supported)})"
        )

    for key in data:
        if key not in SUPPORTED_TOP_KEYS:
            refuse("top level", key, SUPPORTED_TOP_KEYS)
    topo = data.get("topology") or {}
    if not isinstance(topo, Mapping):
        return problems
    for key in topo:
        if key not in SUPPORTED_TOPOLOGY_KEYS:
            refuse("topology", key, SUPPORTED_TOPOLOGY_KEYS)

    layers: list[tuple[str, Any]] = [("topology.defaults", topo.get("defaults"))]
    layers += [(f"kind {k!r} (topology.kinds)", v) for k, v in (topo.get("kinds") or {}).items()]
    layers += [(f"group {k!r} (topology.groups)", v) for k, v in (topo.get("groups") or {}).items()]
    layers += [(f"node {k!r}", v) for k, v in (topo.get("nodes") or {}).items()]
    for where, settings in layers:
        for key in settings or {}:
            if key not in SUPPORTED_NODE_KEYS:
                refuse(where, key, SUPPORTED_NODE_KEYS)

    for index, link in enumerate(topo.get("links") or []):
        if not isinstance(link, Mapping):
            continue
        where = f"link {index + 1} ({describe_link(link)})"
        for key in link:
            if key not in SUPPORTED_LINK_KEYS:
                refuse(where, key, SUPPORTED_LINK_KEYS)
        if link.get("type", "veth") != "veth":
            problems.append(
                f"{where}: link type {link['type']!r} is not supported by the evpnd "
                "namespace lab (only veth links between nodes)"
            )
        for end in link.get("endpoints") or []:
            if isinstance(end, Mapping):
                for key in end:
                    if key not in SUPPORTED_ENDPOINT_KEYS:
                        refuse(f"{where} endpoint", key, SUPPORTED_ENDPOINT_KEYS)
            node = _endpoint_node(end)
            if node in HOST_ENDPOINTS:
                problems.append(
                    f"{where}: endpoint {node!r} would put an interface into the host's "
                    "root namespace; the evpnd namespace lab does not support it"
                )
    return problems


def _endpoint_node(end: Any) -> str | None:
    if isinstance(end, str):
        return end.split(":", 1)[0]
    if isinstance(end, Mapping):
        node = end.get("node")
        return str(node) if node is not None else None
    return None


def describe_link(link: Mapping[str, Any]) -> str:
    ends = []
    for end in link.get("endpoints") or []:
        if isinstance(end, Mapping):
            ends.append(f"{end.get('node')}:{end.get('interface')}")
        else:
            ends.append(str(end))
    return " <-> ".join(ends) or "no endpoints"
