"""Per-peer session facts the RIB does not keep: state, uptime, counters, last error.

Pure: the daemon feeds every decoded message (and the speaker's restart and
adoption notices) with the time it arrived; `show peers` reads `records()`.

ExaBGP reports sessions as "connected" (TCP up, OPEN exchange), "up"
(established) and "down" (with a reason). A NOTIFICATION, sent or received,
comes as its own message just before the "down".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import ip_address
from types import MappingProxyType

from evpnd.model import IPAddress
from evpnd.speaker.messages import EndOfRib, Notification, PeerState, RouteUpdate

# Session states as `show` names them.
IDLE, CONNECTED, ESTABLISHED, DOWN = "idle", "connected", "established", "down"
_STATES = {"connected": CONNECTED, "up": ESTABLISHED, "down": DOWN}

# RFC 4271 section 4.5, RFC 4486 (Cease subcodes), RFC 7313.
_CODES = {
    1: "Message Header Error",
    2: "OPEN Message Error",
    3: "UPDATE Message Error",
    4: "Hold Timer Expired",
    5: "Finite State Machine Error",
    6: "Cease",
    7: "ROUTE-REFRESH Message Error",
}
_CEASE = {
    1: "Maximum Number of Prefixes Reached",
    2: "Administrative Shutdown",
    3: "Peer De-configured",
    4: "Administrative Reset",
    5: "Connection Rejected",
    6: "Other Configuration Change",
    7: "Connection Collision Resolution",
    8: "Out of Resources",
    9: "Hard Reset",
    10: "BFD Down",
}


def notification_text(code: int, subcode: int) -> str:
    """"Cease/Administrative Shutdown", like FRR's `show bgp neighbor` says it."""
    name = _CODES.get(code, f"code {code}")
    sub = _CEASE.get(subcode) if code == 6 else None
    return f"{name}/{sub}" if sub else f"{name}/{subcode}"


@dataclass(frozen=True, slots=True)
class LastNotification:
    code: int
    subcode: int
    text: str  # "Cease/Administrative Shutdown"
    message: str  # ExaBGP's rendering, e.g. the RFC 8203 shutdown text
    direction: str  # "receive" | "send"
    at: float


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """What is known about one peer's session."""

    address: IPAddress
    state: str = IDLE
    since: float | None = None  # time of the last state change
    established_at: float | None = None  # set while established
    established_count: int = 0  # how many times the session came up
    drops: int = 0  # how many times an established session went down
    last_down_reason: str | None = None
    last_down_at: float | None = None
    last_notification: LastNotification | None = None
    updates: int = 0  # EVPN UPDATEs received (cumulative)
    announced: int = 0  # routes announced to us (cumulative)
    withdrawn: int = 0  # routes withdrawn by the peer (cumulative)
    last_update_at: float | None = None
    eor: bool = False  # End-of-RIB for l2vpn evpn received in this session
    adopted: bool = False  # established before this daemon took ExaBGP over: uptime is a minimum

    def uptime(self, now: float) -> float | None:
        return None if self.established_at is None else max(0.0, now - self.established_at)


class PeerTracker:
    """Decoded speaker messages in, one `PeerRecord` per peer out."""

    def __init__(self) -> None:
        self._peers: dict[IPAddress, PeerRecord] = {}

    def observe(self, message: object, now: float | None = None) -> None:
        """Feed any decoded message; the ones that say nothing about a session are ignored."""
        at = time.time() if now is None else now
        if isinstance(message, PeerState):
            self._state(message, at)
        elif isinstance(message, RouteUpdate):
            self.updates_received(
                message.peer, 1, len(message.announced), len(message.withdrawn), at
            )
        elif isinstance(message, Notification):
            rec = self._get(message.peer)
            note = LastNotification(
                message.code,
                message.subcode,
                notification_text(message.code, message.subcode),
                message.message,
                message.direction,
                at,
            )
            self._peers[message.peer] = replace(rec, last_notification=note)
        elif isinstance(message, EndOfRib) and message.is_evpn:
            self._peers[message.peer] = replace(self._get(message.peer), eor=True)

    def updates_received(
        self, peer: IPAddress, updates: int, announced: int, withdrawn: int, at: float
    ) -> None:
        """Many UPDATEs of one peer at once (the daemon counts a received batch)."""
        rec = self._get(peer)
        self._peers[peer] = replace(
            rec,
            updates=rec.updates + updates,
            announced=rec.announced + announced,
            withdrawn=rec.withdrawn + withdrawn,
            last_update_at=at,
        )

    def speaker_restarted(self, now: float | None = None, reason: str = "exabgp restarted") -> None:
        """ExaBGP was lost: every session it held is gone (it sends no "down" for them)."""
        at = time.time() if now is None else now
        for peer, rec in list(self._peers.items()):
            if rec.state in (CONNECTED, ESTABLISHED):
                self._peers[peer] = self._down(rec, reason, at)

    def adopted(self, states: Mapping[str, str], now: float | None = None) -> None:
        """A previous daemon handed its running ExaBGP over: `states` is the speaker's
        "attached" notice's `peers` (address -> "up" / "connected" / "down").

        The sessions did not restart, but when they came up is unknown here:
        uptime then counts from the adoption and `adopted` says so.
        """
        at = time.time() if now is None else now
        for address, raw in states.items():
            try:
                peer = ip_address(address)
            except ValueError:
                continue
            rec = self._get(peer)
            state = _STATES.get(raw, raw)
            if state == ESTABLISHED:
                self._peers[peer] = replace(
                    rec, state=ESTABLISHED, since=at, established_at=at, adopted=True,
                    established_count=max(rec.established_count, 1),
                )
            else:
                self._peers[peer] = replace(rec, state=state, since=at, established_at=None)

    def forget(self, peer: IPAddress) -> None:
        """The peer left the config."""
        self._peers.pop(peer, None)

    def records(self) -> Mapping[IPAddress, PeerRecord]:
        return MappingProxyType(dict(self._peers))

    def get(self, peer: IPAddress) -> PeerRecord | None:
        return self._peers.get(peer)

    # -- internals

    def _get(self, peer: IPAddress) -> PeerRecord:
        rec = self._peers.get(peer)
        if rec is None:
            rec = self._peers[peer] = PeerRecord(peer)
        return rec

    def _state(self, message: PeerState, at: float) -> None:
        rec = self._get(message.peer)
        state = _STATES.get(message.state, message.state)
        if state == DOWN:
            self._peers[message.peer] = self._down(rec, message.reason, at)
        elif state == ESTABLISHED:
            if rec.state == ESTABLISHED:
                return
            self._peers[message.peer] = replace(
                rec,
                state=ESTABLISHED,
                since=at,
                established_at=at,
                established_count=rec.established_count + 1,
                eor=False,
                adopted=False,
            )
        elif state != rec.state:
            self._peers[message.peer] = replace(rec, state=state, since=at, established_at=None)

    @staticmethod
    def _down(rec: PeerRecord, reason: str | None, at: float) -> PeerRecord:
        if rec.state == DOWN:
            # ExaBGP repeats "down" on every failed connect attempt: keep the first time.
            return replace(rec, last_down_reason=reason or rec.last_down_reason)
        return replace(
            rec,
            state=DOWN,
            since=at,
            established_at=None,
            drops=rec.drops + (rec.state == ESTABLISHED),
            last_down_reason=reason,
            last_down_at=at,
            eor=False,
            adopted=False,
        )
