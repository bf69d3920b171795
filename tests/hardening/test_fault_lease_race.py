"""Fault: on Postgres, leases run out while labs submit preferences and the expiry sweep runs in a loop.

Every session ends with exactly one outcome: submitted with one preference (and exactly one 201 among the
racing submissions), or expired with none (and every submission refused with 409). Never both, never two.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from arena.models import EvaluationSession, Preference
from arena.services.sessions import session_expire_overdue
from tests.api.actors import activate, make_actor, open_session, register_policy, register_robot, report_both

N_SESSIONS = 24
SUBMITTERS_PER_SESSION = 3
LEASE_LEFT_S = 2.0  # long enough that, on a loaded machine, the early submissions still beat the deadline


def _submitter(key: str, session_id: str, delay_s: float, start: threading.Event, out: list) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    start.wait()
    time.sleep(delay_s)
    try:
        response = client.post(
            f"/api/v1/sessions/{session_id}/preference/", {"choice": "A", "reason": "r"}, format="json"
        )
        out.append((session_id, response.status_code, response.json().get("error", {}).get("code")))
    finally:
        connection.close()


def _sweeper(start: threading.Event, stop: threading.Event, swept: list) -> None:
    start.wait()
    try:
        while not stop.is_set():
            swept.append(session_expire_overdue())
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_each_session_has_exactly_one_outcome(on_postgres, settings):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = N_SESSIONS
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    for k in range(3):
        register_policy(owner, f"policy-{k}")
        activate(f"policy-{k}")
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    register_robot(lab)
    ids = []
    for _ in range(N_SESSIONS):
        session = open_session(lab)
        report_both(lab, session["id"])
        ids.append(session["id"])
    start, stop = threading.Event(), threading.Event()
    results: list = []
    swept: list[int] = []
    # Submissions spread over [0, 2 x lease left]: about half before the deadline, half after.
    threads = [
        threading.Thread(target=_submitter, args=(lab.key, sid, (k % 12) * LEASE_LEFT_S / 6, start, results))
        for n, sid in enumerate(ids)
        for k in range(n, n + SUBMITTERS_PER_SESSION)
    ]
    sweeper = threading.Thread(target=_sweeper, args=(start, stop, swept))
    for t in [*threads, sweeper]:
        t.start()
    # the deadline counts from the moment every submitter is ready, not from before their threads started
    deadline = timezone.now() + timedelta(seconds=LEASE_LEFT_S)
    EvaluationSession.objects.filter(pk__in=ids).update(lease_expires_at=deadline)
    start.set()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    sweeper.join(timeout=60)

    assert len(results) == N_SESSIONS * SUBMITTERS_PER_SESSION
    assert {status for _, status, _ in results} <= {201, 409}
    outcomes = {str(s.pk): s.state for s in EvaluationSession.objects.filter(pk__in=ids)}
    for sid in ids:
        mine = [(status, code) for s, status, code in results if s == sid]
        accepted = sum(status == 201 for status, _ in mine)
        stored = Preference.objects.filter(session_id=sid).count()
        state = outcomes[sid]
        assert (state, accepted, stored) in {("submitted", 1, 1), ("expired", 0, 0)}, (sid, state, mine)
        refused = {code for status, code in mine if status == 409}
        assert refused <= ({"session_submitted"} if state == "submitted" else {"lease_expired"}), (sid, mine)
    states = sorted(outcomes.values())
    assert "submitted" in states and "expired" in states, states  # the race really happened both ways
    assert sum(swept) <= states.count("expired")  # the sweep never expires a session twice
