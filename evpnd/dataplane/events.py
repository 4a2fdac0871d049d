"""Local endpoint events: what the netlink monitor tells the BGP layer.

The contract, per VNI:

* `LocalMacAdded` is emitted once per (vni, mac) when the MAC becomes local,
  and again only when something the originator advertises changes: the port it
  sits behind (a move between two local ports) or its static flag. A move
  between local ports is therefore a single `LocalMacAdded` carrying the new
  port, never removed + added: for BGP the route does not change (same VTEP),
  and a withdraw/announce pair would make remote VTEPs flap the entry.
* `LocalMacRemoved` is emitted when the MAC stops being local: aged out,
  deleted, its port went away, or it now sits behind the vxlan device (it
  moved to a remote VTEP) or became extern_learn.
* `LocalIpLearned` is only emitted for an IP whose MAC is currently a local
  MAC of the same VNI, and always after that MAC's `LocalMacAdded`.
  `LocalIpRemoved` always precedes the `LocalMacRemoved` of its MAC. An IP
  moving to another MAC is removed (old MAC) then learned (new MAC): the
  Type-2 route key contains the MAC, so the old route must be withdrawn.
* `Resynced` closes a full re-read of the kernel tables (start-up, netlink
  overrun, watched-set change): the events before it brought the consumer's
  view in line with the kernel, and its counts let the consumer check.
"""

from __future__ import annotations

from dataclasses import dataclass

from evpnd.model import IPAddress


@dataclass(frozen=True, slots=True, order=True)
class WatchedVni:
    """One layer-2 segment to learn on: a traditional bridge per VNI plus its vxlan port."""

    vni: int
    bridge: str
    vxlan_device: str


@dataclass(frozen=True, slots=True, order=True)
class LocalMac:
    """A MAC the local bridge learned (or an admin pinned) behind a local port."""

    vni: int
    bridge: str
    port: str
    mac: str
    # Admin-pinned (`bridge fdb add ... master static` or sticky): an originator
    # may advertise it sticky (RFC 7432 section 15.2).
    static: bool = False

    @property
    def key(self) -> tuple[int, str]:
        return (self.vni, self.mac)


@dataclass(frozen=True, slots=True, order=True)
class LocalIp:
    """An IP -> MAC binding the SVI (bridge) learned for a local MAC."""

    vni: int
    bridge: str
    mac: str
    ip: IPAddress

    @property
    def key(self) -> tuple[int, IPAddress]:
        return (self.vni, self.ip)


@dataclass(frozen=True, slots=True)
class LocalMacAdded:
    vni: int
    bridge: str
    port: str
    mac: str
    static: bool = False

    @classmethod
    def of(cls, entry: LocalMac) -> LocalMacAdded:
        return cls(entry.vni, entry.bridge, entry.port, entry.mac, entry.static)


@dataclass(frozen=True, slots=True)
class LocalMacRemoved:
    vni: int
    bridge: str
    port: str
    mac: str

    @classmethod
    def of(cls, entry: LocalMac) -> LocalMacRemoved:
        return cls(entry.vni, entry.bridge, entry.port, entry.mac)


@dataclass(frozen=True, slots=True)
class LocalIpLearned:
    vni: int
    bridge: str
    mac: str
    ip: IPAddress

    @classmethod
    def of(cls, entry: LocalIp) -> LocalIpLearned:
        return cls(entry.vni, entry.bridge, entry.mac, entry.ip)


@dataclass(frozen=True, slots=True)
class LocalIpRemoved:
    vni: int
    bridge: str
    mac: str
    ip: IPAddress

    @classmethod
    def of(cls, entry: LocalIp) -> LocalIpRemoved:
        return cls(entry.vni, entry.bridge, entry.mac, entry.ip)


@dataclass(frozen=True, slots=True)
class Resynced:
    """A full re-read of the kernel tables finished; counts are the state after it."""

    reason: str  # "initial", "overrun", "config" or "requested"
    macs: int
    ips: int


LocalEvent = LocalMacAdded | LocalMacRemoved | LocalIpLearned | LocalIpRemoved | Resynced
