"""Program remote MACs, flood lists and ARP/ND suppression entries, as FRR's zebra does.

Message shapes (all NTF_EXT_LEARNED, which marks the entry as evpnd's):

- remote MAC: RTM_NEWNEIGH AF_BRIDGE on the vxlan device, NTF_SELF,
  NLM_F_CREATE|NLM_F_REPLACE, NDA_LLADDR + NDA_DST (the VTEP). State
  NUD_REACHABLE; sticky MACs NUD_REACHABLE|NUD_NOARP (`bridge fdb ... static`),
  which the vxlan driver never moves on a learnt frame. Extern_learn entries
  are never aged.
- the same MAC in the bridge's own FDB, towards the vxlan port: RTM_NEWNEIGH
  AF_BRIDGE on the vxlan device, NTF_MASTER|NTF_EXT_LEARNED, NDA_LLADDR only
  (`bridge fdb replace MAC dev vxlanN master extern_learn`). ARP/ND
  suppression needs it: the bridge answers a request from its neighbour table
  only when its FDB places the neighbour's MAC behind a port with
  neigh_suppress on (br_do_proxy_suppress_arp; without it the request is
  flooded through the tunnel, checked on 6.18). It also sends known unicast
  to the vxlan port alone instead of flooding it. A local frame from the MAC
  takes the entry over (the bridge clears extern_learn: a MAC move), and the
  bridge never ages it. Both entries travel in one message, NTF_MASTER|NTF_SELF,
  as zebra's netlink_macfdb_update_ctx sends a remote MAC: rtnl_fdb_add and
  rtnl_fdb_del do the bridge's part, then the vxlan device's, and stop at the
  first that fails; half the messages to build, send and acknowledge. A
  message that fails is sent again as the pair (ops `mac_put` + `bridge_put`,
  `bridge_del` + `mac_del`), so each part's error is its own:
  a delete whose bridge entry moved to a local port (ENOENT) must still
  delete the vxlan entry. A vxlan device the link index knows no master of
  gets the pair too: sent combined, the kernel would skip the bridge part but
  keep NTF_MASTER on the vxlan entry's flags, and the index may not have seen
  the device join its bridge yet. There `bridge_put`'s EOPNOTSUPP means "no
  bridge port", nothing to fill. The bridge entries do not count in
  `WriteResult.writes` (one remote MAC is one write); see `bridge_writes`.
- flood remote: 00:00:00:00:00:00 on the vxlan device, NTF_SELF,
  NUD_PERMANENT|NUD_NOARP, NLM_F_CREATE|NLM_F_APPEND, one message per VTEP;
  deleting with NDA_DST removes only that remote.
- neighbour: RTM_NEWNEIGH AF_INET/AF_INET6 on the bridge, NUD_NOARP,
  NDA_PROTOCOL=RTPROT_EVPND, NLM_F_CREATE|NLM_F_REPLACE. The L3VNI's next hops
  are neighbours too (VTEP -> router MAC on the L3VNI bridge), and their
  router MACs remote MACs on the L3VNI vxlan device.
- probe of an address whose MAC moved in: RTM_NEWNEIGH AF_INET/AF_INET6 on the
  bridge, NUD_PROBE, no flags and no protocol (the kernel's entry, not ours),
  NLM_F_CREATE|NLM_F_REPLACE; written after the deletions (our entry of the
  address goes first). The kernel sends its unicast ARP/NS to the MAC, also
  from a bridge without an address (an ARP probe from 0.0.0.0 is answered).
- route into the L3VNI: RTM_NEWROUTE in the main table, `prefix via GATEWAY
  dev <L3VNI bridge> onlink`, protocol RTPROT_EVPND, metric ROUTE_METRIC,
  NLM_F_CREATE|NLM_F_REPLACE (FRR installs the same, with proto bgp and
  metric 20). Deleted with RTPROT_EVPND and the metric in the request: the
  kernel then deletes only a route with that protocol (fib_table_delete,
  ip6_route_del), never an admin's route of the same prefix.

Every failing entry is reported on its own; the rest of the batch lands.
"""

