"""ExaBGP with the EVPN commands: `python -m evpnd.speaker.launcher <exabgp args>`.

ExaBGP 5.0.15 cannot announce EVPN from its API, but its command registry is
open: this module registers `announce evpn` / `withdraw evpn` (commands.py)
and then runs ExaBGP's own entry point in the same process, so everything
else (configuration, sessions, JSON encoder) is stock ExaBGP.

Any argument ExaBGP accepts works (`<config>`, `validate -n <config>`, ...).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGTERM this ExaBGP when the supervising daemon dies.

    Otherwise an orphaned ExaBGP would keep our routes announced with nobody
    left to withdraw them. SIGTERM (not SIGKILL) so ExaBGP closes its
    sessions with a NOTIFICATION and peers drop the routes at once.
    """
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get("EVPND_SPEAKER_SUPERVISED") == "1":
        _die_with_parent()
    # A named-pipe CLI variable would turn ExaBGP's entry point into its pipe
    # helper; it never belongs to us.
    os.environ.pop("exabgp_cli_pipe", None)

    from evpnd.speaker import commands

    commands.register()

    from exabgp.application.main import main as exabgp_main

    sys.argv = ["exabgp", *args]
    try:
        code = exabgp_main()
    except BrokenPipeError:
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
