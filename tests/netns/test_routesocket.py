"""The one dump loop (RouteSocket.dump) and the link cache against a real kernel."""

from __future__ import annotations

import errno
from typing import TypeVar

import pytest
from pyroute2 import IPRoute

from evpnd.dataplane.netlink.linkindex import LinkIndex
from evpnd.dataplane.netlink.routesocket import (
    DUMP_ATTEMPTS,
    LINK_DUMP_REQUEST,
    Decoder,
    RouteSocket,
    dump_links,
)
from evpnd.dataplane.netlink.wire import (
    RTM_GETLINK,
    RTM_NEWLINK,
    LinkMsg,
    MalformedMessage,
    decode_link,
)

pytestmark = pytest.mark.netns
T = TypeVar("T")

# Enough links that a link dump takes several datagrams (each at most ~32 KiB).
BRIDGES = 60


def add_bridges(ns: str, names: list[str]) -> None:
    with IPRoute(netns=ns) as ipr:
        for name in names:
            ipr.link("add", ifname=name, kind="bridge")


def new_link(mtype: int, data: bytes, start: int, end: int) -> LinkMsg | None:
    return decode_link(mtype, data, start, end) if mtype == RTM_NEWLINK else None


_churned = iter(range(1_000_000))


class ChurningSocket(RouteSocket):
    """Adds a link right after the first datagram of the first `churn` dumps: the
    kernel then marks the rest of that dump NLM_F_DUMP_INTR (its link list changed)."""

    def __init__(self, ns: str, churn: int) -> None:
        super().__init__(ns)
        self.churn = churn
        self.added: list[str] = []
        self._datagrams = 0

    def _dump_once(
        self, msg_type: int, payload: bytes, decode: Decoder[T]
    ) -> tuple[list[T], int, bool]:
        self._datagrams = 0
        return super()._dump_once(msg_type, payload, decode)

    def _recv(self) -> bytes:
        data = super()._recv()
        self._datagrams += 1
        if self._datagrams == 1 and len(self.added) < self.churn:
            name = f"churn{next(_churned)}"
            assert self.netns is not None
            add_bridges(self.netns, [name])
            self.added.append(name)
        return data


def test_dump_decodes_every_link_and_counts_what_does_not_decode(ns: str) -> None:
    names = [f"br{i}" for i in range(BRIDGES)]
    add_bridges(ns, names)

    def refuse_lo(mtype: int, data: bytes, start: int, end: int) -> LinkMsg | None:
        link = new_link(mtype, data, start, end)
        if link is not None and link.name == "lo":
            raise MalformedMessage("pretend lo does not parse")
        return link

    with RouteSocket(ns) as sock:
        dumped = sock.dump(RTM_GETLINK, LINK_DUMP_REQUEST, refuse_lo)
        assert (dumped.parse_errors, dumped.retries) == (1, 0)
        assert sorted(link.name for link in dumped.items) == sorted(names)
        links = LinkIndex(dump_links(sock))
    assert set(links.names.values()) == {"lo", *names}
    for name in names:
        index = links.index(name)
        assert index is not None and links.names[index] == name
        link = links.get(index)
        assert link is not None and (link.name, link.kind, link.master) == (name, "bridge", None)


def test_an_interrupted_dump_is_done_again(ns: str) -> None:
    add_bridges(ns, [f"br{i}" for i in range(BRIDGES)])
    with ChurningSocket(ns, churn=1) as sock:
        dumped = sock.dump(RTM_GETLINK, LINK_DUMP_REQUEST, new_link)
    assert dumped.retries == 1
    assert len(sock.added) == 1
    # The second dump saw the link added during the first.
    assert sock.added[0] in {link.name for link in dumped.items}
    assert len(dumped.items) == BRIDGES + 2  # lo, the bridges, the added one


def test_a_dump_interrupted_every_time_is_refused_or_taken_as_is(ns: str) -> None:
    add_bridges(ns, [f"br{i}" for i in range(BRIDGES)])
    with ChurningSocket(ns, churn=DUMP_ATTEMPTS) as sock, pytest.raises(OSError) as refused:
        sock.dump(RTM_GETLINK, LINK_DUMP_REQUEST, new_link)
    assert refused.value.errno == errno.EAGAIN
    with ChurningSocket(ns, churn=DUMP_ATTEMPTS) as sock:
        taken = sock.dump(RTM_GETLINK, LINK_DUMP_REQUEST, new_link, accept_interrupted=True)
    assert taken.retries == DUMP_ATTEMPTS - 1
    assert len(taken.items) >= BRIDGES + 1