from __future__ import annotations

import errno
import struct
from binascii import unhexlify
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from socket import AF_BRIDGE, AF_INET, AF_INET6
from typing import Any, Literal

from evpnd.dataplane.netlink.linkindex import LinkIndex
from evpnd.dataplane.netlink.routesocket import (
    DEFAULT_CHUNK,
    NetlinkError,
    Request,
    RouteSocket,
    dump_links,
)
from evpnd.dataplane.netlink.wire import (
    NDA_DST,
    NDA_LLADDR,
    NDA_PROTOCOL,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NTF_EXT_LEARNED,
    NTF_MASTER,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    ROUTE_METRIC,
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTA_DST,
    RTA_GATEWAY,
    RTA_OIF,
    RTA_PRIORITY,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTMSG,
    RTN_UNICAST,
    RTNH_F_ONLINK,
    RTPROT_EVPND,
    rtattr,
)
from evpnd.dataplane.state import FloodEntry, NeighEntry, RemoteMac, RouteEntry
from evpnd.dataplane.tracker import Changes
from evpnd.model import IPAddress

Op = Literal[
    "mac_del", "flood_del", "neigh_del", "mac_put", "flood_add", "neigh_put",
    "bridge_put", "bridge_del", "route_put", "route_del", "neigh_probe",
]  # fmt: skip
# The bridge-FDB companions of a remote MAC's vxlan entry (see the module doc).
_BRIDGE_OPS = ("bridge_put", "bridge_del")
_COMPANION: dict[str, Op] = {"mac_put": "bridge_put", "mac_del": "bridge_del"}
# A failed combined message, again as its two parts: the vxlan entry is written
# before, and deleted after, the bridge entry that sends unicast its way.
_PAIR: dict[str, tuple[Op, Op]] = {"mac_put": ("mac_put", "bridge_put"),
                                   "mac_del": ("bridge_del", "mac_del")}  # fmt: skip
_BOTH = NTF_MASTER | NTF_SELF
Entry = RemoteMac | FloodEntry | NeighEntry | RouteEntry
_U32 = struct.Struct("=I")
# A delete that finds its entry gone, or its device (which takes its entries along).
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)

# One struct per message shape: ndmsg, then attributes (header, value, padding).
_NDMSG = "=BBHiHBB"
_LLADDR = "HH6s2x"
_FDB4 = struct.Struct(_NDMSG + _LLADDR + "HH4s")
_FDB6 = struct.Struct(_NDMSG + _LLADDR + "HH16s")
_NEIGH4 = struct.Struct(_NDMSG + "HH4s" + _LLADDR + "HHB3x")
_NEIGH6 = struct.Struct(_NDMSG + "HH16s" + _LLADDR + "HHB3x")
_NEIGH_PROBE4 = struct.Struct(_NDMSG + "HH4s" + _LLADDR)
_NEIGH_PROBE6 = struct.Struct(_NDMSG + "HH16s" + _LLADDR)
_NEIGH_DEL4 = struct.Struct(_NDMSG + "HH4s")
_NEIGH_DEL6 = struct.Struct(_NDMSG + "HH16s")
_BRIDGE_FDB = struct.Struct(_NDMSG + _LLADDR)
_ZERO_MAC = b"\0" * 6
_PUT = NLM_F_CREATE | NLM_F_REPLACE
_OURS = NTF_SELF | NTF_EXT_LEARNED
_FLOOD_STATE = NUD_PERMANENT | NUD_NOARP
_UNSEEN = (-1, False)


@dataclass(frozen=True, slots=True)
class EntryError:
    """One entry the kernel (or the device lookup) refused."""

    op: Op
    entry: Entry
    errno: int
    message: str

    def __str__(self) -> str:
        return f"{self.op} {self.entry}: {self.message}"


