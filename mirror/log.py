"""Structured logging that imports structlog only when an event is actually emitted.

``import structlog`` costs about as much as the rest of a ``mirror copy`` start-up (its console renderer
imports rich), and a command that logs nothing at its level (most runs: the default level is WARNING)
needs none of it. So modules log through this facade::

    log = get_logger("mirror.http")
    log.debug("http_request", method=method, status=status)

and bind per-task fields (the image a job copies, a service run) with ``with bound(src=..., dst=...):``,
as ``structlog.contextvars.bound_contextvars`` would: every event logged inside carries them (fields
given to the call win).

Until :func:`configure` is called (the CLI calls it once, at the start of a command: see
``mirror.cli.logsetup``), every event goes to structlog as it is configured (its defaults, or a test's
``structlog.testing.capture_logs``). After it, events below the level are dropped here, without importing
structlog; the first event at or above it imports structlog and runs the ``setup`` given to
:func:`configure`. This module's state is the process-wide logging configuration that structlog itself
keeps globally; nothing else is kept here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # the stdlib's (and structlog's) level numbers

_FIELDS: ContextVar[Mapping[str, Any] | None] = ContextVar("mirror_log_fields", default=None)


class _Settings:
    """The level (None: not configured, emit everything) and the structlog set-up still to run."""

    level: int | None = None
    setup: Callable[[], None] | None = None


_settings = _Settings()


def configure(level: int, setup: Callable[[], None]) -> None:
    """Drop events below ``level``; ``setup`` (which configures structlog) runs before the first event
    at or above it, if any."""
    _settings.level = level
    _settings.setup = setup


def enabled(level: int) -> bool:
    return _settings.level is None or level >= _settings.level


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every event logged in this context (this task and the tasks it starts)."""
    outer = _FIELDS.get()
    token = _FIELDS.set({**outer, **fields} if outer else fields)
    try:
        yield
    finally:
        _FIELDS.reset(token)


class Logger:
    """A named logger whose methods take an event name and fields, as structlog's do."""

    __slots__ = ("_name", "_real")

    def __init__(self, name: str) -> None:
        self._name = name
        self._real: Any = None

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error event with the traceback of the exception being handled."""
        self._emit(ERROR, "exception", event, fields)

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        if not enabled(level):
            return
        if _settings.setup is not None:
            setup, _settings.setup = _settings.setup, None
            setup()
        if self._real is None:
            import structlog  # here only: the first event actually emitted

            self._real = structlog.get_logger(self._name)
        context = _FIELDS.get()
        if context:
            for key, value in context.items():
                fields.setdefault(key, value)
        getattr(self._real, method)(event, **fields)


def get_logger(name: str) -> Logger:
    return Logger(name)

