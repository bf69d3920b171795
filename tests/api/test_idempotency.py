"""Idempotency-Key: a retried POST returns the first response and writes nothing twice."""

from arena.models import Episode, EvaluationSession, Preference
from tests.api.actors import EPISODE, open_session, report_both


def test_retried_session_request_creates_one_session(lab1, robot1, pool):
    first = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "stack"}, idem="req-1")
    retry = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "stack"}, idem="req-1")
    assert first.status_code == retry.status_code == 201
    assert first.json() == retry.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert EvaluationSession.objects.count() == 1


def test_retried_episode_and_preference(lab1, robot1, pool):
    session = open_session(lab1)
    path = f"/api/v1/sessions/{session['id']}/episodes/"
    for _ in range(3):
        assert lab1.post(path, {**EPISODE, "slot": "A"}, idem="ep-A").status_code == 201
    assert Episode.objects.count() == 1
    lab1.post(path, {**EPISODE, "slot": "B"}, idem="ep-B")
    pref = f"/api/v1/sessions/{session['id']}/preference/"
    first = lab1.post(pref, {"choice": "B", "reason": "B finished"}, idem="pref")
    retry = lab1.post(pref, {"choice": "B", "reason": "B finished"}, idem="pref")
    assert first.status_code == retry.status_code == 201
    assert first.json() == retry.json()
    assert Preference.objects.count() == 1


def test_same_key_different_body_is_refused(lab1, robot1, pool):
    session = open_session(lab1)
    report_both(lab1, session["id"])
    pref = f"/api/v1/sessions/{session['id']}/preference/"
    lab1.post(pref, {"choice": "A", "reason": "x"}, idem="k")
    other = lab1.post(pref, {"choice": "B", "reason": "y"}, idem="k")
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert Preference.objects.get().choice == "A"


def test_keys_are_per_principal(lab1, lab2, robot1, pool):
    from tests.api.actors import register_robot

    register_robot(lab2)
    a = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "t"}, idem="shared")
    b = lab2.post("/api/v1/sessions/", {"robot": "franka-1", "task": "t"}, idem="shared")
    assert a.json()["id"] != b.json()["id"]


def test_errors_are_replayed_too(lab1, robot1, pool):
    bad = lab1.post("/api/v1/sessions/", {"robot": "nope", "task": "t"}, idem="bad")
    again = lab1.post("/api/v1/sessions/", {"robot": "nope", "task": "t"}, idem="bad")
    assert bad.status_code == again.status_code == 404
    assert bad.json() == again.json()


def test_overlong_key_is_refused(lab1, robot1, pool):
    response = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "t"}, idem="x" * 101)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_idempotency_key")
    assert EvaluationSession.objects.count() == 0
