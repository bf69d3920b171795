"""Episodes, the preference and aborts: the session state machine."""

from datetime import timedelta

from django.utils import timezone

from arena.models import Episode, EvaluationSession, Preference
from tests.api.actors import EPISODE, open_session, report_both


def url(session: dict, action: str) -> str:
    return f"/api/v1/sessions/{session['id']}/{action}/"


def test_full_session_reveals_policies_only_after_preference(lab1, robot1, pool):
    session = open_session(lab1)
    first = lab1.post(url(session, "episodes"), {**EPISODE, "slot": "A"})
    assert first.status_code == 201
    assert first.json()["state"] == "running"
    assert first.json()["reveal"] is None
    lab1.post(url(session, "episodes"), {**EPISODE, "slot": "B", "progress": 10})
    done = lab1.post(
        url(session, "preference"), {"choice": "A", "reason": "A grasped the marker", "valid": True}
    )
    assert done.status_code == 201
    body = done.json()
    assert body["state"] == "submitted"
    assert body["preference"] == {
        "choice": "A",
        "reason": "A grasped the marker",
        "reason_public": False,  # the lab's default
        "valid": True,
    }
    stored = EvaluationSession.objects.get(pk=session["id"])
    assert body["reveal"]["A"]["slug"] == stored.policy_a.slug
    assert body["reveal"]["B"]["slug"] == stored.policy_b.slug
    assert body["reveal"]["A"]["organization"] == "Acme Robotics"
    assert body["slots"]["A"]["relay_url"] is None  # closed sessions no longer reach the policies
    assert lab1.get(f"/api/v1/sessions/{session['id']}/").json()["reveal"] == body["reveal"]


def test_no_second_preference(lab1, robot1, pool):
    session = open_session(lab1)
    report_both(lab1, session["id"])
    lab1.post(url(session, "preference"), {"choice": "tie", "reason": "same"})
    again = lab1.post(url(session, "preference"), {"choice": "B", "reason": "changed my mind"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "session_submitted"
    assert Preference.objects.get().choice == "tie"


def test_no_episode_after_submission(lab1, robot1, pool):
    session = open_session(lab1)
    report_both(lab1, session["id"])
    lab1.post(url(session, "preference"), {"choice": "B", "reason": "faster"})
    late = lab1.post(url(session, "episodes"), {**EPISODE, "slot": "A"})
    assert late.status_code == 409
    assert Episode.objects.count() == 2


def test_one_episode_per_slot(lab1, robot1, pool):
    session = open_session(lab1)
    lab1.post(url(session, "episodes"), {**EPISODE, "slot": "A"})
    again = lab1.post(url(session, "episodes"), {**EPISODE, "slot": "A", "progress": 99})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "episode_exists")
    assert Episode.objects.get().progress == EPISODE["progress"]


def test_preference_needs_both_episodes(lab1, robot1, pool):
    session = open_session(lab1)
    lab1.post(url(session, "episodes"), {**EPISODE, "slot": "A"})
    early = lab1.post(url(session, "preference"), {"choice": "A", "reason": "only saw A"})
    assert (early.status_code, early.json()["error"]["code"]) == (409, "episodes_missing")
    assert "B" in early.json()["error"]["message"]


def test_expired_lease_refuses_writes_and_frees_the_slot(settings, lab1, robot1, pool):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 1
    session = open_session(lab1)
    EvaluationSession.objects.filter(pk=session["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    late = lab1.post(url(session, "episodes"), {**EPISODE, "slot": "A"})
    assert (late.status_code, late.json()["error"]["code"]) == (409, "lease_expired")
    assert EvaluationSession.objects.get(pk=session["id"]).state == "expired"
    assert Episode.objects.count() == 0
    # The expired session no longer counts against the lab's open-session cap.
    assert lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "again"}).status_code == 201


def test_episode_report_extends_the_lease(lab1, robot1, pool):
    session = open_session(lab1)
    soon = timezone.now() + timedelta(seconds=30)
    EvaluationSession.objects.filter(pk=session["id"]).update(lease_expires_at=soon)
    lab1.post(url(session, "episodes"), {**EPISODE, "slot": "A"})
    assert EvaluationSession.objects.get(pk=session["id"]).lease_expires_at > soon + timedelta(minutes=5)


def test_abort_with_fault(lab1, robot1, pool):
    session = open_session(lab1)
    response = lab1.post(
        url(session, "abort"), {"reason": "policy server stopped answering", "fault": "policy_b"}
    )
    assert response.status_code == 200
    assert response.json()["state"] == "aborted"
    assert response.json()["abort"] == {"reason": "policy server stopped answering", "fault": "policy_b"}
    assert response.json()["reveal"] is None  # an aborted session stays blind
    assert lab1.post(url(session, "preference"), {"choice": "A", "reason": "x"}).status_code == 409


def test_abort_for_an_infrastructure_fault_blames_no_policy(lab1, robot1, pool):
    """A lost relay or arena is nobody's fault: stored as such, and neither policy gets a re-check queued."""
    session = open_session(lab1)
    response = lab1.post(
        url(session, "abort"), {"reason": "slot A: the relay went away", "fault": "infrastructure"}
    )
    assert response.status_code == 200
    assert response.json()["abort"]["fault"] == "infrastructure"
    stored = EvaluationSession.objects.get(pk=session["id"])
    assert stored.abort_fault == EvaluationSession.Fault.INFRASTRUCTURE
    assert stored.policy_a.recheck_due_at is None and stored.policy_b.recheck_due_at is None


def test_abort_validation(lab1, robot1, pool):
    session = open_session(lab1)
    bad = lab1.post(url(session, "abort"), {"reason": "x", "fault": "weather"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "fault")
    missing = lab1.post(url(session, "abort"), {"fault": "robot"})
    assert (missing.status_code, missing.json()["error"]["field"]) == (400, "reason")


def test_another_lab_cannot_touch_the_session(lab1, lab2, robot1, pool):
    session = open_session(lab1)
    for action, body in (
        ("episodes", {**EPISODE, "slot": "A"}),
        ("preference", {"choice": "A", "reason": "x"}),
        ("abort", {"reason": "x", "fault": "robot"}),
    ):
        response = lab2.post(url(session, action), body)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "session_not_found")
    assert EvaluationSession.objects.get(pk=session["id"]).state == "assigned"


def test_owner_cannot_act_on_sessions(owner, lab1, robot1, pool):
    session = open_session(lab1)
    assert owner.post(url(session, "abort"), {"reason": "x", "fault": "robot"}).status_code == 403