@dataclass(slots=True)
class WriteResult:
    """Successful writes per operation, and every failure with its reason."""

    writes: Counter[str] = field(default_factory=Counter)
    errors: list[EntryError] = field(default_factory=list)
    # Bridge-FDB companions of remote MACs written (not part of `writes`/`total`).
    bridge_writes: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.writes.values())

    @property
    def ok(self) -> bool:
        return not self.errors

    def failed(self) -> set[tuple[Op, Entry]]:
        return {(e.op, e.entry) for e in self.errors}

    def merge(self, other: WriteResult) -> None:
        self.writes.update(other.writes)
        self.errors.extend(other.errors)
        self.bridge_writes.update(other.bridge_writes)


def _mac_bytes(mac: str) -> bytes:
    raw = unhexlify(mac.replace(":", ""))
    if len(raw) != 6:
        # struct's "6s" would silently pad or truncate it
        raise ValueError(f"invalid MAC address {mac!r}")
    return raw


def bridge_fdb_request(put: bool, ifindex: int, mac: bytes) -> Request:
    """The bridge-FDB entry of a remote MAC, towards the vxlan port `ifindex` (pure).

    put: RTM_NEWNEIGH, NTF_MASTER|NTF_EXT_LEARNED, NLM_F_CREATE|NLM_F_REPLACE;
    otherwise RTM_DELNEIGH, NTF_MASTER (the bridge deletes only an entry that
    sits on that port, so a MAC meanwhile learnt on a local port stays).
    """
    if put:
        payload = _BRIDGE_FDB.pack(
            AF_BRIDGE, 0, 0, ifindex, NUD_REACHABLE, NTF_MASTER | NTF_EXT_LEARNED, 0,
            10, NDA_LLADDR, mac,
        )  # fmt: skip
        return RTM_NEWNEIGH, _PUT, payload
    payload = _BRIDGE_FDB.pack(AF_BRIDGE, 0, 0, ifindex, 0, NTF_MASTER, 0, 10, NDA_LLADDR, mac)
    return RTM_DELNEIGH, 0, payload


