"""The ifindex <-> name cache (dataplane/netlink/linkindex.py) shared by every netlink user."""

from __future__ import annotations

from evpnd.dataplane.netlink.linkindex import LinkIndex
from evpnd.dataplane.netlink.wire import AF_UNSPEC, IFF_UP, LinkMsg


def link(index: int, name: str, master: int | None = None, kind: str | None = None) -> LinkMsg:
    return LinkMsg(False, AF_UNSPEC, index, name, master, kind, IFF_UP)


def test_resolves_both_ways_and_keeps_the_last_message() -> None:
    links = LinkIndex([link(1, "lo"), link(2, "br100", kind="bridge")])
    assert (links.names.get(2), links.index("br100"), len(links)) == ("br100", 2, 2)
    assert 2 in links and 3 not in links
    enslaved = link(3, "vxlan100", master=2, kind="vxlan")
    assert links.put(enslaved) is None
    assert links.get(3) == enslaved
    assert links.put(link(3, "vxlan100", kind="vxlan")) == enslaved  # left the bridge
    assert links.get(3) == link(3, "vxlan100", kind="vxlan")
    assert links.names.get(9) is None and links.index("eth9") is None


def test_rename_moves_the_name() -> None:
    links = LinkIndex([link(5, "vep1")])
    old = links.put(link(5, "vep9"))
    assert old is not None and old.name == "vep1"
    assert links.index("vep1") is None
    assert (links.index("vep9"), links.names[5]) == (5, "vep9")


def test_a_stale_message_never_takes_a_name_back() -> None:
    # ifindex 5 was vep1, renamed; ifindex 6 took the name vep1; then a stale
    # message about 5 (from a dump merged with events) renames it again.
    links = LinkIndex([link(5, "vep1")])
    links.put(link(6, "vep1"))
    assert links.index("vep1") == 6
    links.put(link(5, "vep5"))
    assert links.index("vep1") == 6  # still the newer owner's
    assert links.remove(5) == link(5, "vep5")
    assert links.index("vep1") == 6 and links.index("vep5") is None
    assert links.remove(6) is not None and links.index("vep1") is None
    assert links.remove(6) is None


def test_reset_replaces_everything() -> None:
    links = LinkIndex([link(1, "lo"), link(2, "br100")])
    names = links.names
    links.reset([link(1, "lo"), link(7, "br100")])
    assert links.names is names  # the same live mapping
    assert dict(names) == {1: "lo", 7: "br100"} and links.index("br100") == 7
    links.reset(links)  # from itself: unchanged
    assert dict(names) == {1: "lo", 7: "br100"}
    assert sorted(link.ifindex for link in links) == [1, 7]
