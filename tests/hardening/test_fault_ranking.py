"""Faults in the ranking pipeline, with a real Celery worker over Redis on the test database.

- The broker is down when a preference is submitted: the preference is stored, the request succeeds, the
  failure is logged, and the refit happens once the broker is back (as the beat's periodic refit does).
- The worker is killed (SIGKILL) in the middle of writing a snapshot: no partial snapshot exists, the refit lock
  it held (a Postgres advisory lock) is gone with its connection, and a later refit by a new worker writes a
  complete one at once.
"""

from __future__ import annotations

import logging
import signal

import pytest
from django.core.cache import cache
from django.db import connection, transaction

from arena.celery import app as celery_app
from arena.models import EvaluationSession, Preference, RankingSnapshot
from arena.tasks import REFIT_DIRTY, REFIT_LOCK_KEY, ranking_refit
from tests.api.actors import activate, make_actor, open_session, register_policy, register_robot, report_both
from tests.conftest import service_reachable
from tests.workers import celery_worker, wait_for

DEAD_BROKER = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there


def _arena(n_policies: int = 3):
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    for k in range(n_policies):
        register_policy(owner, f"policy-{k}")
        activate(f"policy-{k}")
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    register_robot(lab)
    return lab


def _submit(lab, choice: str = "A"):
    session = open_session(lab)
    report_both(lab, session["id"])
    return lab.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": choice, "reason": "clearer"})


@pytest.mark.django_db(transaction=True)
def test_preference_is_stored_while_the_broker_is_down_and_ranked_once_it_is_back(redis_url, caplog):
    assert not service_reachable(DEAD_BROKER)
    lab = _arena()
    with celery_worker(redis_url) as worker:
        celery_app.conf.update(broker_url=DEAD_BROKER)
        celery_app._after_fork()
        with caplog.at_level(logging.ERROR, logger="arena.tasks"):
            responses = [_submit(lab, choice) for choice in ("A", "B")]
        assert [r.status_code for r in responses] == [201, 201]
        assert all(r.json()["reveal"] for r in responses)
        assert Preference.objects.count() == 2
        assert EvaluationSession.objects.filter(state="submitted").count() == 2
        assert sum("could not enqueue a ranking refit" in r.getMessage() for r in caplog.records) == 2
        assert not RankingSnapshot.objects.exists()

        celery_app.conf.update(broker_url=redis_url)  # the broker is back
        celery_app._after_fork()
        ranking_refit.delay()  # what the beat's periodic "ranking-refit" entry sends
        wait_for(RankingSnapshot.objects.exists, timeout=60, what="a snapshot", proc=worker)
    snapshot = RankingSnapshot.objects.get()
    assert snapshot.n_comparisons == 2 and snapshot.n_policies >= 2


def _backend_waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # statistics are otherwise frozen per transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE %s",
            ["%arena_rankingsnapshot%"],
        )
        return cursor.fetchone()[0] > 0


def _refit_lock_held() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = %s",
            [REFIT_LOCK_KEY],
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_worker_killed_while_writing_a_snapshot_leaves_none_and_a_later_refit_succeeds(
    on_postgres, redis_url
):
    lab = _arena(n_policies=4)
    for k in range(6):
        assert _submit(lab, "AB"[k % 2]).status_code == 201
    RankingSnapshot.objects.all().delete()  # the eager refits run while no worker is up
    with celery_worker(redis_url) as worker:
        # Hold the snapshot table: the worker's refit blocks inside its write transaction; then kill it.
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE arena_rankingsnapshot IN SHARE MODE")
            ranking_refit.delay()
            wait_for(_backend_waiting_on_a_lock, timeout=60, what="the refit to reach its write", proc=worker)
            assert _refit_lock_held()
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=20)
        assert worker.returncode == -signal.SIGKILL
    # Its database session ends once the table is free (it cannot commit without its client): the lock goes too.
    wait_for(lambda: not _refit_lock_held(), timeout=10, what="the dead worker's refit lock to be released")
    assert not RankingSnapshot.objects.exists()

    with celery_worker(redis_url) as worker:
        ranking_refit.delay()
        wait_for(
            RankingSnapshot.objects.exists, timeout=30, what="a snapshot from the new worker", proc=worker
        )
    snapshot = RankingSnapshot.objects.get()
    assert snapshot.version == 1 and snapshot.n_comparisons == 6
    assert len(snapshot.ratings) == snapshot.n_policies == len(snapshot.matrices["slugs"])


@pytest.mark.django_db(transaction=True)
def test_a_refit_requested_while_another_runs_is_left_to_it(on_postgres):
    """Debounce: while another process holds the refit lock, a requested refit only leaves the dirty mark
    (no second snapshot is written concurrently); the next refit after the lock is free includes everything."""
    import psycopg

    lab = _arena()
    assert _submit(lab, "A").status_code == 201
    first = RankingSnapshot.objects.latest("version")
    assert first.n_comparisons == 1

    from tests.workers import database_url

    with psycopg.connect(database_url(), autocommit=True) as other:  # another worker, mid-refit
        other.execute("SELECT pg_advisory_lock(%s)", [REFIT_LOCK_KEY])
        assert _submit(lab, "B").status_code == 201  # its after-commit refit finds the lock taken
        assert ranking_refit() is None
        assert RankingSnapshot.objects.latest("version").version == first.version
        assert cache.get(REFIT_DIRTY)
    # the other session ended, and the lock with it (its backend releases it once it has seen the close: wait
    # for that, not for a fixed time): the next refit includes both preferences
    wait_for(lambda: not _advisory_lock_held(), timeout=60, what="the closed session's lock to be released")
    version = ranking_refit()
    latest = RankingSnapshot.objects.latest("version")
    assert version == latest.version == first.version + 1 and latest.n_comparisons == 2
    assert not cache.get(REFIT_DIRTY)


def _advisory_lock_held() -> bool:
    """Whether any session holds the refit's advisory lock (bigint keys show as classid/objid halves)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = %s AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            [REFIT_LOCK_KEY],
        )
        return bool(cursor.fetchone()[0])
