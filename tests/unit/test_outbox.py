"""The outbox (our adj-RIB-out towards ExaBGP) with plain routes: what goes out, in which lines.

`exchange()` plays ExaBGP: it takes every line the outbox offers, answers
each with `done` (or what the test says), and records how many lines were
ever waiting for an answer at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import ip_address

import pytest

from evpnd.model import ImetKey, ImetRoute, MacIpKey, MacIpRoute
from evpnd.speaker import encode
from evpnd.speaker.outbox import REFRESH, Outbox

VTEP = ip_address("192.0.2.1")
VNI = 100
RD = f"{VTEP}:{VNI}"
RT = f"65000:{VNI}"


def mac_route(i: int, with_ip: bool = False, **fields: object) -> MacIpRoute:
    mac = f"02:00:00:aa:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
    ip = ip_address(f"192.168.100.{10 + i}") if with_ip else None
    return MacIpRoute(MacIpKey(RD, 0, mac, ip), VTEP, VNI, route_targets=(RT,), **fields)


def imet_route() -> ImetRoute:
    return ImetRoute(ImetKey(RD, 0, VTEP), VTEP, VNI, route_targets=(RT,))


def token(route: MacIpRoute | ImetRoute) -> str:
    return encode.route_token(route)


def tokens_of(line: str) -> list[str]:
    for verb in (encode.ANNOUNCE, encode.WITHDRAW):
        if line.startswith(verb + " "):
            return line[len(verb) + 1 :].removeprefix("batch ").split(";")
    raise AssertionError(f"not a route line: {line}")


@dataclass
class Exchange:
    lines: list[str] = field(default_factory=list)
    most_in_flight: int = 0


def exchange(outbox: Outbox, answers: list[bool] | None = None) -> Exchange:
    """Send until the outbox has nothing more; acks `done`, or `answers` in order first."""
    seen = Exchange()
    pending = list(answers or [])
    while True:
        lines = outbox.next_lines()
        seen.most_in_flight = max(seen.most_in_flight, outbox.lines_in_flight)
        seen.lines += lines
        if not outbox.lines_in_flight:
            return seen
        outbox.acknowledge(pending.pop(0) if pending else True)


def attached(**options: int) -> Outbox:
    outbox = Outbox(**options)
    outbox.attach()
    return outbox


def test_batches_respect_the_window_and_withdraws_repeat_the_announced_tokens() -> None:
    outbox = attached(batch_size=4, window=2)
    routes = [mac_route(i, with_ip=True, mobility_seq=i + 1) for i in range(20)]
    outbox.announce(routes)
    lines = outbox.next_lines()
    assert len(lines) == 2 and outbox.next_lines() == []  # the window is full
    outbox.acknowledge(True)
    third = outbox.next_lines()
    assert len(third) == 1  # one answer, one more line
    rest = exchange(outbox)
    lines += third + rest.lines
    assert rest.most_in_flight == 2
    assert len(lines) == 5 and all(line.startswith("announce evpn batch ") for line in lines)
    assert rest.most_in_flight <= 2
    announced = [t for line in lines for t in tokens_of(line)]
    assert announced == [outbox.announced()[route.key] for route in routes]
    assert announced == [token(route) for route in routes]

    outbox.withdraw([routes[3].key, routes[11].key, routes[17].key])
    outbox.withdraw([routes[3].key])  # twice: nothing more goes out
    assert exchange(outbox).lines == [
        "withdraw evpn batch " + ";".join(announced[i] for i in (3, 11, 17))
    ]
    counters = outbox.counters
    assert counters.announced == 20 and counters.withdrawn == 3
    assert counters.acks == 6 and counters.errors == 0 and counters.lines_sent == 6


def test_unknown_keys_and_identical_announcements_send_nothing() -> None:
    outbox = attached()
    route = mac_route(1)
    outbox.announce([route])
    exchange(outbox)
    outbox.announce([route])
    outbox.withdraw([mac_route(2).key])
    assert outbox.idle and exchange(outbox).lines == []


def test_an_attribute_change_replaces_and_a_new_nlri_withdraws_the_old_one_first() -> None:
    outbox = attached()
    route = mac_route(1, with_ip=True, mobility_seq=1)
    outbox.announce([route])
    exchange(outbox)

    moved = replace(route, mobility_seq=2)  # attributes only: an implicit replace
    outbox.announce([moved])
    assert exchange(outbox).lines == [f"announce evpn {token(moved)}"]

    relabelled = replace(route, vni=200, mobility_seq=0)  # another label, another NLRI
    outbox.announce([relabelled])
    assert exchange(outbox).lines == [
        f"withdraw evpn {token(moved)}", f"announce evpn {token(relabelled)}"
    ]
    assert outbox.announced() == {route.key: token(relabelled)}
    assert outbox.sent_routes() == [relabelled]


def test_a_withdrawal_and_a_new_announcement_never_share_a_line() -> None:
    outbox = attached(batch_size=10)
    a, b, c = mac_route(1), mac_route(2), mac_route(3)
    outbox.announce([a, b])
    exchange(outbox)
    outbox.withdraw([a.key])
    outbox.announce([c])
    outbox.withdraw([b.key])
    assert exchange(outbox).lines == [
        f"withdraw evpn {token(a)}", f"announce evpn {token(c)}", f"withdraw evpn {token(b)}"
    ]


def test_acks_are_matched_in_order_and_an_error_rejects_the_whole_line() -> None:
    outbox = attached(batch_size=2)
    routes = [mac_route(i) for i in range(3)]
    outbox.announce(routes[:2])
    exchange(outbox)
    outbox.withdraw([routes[0].key])
    outbox.announce([routes[2]])
    sent = outbox.next_lines()
    assert [line.split(" ")[0] for line in sent] == ["withdraw", "announce"]
    rejected = outbox.acknowledge(False)  # ExaBGP refused the withdrawal
    assert rejected is not None and rejected.verb == encode.WITHDRAW and rejected.count == 1
    assert rejected.preview == token(routes[0])
    taken = outbox.acknowledge(True)
    assert taken is not None and taken.verb == encode.ANNOUNCE
    counters = outbox.counters
    assert counters.errors == 1 and counters.withdrawn == 0
    assert counters.announced == 3 and counters.acks == 2
    # The withdrawal did not happen: ExaBGP still announces the route, and
    # the outbox says so until a retry withdraws it.
    assert routes[0] in outbox.sent_routes() and not outbox.idle
    assert outbox.acknowledge(True) is None  # an ack nothing was waiting for
    assert counters.acks == 2


def rejecting(bad: set[str]) -> Callable[[str], bool]:
    """ExaBGP's answer to a line: `error` if it holds any of these tokens (all or nothing)."""
    return lambda line: not bad.intersection(tokens_of(line))


