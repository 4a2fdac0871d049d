"""The `evpnd` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from evpnd import __version__, config

Handler = Callable[[argparse.Namespace], int]

# The config file of every command that reads one, when none is named (`-c`).
DEFAULT_CONFIG = "/etc/evpnd/evpnd.yaml"


# The version of `check-config --json`'s output (docs/show-json.md).
CHECK_SCHEMA_VERSION = 1


def _check_config(args: argparse.Namespace) -> int:
    try:
        checked = config.check_file(args.file)
    except config.ConfigError as exc:
        if args.json:
            _print_check(args.file, ok=False, errors=exc.issues, warnings=[])
        else:
            print(exc.render())
        return 1
    if args.json:
        _print_check(args.file, ok=True, errors=[], warnings=checked.warnings)
        return 0
    if checked.warnings:
        # On stderr: stdout stays "ok" for scripts; the exit code says the file loads.
        print(f"{args.file}: {len(checked.warnings)} warning(s)", file=sys.stderr)
        print("\n".join(f"  warning: {_warning_text(issue)}" for issue in checked.warnings),
              file=sys.stderr)
    print("ok")
    return 0


def _warning_text(issue: config.ConfigIssue) -> str:
    data = issue.as_dict()
    where = f"line {issue.line}: " if issue.line else ""
    value = f" (value: {issue.value!r})" if "value" in data else ""
    return f"{where}{issue.path}: {issue.message}{value}"


def _print_check(source: str, *, ok: bool, errors: list[config.ConfigIssue],
                 warnings: list[config.ConfigIssue]) -> None:
    import json

    print(json.dumps({
        "schema_version": CHECK_SCHEMA_VERSION, "source": source, "ok": ok,
        "errors": [i.as_dict() for i in errors], "warnings": [i.as_dict() for i in warnings],
    }, indent=2))  # fmt: skip


def _config_schema(args: argparse.Namespace) -> int:
    import json

    print(json.dumps(config.json_schema(), indent=2))
    return 0


def _load_or_exit(path: str) -> config.Config:
    return _check_or_exit(path).config


def _check_or_exit(path: str) -> config.Checked:
    try:
        return config.check_file(path)
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

    import structlog

    from evpnd import daemon, gctune, log, sdnotify

    checked = _check_or_exit(args.config)
    cfg = checked.config
    log.configure(args.log_level or cfg.logging.level, cfg.logging.format)
    for issue in checked.warnings:
        structlog.get_logger("evpnd.config").warning(
            "config warning", path=issue.path, line=issue.line, detail=issue.message)
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
    check.add_argument("--json", action="store_true",
                       help="print {ok, errors, warnings} as JSON (each with path, line, "
                            "message, value)")
    check.set_defaults(handler=_check_config)

    schema = sub.add_parser(
        "config-schema", help="print the config file's JSON Schema (for editors' YAML support)",
        description="Print the JSON Schema (draft 2020-12) of the config file, for editors: "
                    "e.g. save it and point the YAML language server at it with a first line "
                    "'# yaml-language-server: $schema=evpnd.schema.json'.")
    schema.set_defaults(handler=_config_schema)

    complete = sub.add_parser(
        "completion", help="print a shell completion script (bash or zsh)",
        description="Print a completion script generated from this command line's parser. "
                    "bash: evpnd completion bash > /etc/bash_completion.d/evpnd; zsh: evpnd "
                    "completion zsh > \"${fpath[1]}/_evpnd\" (then compinit).")
    complete.add_argument("shell", choices=("bash", "zsh"))
    complete.set_defaults(handler=_completion)

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


def _completion(args: argparse.Namespace) -> int:
    from evpnd import completion

    script = completion.bash if args.shell == "bash" else completion.zsh
    print(script(build_parser(), __version__))
    return 0


def expand_aliases(argv: list[str]) -> list[str]:
    """`show <FRR words>` -> `show <view> <options>` (evpnd/control/aliases.py); SystemExit 2
    with the FRR-style commands evpnd knows when the words start like one and fit none."""
    from evpnd.control import aliases
    from evpnd.control.cli import VIEW_HELP

    if len(argv) < 2 or argv[0] != "show" or argv[1] in VIEW_HELP or argv[1].startswith("-"):
        return argv
    expanded = aliases.expand(argv[1:])
    if expanded is not None:
        return [argv[0], *expanded]
    known = aliases.starting_with(argv[1])
    if known:
        typed = " ".join(w for w in argv[1:] if not w.startswith("-"))
        print(f"evpnd show: no command 'show {typed}'; evpnd knows these FRR-style ones:\n  "
              + "\n  ".join(aliases.describe(known)), file=sys.stderr)
        raise SystemExit(2)
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(expand_aliases(list(sys.argv[1:] if argv is None else argv)))
    handler: Handler = args.handler
    return handler(args)
