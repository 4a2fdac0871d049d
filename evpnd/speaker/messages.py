"""What the speaker hands the daemon: one typed value per event.

The decoders (JSON lines: decode.py; raw UPDATE frames: wire.py) turn every
line ExaBGP writes to its API process into a list of `Message`s; the
speaker itself reports what happened to ExaBGP as `SpeakerEvent`s. Peers
are identified by their neighbor address (the envelope's
`neighbor.address.peer`), the same value the config uses for a peer.
"""

from __future__ import annotations

from dataclasses import dataclass

from evpnd.model import IPAddress, Route, RouteKey


@dataclass(slots=True, unsafe_hash=True)  # a value: see model.py
class RouteUpdate:
    """A received UPDATE reduced to its EVPN content.

    `announced` routes carry their next hop (the VTEP); `withdrawn` holds keys
    only, because a withdrawal carries no attributes and no next hop.
    """

    peer: IPAddress
    announced: tuple[Route, ...] = ()
    withdrawn: tuple[RouteKey, ...] = ()


@dataclass(frozen=True, slots=True)
class EndOfRib:
    """RFC 4724 End-of-RIB marker: the peer has sent its full table for a family."""

    peer: IPAddress
    afi: str
    safi: str

    @property
    def is_evpn(self) -> bool:
        return (self.afi, self.safi) == ("l2vpn", "evpn")


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    """A ROUTE-REFRESH from a peer (RFC 2918, RFC 7313).

    `subtype` is "query" (the peer asks us to re-send), "begin" (BoRR: the
    peer is about to re-send its table) or "end" (EoRR: it has; every route
    of that family not re-sent since the BoRR is gone).
    """

    peer: IPAddress
    afi: str
    safi: str
    subtype: str

    @property
    def is_evpn(self) -> bool:
        return (self.afi, self.safi) == ("l2vpn", "evpn")


@dataclass(frozen=True, slots=True)
class PeerState:
    """Session state change: "connected", "up" or "down" (with ExaBGP's reason)."""

    peer: IPAddress
    state: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    """A peer's graceful-restart capability (RFC 4724 section 3), from its OPEN.

    `restart_time`: seconds the peer asks us to keep its routes after the
    session is lost; `restarting`: the Restart State (R) bit; `families`:
    (afi, safi, F bit) for each family it listed, the F bit saying it kept
    the forwarding state of that family across its restart.
    """

    restart_time: int
    restarting: bool = False
    families: tuple[tuple[str, str, bool], ...] = ()

    def preserved(self, afi: str, safi: str) -> bool | None:
        """The F bit of a family; None when the family is not in the capability."""
        for fam_afi, fam_safi, forwarding in self.families:
            if (fam_afi, fam_safi) == (afi, safi):
                return forwarding
        return None

    @property
    def evpn(self) -> bool | None:
        """The F bit of L2VPN/EVPN; None: the peer does not do graceful restart for it."""
        return self.preserved("l2vpn", "evpn")


@dataclass(frozen=True, slots=True)
class PeerOpen:
    """The OPEN a peer sent us, reduced to what the daemon acts on.

    `graceful_restart` is None when the OPEN carried no graceful-restart
    capability. An OPEN comes before the session's "up".
    """

    peer: IPAddress
    asn: int
    hold_time: int
    router_id: str
    graceful_restart: GracefulRestart | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A BGP NOTIFICATION sent to or received from a peer."""

    peer: IPAddress
    code: int
    subcode: int
    data: bytes = b""
    message: str = ""  # ExaBGP's rendering, e.g. the RFC 8203 shutdown text
    direction: str = "receive"


@dataclass(frozen=True, slots=True)
class SpeakerShutdown:
    """ExaBGP announced it is exiting (`"notification": "shutdown"`, no neighbor)."""


@dataclass(frozen=True, slots=True)
class CommandAck:
    """ExaBGP's plain `done` / `error` answer to one API command."""

    ok: bool


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Input that was skipped: the reason is a short stable token fit for a metric label."""

    reason: str
    peer: IPAddress | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SpeakerRestarted:
    """The speaker lost ExaBGP (and so every session) and is starting it again.

    Every route received before is from a session that no longer exists:
    ExaBGP sends no withdrawals when it dies.
    """

    restarts: int
    reason: str
    peers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpeakerAttached:
    """An ExaBGP's relay attached; `adopted`: a previous daemon handed that ExaBGP over.

    `peers` maps each peer address to its last known session state; the
    established ones sent their routes to the previous daemon.
    """

    adopted: bool
    peers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiveOverflow:
    """The relay dropped received UPDATEs: evpnd fell `bgp.receive_buffer` bytes behind.

    What those UPDATEs said is missing from the RIB until `peers` re-send
    their tables: the daemon asks them for a route refresh (BoRR ... EoRR
    then sweeps what they no longer hold).
    """

    peers: tuple[str, ...]
    lines: int  # lines dropped (a raw frame line holds many UPDATEs)
    size: int  # bytes dropped


SpeakerEvent = SpeakerRestarted | SpeakerAttached | ReceiveOverflow

Message = (
    RouteUpdate
    | EndOfRib
    | RouteRefresh
    | PeerState
    | PeerOpen
    | Notification
    | SpeakerShutdown
    | CommandAck
    | DecodeError
)
