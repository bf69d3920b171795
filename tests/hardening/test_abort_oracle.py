"""Aborts are neither an oracle nor a weapon.

Oracle: an abort blaming slot A used to trigger an immediate health check whose exact time showed on the
public policy page a second later, naming the policy in slot A. Now nothing public changes: the re-check is
due after a random delay, runs from the periodic task, and does not touch the public last-check fields.

Sabotage: a lab that stalls a competitor (here: the policy server is held busy, as bomb frames did) and
aborts blaming it used to get a check per abort, each failing, until the policy was ``failing``. Now aborts
queue at most one re-check, and no abort re-check counts toward ``failing``.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone

from arena.models import EvaluationSession, Policy, PolicyCheck
from arena.tasks import policy_check_all, policy_recheck_due
from policy_server.base import BasePolicy
from policy_server.server import serve_in_thread
from tests.api.actors import DROID_CONFIG, open_session, register_policy, register_robot

HEALTH_RE = re.compile(r'<p class="health" id="health">.*?</p>', re.S)


class StallablePolicy(BasePolicy):
    """Answers at once, unless ``stalled`` is set: then each inference waits until released (or 60 s)."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.released = threading.Event()

    def infer(self, obs):
        if self.stalled.is_set():
            self.released.wait(timeout=60)
        return {"actions": np.zeros((10, 8), dtype=np.float32)}

    @property
    def metadata(self):
        return dict(DROID_CONFIG)


@pytest.fixture
def live_pool(settings, owner, lab1):
    """Two active policies served on loopback (checked by the periodic task), and Berkeley's robot."""
    settings.ARENA_CHECK_TIMEOUT_SECONDS = 1.5
    settings.ARENA_CHECK_ON_REGISTER = False
    policies = {"victim": StallablePolicy(), "bystander": StallablePolicy()}
    with serve_in_thread(policies["victim"]) as victim, serve_in_thread(policies["bystander"]) as bystander:
        register_policy(owner, "victim", endpoint_url=victim.url)
        register_policy(owner, "bystander", endpoint_url=bystander.url)
        assert policy_check_all() == 2
        assert set(Policy.objects.values_list("status", flat=True)) == {"active"}
        register_robot(lab1)
        try:
            yield policies
        finally:
            for policy in policies.values():
                policy.released.set()


def _public_view(anonymous) -> dict[str, object]:
    """Everything public about both policies' health: the page's health line and the API's records."""
    view: dict[str, object] = {"list": anonymous.get("/api/v1/policies/").json()}
    for slug in ("victim", "bystander"):
        view[f"api:{slug}"] = anonymous.get(f"/api/v1/policies/{slug}/").json()
        page = Client().get(f"/policies/{slug}/")
        assert page.status_code == 200
        view[f"page:{slug}"] = HEALTH_RE.search(page.content.decode()).group(0)
    return view


def _blame(lab, session_id: str, slug: str) -> None:
    session = EvaluationSession.objects.get(pk=session_id)
    fault = "policy_a" if session.policy_a.slug == slug else "policy_b"
    response = lab.post(f"/api/v1/sessions/{session_id}/abort/", {"reason": "policy froze", "fault": fault})
    assert response.status_code == 200, response.json()


def _later(settings) -> str:
    return (timezone.now() + timedelta(seconds=settings.ARENA_ABORT_RECHECK_MAX_SECONDS + 1)).isoformat()


def test_an_abort_changes_nothing_public_and_the_recheck_comes_later(
    settings, live_pool, lab1, anonymous, django_capture_on_commit_callbacks
):
    before = _public_view(anonymous)
    checks_before = PolicyCheck.objects.count()
    session = open_session(lab1)
    blamed = EvaluationSession.objects.get(pk=session["id"]).policy_a.slug
    with django_capture_on_commit_callbacks(execute=True):
        _blame(lab1, session["id"], blamed)
    for _ in range(5):  # what a lab polling the public pages sees while the periodic task keeps running
        assert policy_recheck_due() == 0
        assert _public_view(anonymous) == before
    assert PolicyCheck.objects.count() == checks_before
    due = Policy.objects.get(slug=blamed).recheck_due_at
    assert due is not None and due >= timezone.now() + timedelta(
        seconds=settings.ARENA_ABORT_RECHECK_MIN_SECONDS - 5
    )

    assert policy_recheck_due(now=_later(settings)) == 1
    recheck = PolicyCheck.objects.get(policy__slug=blamed, trigger="abort")
    assert recheck.ok
    assert _public_view(anonymous) == before
    assert Policy.objects.get(slug=blamed).recheck_due_at is None


def test_aborts_blaming_one_policy_never_make_it_failing(
    settings, live_pool, owner, lab1, django_capture_on_commit_callbacks
):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 10
    live_pool["victim"].stalled.set()  # the lab holds the victim busy while it aborts
    aborts = 2 * settings.ARENA_CHECK_FAILURES_BEFORE_FAILING
    for _ in range(aborts):
        session = open_session(lab1)
        with django_capture_on_commit_callbacks(execute=True):
            _blame(lab1, session["id"], "victim")
        assert Policy.objects.get(slug="victim").status == "active"
    assert policy_recheck_due(now=_later(settings)) == 1  # the aborts queued one re-check, not one each
    assert policy_recheck_due(now=_later(settings)) == 0
    victim = Policy.objects.get(slug="victim")
    recheck = PolicyCheck.objects.get(policy=victim, trigger="abort")
    assert not recheck.ok and recheck.error_code == "timeout"
    assert (victim.status, victim.consecutive_failures) == ("active", 0)
    mine = {p["slug"]: p for p in owner.get("/api/v1/policies/?mine=1").json()}
    assert mine["victim"]["aborts_blamed"] == aborts and mine["victim"]["status"] == "active"
    checks = owner.get("/api/v1/policies/victim/checks/").json()
    assert [c["trigger"] for c in checks if not c["ok"]] == ["abort"]
