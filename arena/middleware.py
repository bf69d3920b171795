"""Edges outside DRF: JSON errors for unknown API paths and oversize bodies."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views import defaults

from arena.api.errors import json_error


class ApiBodyLimitMiddleware:
    """Refuse API request bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` before anything reads them (413)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return json_error("bad_content_length", "Content-Length is not a number.", 400)
            if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                return json_error(
                    "body_too_large",
                    f"Request bodies are limited to {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                    413,
                )
        return self.get_response(request)


def not_found(request: HttpRequest, exception=None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_error("not_found", "No such API endpoint.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_error("server_error", "The server failed; the error was logged.", 500)
    return defaults.server_error(request)
