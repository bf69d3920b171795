"""Shared test set-up: which external services the suite may use, and whether they are required.

``DATABASE_URL`` selects the database (SQLite by default; CI sets Postgres). ``ARENA_TEST_REDIS_URL`` enables
tests that run a real Celery worker over Redis, ``ARENA_TEST_AMQP_URL`` one over RabbitMQ. With
``ARENA_REQUIRE_SERVICES=1`` (CI) a missing service fails those tests instead of skipping them.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

# The suite's policy servers listen on loopback, so its arena and relays may connect there. The production
# default is public addresses only (see policy_server.netguard); tests of the guard set "public" themselves.
# Relays built in the tests and the worker processes they start read the environment; the Django settings of
# this process were read before this file, hence the fixture below.
TEST_ENDPOINT_ALLOW = "private,loopback"
os.environ.setdefault("ARENA_ENDPOINT_ALLOW", TEST_ENDPOINT_ALLOW)

REQUIRE_SERVICES = os.environ.get("ARENA_REQUIRE_SERVICES") == "1"


def _worker_port_range() -> None:
    """Under pytest-xdist (``make test`` runs two workers), give each worker its own slice of the port range, so
    two workers' servers are never handed the same port between picking and binding it. The slice goes into
    ``ARENA_PORT_RANGE``, which the servers and workers a test starts inherit."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2:
        return
    from arena.ports import RANGE_ENV, port_candidates

    candidates = port_candidates()
    size = len(candidates) // count
    index = int(worker[2:])
    low = candidates.start + index * size
    os.environ[RANGE_ENV] = f"{low}-{low + size - 1}"


_worker_port_range()


def service_reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=2).close()
        return True
    except OSError:
        return False


def need_service(name: str, available: bool, how: str) -> None:
    """Skip (locally) or fail (CI) a test whose service is missing."""
    if available:
        return
    message = f"{name} is not available: {how}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def _service_url(variable: str, name: str, example: str) -> str:
    """The URL in environment ``variable`` if that service answers there; else skip (or fail in CI)."""
    url = os.environ.get(variable, "")
    need_service(name, bool(url) and service_reachable(url), f"set {variable}={example}")
    return url


@pytest.fixture
def redis_url() -> str:
    return _service_url("ARENA_TEST_REDIS_URL", "Redis", "redis://127.0.0.1:6379/0")


@pytest.fixture
def amqp_url() -> str:
    return _service_url("ARENA_TEST_AMQP_URL", "RabbitMQ", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def on_postgres(settings) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    need_service(
        "PostgreSQL", "postgresql" in engine, "set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters and refit locks live in the cache: each test starts with an empty one."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(autouse=True)
def _loopback_endpoints_allowed(settings):
    """Policy endpoints on loopback and private addresses are allowed in tests (see TEST_ENDPOINT_ALLOW)."""
    settings.ARENA_ENDPOINT_ALLOW = TEST_ENDPOINT_ALLOW


RELAY_TEST_POLL_S = 0.3


@pytest.fixture
def arena_relay(live_server, settings):
    """The blind relay as deployed: admitted by the live arena (pytest-django's ``live_server``, which makes the
    test transactional so that the server's thread sees the test's rows), polling it every 0.3 s; points
    ``ARENA_RELAY_URL`` at it. Yields the relay's handle (``.url``, ``.port``, ``.stop()``)."""
    from policy_server.relay import serve_relay_in_thread

    with serve_relay_in_thread(
        settings.ARENA_RELAY_SECRET, arena_url=live_server.url, poll_interval=RELAY_TEST_POLL_S
    ) as relay:
        settings.ARENA_RELAY_URL = relay.url.rstrip("/")
        yield relay
