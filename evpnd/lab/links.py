"""veth links and bridge nodes, made directly inside the lab's namespaces.

The veth pair is created from inside the first node's namespace with its
peer placed straight into the second one (IFLA_NET_NS_FD on the peer), so
no interface ever exists in the host's root namespace, even for a moment,
and the exact names from the topology can be used from the start.
"""

from __future__ import annotations

import ipaddress
from contextlib import ExitStack

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from evpnd.lab.topology import Endpoint, Link


class LinkError(RuntimeError):
    pass


def create_veth(link: Link, netns_a: str, netns_b: str) -> None:
    with ExitStack() as stack:
        ipr_a = stack.enter_context(IPRoute(netns=netns_a))
        peer_ns = stack.enter_context(open(f"/run/netns/{netns_b}", "rb"))
        try:
            ipr_a.link(
                "add",
                ifname=link.a.interface,
                kind="veth",
                peer={"ifname": link.b.interface, "net_ns_fd": peer_ns.fileno()},
            )
        except NetlinkError as exc:
            raise LinkError(f"{link.a} <-> {link.b}: cannot create the veth pair: {exc}") from exc
        _configure(ipr_a, link.a, link.mtu)
        ipr_b = stack.enter_context(IPRoute(netns=netns_b))
        _configure(ipr_b, link.b, link.mtu)


def _configure(ipr: IPRoute, end: Endpoint, mtu: int) -> None:
    try:
        index = ipr.link_lookup(ifname=end.interface)[0]
        settings: dict[str, object] = {"mtu": mtu}
        if end.mac:
            settings["address"] = end.mac
        ipr.link("set", index=index, **settings)
        for prefix in (end.ipv4, end.ipv6):
            if prefix:
                iface = ipaddress.ip_interface(prefix)
                ipr.addr(
                    "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
        # containerlab brings both ends up; addressing is left to exec lines.
        ipr.link("set", index=index, state="up")
    except (NetlinkError, IndexError, ValueError) as exc:
        raise LinkError(f"{end}: cannot configure the interface: {exc}") from exc


def create_bridge(netns_name: str, name: str) -> None:
    """A bridge node: containerlab uses a host bridge; the lab keeps it in a namespace."""
    with IPRoute(netns=netns_name) as ipr:
        try:
            ipr.link("add", ifname=name, kind="bridge")
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, state="up")
        except NetlinkError as exc:
            raise LinkError(f"bridge {name} in {netns_name}: {exc}") from exc


def enslave(netns_name: str, bridge: str, interface: str) -> None:
    with IPRoute(netns=netns_name) as ipr:
        try:
            master = ipr.link_lookup(ifname=bridge)[0]
            port = ipr.link_lookup(ifname=interface)[0]
            ipr.link("set", index=port, master=master)
        except (NetlinkError, IndexError) as exc:
            raise LinkError(f"{interface} -> bridge {bridge} in {netns_name}: {exc}") from exc


def interfaces(netns_name: str) -> list[str]:
    with IPRoute(netns=netns_name) as ipr:
        return [str(link.get("ifname")) for link in ipr.get_links()]
