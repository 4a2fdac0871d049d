"""`evpnd show ...`, `evpnd reload`: ask the running daemon over its control socket.

The socket is `--socket`, else the one the config file names (`-c`, default
/etc/evpnd/evpnd.yaml: `control.socket`, else `<state_dir>/control.sock`),
else, with no config file at the default place, `/run/evpnd/control.sock`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from evpnd.control import aliases, client, render
from evpnd.control.settings import SOCKET_NAME, ControlConfig

VIEW_HELP = {
    "peers": "BGP peers: state, uptime, routes received/sent, last error",
    "vni": "VNIs: devices, MTU, local/remote MAC counts, remote VTEPs",
    "mac": "MACs per VNI: local (port) or remote (VTEP, peer), mobility seq, sticky",
    "neighbors": "IP -> MAC bindings per VNI (ARP/ND suppression)",
    "routes": "EVPN routes received (in) and announced (out)",
    "vteps": "remote VTEPs: flood lists, MACs behind them, peers they come through",
    "ip": "ip routes: the routes evpnd installed into the L3VNI, with their origin",
    "status": "version, uptime, ExaBGP pid/restarts, RIB and dataplane counters",
    "fabric": "this host, its peers, the remote VTEPs and their MACs per VNI (--svg: a picture)",
    "config": "the effective config: the file, every default and the Docker networks' VNIs "
              "(secrets as ***)",
}
WITH_VNI = ("vni", "mac", "neighbors", "routes", "vteps")


def add_subparsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    common.add_argument("--socket", metavar="PATH",
                        help="control socket (default: <state_dir>/control.sock)")
    common.add_argument("-c", "--config", metavar="CONFIG",
                        help="take the socket path from this config file "
                             "(default: /etc/evpnd/evpnd.yaml if it exists)")
    common.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    show = sub.add_parser(
        "show", help="show the running daemon's state",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="FRR's commands work too (evpnd show <FRR words> [options]):\n  "
               + "\n  ".join(aliases.describe()))
    views = show.add_subparsers(dest="view", required=True, metavar="VIEW")
    for name, text in VIEW_HELP.items():
        view = views.add_parser(name, parents=[common], help=text, description=text)
        view.add_argument("--watch", type=watch_interval, metavar="SECONDS",
                          help="ask again every SECONDS and redraw, until Ctrl-C")
        if name in WITH_VNI:
            view.add_argument("--vni", type=int, help="only this VNI")
        if name == "ip":
            view.add_argument("table", nargs="?", default="routes", choices=("routes",),
                              help="routes (`evpnd show ip routes`)")
        if name == "routes":
            view.add_argument("--type", type=int, choices=(1, 2, 3, 4, 5),
                              help="only this route type")
            view.add_argument("--direction", choices=("in", "out"),
                              help="in = received, out = announced")
        if name == "fabric":
            view.add_argument("--svg", metavar="FILE", help="write the picture the live "
                              "fabric view shows (metrics.fabric_view) to FILE ('-': stdout)")
        view.set_defaults(handler=run_show)

    reload = sub.add_parser(
        "reload", help="make the running daemon re-read its config file; print 'reloaded' or "
                       "why it refused (exit 1)",
        description="Ask the running daemon to re-read its config file (like SIGHUP, but the "
                    "answer says whether the new config was applied). Exit 0: reloaded; 1: "
                    "refused, the running config is kept (the errors are printed); 2: no daemon.")
    reload.add_argument("--socket", metavar="PATH",
                        help="control socket (default: <state_dir>/control.sock)")
    reload.add_argument("-c", "--config", metavar="CONFIG",
                        help="the daemon's config file: its socket path, and the errors to print "
                             "when the reload is refused (default: /etc/evpnd/evpnd.yaml)")
    reload.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    reload.set_defaults(handler=run_reload)

    clear = sub.add_parser("clear", help="clear state in the running daemon")
    what = clear.add_subparsers(dest="what", required=True, metavar="WHAT")
    text = ("release a MAC that duplicate-address detection flagged (and froze, with "
            "dad.freeze): it is advertised and follows moves again, its counts start over")
    duplicate = what.add_parser("duplicate", parents=[common], help=text, description=text)
    duplicate.add_argument("vni", type=int, help="the VNI")
    duplicate.add_argument("mac", help="the MAC address")
    duplicate.set_defaults(handler=run_clear_duplicate)


def config_file(args: argparse.Namespace) -> Path | None:
    """`-c`, else the default config file if there is one."""
    if args.config:
        return Path(args.config)
    from evpnd.cli import DEFAULT_CONFIG

    return Path(DEFAULT_CONFIG) if Path(DEFAULT_CONFIG).exists() else None


def socket_path(args: argparse.Namespace) -> Path:
    from evpnd import config

    try:
        return resolve_socket(args)
    except config.ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(1) from None


def resolve_socket(args: argparse.Namespace) -> Path:
    """The socket path; config.ConfigError if it must come from an invalid config file."""
    if args.socket:
        return Path(args.socket)
    from evpnd import config

    path = config_file(args)
    if path is None:
        return Path(config.Config.model_fields["state_dir"].default) / SOCKET_NAME
    cfg = config.load(path)
    control = getattr(cfg, "control", None) or ControlConfig()
    return control.socket_path(cfg.state_dir)


def config_errors(args: argparse.Namespace) -> str | None:
    """The config file's errors as `check-config` prints them; None if it loads (or is none)."""
    from evpnd import config

    path = config_file(args)
    if path is None:
        return None
    try:
        config.load(path)
    except config.ConfigError as exc:
        return exc.render()
    return None


