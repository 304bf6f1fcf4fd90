"""structlog configuration: done once, here, at the entry point.

:func:`configure_logging` only sets the level of :mod:`mirror.log`; structlog (and rich, which its
console renderer imports) is imported and configured when the first event at that level is emitted,
so a command that logs nothing does not pay for it.
"""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from typing import Any

from mirror import log

SECRET_KEYS = frozenset({"authorization", "password", "token", "secret", "auth", "identitytoken", "creds"})


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = "<redacted>"
    return event


def configure_logging(debug: bool, fmt: str | None) -> None:
    # An explicit --log-format asks for the event stream: one event per image at INFO.
    level = log.DEBUG if debug else (log.INFO if fmt else log.WARNING)
    log.configure(level, lambda: _configure_structlog(level, fmt))


def _configure_structlog(level: int, fmt: str | None) -> None:
    import structlog

    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
