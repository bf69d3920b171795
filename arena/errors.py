"""Domain errors raised by services and selectors; the API turns them into ``{"error": {...}}`` responses."""

from __future__ import annotations


class ArenaError(Exception):
    """Base class. ``code`` is machine-readable, ``message`` a sentence for people, ``field`` the input at fault."""

    status = 400

    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class InvalidInput(ArenaError):
    status = 400


class PermissionDenied(ArenaError):
    status = 403


class NotFound(ArenaError):
    status = 404


class Conflict(ArenaError):
    """The request is well-formed but the current state forbids it (second preference, expired lease...)."""

    status = 409


class Unavailable(ArenaError):
    """Nothing to assign right now (no eligible pair); the client may retry later."""

    status = 409


class StorageUnavailable(ArenaError):
    """Video storage cannot be reached right now; nothing was changed and the request may be retried."""

    status = 503
