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
* A line ExaBGP answers with `error` was not applied (the launcher parses a
  whole line before it injects anything): its routes are put back and tried
  again after a backoff (`RetryPolicy`). A route that failed `batch_attempts`
  times goes out alone, which isolates the one bad route of a batch; a route
  that still fails alone after `alone_attempts` tries is given up on: counted
  (`routes_refused`), reported by `take_refused()` with its token for the log,
  and never taken for announced. It is tried again when its value changes or
  another ExaBGP attaches.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

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
    retries: int = 0  # routes put back for another try after an `error`
    routes_refused: int = 0  # routes given up on: ExaBGP refused them alone, every try

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
    # The keys of the line and what each was announced (or withdrawn) as:
    # what an `error` puts back.
    keys: tuple[RouteKey, ...] = field(default=(), compare=False, repr=False)
    entries: tuple[Announced, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How routes of a line ExaBGP rejected are tried again."""

    backoff_initial: float = 1.0  # seconds before the first retry; doubles each time
    backoff_max: float = 30.0
    batch_attempts: int = 2  # failures in batches before a route goes out alone
    alone_attempts: int = 3  # failures alone before it is given up on

    def delay(self, failures: int) -> float:
        return min(self.backoff_initial * 2 ** max(0, failures - 1), self.backoff_max)


@dataclass(slots=True)
class _Retry:
    failures: int  # `error`s so far for this key's current value
    alone: int  # of them, with the key alone in its line
    due: float  # not sent again before this time


class Refused(NamedTuple):
    """A route given up on: ExaBGP refused it alone, every try."""

    key: RouteKey
    verb: str
    token: str
    failures: int


class Outbox:
    def __init__(
        self,
        batch_size: int = 100,
        window: int = 20,
        counters: OutboxCounters | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if batch_size < 1 or window < 1:
            raise ValueError("batch_size and window must be positive")
        self.batch_size = batch_size
        self.window = window
        self.counters = OutboxCounters() if counters is None else counters
        self.retry = retry or RetryPolicy()
        # Desired state and what the attached ExaBGP was told; `_dirty` holds
        # the keys where the two may differ, in the order they changed.
        self._routes: dict[RouteKey, Announced] = {}
        self._sent: dict[RouteKey, Announced] = {}
        self._dirty: OrderedDict[RouteKey, None] = OrderedDict()
        self._commands: deque[str] = deque()  # other command lines (route refresh)
        self._inflight: deque[SentLine] = deque()
        # Keys of rejected lines: their retry state, the ones waiting out a
        # backoff (not in `_dirty` meanwhile) and the ones given up on.
        self._retries: dict[RouteKey, _Retry] = {}
        self._waiting: dict[RouteKey, None] = {}
        self._refused: dict[RouteKey, Announced] = {}
        self._newly_refused: list[Refused] = []
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
                and not self._commands and not self._waiting)  # fmt: skip

    @property
    def changes_pending(self) -> int:
        """Keys that may still need a line (some may turn out to need none)."""
        return len(self._dirty) + len(self._waiting)

    @property
    def refused_count(self) -> int:
        """Routes given up on now (ExaBGP refused them alone, every try)."""
        return len(self._refused)

    def next_retry_at(self) -> float | None:
        """When the earliest route waiting out a backoff is due (None: none waits)."""
        if not self._waiting:
            return None
        return min(self._retries[key].due for key in self._waiting)

    def take_refused(self) -> list[Refused]:
        """The routes given up on since the last call (for the log)."""
        refused, self._newly_refused = self._newly_refused, []
        return refused

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
                self._changed(key)

    def withdraw(self, keys: Iterable[RouteKey]) -> None:
        """Withdraw these routes; unknown keys are ignored."""
        for key in keys:
            if self._routes.pop(key, None) is not None or key in self._sent:
                self._changed(key)

    def _changed(self, key: RouteKey) -> None:
        """The key's desired value changed: a fresh start, whatever failed before."""
        if self._retries:
            self._retries.pop(key, None)
            self._waiting.pop(key, None)
        if self._refused:
            self._refused.pop(key, None)
        self._dirty[key] = None

    def refresh(self, peer: str) -> None:
        """Ask `peer` to send its EVPN routes again (ROUTE-REFRESH; BoRR/EoRR follow)."""
        self._commands.append(f"neighbor {peer} announce route-refresh l2vpn evpn")
        self.counters.refreshes += 1

    def teardown(self, peer: str, subcode: int) -> None:
        """Close the session with `peer`: a NOTIFICATION Cease with `subcode` (RFC 4486)."""
        self._commands.append(f"neighbor {peer} teardown {subcode}")

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
        self._forget_failures()
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
        self._forget_failures()
        self._revision += 1

    def _forget_failures(self) -> None:
        """Another ExaBGP (or configuration) gets a fresh chance at every route."""
        for key in self._waiting:
            self._dirty[key] = None
        self._retries.clear()
        self._waiting.clear()
        self._refused.clear()

    def resend_all(self) -> None:
        """Offer every desired route again (after ExaBGP re-read its configuration).

        ExaBGP skips what a peer's adj-rib-out already holds; a new or
        re-created peer gets everything.
        """
        self._sent.clear()
        self._forget_failures()
        self._revision += 1
        for key in self._routes:
            self._dirty[key] = None

    def next_lines(self, now: float = 0.0) -> list[str]:
        """The command lines to send now: as many as the window allows (none if detached).

        `now` (any monotonic clock, the one acknowledge() gets) releases the
        routes whose retry backoff is over.
        """
        lines: list[str] = []
        if not self._attached:
            return lines
        if self._waiting:
            due = [key for key in self._waiting if self._retries[key].due <= now]
            for key in due:
                del self._waiting[key]
                self._dirty[key] = None
        while len(self._inflight) < self.window:
            line = self._next_line()
            if line is None:
                break
            text, sent = line
            lines.append(text)
            self._inflight.append(sent)
            self.counters.lines_sent += 1
        return lines

    def acknowledge(self, ok: bool, now: float = 0.0) -> SentLine | None:
        """ExaBGP's `done` (ok) or `error` for the oldest line in flight.

        Returns that line, or None if no line was in flight (an ack we do
        not owe anything to). On `error` the line's routes are put back, to
        be tried again from `now` plus a backoff (see RetryPolicy).
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
            if self._retries:
                for key in sent.keys:
                    self._retries.pop(key, None)
        else:
            self.counters.errors += 1
            if sent.verb in (encode.ANNOUNCE, encode.WITHDRAW):
                self._rejected(sent, now)
        return sent

    def _rejected(self, line: SentLine, now: float) -> None:
        """ExaBGP applied nothing of `line`: undo what sending it recorded, try again later."""
        announce = line.verb == encode.ANNOUNCE
        alone = len(line.keys) == 1
        for key, entry in zip(line.keys, line.entries, strict=True):
            if announce:
                if self._sent.get(key) is not entry:
                    continue  # sent again since, or withdrawn: a later line decides
                del self._sent[key]
                self._revision += 1
                if self._routes.get(key) != entry:
                    self._changed(key)  # the wanted value moved on: no penalty for the old one
                    continue
            else:
                if key in self._sent:
                    continue  # announced anew since: ExaBGP may hold both (not repaired)
                self._sent[key] = entry  # ExaBGP still announces it: withdraw it again
                self._revision += 1
            self._retry_later(key, line.verb, entry, alone, now)

    def _retry_later(
        self, key: RouteKey, verb: str, entry: Announced, alone: bool, now: float
    ) -> None:
        policy = self.retry
        state = self._retries.get(key)
        if state is None:
            state = self._retries[key] = _Retry(0, 0, now)
        state.failures += 1
        state.alone += alone
        self._dirty.pop(key, None)
        if state.alone >= policy.alone_attempts:
            del self._retries[key]
            self._waiting.pop(key, None)
            self.counters.routes_refused += 1
            if verb == encode.ANNOUNCE:
                self._refused[key] = entry
            self._newly_refused.append(Refused(key, verb, entry.token, state.failures))
            return
        self.counters.retries += 1
        state.due = now + policy.delay(state.failures)
        self._waiting[key] = None

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
        keys: list[RouteKey] = []
        entries: list[Announced] = []
        retries = self._retries
        limit = self.batch_size
        while self._dirty and len(tokens) < limit:
            key = next(iter(self._dirty))
            desired = self._routes.get(key)
            sent = self._sent.get(key)
            if desired == sent:
                del self._dirty[key]
                continue
            if retries and key in retries and retries[key].failures >= self.retry.batch_attempts:
                if tokens:
                    break  # it goes alone, in the next line
                limit = 1
            if sent is not None and (desired is None or desired.identity != sent.identity):
                op, entry = encode.WITHDRAW, sent
            else:
                assert desired is not None
                op, entry = encode.ANNOUNCE, desired
            if verb is None:
                verb = op
            elif op != verb:
                break
            tokens.append(entry.token)
            keys.append(key)
            entries.append(entry)
            self._revision += 1
            if op == encode.WITHDRAW:
                del self._sent[key]
                if desired is None:
                    del self._dirty[key]
            else:
                self._sent[key] = entry
                del self._dirty[key]
        if verb is None:
            return None
        if verb == encode.ANNOUNCE:
            text = encode.announce_line(tokens)
        else:
            text = encode.withdraw_line(tokens)
        return text, SentLine(verb, len(tokens), tokens[0][:120], tuple(keys), tuple(entries))
