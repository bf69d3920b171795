"""Log lines that name what they belong to: a request id, a session id, a Celery task id.

Standard library only (a lab installs the policy server and relay without Django), shared by the arena's web
app and workers, the relay and the policy server. :func:`bind` puts fields in a context variable, so they
follow a request through its thread, or a websocket connection through its asyncio task (each task has its
own copy of the context); :class:`ContextFilter` copies them onto every record. Two formats:
``json`` (one object a line, for log collectors; production) and ``text`` (readable; the demo and a terminal).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

FORMAT_ENV = "ARENA_LOG_FORMAT"
LEVEL_ENV = "ARENA_LOG_LEVEL"
FIELDS = ("request_id", "session_id", "slot", "task_id", "connection")
"""The context fields a line may carry, in the order the text format shows them."""
MAX_FIELD_CHARS = 64

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "arena_log_context", default=None
)
_EMPTY: dict[str, str] = {}


def bind(**fields: Any) -> contextvars.Token:
    """Add ``fields`` (each cut to 64 characters; None removes one) to the current context; returns the token
    for :func:`unbind`."""
    current = dict(_context.get() or _EMPTY)
    for name, value in fields.items():
        if value is None:
            current.pop(name, None)
        else:
            current[name] = str(value)[:MAX_FIELD_CHARS]
    return _context.set(current)


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def clear() -> None:
    """Unbind every field of the current context (a thread that serves one request after another)."""
    _context.set(None)


def current() -> dict[str, str]:
    """The fields bound in this context (a copy)."""
    return dict(_context.get() or _EMPTY)


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (as attributes named like the fields) and into
    ``record.context`` (``"request_id=… session_id=…"``, empty when none is bound)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _context.get() or _EMPTY
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, fields.get(name))
        shown = [f"{name}={fields[name]}" for name in FIELDS if name in fields]
        record.context = " ".join(shown)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, the bound fields that
    are set, ``exc`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(  # noqa: UP017 (3.8)
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = _context.get() or _EMPTY
        for name in FIELDS:
            value = getattr(record, name, None) or fields.get(name)
            if value:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-01 12:00:00,000 INFO arena.services.sessions [request_id=…]: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(bracketed)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "context", "")
        record.bracketed = f" [{context}]" if context else ""
        return super().format(record)


def formatter(name: str | None = None) -> logging.Formatter:
    """The formatter called ``name`` (``json`` or ``text``; default ``$ARENA_LOG_FORMAT``, else ``text``)."""
    name = (name or os.environ.get(FORMAT_ENV) or "text").strip().lower()
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return TextFormatter()
    raise ValueError(f"{FORMAT_ENV} must be 'json' or 'text', not {name!r}")


def configure(level: str | None = None, format_name: str | None = None) -> None:
    """Set up the root logger of a command-line program (the relay, the policy server): one stderr handler
    with the context filter and the chosen format (``$ARENA_LOG_FORMAT``, ``$ARENA_LOG_LEVEL``)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(formatter(format_name))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get(LEVEL_ENV) or "INFO").upper())