def play(outbox: Outbox, answer: Callable[[str], bool], *, until: float = 600.0) -> list[str]:
    """Exchange lines with a fake ExaBGP while time passes (one second per round)."""
    now, lines = 0.0, []
    while now <= until:
        for line in outbox.next_lines(now):
            lines.append(line)
            outbox.acknowledge(answer(line), now)
        if outbox.idle:
            return lines
        now += 1.0
    raise AssertionError("the outbox never became idle")


def test_a_rejected_line_is_retried_after_a_backoff_not_taken_for_sent() -> None:
    outbox = attached(batch_size=10)
    routes = [mac_route(i) for i in range(3)]
    outbox.announce(routes)
    (line,) = outbox.next_lines(now=100.0)
    outbox.acknowledge(False, now=100.0)
    # Nothing of the line counts as announced; the routes wait for their retry.
    assert outbox.sent_routes() == [] and not outbox.idle
    assert outbox.changes_pending == 3 and outbox.counters.retries == 3
    due = outbox.next_retry_at()
    assert due is not None and due > 100.0
    assert outbox.next_lines(now=due - 0.01) == []
    assert outbox.next_lines(now=due) == [line]  # the same routes, the same line
    outbox.acknowledge(True, now=due)
    assert outbox.idle and sorted(outbox.sent_routes(), key=str) == sorted(routes, key=str)
    assert outbox.counters.announced == 3 and outbox.counters.routes_refused == 0


