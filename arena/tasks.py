"""Celery tasks: policy health checks, debounced ranking refits, session expiry, video retention,
notifications."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
from arena.services.relay import relay_dialout_locate
from arena.services.sessions import session_expire_overdue
from policy_server.server import NONCE_KEY

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
        fingerprint=result.fingerprint,
        probe_answer=result.probe,
        served_nonce=(result.metadata or {}).get(NONCE_KEY),
    )


def _check_target(policy: Policy) -> tuple[str, str | None, frozenset[str]] | None:
    """Where to check ``policy``: (url, api key, allowed address classes); None for a dial-out policy that no
    relay holds a link to. A dial-out policy is checked through the relay holding its link (its
    ``/forward/<slug>``, an internal address: every routable class allowed). Reads the database, so it runs in
    the task's thread, not in the check pool's."""
    from policy_server import dialout, netguard
    from policy_server.relay_token import relay_forward_credential

    slug = dialout.slug_of(policy.endpoint_url)
    if slug is None:
        return policy.endpoint_url, policy.endpoint_api_key or None, endpoint_allow()
    relay = relay_dialout_locate(policy=slug)
    if relay is None:
        return None
    forward = relay.rstrip("/") + dialout.FORWARD_PREFIX + slug
    return forward, relay_forward_credential(settings.ARENA_RELAY_SECRET), netguard.ALLOWABLE_CLASSES


def _check(target: tuple[str, str | None, frozenset[str]] | None):
    from policy_server.check import not_connected, policy_check

    if target is None:
        return not_connected()
    url, api_key, allow = target
    return policy_check(
        url, timeout=settings.ARENA_CHECK_TIMEOUT_SECONDS, api_key=api_key, endpoint_allow=allow
    )


@shared_task(name="arena.tasks.policy_check_one")
def policy_check_one(policy_id: int) -> bool:
    """Check one policy now and store the result; returns whether the stored check passed."""
    policy = Policy.objects.filter(pk=policy_id).exclude(status=Policy.Status.RETIRED).first()
    if policy is None:
        return False
    return bool(_record(policy, _check(_check_target(policy))).last_check_ok)


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
    """Check ``policies``, 16 at a time (a slow or dead one costs its own timeout), and store each result."""
    if not policies:
        return 0
    targets = [_check_target(policy) for policy in policies]
    with ThreadPoolExecutor(max_workers=min(16, len(policies)), thread_name_prefix="check") as pool:
        results = list(pool.map(_check, targets))
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
                notification_digest.delay()
                if not cache.get(REFIT_DIRTY):
                    break
        if not cache.get(REFIT_DIRTY):
            return version


@shared_task(name="arena.tasks.session_expire_overdue")
def session_expire_overdue_task() -> int:
    return session_expire_overdue()


@shared_task(name="arena.tasks.video_poster_make")
def video_poster_make_task(video_id: str) -> bool:
    """Make a verified video's poster frame; returns whether it has one."""
    from arena.services.videos import video_poster_make

    video = video_poster_make(video_id=video_id)
    return bool(video and video.poster_key)


@shared_task(name="arena.tasks.video_retention_sweep")
def video_retention_sweep() -> dict:
    """Delete old videos of sessions without a verdict and report bucket/database mismatches."""
    from arena.services.videos import video_retention_sweep as sweep

    return sweep()


@shared_task(bind=True, name="arena.tasks.notification_deliver", max_retries=None)
def notification_deliver(self, delivery_id: str) -> str:
    """One attempt at a notification; a failed one is retried with exponential backoff (see
    ``arena.services.notifications.retry_countdown``) until ``ARENA_NOTIFY_MAX_ATTEMPTS``. A worker lost
    mid-attempt gets the task again (acks late): receivers tell repeats apart by ``X-Arena-Delivery``."""
    from arena.services.notifications import notification_attempt, retry_countdown

    state = notification_attempt(delivery_id=delivery_id)
    if state == "pending":
        raise self.retry(countdown=retry_countdown(self.request.retries + 1))
    return state


@shared_task(name="arena.tasks.notification_digest")
def notification_digest() -> int:
    """Queue the digests of new comparisons (after a refit); returns how many."""
    from arena.services.notifications import notification_digest_send

    return notification_digest_send()


@shared_task(name="arena.tasks.notification_resend_stalled")
def notification_resend_stalled_task() -> int:
    from arena.services.notifications import notification_resend_stalled

    return notification_resend_stalled()


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
