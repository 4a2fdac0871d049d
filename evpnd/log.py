"""structlog set-up: JSON lines for machines, a readable console for people, one stream.

- evpnd's own lines go through structlog (a PrintLogger: cheap on the hot path).
- Libraries log through the standard `logging` module (asyncio, aiohttp,
  aiomqtt and paho, pyroute2, `warnings`). Their records are formatted by
  structlog's `ProcessorFormatter` with the same processors and renderer, so
  every line of the stream is one JSON object (or one console line): never a
  library's plain text inside the JSON. A record carries its `logger` name.
  Libraries are heard from `warning` up (or the configured level, if higher):
  their info and debug lines are their developers' business.
- Under systemd with the output going to the journal (`$JOURNAL_STREAM`
  names our stderr), each line starts with `<N>`, the syslog priority of its
  level (sd-daemon(3)): journald strips it and stores PRIORITY, so
  `journalctl -u evpnd -p warning` and the colours of `journalctl` follow
  evpnd's levels. A stderr that is not the journal's stream (a file, a pipe,
  a child that inherited the variable) gets no prefix.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, Any, Literal

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
# syslog priorities (sd-daemon(3): SD_ERR "<3>", SD_WARNING "<4>", SD_INFO "<6>", SD_DEBUG "<7>").
PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6,
              "debug": 7, "notset": 7}
LIBRARY_THRESHOLD = logging.WARNING


def journal_stream(environ: Mapping[str, str], fd: int | None) -> bool:
    """Is `fd` the journal stream systemd connected us to (`$JOURNAL_STREAM` = "DEV:INODE")?"""
    value = environ.get("JOURNAL_STREAM", "")
    if fd is None or ":" not in value:
        return False
    try:
        device, inode = (int(part) for part in value.split(":", 1))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def with_priority(text: str, level: str) -> str:
    """`<N>` before every line of `text` (a console rendering may span several)."""
    prefix = f"<{PRIORITIES.get(level, 6)}>"
    return "\n".join(prefix + line for line in text.split("\n"))


class JournalPriority:
    """A renderer wrapper: the rendered line, prefixed with its level's syslog priority."""

    def __init__(self, renderer: structlog.types.Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> str:
        level = str(event_dict.get("level", method_name))
        return with_priority(str(self.renderer(logger, method_name, event_dict)), level)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """evpnd's handler on the root logger (so a second `configure` replaces it)."""


def configure(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    out = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    try:
        fd: int | None = out.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    tty = out.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not tty)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=tty)
    )
    if journal_stream(env, fd):
        renderer = JournalPriority(renderer)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    threshold = LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, renderer, shared, max(threshold, LIBRARY_THRESHOLD))


def _route_stdlib(out: IO[str], renderer: structlog.types.Processor,
                  shared: list[structlog.types.Processor], threshold: int) -> None:
    handler = _Handler(out)
    handler.setLevel(threshold)  # records propagated from a logger set lower stop here too
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    logging.captureWarnings(True)  # `warnings.warn` becomes a py.warnings record, not text
