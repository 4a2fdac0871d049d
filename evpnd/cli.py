"""The `evpnd` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from evpnd import __version__, config

Handler = Callable[[argparse.Namespace], int]

# The config file of every command that reads one, when none is named (`-c`).
DEFAULT_CONFIG = "/etc/evpnd/evpnd.yaml"


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


def _plan(args: argparse.Namespace) -> int:
    from evpnd.dataplane import links

    cfg = _load_or_exit(args.config)
    try:
        plan = links.plan_for_sync(cfg, netns=args.netns)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lines = plan.lines()
    lines += [f"flood {f.device} -> {f.vtep} (static flood peer)" for f in plan.floods]
    print("\n".join(lines) if lines else "no changes")
    return 1 if plan.problems else 0


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from evpnd import daemon, gctune, log, sdnotify

    cfg = _load_or_exit(args.config)
    log.configure(args.log_level or cfg.logging.level, cfg.logging.format)
    sdnotify.service()  # takes $NOTIFY_SOCKET now: no child (ExaBGP) may inherit it
    gctune.tune()
    try:
        return asyncio.run(daemon.run(cfg, args.config))
    except daemon.DaemonError as exc:
        print(f"evpnd: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evpnd", description="BGP EVPN for Linux VXLAN hosts")
    parser.add_argument("--version", action="version", version=f"evpnd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check-config", help="validate a config file; print ok or every error")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG,
                       help=f"default: {DEFAULT_CONFIG}")
    check.set_defaults(handler=_check_config)

    plan = sub.add_parser("plan", help="print the device changes a config would make (dry run)")
    plan.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"default: {DEFAULT_CONFIG}")
    plan.add_argument("--netns", help="plan against this network namespace")
    plan.set_defaults(handler=_plan)

    run = sub.add_parser("run", help="run the daemon (BGP EVPN control plane)")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help=f"default: {DEFAULT_CONFIG}")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(handler=_run)

    from evpnd.lab import cli as lab_cli

    lab_cli.add_subparsers(sub)

    from evpnd.control import cli as control_cli

    control_cli.add_subparsers(sub)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
