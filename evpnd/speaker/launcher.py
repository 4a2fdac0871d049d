"""ExaBGP with the EVPN commands: `python -m evpnd.speaker.launcher <exabgp args>`.

ExaBGP 5.0.15 cannot announce EVPN from its API, but its command registry is
open: this module registers `announce evpn` / `withdraw evpn` (commands.py),
installs the raw EVPN receive path (rawreceive.py: `receive { raw-evpn; }`
hands EVPN UPDATEs over undecoded), and then runs ExaBGP's own entry point in
the same process, so everything else (configuration, sessions, JSON encoder)
is stock ExaBGP.

Any argument ExaBGP accepts works (`<config>`, `validate -n <config>`, ...).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any


def _refresh_markers_are_not_requests() -> None:
    """Stop ExaBGP 5.0.15 from re-sending its adj-rib-out on a peer's BoRR/EoRR.

    Its reactor calls `Peer.resend` for every ROUTE-REFRESH it receives, the
    RFC 7313 begin/end markers included, so each route refresh we ask for
    (speaker.py, when a daemon adopts a running ExaBGP) would make us re-send
    every route twice. With enhanced route refresh negotiated, a real request
    arrives as `enhanced=True`; `False` then means a marker.
    """
    from exabgp.bgp.message.open.capability.refresh import REFRESH
    from exabgp.reactor.peer import Peer

    original = Peer.resend

    def resend(self: Any, enhanced: bool, family: Any = None) -> None:
        proto = getattr(self, "proto", None)
        negotiated = getattr(proto, "negotiated", None)
        if (family is not None and not enhanced
                and getattr(negotiated, "refresh", None) == REFRESH.ENHANCED):
            return
        original(self, enhanced, family)

    Peer.resend = resend


def _evpn_updates_grouped() -> None:
    """Pack EVPN routes that share their path attributes into one UPDATE.

    ExaBGP 5.0.15 groups an adj-rib-out's changes by attributes and, with
    `group-updates` (its default), packs IPv4 unicast and MCAST-VPN routes of
    a group into one UPDATE, but yields every other family's routes one
    UPDATE each (`OutgoingRIB.updates`): 10k local MACs were 10k UPDATEs and
    most of ExaBGP's CPU. Its Update.messages() already splits many NLRIs
    into MP_REACH/MP_UNREACH messages of the negotiated size (grouped by next
    hop). So the consecutive one-route EVPN Updates of one attribute group
    (the same Attributes object) are merged back into one, in order.
    """
    from exabgp.bgp.message import Update
    from exabgp.protocol.family import AFI, SAFI
    from exabgp.rib.outgoing import OutgoingRIB

    original = OutgoingRIB.updates
    evpn = (AFI.l2vpn, SAFI.evpn)

    def updates(self: Any, grouped: bool) -> Iterator[Any]:
        held: Any = None
        for update in original(self, grouped):
            if (grouped and isinstance(update, Update) and len(update.nlris) == 1
                    and update.nlris[0].family().afi_safi() == evpn):  # fmt: skip
                if held is not None and held.attributes is update.attributes:
                    held.nlris.append(update.nlris[0])
                    continue
                if held is not None:
                    yield held
                held = Update(list(update.nlris), update.attributes)
                continue
            if held is not None:
                yield held
                held = None
            yield update
        if held is not None:
            yield held

    OutgoingRIB.updates = updates


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # A named-pipe CLI variable would turn ExaBGP's entry point into its pipe
    # helper; it never belongs to us.
    os.environ.pop("exabgp_cli_pipe", None)

    from evpnd.speaker import commands, rawreceive

    commands.register()
    _refresh_markers_are_not_requests()
    _evpn_updates_grouped()
    try:
        rawreceive.install()
    except rawreceive.RawReceiveUnavailable as exc:
        # Refuse to start: running without it would hand evpnd JSON where its
        # configuration asked for frames, or fail later on `raw-evpn`.
        sys.stderr.write(f"evpnd launcher: {exc}\n")
        return 2

    from exabgp.application.main import main as exabgp_main

    from evpnd import gctune

    gctune.tune()
    sys.argv = ["exabgp", *args]
    try:
        code = exabgp_main()
    except BrokenPipeError:
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
