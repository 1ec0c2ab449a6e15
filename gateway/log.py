"""Structured logs: one JSON object a line on stdout, one rich event per thing that happened.

Library loggers (paho, asyncua, pymodbus, sllurp) are routed through the same renderer at
WARNING, so journald stores one stream. `Throttle` keeps a recurring problem (a dead scanner, a
noisy serial line) from flooding the log: first occurrence at WARNING, repeats at DEBUG, and a
summary with the count now and then.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import structlog

LIBRARY_LOGGERS = ("paho", "asyncua", "pymodbus", "sllurp", "asyncio")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger once, at process start."""
    out = stream if stream is not None else sys.stdout
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        # show_locals off: locals of a failing frame may hold secrets and are huge.
        exc = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer_chain: list[Any] = [exc, structlog.processors.JSONRenderer()]
        renderer = renderer_chain
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, _LEVELS[level]))


def get_logger(name: str, **context: Any) -> Any:
    """A structlog logger for module `name`, `context` bound to every event. It stays lazy (no
    `.bind()` at import time), so loggers made at import follow `configure()` called later."""
    return structlog.get_logger(**context)


class Throttle:
    """Rate-limits one recurring problem of one source.

    `hit()` logs the first occurrence at WARNING with the given fields, repeats at DEBUG, and,
    at most every `summary_s`, a WARNING `<event>_repeated` with the count since the last one.
    `clear()` ends the episode (the device recovered) and logs how many there were.
    """

    def __init__(
        self,
        log: Any,
        event: str,
        summary_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._event = event
        self._summary_s = summary_s
        self._clock = clock
        self._count = 0
        self._unreported = 0
        self._last_summary = 0.0

    @property
    def count(self) -> int:
        return self._count

    def hit(self, **fields: Any) -> None:
        now = self._clock()
        self._count += 1
        if self._count == 1:
            self._log.warning(self._event, **fields)
            self._last_summary = now
            return
        self._unreported += 1
        if now - self._last_summary >= self._summary_s:
            self._log.warning(
                f"{self._event}_repeated", count=self._unreported, total=self._count, **fields
            )
            self._unreported = 0
            self._last_summary = now
        else:
            self._log.debug(self._event, repeat=self._count, **fields)

    def clear(self, **fields: Any) -> None:
        if self._count:
            self._log.info(f"{self._event}_cleared", total=self._count, **fields)
        self._count = 0
        self._unreported = 0
