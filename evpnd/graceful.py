"""Graceful-restart helper (RFC 4724 section 4.2): when a peer's routes outlive its session.

Pure: the daemon feeds session events and the time (seconds on a monotonic
clock) and carries out the actions returned, on the RIB and with its own
timers. One state per peer:

* The peer's graceful-restart capability comes in its OPEN (`PeerOpen`,
  before the session's "up") and holds for that session.
* An established session lost while both sides advertised graceful restart
  (we do when `bgp.graceful_restart` > 0) and the peer listed L2VPN/EVPN with
  a restart time > 0: its routes stay installed, marked stale (`KeepStale`),
  for its restart time. Otherwise they go at once (`Flush`), as before; so do
  they when we closed the session ourselves (a route-limit teardown).
* The session back: if its new OPEN lacks the capability, lacks L2VPN/EVPN
  or has that family's Forwarding State bit clear, the stale routes go at
  once (`Sweep`): the peer did not keep forwarding. Otherwise they wait for
  its End-of-RIB, at most `eor_wait` seconds.
* End-of-RIB (or EoRR): what was not re-sent goes (`Sweep`); the restart
  time or the End-of-RIB wait running out does the same.
* ExaBGP lost (every session with it): each peer's routes are stale until
  its End-of-RIB on the new session, at most `eor_wait` seconds after the loss
  (after the session is back, `eor_wait` from then).

Every wait is a `Deadline` with a token; a new event of the peer supersedes
the previous wait (a new token), and an `expired` call with an old token does
nothing: a first restart's timer can never sweep what a second one marked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evpnd.model import IPAddress
from evpnd.speaker.messages import GracefulRestart

# Where a peer is.
IDLE = "idle"  # nothing stale
RESTARTING = "restarting"  # session lost, routes kept, waiting for it to come back
WAITING_EOR = "waiting-eor"  # session back, stale routes wait for End-of-RIB
SPEAKER_RESTART = "speaker-restart"  # ExaBGP was lost; routes stale until re-sent


@dataclass(frozen=True, slots=True)
class KeepStale:
    """Mark every route of the peer stale and keep it installed."""

    peer: IPAddress
    reason: str


@dataclass(frozen=True, slots=True)
class Flush:
    """Forget every route of the peer now (no graceful restart)."""

    peer: IPAddress
    reason: str


@dataclass(frozen=True, slots=True)
class Sweep:
    """Remove the peer's routes that are still stale."""

    peer: IPAddress
    reason: str


@dataclass(frozen=True, slots=True)
class Deadline:
    """Call `expired(peer, token, now)` at `at` (the same clock as `now`)."""

    peer: IPAddress
    at: float
    token: int


Action = KeepStale | Flush | Sweep | Deadline


@dataclass(slots=True)
class _Peer:
    up: bool = False
    capability: GracefulRestart | None = None  # of the current (or last) session
    pending: GracefulRestart | None = None  # from the OPEN of a session coming up
    phase: str = IDLE
    deadline: float | None = None
    token: int = 0
    restarts: int = 0  # sessions lost with the routes kept (cumulative)


@dataclass(frozen=True, slots=True)
class PeerGrace:
    """What `show peers` says about a peer's graceful restart."""

    capability: GracefulRestart | None
    phase: str
    deadline: float | None
    restarts: int


