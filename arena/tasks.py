"""Celery tasks: policy health checks, debounced ranking refits, session expiry, video retention."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection

from arena.models import Policy, PolicyCheck
from arena.services.policies import endpoint_allow, policy_check_record, policy_recheck_claim_due
from arena.services.ranking import ranking_snapshot_create
from arena.services.sessions import session_expire_overdue

log = logging.getLogger(__name__)

REFIT_LOCK = "arena:ranking:refit-lock"
REFIT_DIRTY = "arena:ranking:dirty"
REFIT_LOCK_SECONDS = 600
# The advisory-lock key on Postgres: a stable 31-bit number derived from the lock's name.
REFIT_LOCK_KEY = zlib.crc32(REFIT_LOCK.encode()) & 0x7FFFFFFF


def _record(policy: Policy, result, *, trigger: str = PolicyCheck.Trigger.ARENA) -> Policy:
    return policy_check_record(
        policy=policy,
        ok=result.ok,
        error_code=result.error or "",
        message=result.message or "",
        latency_ms=result.latency_ms,
        requirements=result.requirements if result.ok else None,
        trigger=trigger,
    )


@shared_task(name="arena.tasks.policy_check_one")
def policy_check_one(policy_id: int) -> bool:
    """Check one policy now and store the result; returns whether the stored check passed."""
    from policy_server.check import policy_check

    policy = Policy.objects.filter(pk=policy_id).exclude(status=Policy.Status.RETIRED).first()
    if policy is None:
        return False
    result = policy_check(
        policy.endpoint_url,
        timeout=settings.ARENA_CHECK_TIMEOUT_SECONDS,
        api_key=policy.endpoint_api_key or None,
        endpoint_allow=endpoint_allow(),
    )
    return bool(_record(policy, result).last_check_ok)


@shared_task(name="arena.tasks.policy_check_all")
def policy_check_all() -> int:
    """Check every non-retired policy, many in parallel, and store each result."""
    policies = list(Policy.objects.exclude(status=Policy.Status.RETIRED).order_by("pk"))
    return _check_and_record(policies, trigger=PolicyCheck.Trigger.ARENA)


@shared_task(name="arena.tasks.policy_recheck_due")
def policy_recheck_due(now: str | None = None) -> int:
    """Run the abort re-checks that are due (at ``now``, an ISO 8601 time, default the current time); returns
    how many ran. Scheduled every minute by beat; the results are recorded as ``trigger="abort"``."""
    due_ids = policy_recheck_claim_due(now=datetime.fromisoformat(now) if now else None)
    policies = list(Policy.objects.filter(pk__in=due_ids).order_by("pk"))
    return _check_and_record(policies, trigger=PolicyCheck.Trigger.ABORT)


def _check_and_record(policies: list[Policy], *, trigger: str) -> int:
    from policy_server.check import check_many

    if not policies:
        return 0
    results = check_many(
        [p.endpoint_url for p in policies],
        api_keys=[p.endpoint_api_key or None for p in policies],
        timeout=settings.ARENA_CHECK_TIMEOUT_SECONDS,
        endpoint_allow=endpoint_allow(),
    )
    for policy, result in zip(policies, results, strict=True):
        _record(policy, result, trigger=trigger)
    return len(policies)


def ranking_refit_soon() -> None:
    """Ask for a refit that includes everything stored so far (called after a preference commits)."""
    cache.set(REFIT_DIRTY, 1, timeout=None)
    try:
        ranking_refit.delay()
    except Exception:  # the broker is down: the preference is stored, the beat schedule refits later
        log.exception("could not enqueue a ranking refit; the periodic refit will include this preference")


@contextmanager
def refit_lock() -> Iterator[bool]:
    """Hold the one refit lock if it is free; yields whether this caller got it.

    On Postgres the lock is a session-level advisory lock on the worker's own database connection: a worker
    killed mid-refit loses its connection and with it the lock, so the next refit runs at once. (Behind a
    transaction-pooling proxy such as PgBouncer in transaction mode, session locks do not hold: give workers a
    direct connection.) Other databases use a cache entry that expires after ``REFIT_LOCK_SECONDS``.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [REFIT_LOCK_KEY])
            acquired = bool(cursor.fetchone()[0])
        release = _advisory_unlock
    else:
        acquired = cache.add(REFIT_LOCK, 1, timeout=REFIT_LOCK_SECONDS)
        release = partial(cache.delete, REFIT_LOCK)
    try:
        yield acquired
    finally:
        if acquired:
            release()


def _advisory_unlock() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [REFIT_LOCK_KEY])
    except DatabaseError:  # the connection broke: Postgres released the lock with it
        log.warning("refit lock: the connection was lost; Postgres released the lock with it")


@shared_task(name="arena.tasks.ranking_refit")
def ranking_refit() -> int | None:
    """Refit, debounced: at most one refit runs at a time, and the newest data is always included.

    A refit that finds another in flight leaves the dirty mark for it; the running one loops until no new
    preference arrived during its fit, and re-checks the mark after releasing the lock.
    """
    version = None
    while True:
        with refit_lock() as acquired:
            if not acquired:
                cache.set(REFIT_DIRTY, 1, timeout=None)
                return version
            while True:
                cache.delete(REFIT_DIRTY)
                version = ranking_snapshot_create().version
                if not cache.get(REFIT_DIRTY):
                    break
        if not cache.get(REFIT_DIRTY):
            return version


@shared_task(name="arena.tasks.session_expire_overdue")
def session_expire_overdue_task() -> int:
    return session_expire_overdue()


@shared_task(name="arena.tasks.video_retention_sweep")
def video_retention_sweep() -> dict:
    """Delete old videos of sessions without a verdict and report bucket/database mismatches."""
    from arena.services.videos import video_retention_sweep as sweep

    return sweep()


@shared_task(name="arena.tasks.release_build")
def release_build(snapshot_version: int | None = None) -> int:
    """Build a release of snapshot ``snapshot_version`` (default: the newest) on demand; returns its version."""
    from arena.models import RankingSnapshot
    from arena.services.releases import release_build as build

    snapshot = RankingSnapshot.objects.get(version=snapshot_version) if snapshot_version else None
    return build(snapshot=snapshot).version


@shared_task(name="arena.tasks.release_build_due")
def release_build_due() -> int | None:
    """The schedule's build (see ``arena.services.releases.release_build_due``); the version built or None."""
    from arena.services.releases import release_build_due as build_due

    release = build_due()
    return release.version if release else None