def test_a_bad_route_is_isolated_from_its_batch_then_given_up_on() -> None:
    outbox = attached(batch_size=10)
    routes = [mac_route(i) for i in range(25)]
    bad = routes[13]
    outbox.announce(routes)
    lines = play(outbox, rejecting({token(bad)}))
    # Every other route went out (first in a batch with the bad one, then on
    # its own or in a batch without it); the bad one is not announced.
    sent = outbox.sent_routes()
    assert bad not in sent and len(sent) == 24
    assert outbox.announced()[bad.key] == token(bad)  # still wanted
    refused = outbox.take_refused()
    assert [(r.key, r.token, r.verb) for r in refused] == [(bad.key, token(bad), encode.ANNOUNCE)]
    assert outbox.take_refused() == []
    policy = outbox.retry
    alone = [line for line in lines if tokens_of(line) == [token(bad)]]
    assert len(alone) == policy.alone_attempts
    assert sum(token(bad) in tokens_of(line) for line in lines) == (
        policy.batch_attempts + policy.alone_attempts
    )
    assert outbox.counters.routes_refused == 1 and outbox.refused_count == 1
    # Given up on, not looped on: nothing more goes out until it changes.
    assert outbox.next_lines(now=10_000.0) == [] and outbox.idle
    fixed = replace(bad, mobility_seq=7)
    outbox.announce([fixed])
    assert play(outbox, rejecting(set())) == [f"announce evpn {token(fixed)}"]
    assert fixed in outbox.sent_routes() and outbox.refused_count == 0


def test_a_refused_route_gets_a_fresh_chance_with_the_next_exabgp() -> None:
    outbox = attached()
    route = mac_route(1)
    outbox.announce([route])
    play(outbox, rejecting({token(route)}))
    assert outbox.refused_count == 1 and route not in outbox.sent_routes()
    outbox.detach()
    outbox.attach()
    assert play(outbox, rejecting(set())) == [f"announce evpn {token(route)}"]
    assert route in outbox.sent_routes()


def test_a_rejected_withdrawal_is_retried_until_exabgp_takes_it() -> None:
    outbox = attached()
    route = mac_route(1)
    outbox.announce([route])
    play(outbox, rejecting(set()))
    outbox.withdraw([route.key])
    failures = iter([False, False])
    lines = play(outbox, lambda line: next(failures, True))
    assert lines == [f"withdraw evpn {token(route)}"] * 3
    assert outbox.sent_routes() == [] and outbox.counters.withdrawn == 1


def test_a_route_changed_while_its_line_was_rejected_is_sent_as_it_is_now() -> None:
    outbox = attached()
    old = mac_route(1, mobility_seq=1)
    new = replace(old, mobility_seq=2)
    outbox.announce([old])
    assert outbox.next_lines(now=0.0) == [f"announce evpn {token(old)}"]
    outbox.announce([new])  # before ExaBGP answered
    outbox.acknowledge(False, now=0.0)
    # No backoff for a value nobody wants any more: the new one goes now.
    assert outbox.next_lines(now=0.0) == [f"announce evpn {token(new)}"]
    outbox.acknowledge(True, now=0.0)
    assert outbox.idle and outbox.sent_routes() == [new]


def test_a_route_refresh_goes_first_and_counts_as_no_route() -> None:
    outbox = attached()
    outbox.announce([mac_route(1)])
    outbox.refresh("192.0.2.2")
    lines = outbox.next_lines()
    assert lines == ["neighbor 192.0.2.2 announce route-refresh l2vpn evpn",
                     f"announce evpn {token(mac_route(1))}"]  # fmt: skip
    refresh = outbox.acknowledge(True)
    assert refresh is not None and refresh.verb == REFRESH and not outbox.idle
    outbox.acknowledge(True)
    assert outbox.idle
    assert outbox.counters.refreshes == 1 and outbox.counters.announced == 1