@dataclass(slots=True)
class GracefulHelper:
    """`helper`: we advertise graceful restart ourselves (`bgp.graceful_restart` > 0);
    `eor_wait`: seconds to wait for a peer's End-of-RIB once its session is back."""

    helper: bool
    eor_wait: float
    _peers: dict[IPAddress, _Peer] = field(default_factory=dict)

    # ----------------------------------------------------------------- events

    def open_received(self, peer: IPAddress, capability: GracefulRestart | None) -> None:
        self._get(peer).pending = capability

    def session_up(self, peer: IPAddress, now: float) -> list[Action]:
        state = self._get(peer)
        state.up = True
        state.capability, state.pending = state.pending, None
        if state.phase == RESTARTING:
            preserved = None if state.capability is None else state.capability.evpn
            if not preserved:
                # RFC 4724 4.2: no capability, no L2VPN/EVPN in it, or its F bit
                # clear: the peer did not keep forwarding; its old routes go now.
                why = ("no graceful restart in its new OPEN" if state.capability is None
                       else "L2VPN/EVPN forwarding state not preserved")  # fmt: skip
                return self._end(state, Sweep(peer, why))
        if state.phase in (RESTARTING, SPEAKER_RESTART):
            state.phase = WAITING_EOR
            return [self._wait(peer, state, now + self.eor_wait)]
        return []

    def session_down(self, peer: IPAddress, now: float, *, graceful: bool = True) -> list[Action]:
        """An established session went down; `graceful` False: we closed it on purpose."""
        state = self._get(peer)
        if not state.up:
            return []  # a failed connect attempt: nothing was established
        state.up = False
        cap = state.capability
        if not (graceful and self.helper and cap is not None and cap.evpn is not None
                and cap.restart_time > 0):  # fmt: skip
            why = "session closed by us" if not graceful else "no graceful restart"
            return self._end(state, Flush(peer, why))
        state.phase = RESTARTING
        state.restarts += 1
        return [
            KeepStale(peer, f"graceful restart: routes kept {cap.restart_time}s"),
            self._wait(peer, state, now + cap.restart_time),
        ]

    def end_of_rib(self, peer: IPAddress) -> list[Action]:
        """The peer's End-of-RIB (or EoRR) for L2VPN/EVPN: the daemon sweeps its stale
        routes; here only the wait ends."""
        state = self._peers.get(peer)
        if state is not None and state.phase != IDLE:
            self._end(state, None)
        return []

    def speaker_lost(self, peers: list[IPAddress], now: float) -> list[Action]:
        """ExaBGP died or was replaced: every session it held is gone. Our restart,
        not the peers': each peer's routes are stale until it re-sends them."""
        actions: list[Action] = []
        for peer in peers:
            state = self._get(peer)
            state.up = False
            state.pending = None
            state.phase = SPEAKER_RESTART
            actions.append(KeepStale(peer, "exabgp restarted"))
            actions.append(self._wait(peer, state, now + self.eor_wait))
        return actions

    def expired(self, peer: IPAddress, token: int, now: float) -> list[Action]:
        state = self._peers.get(peer)
        if state is None or token != state.token or state.phase == IDLE:
            return []  # superseded, or already over
        why = ("restart time over, the session did not come back" if state.phase == RESTARTING
               else "no End-of-RIB in time")  # fmt: skip
        return self._end(state, Sweep(peer, why))

    def adopted(self, peers_up: list[IPAddress]) -> None:
        """Sessions a previous daemon handed over: up, their OPENs unseen (no capability
        known, so losing one flushes its routes)."""
        for peer in peers_up:
            self._get(peer).up = True

    def forget(self, peer: IPAddress) -> None:
        """The peer left the config (the daemon flushes its routes)."""
        self._peers.pop(peer, None)

    def set_helper(self, helper: bool, eor_wait: float) -> None:
        self.helper = helper
        self.eor_wait = eor_wait

    # ---------------------------------------------------------------- queries

    def status(self, peer: IPAddress) -> PeerGrace:
        state = self._peers.get(peer) or _Peer()
        capability = state.capability if state.capability is not None else state.pending
        return PeerGrace(capability, state.phase, state.deadline, state.restarts)

    # -------------------------------------------------------------- internals

    def _get(self, peer: IPAddress) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer()
        return state

    def _wait(self, peer: IPAddress, state: _Peer, at: float) -> Deadline:
        state.token += 1
        state.deadline = at
        return Deadline(peer, at, state.token)

    def _end(self, state: _Peer, action: Action | None) -> list[Action]:
        state.phase = IDLE
        state.deadline = None
        state.token += 1  # any pending deadline is void
        return [] if action is None else [action]
