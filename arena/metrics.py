"""Prometheus metrics (``prometheus-client``) and the ``/metrics`` endpoint.

Counted where they happen: HTTP requests by view and status (:class:`RequestMetricsMiddleware`), pair
assignments and their latency (``arena.services.sessions.pair_assign``), session outcomes, refit durations
(``arena.services.ranking``) and health-check outcomes (``arena.services.policies``). Read at scrape time, from
the database and the broker: the age and version of the newest ranking snapshot, open sessions, and the
Celery queue's depth (when a broker is configured).

Several processes (gunicorn workers, the Celery worker): with ``PROMETHEUS_MULTIPROC_DIR`` set (``make serve``
sets it to ``var/serve/metrics``, emptied at each start) every process writes its counters there and
``/metrics`` adds them up, so a scrape of any web worker sees the refits the Celery worker ran. Without it (the
demo, tests) the counters are those of the answering process. Only counters and histograms are kept per
process; the gauges are computed per scrape, so a dead process leaves nothing stale.

Access: as ``/healthz``'s details (``arena.health.is_operator``): ``Authorization: Bearer $ARENA_OPS_TOKEN``,
a staff user, or loopback when no token is set and no proxy is in front.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from arena.errors import ArenaError

REQUESTS = Counter(
    "arena_http_requests",
    "HTTP requests answered, by view name, method and status code",
    ["view", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "arena_http_request_duration_seconds",
    "Time to answer an HTTP request, by view name",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ASSIGNMENTS = Counter(
    "arena_assignments", "Pair assignment requests, by outcome (assigned or the error code)", ["outcome"]
)
ASSIGNMENT_SECONDS = Histogram(
    "arena_assignment_duration_seconds",
    "Time pair_assign took to choose and store a pair (successful assignments)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SESSIONS_ENDED = Counter("arena_sessions_ended", "Sessions closed, by how (submitted, aborted)", ["how"])
REFIT_SECONDS = Histogram(
    "arena_refit_duration_seconds",
    "Time to fit the ranking and store a snapshot",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CHECKS = Counter(
    "arena_policy_checks",
    "Policy health checks recorded, by outcome (ok or fail) and trigger",
    ["outcome", "trigger"],
)


class ArenaStateCollector(Collector):
    """Gauges read at scrape time: the newest snapshot's age and version, open sessions, Celery queue depth."""

    NAMES = (
        "arena_snapshot_age_seconds",
        "arena_snapshot_version",
        "arena_sessions_open",
        "arena_celery_queue_depth",
    )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The names alone, so that registering this collector does not query the database."""
        for name in self.NAMES:
            yield GaugeMetricFamily(name, "")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from arena.health import queue_depth
        from arena.models import EvaluationSession, RankingSnapshot

        newest = RankingSnapshot.objects.order_by("-version").values("version", "created_at").first()
        age = GaugeMetricFamily(
            "arena_snapshot_age_seconds",
            "Seconds since the newest ranking snapshot was stored (absent: none yet)",
        )
        version = GaugeMetricFamily("arena_snapshot_version", "Version number of the newest ranking snapshot")
        if newest is not None:
            age.add_metric([], (timezone.now() - newest["created_at"]).total_seconds())
            version.add_metric([], newest["version"])
        yield age
        yield version
        open_sessions = GaugeMetricFamily(
            "arena_sessions_open", "Sessions assigned or running, not yet closed"
        )
        open_sessions.add_metric(
            [], EvaluationSession.objects.filter(state__in=EvaluationSession.OPEN_STATES).count()
        )
        yield open_sessions
        depth = queue_depth()
        queue = GaugeMetricFamily(
            "arena_celery_queue_depth",
            "Tasks waiting in the Celery queue (absent: tasks run eagerly, or the broker did not answer)",
        )
        if depth is not None:
            queue.add_metric([], depth)
        yield queue


_STATE = ArenaStateCollector()
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    REGISTRY.register(_STATE)


def registry() -> CollectorRegistry:
    """What one scrape reports: every process's counters in multiprocess mode, else this process's own (with
    its CPU and memory)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    scrape = CollectorRegistry()
    MultiProcessCollector(scrape)
    scrape.register(_STATE)
    return scrape


@contextmanager
def assignment_observed() -> Iterator[None]:
    """Count one assignment by its outcome (``assigned`` or the refusal's code) and time the successful ones."""
    started = time.perf_counter()
    try:
        yield
    except ArenaError as exc:
        ASSIGNMENTS.labels(outcome=exc.code).inc()
        raise
    ASSIGNMENTS.labels(outcome="assigned").inc()
    ASSIGNMENT_SECONDS.observe(time.perf_counter() - started)


class RequestMetricsMiddleware:
    """Counts each request by its URL pattern's view name (``unmatched`` for a 404 that matched none), so the
    label values are bounded by the URL conf, whatever paths clients send."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is not None:
            view = match.view_name or match._func_path
        elif request.path.startswith(_STATIC_PREFIX):
            view = "static"  # answered by WhiteNoise, before any URL pattern
        else:
            view = "unmatched"
        method = request.method if request.method in _METHODS else "other"
        REQUESTS.labels(view=view, method=method, status=str(response.status_code)).inc()
        REQUEST_SECONDS.labels(view=view).observe(time.perf_counter() - started)
        return response


_STATIC_PREFIX = "/" + settings.STATIC_URL.strip("/") + "/"
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    from arena.api.errors import json_error
    from arena.health import is_operator

    if not is_operator(request):
        return json_error(
            "forbidden",
            "Metrics are for operators: send 'Authorization: Bearer <ARENA_OPS_TOKEN>' (or ask from loopback "
            "when no token is configured).",
            403,
        )
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