def test_nothing_goes_out_while_detached_and_everything_wanted_after_attach() -> None:
    outbox = Outbox()
    routes = [mac_route(1), mac_route(2), mac_route(3), imet_route()]
    outbox.announce(routes)
    assert outbox.next_lines() == [] and not outbox.idle
    outbox.attach()
    exchange(outbox)
    outbox.withdraw([routes[0].key])
    exchange(outbox)
    outbox.announce([mac_route(4)])
    assert len(outbox.next_lines()) == 1

    outbox.detach()  # ExaBGP died: what was in flight is owed by nobody
    assert outbox.lines_in_flight == 0 and outbox.sent_routes() == [] and not outbox.idle
    outbox.attach()  # a fresh ExaBGP: what is still wanted, the Type-3 first
    assert exchange(outbox).lines == [
        "announce evpn batch " + ";".join(token(r) for r in (routes[3], *routes[1:3],
                                                                mac_route(4)))
    ]
    assert outbox.idle


def test_an_adopted_exabgp_gets_only_the_differences() -> None:
    outbox = Outbox()
    previous = [imet_route(), *(mac_route(i) for i in range(5))]
    # The next daemon wants four of the five MACs, one of them with a new sequence.
    wanted = [imet_route(), *(mac_route(i) for i in range(3)), mac_route(3, mobility_seq=1)]
    outbox.announce(wanted)
    assert outbox.attach(previous) == 0  # nobody asked for a prune yet
    assert exchange(outbox).lines == [f"announce evpn {token(wanted[4])}"]
    assert outbox.prune() == 1
    assert exchange(outbox).lines == [f"withdraw evpn {token(previous[5])}"]
    assert outbox.counters.announced == 1 and outbox.counters.withdrawn == 1
    assert sorted(map(token, outbox.sent_routes())) == sorted(map(token, wanted))


def test_a_prune_asked_before_the_adopted_exabgp_attaches_happens_at_attach() -> None:
    outbox = Outbox()
    outbox.announce([mac_route(1)])
    assert outbox.prune() == 0  # nothing attached: remembered
    assert outbox.attach([mac_route(1), mac_route(2), imet_route()]) == 2
    lines = exchange(outbox).lines
    assert lines == [f"withdraw evpn batch {token(mac_route(2))};{token(imet_route())}"]


def test_a_previously_announced_route_with_another_nlri_is_withdrawn_with_its_own_token() -> None:
    outbox = Outbox()
    old = mac_route(1, with_ip=True)
    new = replace(old, vni=200)
    outbox.announce([new])
    outbox.attach([old])
    assert exchange(outbox).lines == [f"withdraw evpn {token(old)}", f"announce evpn {token(new)}"]


def test_resend_all_offers_every_route_again() -> None:
    outbox = attached()
    routes = [mac_route(1), mac_route(2)]
    outbox.announce(routes)
    first = exchange(outbox).lines
    outbox.resend_all()
    assert exchange(outbox).lines == first


def test_announce_is_all_or_nothing() -> None:
    outbox = attached()
    bad = mac_route(9, mobility_seq=2**32)  # beyond what the community carries
    with pytest.raises(encode.EncodeError):
        outbox.announce([mac_route(1), bad])
    assert outbox.announced() == {} and outbox.idle


def test_an_unencodable_previous_route_leaves_the_outbox_detached() -> None:
    outbox = Outbox()
    with pytest.raises(encode.EncodeError):
        outbox.attach([mac_route(1), mac_route(9, mobility_seq=2**32)])
    assert not outbox.attached and outbox.next_lines() == []


def test_the_revision_follows_the_sent_view() -> None:
    outbox = attached()
    before = outbox.revision
    outbox.announce([mac_route(1)])
    assert outbox.revision == before  # desired only: ExaBGP was told nothing yet
    outbox.next_lines()
    after_send = outbox.revision
    assert after_send != before
    outbox.acknowledge(True)
    assert outbox.revision == after_send
    outbox.detach()
    assert outbox.revision != after_send


def test_batch_size_and_window_must_be_positive() -> None:
    for options in ({"batch_size": 0}, {"window": 0}):
        with pytest.raises(ValueError):
            Outbox(**options)
