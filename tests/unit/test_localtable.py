"""Local learning rules and the resync diff (evpnd/dataplane/localtable.py), without a kernel."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evpnd.dataplane.events import (
    LocalEvent,
    LocalIp,
    LocalIpLearned,
    LocalIpRemoved,
    LocalMac,
    LocalMacAdded,
    LocalMacRemoved,
    Resynced,
    WatchedVni,
)
from evpnd.dataplane.localtable import (
    LocalSnapshot,
    LocalTable,
    diff_snapshots,
    resync_events,
    table_from_messages,
)
from evpnd.dataplane.netlink.wire import (
    AF_BRIDGE,
    NTF_EXT_LEARNED,
    NTF_EXT_LOCKED,
    NTF_PROXY,
    NTF_SELF,
    NTF_STICKY,
    NUD_DELAY,
    NUD_FAILED,
    NUD_INCOMPLETE,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_REACHABLE,
    NUD_STALE,
    LinkMsg,
    NeighMsg,
)
from tests.unit.netlink_msgs import (
    BR,
    IP_A,
    MAC_A,
    MAC_B,
    OTHER_BR,
    OTHER_PORT,
    P1,
    P2,
    VX,
    W100,
    fdb,
    link,
    neigh,
    topology,
)


def make_table(**kwargs: object) -> LocalTable:
    table = LocalTable([W100], **kwargs)  # type: ignore[arg-type]
    for msg in topology():
        assert table.apply(msg) == []
    return table


def added(mac: str, port: str = "vep1", static: bool = False) -> LocalMacAdded:
    return LocalMacAdded(100, "br100", port, mac, static)


def removed(mac: str, port: str = "vep1") -> LocalMacRemoved:
    return LocalMacRemoved(100, "br100", port, mac)


def learned(mac: str, ip: str) -> LocalIpLearned:
    return LocalIpLearned(100, "br100", mac, ip_address(ip))


def unlearned(mac: str, ip: str) -> LocalIpRemoved:
    return LocalIpRemoved(100, "br100", mac, ip_address(ip))


# --- FDB rules


def test_dynamic_entry_on_local_port_is_added_once() -> None:
    t = make_table()
    assert t.apply(fdb(MAC_A)) == [added(MAC_A)]
    # The kernel re-sends NEWNEIGH on every refresh and state change.
    assert t.apply(fdb(MAC_A)) == []
    assert t.apply(fdb(MAC_A, state=NUD_STALE)) == []
    assert t.apply(fdb(MAC_A, deleted=True)) == [removed(MAC_A)]
    assert t.apply(fdb(MAC_A, deleted=True)) == []
    assert t.snapshot().macs == {}


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(fdb(MAC_A, state=NUD_PERMANENT), id="permanent-port-address"),
        pytest.param(fdb(MAC_A, port=BR, state=NUD_PERMANENT), id="bridge-own-mac"),
        pytest.param(fdb(MAC_A, port=BR), id="entry-on-bridge-itself"),
        pytest.param(fdb(MAC_A, flags=NTF_EXT_LEARNED), id="extern-learn"),
        pytest.param(fdb(MAC_A, port=VX), id="behind-vxlan-device"),
        pytest.param(fdb(MAC_A, port=VX, flags=NTF_SELF, master=None), id="vxlan-self-entry"),
        pytest.param(fdb(MAC_A, flags=NTF_SELF, master=None), id="port-self-uc-list"),
        pytest.param(fdb(MAC_A, flags_ext=NTF_EXT_LOCKED), id="locked-port"),
        pytest.param(fdb("01:00:5e:00:00:01"), id="group-mac"),
        pytest.param(fdb("00:00:00:00:00:00", port=P1), id="zero-mac"),
        pytest.param(fdb(MAC_A, port=OTHER_PORT, master=OTHER_BR), id="unwatched-bridge"),
        pytest.param(fdb(MAC_A, port=99, master=99), id="unknown-bridge"),
    ],
)
def test_non_local_fdb_entries_produce_nothing(msg: NeighMsg) -> None:
    t = make_table()
    assert t.apply(msg) == []
    assert t.snapshot().macs == {}


def test_other_vxlan_port_on_the_bridge_is_not_local() -> None:
    t = make_table()
    t.apply(link(30, "vxlan-extra", master=BR, kind="vxlan"))
    assert t.apply(fdb(MAC_A, port=30)) == []


def test_static_and_sticky_entries_are_local_and_flagged() -> None:
    t = make_table()
    assert t.apply(fdb(MAC_A, state=NUD_NOARP)) == [added(MAC_A, static=True)]
    assert t.apply(fdb(MAC_B, flags=NTF_STICKY)) == [added(MAC_B, static=True)]
    # Dynamic -> static is a change the originator cares about (sticky bit).
    t.apply(fdb("02:00:00:00:00:0c"))
    assert t.apply(fdb("02:00:00:00:00:0c", state=NUD_NOARP)) == [
        added("02:00:00:00:00:0c", static=True)
    ]


def test_move_between_local_ports_is_one_added_with_new_port() -> None:
    t = make_table()
    t.apply(fdb(MAC_A, port=P1))
    assert t.apply(fdb(MAC_A, port=P2)) == [added(MAC_A, port="vep2")]
    # A late delete naming the old port is about an entry that no longer exists.
    assert t.apply(fdb(MAC_A, port=P1, deleted=True)) == []
    assert t.snapshot().macs[(100, MAC_A)].port == "vep2"
    assert t.apply(fdb(MAC_A, port=P2, deleted=True)) == [removed(MAC_A, port="vep2")]


def test_local_mac_moving_behind_vxlan_or_turning_extern_learn_is_removed() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    assert t.apply(fdb(MAC_A, port=VX, flags=NTF_EXT_LEARNED)) == [removed(MAC_A)]
    t.apply(fdb(MAC_B))
    assert t.apply(fdb(MAC_B, state=NUD_PERMANENT)) == [removed(MAC_B)]


def test_fdb_without_nda_master_falls_back_to_port_master() -> None:
    t = make_table()
    assert t.apply(fdb(MAC_A, master=None)) == [added(MAC_A)]
    assert t.apply(fdb(MAC_B, port=OTHER_PORT, master=None)) == []


# --- neighbour rules


def test_ip_is_learned_only_for_a_local_mac() -> None:
    t = make_table()
    # The SVI learned it (ARP through the tunnel, say) before the MAC is local.
    assert t.apply(neigh("10.100.0.10", MAC_A)) == []
    assert t.apply(fdb(MAC_A)) == [added(MAC_A), learned(MAC_A, "10.100.0.10")]
    assert t.apply(neigh("10.100.0.10", MAC_A, state=NUD_STALE)) == []
    assert t.apply(neigh("10.100.0.10", MAC_A, state=NUD_DELAY)) == []
    assert t.apply(neigh("2001:db8::10", MAC_A)) == [learned(MAC_A, "2001:db8::10")]
    # MAC ages out: its IPs go first, then the MAC.
    assert t.apply(fdb(MAC_A, deleted=True)) == [
        unlearned(MAC_A, "10.100.0.10"),
        unlearned(MAC_A, "2001:db8::10"),
        removed(MAC_A),
    ]
    # The bindings are still held: the MAC coming back brings them back.
    assert t.apply(fdb(MAC_A)) == [
        added(MAC_A),
        learned(MAC_A, "10.100.0.10"),
        learned(MAC_A, "2001:db8::10"),
    ]


def test_ip_removed_on_failed_incomplete_or_delete() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    for gone in (
        neigh("10.100.0.10", MAC_A, state=NUD_FAILED),
        neigh("10.100.0.10", None, state=NUD_INCOMPLETE),
        neigh("10.100.0.10", MAC_A, deleted=True),
    ):
        assert t.apply(neigh("10.100.0.10", MAC_A)) == [learned(MAC_A, "10.100.0.10")]
        assert t.apply(gone) == [unlearned(MAC_A, "10.100.0.10")]
        assert t.snapshot().ips == {}


def test_ip_moving_to_another_mac_is_removed_then_learned() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    t.apply(fdb(MAC_B, port=P2))
    t.apply(neigh("10.100.0.10", MAC_A))
    assert t.apply(neigh("10.100.0.10", MAC_B)) == [
        unlearned(MAC_A, "10.100.0.10"),
        learned(MAC_B, "10.100.0.10"),
    ]
    # MAC_A leaving no longer touches the IP.
    assert t.apply(fdb(MAC_A, deleted=True)) == [removed(MAC_A)]


def test_ip_becoming_extern_learn_is_removed() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    t.apply(neigh("10.100.0.10", MAC_A))
    assert t.apply(neigh("10.100.0.10", MAC_A, state=NUD_NOARP, flags=NTF_EXT_LEARNED)) == [
        unlearned(MAC_A, "10.100.0.10")
    ]


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(neigh("10.100.0.10", MAC_A, flags=NTF_EXT_LEARNED), id="extern-learn"),
        pytest.param(neigh("10.100.0.10", MAC_A, protocol=0xBA), id="owned-protocol"),
        pytest.param(neigh("10.100.0.10", MAC_A, flags=NTF_PROXY), id="proxy"),
        pytest.param(neigh("10.100.0.10", None, state=NUD_INCOMPLETE), id="incomplete"),
        pytest.param(neigh("10.100.0.10", MAC_A, state=NUD_FAILED), id="failed"),
        pytest.param(neigh("10.100.0.10", MAC_A, dev=P1), id="not-on-the-svi"),
        pytest.param(neigh("10.100.0.10", MAC_A, dev=OTHER_BR), id="unwatched-svi"),
        pytest.param(neigh("fe80::10", MAC_A), id="ipv6-link-local"),
        pytest.param(neigh("224.0.0.22", "01:00:5e:00:00:16", state=NUD_NOARP), id="mcast"),
        pytest.param(neigh("ff02::16", "33:33:00:00:00:16", state=NUD_NOARP), id="mcast6"),
        pytest.param(neigh("10.100.0.10", "00:00:00:00:00:00"), id="zero-mac"),
    ],
)
def test_non_local_neighbours_produce_nothing(msg: NeighMsg) -> None:
    t = make_table(owned_protocols={0xBA})
    t.apply(fdb(MAC_A))
    assert t.apply(msg) == []
    assert t.snapshot().ips == {}


def test_permanent_and_noarp_admin_neighbours_are_local() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    assert t.apply(neigh("10.100.0.10", MAC_A, state=NUD_PERMANENT)) == [
        learned(MAC_A, "10.100.0.10")
    ]
    assert t.apply(neigh("10.100.0.11", MAC_A, state=NUD_NOARP)) == [learned(MAC_A, "10.100.0.11")]


def test_link_local_opt_in() -> None:
    t = make_table(include_link_local=True)
    t.apply(fdb(MAC_A))
    assert t.apply(neigh("fe80::10", MAC_A)) == [learned(MAC_A, "fe80::10")]


# --- topology changes


def test_bridge_created_later_is_picked_up() -> None:
    t = LocalTable([W100])
    assert t.apply(fdb(MAC_A)) == []  # unknown bridge index: not ours (yet)
    t.apply(link(BR, "br100", kind="bridge"))
    t.apply(link(VX, "vxlan100", master=BR, kind="vxlan"))
    t.apply(link(P1, "vep1", master=BR))
    assert t.resolved() == {100: (BR, VX)}
    assert t.apply(fdb(MAC_A)) == [added(MAC_A)]
    assert t.apply(fdb(MAC_B, port=VX)) == []


def test_bridge_deleted_or_recreated_drops_its_state() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    t.apply(neigh("10.100.0.10", MAC_A))
    assert t.apply(link(BR, "br100", deleted=True)) == [
        unlearned(MAC_A, "10.100.0.10"),
        removed(MAC_A),
    ]
    assert t.resolved() == {100: (None, VX)}
    # Recreated under a new index: learning resumes there, nothing stale comes back.
    t.apply(link(40, "br100", kind="bridge"))
    t.apply(link(P1, "vep1", master=40))
    assert t.apply(fdb(MAC_B, master=40)) == [added(MAC_B)]
    assert t.apply(neigh("10.100.0.10", MAC_A, dev=40)) == []


def test_port_leaving_bridge_or_deleted_drops_its_macs() -> None:
    t = make_table()
    t.apply(fdb(MAC_A, port=P1))
    t.apply(fdb(MAC_B, port=P2))
    assert t.apply(link(P1, "vep1", master=None)) == [removed(MAC_A)]
    assert t.apply(link(P2, "vep2", deleted=True)) == [removed(MAC_B, port="vep2")]


def test_bridge_family_dellink_is_not_a_deletion() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    assert t.apply(link(P1, "vep1", master=BR, deleted=True, family=AF_BRIDGE)) == []
    assert (100, MAC_A) in t.snapshot().macs


def test_port_rename_reannounces_with_new_name() -> None:
    t = make_table()
    t.apply(fdb(MAC_A))
    assert t.apply(link(P1, "eth-ep", master=BR)) == [added(MAC_A, port="eth-ep")]


def test_svi_going_down_drops_ips_keeps_static_macs() -> None:
    t = make_table()
    t.apply(fdb(MAC_A, state=NUD_NOARP))
    t.apply(neigh("10.100.0.10", MAC_A))
    assert t.apply(link(BR, "br100", kind="bridge", flags=0)) == [unlearned(MAC_A, "10.100.0.10")]
    assert list(t.snapshot().macs) == [(100, MAC_A)]


def test_watched_set_validation() -> None:
    with pytest.raises(ValueError):
        LocalTable([W100, WatchedVni(100, "br2", "vx2")])
    with pytest.raises(ValueError):
        LocalTable([W100, WatchedVni(200, "br100", "vx2")])


# --- resync diff


def snap(macs: list[LocalMac], ips: list[LocalIp]) -> LocalSnapshot:
    return LocalSnapshot({m.key: m for m in macs}, {i.key: i for i in ips})


def test_diff_emits_only_differences_in_consumer_safe_order() -> None:
    a = LocalMac(100, "br100", "vep1", MAC_A)
    b = LocalMac(100, "br100", "vep1", MAC_B)
    b_moved = LocalMac(100, "br100", "vep2", MAC_B)
    c = LocalMac(100, "br100", "vep1", "02:00:00:00:00:0c")
    ip_a = LocalIp(100, "br100", MAC_A, IP_A)
    ip_b = LocalIp(100, "br100", MAC_B, IPv4Address("10.100.0.11"))
    ip_c = LocalIp(100, "br100", c.mac, IPv4Address("10.100.0.12"))
    known = snap([a, b], [ip_a, ip_b])
    dumped = snap([b_moved, c], [ip_b, ip_c])
    assert diff_snapshots(known, dumped) == [
        LocalIpRemoved.of(ip_a),
        LocalMacRemoved.of(a),
        LocalMacAdded.of(b_moved),
        LocalMacAdded.of(c),
        LocalIpLearned.of(ip_c),
    ]
    assert diff_snapshots(dumped, dumped) == []
    assert resync_events(dumped, dumped, "overrun") == [Resynced("overrun", 2, 2)]


class ConsumerModel:
    """What a well-behaved consumer holds after applying events; checks the contract."""

    def __init__(self) -> None:
        self.macs: dict[tuple[int, str], LocalMac] = {}
        self.ips: dict[tuple[int, object], LocalIp] = {}

    def apply(self, events: list[LocalEvent]) -> None:
        for ev in events:
            if isinstance(ev, LocalMacAdded):
                entry = LocalMac(ev.vni, ev.bridge, ev.port, ev.mac, ev.static)
                self.macs[(ev.vni, ev.mac)] = entry
            elif isinstance(ev, LocalMacRemoved):
                assert (ev.vni, ev.mac) in self.macs, ev
                assert not any(i.mac == ev.mac and i.vni == ev.vni for i in self.ips.values()), ev
                del self.macs[(ev.vni, ev.mac)]
            elif isinstance(ev, LocalIpLearned):
                assert (ev.vni, ev.mac) in self.macs, ev
                assert (ev.vni, ev.ip) not in self.ips, ev
                self.ips[(ev.vni, ev.ip)] = LocalIp(ev.vni, ev.bridge, ev.mac, ev.ip)
            elif isinstance(ev, LocalIpRemoved):
                assert self.ips.get((ev.vni, ev.ip)) == LocalIp(ev.vni, ev.bridge, ev.mac, ev.ip)
                del self.ips[(ev.vni, ev.ip)]

    def snapshot(self) -> LocalSnapshot:
        return LocalSnapshot(dict(self.macs), dict(self.ips))  # type: ignore[arg-type]


# Few values on purpose: collisions (same MAC, same IP) are where the rules live.
MACS = [f"02:00:00:00:00:{i:02x}" for i in range(1, 4)]
IPS = ["10.100.0.1", "2001:db8::1", "fe80::1"]
PORTS = [P1, P2, VX]

fdb_ops = st.builds(
    lambda mac, port, state, flags, deleted: ("fdb", mac, port, state, flags, deleted),
    st.sampled_from(MACS),
    st.sampled_from(PORTS),
    st.sampled_from([NUD_REACHABLE, NUD_STALE, NUD_NOARP, NUD_PERMANENT]),
    st.sampled_from([0, NTF_EXT_LEARNED, NTF_STICKY]),
    st.booleans(),
)
neigh_ops = st.builds(
    lambda ip, mac, state, flags, deleted: ("neigh", ip, mac, state, flags, deleted),
    st.sampled_from(IPS),
    st.sampled_from(MACS),
    st.sampled_from([NUD_REACHABLE, NUD_STALE, NUD_FAILED, NUD_PERMANENT, NUD_NOARP]),
    st.sampled_from([0, NTF_EXT_LEARNED]),
    st.booleans(),
)
link_ops = st.builds(
    lambda port, master: ("link", port, master),
    st.sampled_from([P1, P2]),
    st.sampled_from([BR, None]),
)


class FakeKernel:
    """Kernel tables as the bridge keys them, producing the notifications it would send."""

    def __init__(self) -> None:
        self.links = {m.ifindex: m for m in topology()}
        self.fdb: dict[str, tuple[int, int, int]] = {}
        self.neigh: dict[str, tuple[str, int, int]] = {}

    def do(self, op: tuple) -> list[NeighMsg | LinkMsg]:
        if op[0] == "fdb":
            _, mac, port, state, flags, deleted = op
            if self.links[port].master != BR:
                return []
            if deleted:
                if mac not in self.fdb:
                    return []
                old_port, old_state, old_flags = self.fdb.pop(mac)
                return [fdb(mac, port=old_port, state=old_state, flags=old_flags, deleted=True)]
            self.fdb[mac] = (port, state, flags)
            return [fdb(mac, port=port, state=state, flags=flags)]
        if op[0] == "neigh":
            _, ip, mac, state, flags, deleted = op
            if deleted:
                if ip not in self.neigh:
                    return []
                old_mac, old_state, old_flags = self.neigh.pop(ip)
                return [neigh(ip, old_mac, state=old_state, flags=old_flags, deleted=True)]
            self.neigh[ip] = (mac, state, flags)
            return [neigh(ip, mac, state=state, flags=flags)]
        _, port, master = op
        old = self.links[port]
        if old.master == master:
            return []
        new = link(port, old.name, master=master, kind=old.kind)
        self.links[port] = new
        # Leaving the bridge flushes the port's entries, as br_del_if does.
        msgs: list[NeighMsg | LinkMsg] = []
        for mac, (p, state, flags) in list(self.fdb.items()):
            if p == port and master is None:
                del self.fdb[mac]
                msgs.append(fdb(mac, port=p, state=state, flags=flags, deleted=True))
        return [*msgs, new]

    def dump(self) -> list[NeighMsg | LinkMsg]:
        return [
            *self.links.values(),
            *(fdb(m, port=p, state=s, flags=f) for m, (p, s, f) in self.fdb.items()),
            *(neigh(i, m, state=s, flags=f) for i, (m, s, f) in self.neigh.items()),
        ]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(fdb_ops, neigh_ops, link_ops), min_size=4, max_size=60),
    st.integers(0, 60),
)
def test_incremental_events_match_dump_and_resync_repairs_lost_messages(
    ops: list[tuple], lost_from: int
) -> None:
    kernel = FakeKernel()
    table = make_table()
    consumer = ConsumerModel()
    for op in ops:
        for msg in kernel.do(op):
            consumer.apply(table.apply(msg))
        # The consumer's view is exactly the table's, at every step.
        assert consumer.snapshot() == table.snapshot()
    dumped = table_from_messages([W100], kernel.dump()).snapshot()
    assert table.snapshot() == dumped

    # Now lose every notification after `lost_from` (an overrun), then resync.
    kernel2 = FakeKernel()
    table2 = make_table()
    consumer2 = ConsumerModel()
    for n, op in enumerate(ops):
        msgs = kernel2.do(op)
        if n < lost_from:
            for msg in msgs:
                consumer2.apply(table2.apply(msg))
    fresh = table_from_messages([W100], kernel2.dump()).snapshot()
    events = resync_events(table2.snapshot(), fresh, "overrun")
    assert isinstance(events[-1], Resynced)
    consumer2.apply(events)
    assert consumer2.snapshot() == fresh == dumped


@given(
    st.lists(st.tuples(st.sampled_from(MACS), st.sampled_from(["vep1", "vep2"]), st.booleans())),
    st.lists(st.tuples(st.sampled_from(MACS), st.sampled_from(["vep1", "vep2"]), st.booleans())),
    st.lists(st.tuples(st.sampled_from(IPS), st.sampled_from(MACS))),
    st.lists(st.tuples(st.sampled_from(IPS), st.sampled_from(MACS))),
)
def test_diff_takes_any_consistent_known_to_any_dumped(
    known_macs: list, dumped_macs: list, known_ips: list, dumped_ips: list
) -> None:
    def build(macs: list, ips: list) -> LocalSnapshot:
        m = {(100, mac): LocalMac(100, "br100", port, mac, static) for mac, port, static in macs}
        i = {
            (100, ip_address(ip)): LocalIp(100, "br100", mac, ip_address(ip))
            for ip, mac in ips
            if (100, mac) in m  # only consistent snapshots: IPs of local MACs
        }
        return LocalSnapshot(m, i)

    known, dumped = build(known_macs, known_ips), build(dumped_macs, dumped_ips)
    consumer = ConsumerModel()
    consumer.apply(diff_snapshots(LocalSnapshot({}, {}), known))
    assert consumer.snapshot() == known
    consumer.apply(diff_snapshots(known, dumped))
    assert consumer.snapshot() == dumped
