"""Rendering shared by every page: the stylesheet is inlined, so pages are styled under any server (gunicorn,
the demo's WSGI server) without a static-files route."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import SafeString, mark_safe

STYLESHEET = "arena/arena.css"


@lru_cache(maxsize=1)
def stylesheet() -> SafeString:
    """The site's CSS (``arena/static/arena/arena.css``), read once per process."""
    path = finders.find(STYLESHEET)
    if path is None:
        raise FileNotFoundError(f"static file {STYLESHEET} is missing")
    with open(path, encoding="utf-8") as handle:
        return mark_safe(handle.read())


def render_page(
    request: HttpRequest, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> HttpResponse:
    return render(request, template, {"stylesheet": stylesheet(), **(context or {})}, status=status)