class DataplaneWriter:
    """Writes Changes into the kernel of one network namespace (None: the current one).

    `links`: the ifindex cache to resolve device names with (its own by
    default); the writer refreshes it from a link dump when a name is missing
    or the kernel answers ENODEV. The reconciler gives it none: an index it
    judges link events against must not move ahead of those events.
    """

    def __init__(
        self,
        netns: str | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK,
        links: LinkIndex | None = None,
    ) -> None:
        self.netns = netns
        self.chunk_size = chunk_size
        self._sock = RouteSocket(netns)
        self.links = links if links is not None else LinkIndex()
        self._packed: dict[IPAddress, bytes] = {}

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DataplaneWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh_links(self) -> None:
        """Re-read every ifindex (a device was created, deleted or renamed)."""
        self.links.reset(dump_links(self._sock))

    def _ifindex(self, device: str, refreshed: list[bool]) -> int | None:
        index = self.links.index(device)
        if index is None and not refreshed[0]:
            refreshed[0] = True
            self.refresh_links()
            index = self.links.index(device)
        return index

    def _packed_ip(self, address: IPAddress) -> bytes:
        packed = self._packed.get(address)
        if packed is None:
            packed = address.packed
            if len(self._packed) < 65536:
                self._packed[address] = packed
        return packed

    # One builder per operation: (entry, ifindex) -> request. Looked up once per
    # op; a 100k-MAC batch is 200k requests, so the dispatch shows.

    def _fdb(self, entry: RemoteMac | FloodEntry, ifindex: int, mtype: int, flags: int,
             ndm_flags: int, state: int, lladdr: bytes) -> Request:  # fmt: skip
        dst = self._packed_ip(entry.vtep)
        fmt = _FDB4 if len(dst) == 4 else _FDB6
        payload = fmt.pack(
            AF_BRIDGE, 0, 0, ifindex, state, ndm_flags, 0,
            10, NDA_LLADDR, lladdr,
            4 + len(dst), NDA_DST, dst,
        )  # fmt: skip
        return mtype, flags, payload

    def _mac_put(self, entry: RemoteMac, ifindex: int) -> Request:
        state = NUD_REACHABLE | (NUD_NOARP if entry.sticky else 0)
        return self._fdb(entry, ifindex, RTM_NEWNEIGH, _PUT, _OURS, state, _mac_bytes(entry.mac))

    def _mac_del(self, entry: RemoteMac, ifindex: int) -> Request:
        return self._fdb(entry, ifindex, RTM_DELNEIGH, 0, NTF_SELF, 0, _mac_bytes(entry.mac))

    # The vxlan entry and its bridge companion in one message (see the module doc).

    def _mac_put_both(self, entry: RemoteMac, ifindex: int) -> Request:
        state = NUD_REACHABLE | (NUD_NOARP if entry.sticky else 0)
        flags = _BOTH | NTF_EXT_LEARNED
        return self._fdb(entry, ifindex, RTM_NEWNEIGH, _PUT, flags, state, _mac_bytes(entry.mac))

    def _mac_del_both(self, entry: RemoteMac, ifindex: int) -> Request:
        return self._fdb(entry, ifindex, RTM_DELNEIGH, 0, _BOTH, 0, _mac_bytes(entry.mac))

    def _flood_add(self, entry: FloodEntry, ifindex: int) -> Request:
        flags = NLM_F_CREATE | NLM_F_APPEND
        return self._fdb(entry, ifindex, RTM_NEWNEIGH, flags, _OURS, _FLOOD_STATE, _ZERO_MAC)

    def _flood_del(self, entry: FloodEntry, ifindex: int) -> Request:
        return self._fdb(entry, ifindex, RTM_DELNEIGH, 0, NTF_SELF, 0, _ZERO_MAC)

    def _bridge_put(self, entry: RemoteMac, ifindex: int) -> Request:
        return bridge_fdb_request(True, ifindex, _mac_bytes(entry.mac))

    def _bridge_del(self, entry: RemoteMac, ifindex: int) -> Request:
        return bridge_fdb_request(False, ifindex, _mac_bytes(entry.mac))

    def _neigh_put(self, entry: NeighEntry, ifindex: int) -> Request:
        dst = self._packed_ip(entry.ip)
        family = AF_INET if len(dst) == 4 else AF_INET6
        fmt = _NEIGH4 if family == AF_INET else _NEIGH6
        payload = fmt.pack(
            family, 0, 0, ifindex, NUD_NOARP, NTF_EXT_LEARNED, 0,
            4 + len(dst), NDA_DST, dst,
            10, NDA_LLADDR, _mac_bytes(entry.mac),
            5, NDA_PROTOCOL, RTPROT_EVPND,
        )  # fmt: skip
        return RTM_NEWNEIGH, _PUT, payload

    def _neigh_probe(self, entry: NeighEntry, ifindex: int) -> Request:
        # The kernel's own entry, as `ip neigh replace IP lladdr MAC nud probe`: no
        # NTF_EXT_LEARNED, no protocol; the kernel sends its unicast probes to MAC.
        dst = self._packed_ip(entry.ip)
        family = AF_INET if len(dst) == 4 else AF_INET6
        fmt = _NEIGH_PROBE4 if family == AF_INET else _NEIGH_PROBE6
        payload = fmt.pack(
            family, 0, 0, ifindex, NUD_PROBE, 0, 0,
            4 + len(dst), NDA_DST, dst,
            10, NDA_LLADDR, _mac_bytes(entry.mac),
        )  # fmt: skip
        return RTM_NEWNEIGH, _PUT, payload

    def _neigh_del(self, entry: NeighEntry, ifindex: int) -> Request:
        dst = self._packed_ip(entry.ip)
        family = AF_INET if len(dst) == 4 else AF_INET6
        fmt = _NEIGH_DEL4 if family == AF_INET else _NEIGH_DEL6
        payload = fmt.pack(family, 0, 0, ifindex, 0, 0, 0, 4 + len(dst), NDA_DST, dst)
        return RTM_DELNEIGH, 0, payload

    def _route_put(self, entry: RouteEntry, ifindex: int) -> Request:
        net = entry.prefix
        family = AF_INET if net.version == 4 else AF_INET6
        gateway = self._packed_ip(entry.gateway)
        if len(gateway) != len(net.network_address.packed):
            raise ValueError(f"gateway {entry.gateway} of route {net} is of another family")
        payload = b"".join((
            RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_EVPND,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, RTNH_F_ONLINK),
            rtattr(RTA_DST, net.network_address.packed),
            rtattr(RTA_GATEWAY, gateway),
            rtattr(RTA_OIF, _U32.pack(ifindex)),
            rtattr(RTA_PRIORITY, _U32.pack(ROUTE_METRIC)),
        ))  # fmt: skip
        return RTM_NEWROUTE, _PUT, payload

    def _route_del(self, entry: RouteEntry, ifindex: int) -> Request:
        # Scope "nowhere" and type 0 match any; protocol and metric must be ours.
        net = entry.prefix
        family = AF_INET if net.version == 4 else AF_INET6
        payload = b"".join((
            RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_EVPND,
                       RT_SCOPE_NOWHERE, 0, 0),
            rtattr(RTA_DST, net.network_address.packed),
            rtattr(RTA_PRIORITY, _U32.pack(ROUTE_METRIC)),
        ))  # fmt: skip
        return RTM_DELROUTE, 0, payload

    def _build(
        self, ops: list[tuple[Op, Entry]], result: WriteResult, refreshed: list[bool],
        pairs: bool,
    ) -> tuple[list[Request], list[tuple[Op, Entry, bool]]]:  # fmt: skip
        """The requests, and for each (op, entry, whether it is a combined message).
        `pairs`: a remote MAC's entries as separate messages (the retry)."""
        requests: list[Request] = []
        sent: list[tuple[Op, Entry, bool]] = []
        builders: dict[str, Callable[[Any, int], Request]] = {
            "mac_put": self._mac_put, "mac_del": self._mac_del,
            "flood_add": self._flood_add, "flood_del": self._flood_del,
            "bridge_put": self._bridge_put, "bridge_del": self._bridge_del,
            "neigh_put": self._neigh_put, "neigh_del": self._neigh_del,
            "route_put": self._route_put, "route_del": self._route_del,
            "neigh_probe": self._neigh_probe,
        }  # fmt: skip
        both_builders: dict[str, Callable[[Any, int], Request]] = {} if pairs else {
            "mac_put": self._mac_put_both, "mac_del": self._mac_del_both}  # fmt: skip
        # device -> (ifindex, whether it is a bridge port), for this batch
        indexes: dict[str, tuple[int, bool] | None] = {}
        for op, entry in ops:
            device = entry.device
            found = indexes.get(device, _UNSEEN)
            if found is _UNSEEN:
                found = indexes[device] = self._port(device, refreshed)
            if found is None:
                if op.endswith("_del"):
                    continue  # its device is gone, and the entry with it: nothing to do
                result.errors.append(
                    EntryError(op, entry, errno.ENODEV, f"unknown device {device!r}")
                )
                continue
            index, port = found
            both = both_builders.get(op)
            if both is not None and port:
                try:
                    requests.append(both(entry, index))
                except (ValueError, struct.error) as exc:  # binascii.Error is a ValueError
                    result.errors.append(EntryError(op, entry, errno.EINVAL, str(exc)))
                    continue
                sent.append((op, entry, True))
                continue
            # A single message; or a remote MAC's pair, on a device not known as a port.
            for part in (op,) if both is None else _PAIR[op]:
                try:
                    requests.append(builders[part](entry, index))
                except (ValueError, struct.error) as exc:
                    result.errors.append(EntryError(part, entry, errno.EINVAL, str(exc)))
                    break
                sent.append((part, entry, False))
        return requests, sent

    def _port(self, device: str, refreshed: list[bool]) -> tuple[int, bool] | None:
        index = self._ifindex(device, refreshed)
        if index is None:
            return None
        link = self.links.get(index)
        return index, link is not None and link.master is not None

    def _send(
        self, ops: list[tuple[Op, Entry]], result: WriteResult, refreshed: list[bool],
        pairs: bool = False,
    ) -> list[tuple[Op, Entry, NetlinkError]]:  # fmt: skip
        requests, sent = self._build(ops, result, refreshed, pairs)
        failures = self._sock.transact(requests, self.chunk_size)
        if not failures:  # the common case, counted in bulk
            for op, n in Counter(op for op, _entry, _both in sent).items():
                (result.bridge_writes if op in _BRIDGE_OPS else result.writes)[op] += n
            for op, n in Counter(op for op, _entry, both in sent if both).items():
                result.bridge_writes[_COMPANION[op]] += n
            return []
        failed: list[tuple[Op, Entry, NetlinkError]] = []
        split: list[tuple[Op, Entry]] = []
        for i, (op, entry, both) in enumerate(sent):
            error = failures.get(i)
            if both:
                if error is None:
                    result.writes[op] += 1
                    result.bridge_writes[_COMPANION[op]] += 1
                else:
                    split.extend((part, entry) for part in _PAIR[op])
                continue
            # Deleting what is already gone reached the goal (a route: ESRCH).
            if error is None or (op.endswith("_del") and error.errno in _GONE):
                (result.bridge_writes if op in _BRIDGE_OPS else result.writes)[op] += 1
            elif op in _BRIDGE_OPS and error.errno == errno.EOPNOTSUPP:
                continue  # the vxlan device is no bridge port: no bridge FDB to fill
            else:
                failed.append((op, entry, error))
        if split:
            failed += self._send(split, result, refreshed, pairs=True)
        return failed

    def apply(self, changes: Changes) -> WriteResult:
        """Write all changes, deletes first; never raises for a single entry's failure."""
        # Routes are deleted first and written last: a route is only ever in the
        # kernel while its next hop's neighbour and router MAC are.
        ops: list[tuple[Op, Entry]] = [
            *(("route_del", e) for e in changes.routes_del),
            *(("mac_del", e) for e in changes.macs_del),  # with its bridge entry
            *(("flood_del", e) for e in changes.floods_del),
            *(("neigh_del", e) for e in changes.neighs_del),
            *(("neigh_probe", e) for e in changes.neighs_probe),  # after our entry went
            *(("mac_put", e) for e in changes.macs_put),  # with its bridge entry
            *(("flood_add", e) for e in changes.floods_add),
            *(("neigh_put", e) for e in changes.neighs_put),
            *(("route_put", e) for e in changes.routes_put),
        ]
        result = WriteResult()
        refreshed = [False]
        failed = self._send(ops, result, refreshed)
        stale = [(op, e) for op, e, err in failed if err.errno == errno.ENODEV]
        if stale and not refreshed[0]:
            # A device may have been recreated under a new ifindex: look again once.
            before = {e.device: self.links.index(e.device) for _op, e in stale}
            self.refresh_links()
            refreshed[0] = True
            retry = [(op, e) for op, e in stale if self.links.index(e.device) != before[e.device]]
            if retry:
                retried = set(retry)
                failed = [f for f in failed if (f[0], f[1]) not in retried]
                failed += self._send(retry, result, refreshed)
        for op, entry, error in failed:
            result.errors.append(EntryError(op, entry, error.errno, str(error)))
        return result
