"""The ifindex <-> link name cache every netlink reader and writer keeps.

Neighbour messages name devices by ifindex, evpnd's state names them by name
(ifindexes change when a device is recreated). A `LinkIndex` holds the last
RTM_NEWLINK of each ifindex and resolves both ways; it is filled from a link
dump (`routesocket.dump_links`) or from link notifications. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from evpnd.dataplane.netlink.wire import LinkMsg


class LinkIndex:
    """The links of one namespace: ifindex -> last link message, and name -> ifindex."""

    def __init__(self, links: Iterable[LinkMsg] = ()) -> None:
        self._by_index: dict[int, LinkMsg] = {}
        self._by_name: dict[str, int] = {}
        self._names: dict[int, str] = {}
        # ifindex -> name, read-only: looked up for every neighbour message of
        # a dump or an event, so a plain mapping rather than a method call.
        self.names: Mapping[int, str] = self._names
        self.update(links)

    def __len__(self) -> int:
        return len(self._by_index)

    def __contains__(self, index: object) -> bool:
        return index in self._by_index

    def __iter__(self) -> Iterator[LinkMsg]:
        return iter(list(self._by_index.values()))

    def get(self, index: int) -> LinkMsg | None:
        return self._by_index.get(index)

    def index(self, name: str) -> int | None:
        return self._by_name.get(name)

    def put(self, link: LinkMsg) -> LinkMsg | None:
        """Record a link that exists (new, renamed or changed); return what the ifindex was."""
        index = link.ifindex
        old = self._by_index.get(index)
        self._by_index[index] = link
        self._names[index] = link.name
        # A name maps to the ifindex that last claimed it. Messages may arrive
        # stale (a dump merged with events, a lost RTM_DELLINK): a name is only
        # dropped while it still points at this ifindex.
        if old is not None and old.name != link.name and self._by_name.get(old.name) == index:
            del self._by_name[old.name]
        self._by_name[link.name] = index
        return old

    def remove(self, index: int) -> LinkMsg | None:
        """Forget a deleted link; return what it was (None: unknown)."""
        old = self._by_index.pop(index, None)
        self._names.pop(index, None)
        if old is not None and self._by_name.get(old.name) == index:
            del self._by_name[old.name]
        return old

    def update(self, links: Iterable[LinkMsg]) -> None:
        for link in links:
            self.put(link)

    def reset(self, links: Iterable[LinkMsg]) -> None:
        """Replace everything (a fresh link dump)."""
        fresh = list(links)  # `links` may be this index itself
        self._by_index.clear()
        self._by_name.clear()
        self._names.clear()
        self.update(fresh)