def run_reload(args: argparse.Namespace) -> int:
    from evpnd import config

    try:
        path = resolve_socket(args)
    except config.ConfigError as exc:
        # The socket's place is in the file: the daemon cannot be asked, and it would
        # refuse this file anyway. It keeps running with its config.
        print(f"evpnd reload: not reloaded: the config file is invalid; the running config is "
              f"kept\n{exc.render()}", file=sys.stderr)
        return client.EXIT_REFUSED
    try:
        client.reload(path, timeout=args.timeout)
    except client.ClientError as exc:
        print(f"evpnd reload: {exc}", file=sys.stderr)
        if exc.exit_code == client.EXIT_REFUSED:
            errors = config_errors(args)
            if errors:
                print(errors, file=sys.stderr)
        return exc.exit_code
    print("reloaded")
    return 0


def run_clear_duplicate(args: argparse.Namespace) -> int:
    path = socket_path(args)
    try:
        data = client.clear_duplicate(path, args.vni, args.mac, timeout=args.timeout)
    except client.ClientError as exc:
        print(f"evpnd clear duplicate: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"MAC {data['mac']} in VNI {data['vni']}: duplicate flag cleared")
    return 0


def run_show(args: argparse.Namespace) -> int:
    path = socket_path(args)
    request = {name: getattr(args, name, None) for name in ("vni", "type", "direction")}

    def text() -> str:
        data = client.show(path, args.view, request, timeout=args.timeout)
        return json.dumps(data, indent=2) if args.json else render.render(args.view, data)

    if args.watch is not None:
        if getattr(args, "svg", None):
            print("evpnd show fabric: --watch and --svg do not go together", file=sys.stderr)
            return 2
        return watch(text, args.watch, f"evpnd show {args.view}")
    try:
        if getattr(args, "svg", None):
            return write_svg(args.svg, client.show(path, args.view, request,
                                                   timeout=args.timeout))
        print(text())
    except client.ClientError as exc:
        print(f"evpnd show {args.view}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def watch_interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= seconds <= 86_400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError("must be between 0.1 and 86400 seconds")
    return seconds


CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen


def watch(frame: Callable[[], str], interval: float, title: str, *,
          out: TextIO | None = None, sleep: Callable[[float], None] = time.sleep,
          now: Callable[[], float] = time.time, clear: bool | None = None) -> int:
    """`frame()` every `interval` seconds until Ctrl-C (exit 0), like watch(1): on a terminal
    each frame replaces the last; otherwise frames follow each other. A daemon that does
    not answer is said in the frame, and asked again the next time."""
    out = sys.stdout if out is None else out
    clear = out.isatty() if clear is None else clear
    try:
        while True:
            try:
                body = frame()
            except client.ClientError as exc:
                body = f"{title}: {exc}"
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now()))
            out.write(f"{CLEAR if clear else ''}Every {interval:g}s: {title}    {stamp}\n\n"
                      f"{body}\n{'' if clear else chr(10)}")
            out.flush()
            sleep(interval)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `evpnd show ... --watch 1 | head`
        return 0


def write_svg(target: str, data: dict[str, Any]) -> int:
    from evpnd.web import fabric_svg

    svg = fabric_svg.render(data)
    if target == "-":
        sys.stdout.write(svg)
        return 0
    try:
        Path(target).write_text(svg)
    except OSError as exc:
        print(f"evpnd show fabric: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {target}")
    return 0
