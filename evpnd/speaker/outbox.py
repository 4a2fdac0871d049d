"""Our adj-RIB-out towards ExaBGP: what we want announced, what ExaBGP was told (pure).

No I/O, no asyncio, no clock: the speaker feeds it and sends what it returns.

* `announce()` / `withdraw()` only record the desired state and mark keys
  dirty; `next_lines()` turns dirty keys into batch command lines
  (`batch_size` routes per line) and keeps at most `window` lines
  unacknowledged. ExaBGP answers every line with a bare `done` or `error`, in
  order, so `acknowledge()` matches acks FIFO.
* The token each key was announced with is kept, and a withdrawal repeats it:
  ExaBGP keys its adj-rib-out on the packed NLRI (labels and ESI included), so
  a withdraw that differs in one byte withdraws nothing. A route whose NLRI
  changes (another label or ESI) is withdrawn, then announced anew; ExaBGP
  would otherwise keep both.
* `attach(previously_sent)`: a fresh ExaBGP knows nothing; one adopted from a
  previous daemon holds what that daemon announced, and only the differences
  go out. `prune()` withdraws what it announced and we do not want.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from evpnd.model import ImetKey, Route, RouteKey
from evpnd.speaker import encode

REFRESH = "refresh"  # the verb of a route-refresh command line


@dataclass(slots=True)
class OutboxCounters:
    announced: int = 0  # routes in announce lines ExaBGP acknowledged with `done`
    withdrawn: int = 0  # routes in withdraw lines acknowledged with `done`
    acks: int = 0  # `done` lines
    errors: int = 0  # `error` lines (the whole line was rejected)
    lines_sent: int = 0
    refreshes: int = 0  # route refreshes asked of peers

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Announced:
    """A route as ExaBGP sees it: its token, and what makes up its NLRI."""

    token: str
    identity: tuple[object, ...]
    route: Route = field(compare=False)

    @classmethod
    def of(cls, route: Route) -> Announced:
        """Raises encode.EncodeError for a route the command syntax cannot carry."""
        return cls(encode.route_token(route), encode.nlri_identity(route), route)


@dataclass(frozen=True, slots=True)
class SentLine:
    """A command line waiting for its `done` or `error`."""

    verb: str  # encode.ANNOUNCE, encode.WITHDRAW or REFRESH
    count: int  # routes in it
    preview: str  # its start, for the log when ExaBGP rejects it


class Outbox:
    def __init__(
        self, batch_size: int = 100, window: int = 20, counters: OutboxCounters | None = None
    ) -> None:
        if batch_size < 1 or window < 1:
            raise ValueError("batch_size and window must be positive")
        self.batch_size = batch_size
        self.window = window
        self.counters = OutboxCounters() if counters is None else counters
        # Desired state and what the attached ExaBGP was told; `_dirty` holds
        # the keys where the two may differ, in the order they changed.
        self._routes: dict[RouteKey, Announced] = {}
        self._sent: dict[RouteKey, Announced] = {}
        self._dirty: OrderedDict[RouteKey, None] = OrderedDict()
        self._commands: deque[str] = deque()  # other command lines (route refresh)
        self._inflight: deque[SentLine] = deque()
        self._attached = False
        self._prune_wanted = False
        self._revision = 0

    # -------------------------------------------------------------- views

    @property
    def attached(self) -> bool:
        return self._attached

    @property
    def idle(self) -> bool:
        """Attached, and every change so far sent and acknowledged."""
        return (self._attached and not self._dirty and not self._inflight
                and not self._commands)  # fmt: skip

    @property
    def changes_pending(self) -> int:
        """Keys that may still need a line (some may turn out to need none)."""
        return len(self._dirty)

    @property
    def lines_in_flight(self) -> int:
        return len(self._inflight)

    @property
    def route_count(self) -> int:
        """Routes in the desired set."""
        return len(self._routes)

    @property
    def revision(self) -> int:
        """Changes whenever the sent view does: a mirror of it (announced.json) is stale."""
        return self._revision

    def announced(self) -> dict[RouteKey, str]:
        """The desired routes and the exact token each is (or is about to be) announced with."""
        return {key: entry.token for key, entry in self._routes.items()}

    def sent_routes(self) -> list[Route]:
        """What the attached ExaBGP was told to announce (acknowledged or not)."""
        return [entry.route for entry in self._sent.values()]

    # ------------------------------------------------------ desired state

    def announce(self, routes: Iterable[Route]) -> None:
        """Make these routes part of the announced set.

        All or nothing: a route the encoder refuses (EncodeError) leaves the
        announced set as it was.
        """
        encoded = [(route.key, Announced.of(route)) for route in routes]
        for key, entry in encoded:
            if self._routes.get(key) != entry:
                self._routes[key] = entry
                self._dirty[key] = None

    def withdraw(self, keys: Iterable[RouteKey]) -> None:
        """Withdraw these routes; unknown keys are ignored."""
        for key in keys:
            if self._routes.pop(key, None) is not None or key in self._sent:
                self._dirty[key] = None

    def refresh(self, peer: str) -> None:
        """Ask `peer` to send its EVPN routes again (ROUTE-REFRESH; BoRR/EoRR follow)."""
        self._commands.append(f"neighbor {peer} announce route-refresh l2vpn evpn")
        self.counters.refreshes += 1

    def prune(self) -> int:
        """Withdraw what a previous daemon announced and this one does not want.

        Ask once every local route is known: until then, a route missing from
        the desired set may just not be learned yet. Takes effect at the next
        attach() if none is attached. Returns how many routes it withdraws now.
        """
        self._prune_wanted = True
        return self._prune_now() if self._attached else 0

    def _prune_now(self) -> int:
        orphans = [key for key in self._sent if key not in self._routes]
        for key in orphans:
            self._dirty[key] = None
        return len(orphans)

    # ---------------------------------------------------- the ExaBGP side

    def attach(self, previously_sent: Iterable[Route] = ()) -> int:
        """An ExaBGP is there to be told; it already announces `previously_sent`.

        Every desired route is offered, the flood-list routes (Type-3) first.
        Raises encode.EncodeError, changing nothing, if a previously sent route
        cannot be encoded. Returns how many routes a prune() asked earlier
        withdraws now.
        """
        sent = {route.key: Announced.of(route) for route in previously_sent}
        self._sent = sent
        self._inflight.clear()
        self._attached = True
        self._revision += 1
        for key in sorted(self._routes, key=lambda k: 0 if isinstance(k, ImetKey) else 1):
            self._dirty[key] = None
        return self._prune_now() if self._prune_wanted else 0

    def detach(self) -> None:
        """The ExaBGP is gone, or no longer ours: nothing was sent, nothing is owed."""
        self._attached = False
        self._inflight.clear()
        self._commands.clear()
        self._sent.clear()
        self._revision += 1

    def resend_all(self) -> None:
        """Offer every desired route again (after ExaBGP re-read its configuration).

        ExaBGP skips what a peer's adj-rib-out already holds; a new or
        re-created peer gets everything.
        """
        self._sent.clear()
        self._revision += 1
        for key in self._routes:
            self._dirty[key] = None

    def next_lines(self) -> list[str]:
        """The command lines to send now: as many as the window allows (none if detached)."""
        lines: list[str] = []
        if not self._attached:
            return lines
        while len(self._inflight) < self.window:
            line = self._next_line()
            if line is None:
                break
            text, sent = line
            lines.append(text)
            self._inflight.append(sent)
            self.counters.lines_sent += 1
        return lines

    def acknowledge(self, ok: bool) -> SentLine | None:
        """ExaBGP's `done` (ok) or `error` for the oldest line in flight.

        Returns that line, or None if no line was in flight (an ack we do
        not owe anything to).
        """
        if not self._inflight:
            return None
        sent = self._inflight.popleft()
        if ok:
            self.counters.acks += 1
            if sent.verb == encode.ANNOUNCE:
                self.counters.announced += sent.count
            elif sent.verb == encode.WITHDRAW:
                self.counters.withdrawn += sent.count
        else:
            self.counters.errors += 1
        return sent

    def _next_line(self) -> tuple[str, SentLine] | None:
        """Up to batch_size dirty keys of one verb -> one command line.

        Consumes the keys it covers and records them as sent. A key whose NLRI
        changed is withdrawn first and stays dirty, so the next line announces it.
        """
        if self._commands:
            command = self._commands.popleft()
            return command, SentLine(REFRESH, 0, command)
        verb: str | None = None
        tokens: list[str] = []
        while self._dirty and len(tokens) < self.batch_size:
            key = next(iter(self._dirty))
            desired = self._routes.get(key)
            sent = self._sent.get(key)
            if desired == sent:
                del self._dirty[key]
                continue
            if sent is not None and (desired is None or desired.identity != sent.identity):
                op, token = encode.WITHDRAW, sent.token
            else:
                assert desired is not None
                op, token = encode.ANNOUNCE, desired.token
            if verb is None:
                verb = op
            elif op != verb:
                break
            tokens.append(token)
            self._revision += 1
            if op == encode.WITHDRAW:
                del self._sent[key]
                if desired is None:
                    del self._dirty[key]
            else:
                assert desired is not None
                self._sent[key] = desired
                del self._dirty[key]
        if verb is None:
            return None
        if verb == encode.ANNOUNCE:
            text = encode.announce_line(tokens)
        else:
            text = encode.withdraw_line(tokens)
        return text, SentLine(verb, len(tokens), tokens[0][:120])
