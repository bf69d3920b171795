"""Every API error is ``{"error": {"code", "message", "field"}}`` with a 4xx status."""

from __future__ import annotations

from typing import Any

from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from arena.errors import ArenaError

_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "malformed_body",
}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ArenaError):
        set_rollback()
        return Response(error_body(exc.code, exc.message, exc.field), status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, exceptions.ValidationError):
        field, code, message = _first_validation_error(exc.detail)
        return Response(error_body(code, message, field), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, exceptions.APIException):
        code = getattr(exc, "arena_code", None) or next(
            (c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "bad_request"
        )
        headers = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            headers["Retry-After"] = str(int(exc.wait) + 1)
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = "Api-Key"
        set_rollback()
        return Response(error_body(code, str(exc.detail)), status=exc.status_code, headers=headers)
    return None


def _first_validation_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str]:
    """Flatten DRF's nested error detail to the first (field path, code, message)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            path = key if key != "non_field_errors" else ""
            path = f"{prefix}.{path}" if prefix and path else (path or prefix)
            return _first_validation_error(value, path)
    if isinstance(detail, list) and detail:
        first = detail[0]
        if isinstance(first, dict | list):
            return _first_validation_error(first, prefix)
        return prefix or None, getattr(first, "code", "invalid") or "invalid", _sentence(prefix, str(first))
    return prefix or None, "invalid", _sentence(prefix, str(detail))


def _sentence(field: str, message: str) -> str:
    return f"{field}: {message}" if field else message


def json_error(code: str, message: str, status_code: int, field: str | None = None) -> JsonResponse:
    """For errors raised outside DRF views (middleware, Django's 404/500 handlers under /api/)."""
    return JsonResponse(error_body(code, message, field), status=status_code)
