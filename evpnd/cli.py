"""The `evpnd` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from evpnd import __version__, config

Handler = Callable[[argparse.Namespace], int]


def _check_config(args: argparse.Namespace) -> int:
    try:
        config.load(args.file)
    except config.ConfigError as exc:
        print(exc.render())
        return 1
    print("ok")
    return 0


def _load_or_exit(path: str) -> config.Config:
    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(1) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evpnd", description="BGP EVPN for Linux VXLAN hosts")
    parser.add_argument("--version", action="version", version=f"evpnd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a config file; print ok or every error")
    check.add_argument("file")
    check.set_defaults(handler=_check_config)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
