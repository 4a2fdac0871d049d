"""`evpnd show ...`: ask the running daemon over its control socket, print a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from evpnd.control import client, render
from evpnd.control.settings import SOCKET_NAME, ControlConfig

VIEW_HELP = {
    "peers": "BGP peers: state, uptime, routes received/sent, last error",
    "vni": "VNIs: devices, MTU, local/remote MAC counts, remote VTEPs",
    "mac": "MACs per VNI: local (port) or remote (VTEP, peer), mobility seq, sticky",
    "neighbors": "IP -> MAC bindings per VNI (ARP/ND suppression)",
    "routes": "EVPN routes received (in) and announced (out)",
    "vteps": "remote VTEPs: flood lists, MACs behind them, peers they come through",
    "status": "version, uptime, ExaBGP pid/restarts, RIB and dataplane counters",
    "fabric": "this host, its peers, the remote VTEPs and their MACs per VNI (--svg: a picture)",
}
WITH_VNI = ("vni", "mac", "neighbors", "routes", "vteps")


def add_subparsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    common.add_argument("--socket", metavar="PATH",
                        help="control socket (default: <state_dir>/control.sock)")
    common.add_argument("-c", "--config", metavar="CONFIG",
                        help="take the socket path from this config file")
    common.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    show = sub.add_parser("show", help="show the running daemon's state")
    views = show.add_subparsers(dest="view", required=True, metavar="VIEW")
    for name, text in VIEW_HELP.items():
        view = views.add_parser(name, parents=[common], help=text, description=text)
        if name in WITH_VNI:
            view.add_argument("--vni", type=int, help="only this VNI")
        if name == "routes":
            view.add_argument("--type", type=int, choices=(2, 3, 5), help="only this route type")
            view.add_argument("--direction", choices=("in", "out"),
                              help="in = received, out = announced")
        if name == "fabric":
            view.add_argument("--svg", metavar="FILE", help="write the picture the live "
                              "fabric view shows (metrics.fabric_view) to FILE ('-': stdout)")
        view.set_defaults(handler=run_show)


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    from evpnd import config

    if not args.config:
        return Path(config.Config.model_fields["state_dir"].default) / SOCKET_NAME
    try:
        cfg = config.load(args.config)
    except config.ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(1) from None
    control = getattr(cfg, "control", None) or ControlConfig()
    return control.socket_path(cfg.state_dir)


def run_show(args: argparse.Namespace) -> int:
    path = socket_path(args)
    request = {name: getattr(args, name, None) for name in ("vni", "type", "direction")}
    try:
        data = client.show(path, args.view, request, timeout=args.timeout)
    except client.ClientError as exc:
        print(f"evpnd show {args.view}: {exc}", file=sys.stderr)
        return exc.exit_code
    if getattr(args, "svg", None):
        return write_svg(args.svg, data)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render.render(args.view, data))
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
