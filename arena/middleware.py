"""Edges outside DRF: the Content-Security-Policy header, JSON errors for unknown API paths and oversize
bodies."""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote_plus, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template import loader
from django.views import defaults

from arena.api.errors import json_error
from arena.auth import KEY_LIKE_RE
from policy_server import logs

REQUEST_ID_HEADER = "X-Request-ID"
# A proxy's id is kept if it is short and plain (it is written into every log line of the request); any other
# value is replaced, never echoed.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{8,64}")


class RequestIdMiddleware:
    """Gives each request an id: the client's or proxy's ``X-Request-ID`` if it is 8-64 characters of
    ``[A-Za-z0-9._:-]``, else a fresh UUID. Every log line written while the request runs carries it
    (``request_id``), and the response returns it in ``X-Request-ID``."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        request.request_id = request_id
        # Bound until the request is finished (see arena.apps), not only inside this call: Django logs a
        # 4xx/5xx response ("Not Found: ...") after the middleware has returned.
        logs.bind(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def content_security_policy() -> str:
    """The site's one policy. Scripts only from this origin (the pages have none; the API docs load the
    vendored Swagger UI from /static/), no plugins, no framing, forms and fetches to this origin only. Styles
    may be inline: every page inlines the stylesheet and the SVG charts carry style attributes (styles cannot
    run code). Videos also play from the S3 endpoint, where presigned playback URLs point (and their poster
    frames load from there)."""
    media = ["'self'"]
    if settings.S3_ENDPOINT_URL:
        endpoint = urlsplit(settings.S3_ENDPOINT_URL)
        media.append(f"{endpoint.scheme}://{endpoint.netloc}")
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", *media[1:]],  # poster frames come from the S3 endpoint too
        "media-src": media,
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class ContentSecurityPolicyMiddleware:
    """Sets ``Content-Security-Policy`` on every response that has none.

    Written by hand rather than with django-csp: the site needs one fixed policy and no nonces (no inline
    scripts anywhere), which is a header and a dozen lines; django-csp's per-view decorators and nonce machinery
    would be unused, and its settings format changed incompatibly in 4.0.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.policy = content_security_policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response


class KeyInUrlMiddleware:
    """Refuse (400 ``key_in_url``) any request whose query string carries something shaped like an API key.

    Keys are only ever read from the ``Authorization`` header; one put in a URL would end up in browser
    histories, proxy logs and referrers, so it is refused loudly rather than silently ignored.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if query and KEY_LIKE_RE.search(unquote_plus(query)):
            return json_error(
                "key_in_url",
                "API keys are never accepted in the URL: send 'Authorization: Api-Key <key>' instead, and "
                "revoke this key, since the URL may have been recorded on the way.",
                400,
                field="query",
            )
        return self.get_response(request)


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
    from arena.web.render import render_page

    return render_page(request, "404.html", {"request_path": request.path}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_error("server_error", "The server failed; the error was logged.", 500)
    from arena.web.render import stylesheet

    # Rendered without the request's context processors: after a failure, the database behind request.user
    # may be the thing that broke. Django's plain page if even this fails.
    try:
        page = loader.get_template("500.html").render(
            {"stylesheet": stylesheet(), "request_id": getattr(request, "request_id", "")}
        )
    except Exception:
        return defaults.server_error(request)
    return HttpResponse(page, status=500)
