"""``/healthz``: is each service the arena needs answering, and how fast.

Four checks, each timed: the database (``SELECT 1``), the cache (a write and a read back), the Celery broker (a
connection, when ``CELERY_BROKER_URL`` is set; ``eager`` when tasks run in-process) and the video storage (the
S3 bucket answers, or the local folder is writable). HTTP 200 when every check passes, 503 otherwise.

Anyone gets the overall status and each check's ok/fail (enough for a load balancer or an uptime probe).
Latencies, modes and error sentences are for operators: staff users signed in, or a request carrying
``Authorization: Bearer $ARENA_OPS_TOKEN``, or (with no token configured and no proxy in front) a request from
loopback. Error sentences name the failing component and the exception's class, never a URL, a password or a
key.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache, caches
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

BROKER_TIMEOUT_SECONDS = 2.0
QUEUE_NAME = "celery"


@dataclass
class Probe:
    status: str  # "ok" or "fail"
    latency_ms: float
    detail: str = ""


def _timed(check: Callable[[], str]) -> Probe:
    started = time.perf_counter()
    try:
        detail = check()
        status = "ok"
    except Exception as exc:  # a health check reports every failure; it never raises
        detail, status = _describe(exc), "fail"
    return Probe(status=status, latency_ms=round((time.perf_counter() - started) * 1000, 2), detail=detail)


def _describe(exc: Exception) -> str:
    """The exception's class and, for our own errors, their sentence: other messages (a driver's) may carry
    host names or credentials, so they are left out."""
    from arena.storage import StorageError

    if isinstance(exc, StorageError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _cache() -> str:
    key, value = f"arena:healthz:{secrets.token_hex(8)}", secrets.token_hex(8)
    cache.set(key, value, timeout=30)
    try:
        if cache.get(key) != value:
            raise RuntimeError("cache did not return what was written")
    finally:
        cache.delete(key)
    return caches["default"].__class__.__name__


def broker_connection():
    """A kombu connection to ``CELERY_BROKER_URL`` with short timeouts (None in the embedded, eager mode)."""
    if not settings.CELERY_BROKER_URL:
        return None
    import kombu

    return kombu.Connection(
        settings.CELERY_BROKER_URL,
        connect_timeout=BROKER_TIMEOUT_SECONDS,
        transport_options={
            "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
            "socket_timeout": BROKER_TIMEOUT_SECONDS,
            "max_retries": 1,
        },
    )


def _broker() -> str:
    conn = broker_connection()
    if conn is None:
        return "eager"
    with conn:
        conn.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
        )
    return conn.transport_cls if isinstance(conn.transport_cls, str) else "broker"


def queue_depth() -> int | None:
    """Messages waiting in the Celery queue, or None when tasks run eagerly or the broker does not answer."""
    conn = broker_connection()
    if conn is None:
        return None
    try:
        with conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS
            )
            _, count, _ = conn.default_channel.queue_declare(queue=QUEUE_NAME, passive=True)
            return int(count)
    except Exception:  # the broker is down, or the queue was never declared: no number to report
        return None


def _storage() -> str:
    from arena.storage import S3Storage, get_storage

    storage = get_storage()
    storage.probe()
    return "s3" if isinstance(storage, S3Storage) else "local"


CHECKS: dict[str, Callable[[], str]] = {
    "database": _database,
    "cache": _cache,
    "broker": _broker,
    "storage": _storage,
}


def health_report() -> dict[str, Probe]:
    return {name: _timed(check) for name, check in CHECKS.items()}


def is_operator(request: HttpRequest) -> bool:
    """Staff signed in; or ``Authorization: Bearer <ARENA_OPS_TOKEN>``; or, with no token configured and no
    proxy in front (``ARENA_NUM_PROXIES=0``), a request from loopback."""
    token = settings.ARENA_OPS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    if token or settings.REST_FRAMEWORK.get("NUM_PROXIES"):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    report = health_report()
    ok = all(probe.status == "ok" for probe in report.values())
    body: dict = {"status": "ok" if ok else "fail"}
    if is_operator(request):
        body["checks"] = {
            name: {"status": p.status, "latency_ms": p.latency_ms, "detail": p.detail}
            for name, p in report.items()
        }
    else:
        body["checks"] = {name: {"status": p.status} for name, p in report.items()}
    return JsonResponse(body, status=200 if ok else 503)
