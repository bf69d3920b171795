"""Aborts are neither an oracle nor a weapon.

Oracle: an abort blaming slot A used to trigger an immediate health check whose exact time showed on the
public policy page a second later, naming the policy in slot A. Now nothing public changes: the re-check is
due after a random delay, runs from the periodic task, and does not touch the public last-check fields.

Sabotage: a lab that stalls a competitor (the policy server held busy, as bomb frames did) and aborts blaming
it used to get a check per abort, each failing, until the policy was ``failing``. Now aborts queue at most one
re-check, and no abort re-check counts toward ``failing``; and bomb frames sent through the relay to the
competitor's slot never reach its server, so the arena's own checks keep passing.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import msgpack
import numpy as np
import pytest
from django.test import Client
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from arena.models import EvaluationSession, Policy, PolicyCheck
from arena.tasks import policy_check_all, policy_recheck_due
from policy_server.base import BasePolicy
from policy_server.relay import serve_relay_in_thread
from policy_server.server import serve_in_thread
from tests.api.actors import DROID_CONFIG, open_session, register_policy, register_robot

HEALTH_RE = re.compile(r'<p class="health" id="health">.*?</p>', re.S)


class StallablePolicy(BasePolicy):
    """Answers at once, unless ``stalled`` is set: then each inference waits until released (or 60 s).
    ``inferences`` counts the observations it was given."""

    def __init__(self) -> None:
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.inferences = 0

    def infer(self, obs):
        self.inferences += 1
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


def _bombs() -> list[bytes]:
    """Decoder bombs of the kind that froze policy servers and the relay (built by hand, not by our encoder): a
    360 KB shape of 40,000 huge dims, a zero-size dtype declaring 10^18 elements, and a million empty maps."""
    tag = {b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [2**63 - 1] * 40_000}
    zero = {b"__ndarray__": True, b"data": b"", b"dtype": "|S0", b"shape": [10**9, 10**9]}
    flood = b"\x81" + msgpack.packb("flood") + b"\xdc\x00\x10" + (b"\xdc\xff\xff" + b"\x80" * 65_535) * 16
    return [
        msgpack.packb({"endpoint": "infer", "observation/joint_position": tag}),
        msgpack.packb({"endpoint": "infer", "prompt": zero}),
        flood,
    ]


def _connect_to_slot(relay_url: str):
    """A connection on the slot's token, waiting while the relay still releases the previous one (409)."""
    for _ in range(100):
        try:
            return connect(relay_url, open_timeout=30, compression=None, max_size=2**24)
        except InvalidStatus as refused:
            if refused.response.status_code != 409:
                raise
            time.sleep(0.1)
    raise AssertionError("the relay kept the slot busy")


def _bomb_through_the_relay(relay_url: str, frame: bytes) -> None:
    """Send one bomb on the slot's relay connection, as a lab can; the relay closes it without an answer."""
    with _connect_to_slot(relay_url) as ws:
        ws.recv(timeout=30)  # the metadata frame
        ws.send(frame)
        with pytest.raises(ConnectionClosed):
            while True:
                assert isinstance(ws.recv(timeout=30), str)  # at most an error text, never a reply


def test_bomb_frames_and_aborts_blaming_one_policy_never_make_it_failing(
    settings, live_pool, owner, lab1, django_capture_on_commit_callbacks
):
    """The sabotage of the issue, through the relay and the API: bomb frames sent to the victim's slot, then an
    abort blaming it, again and again. The bombs never reach the victim's server, the aborts queue one
    re-check that does not count, and the arena's own checks, run meanwhile, keep passing."""
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 10
    # The production default: a server a bomb froze (7.7 s per 360 KB frame before the bounded decoder) fails
    # a check run right after the bombs; a loaded machine does not.
    settings.ARENA_CHECK_TIMEOUT_SECONDS = 8
    victim = live_pool["victim"]
    with serve_relay_in_thread(settings.ARENA_RELAY_SECRET) as relay:
        settings.ARENA_RELAY_URL = relay.url.rstrip("/")
        for _ in range(settings.ARENA_CHECK_FAILURES_BEFORE_FAILING + 1):
            session = open_session(lab1)
            stored = EvaluationSession.objects.get(pk=session["id"])
            slot = "A" if stored.policy_a.slug == "victim" else "B"
            served = victim.inferences
            for frame in _bombs():
                _bomb_through_the_relay(session["slots"][slot]["relay_url"], frame)
            assert victim.inferences == served
            with django_capture_on_commit_callbacks(execute=True):
                _blame(lab1, session["id"], "victim")
            assert policy_check_all() == 2  # the arena's own schedule runs on between the attacks
            assert Policy.objects.get(slug="victim").status == "active"
    assert policy_recheck_due(now=_later(settings)) == 1
    victim_row = Policy.objects.get(slug="victim")
    assert (victim_row.status, victim_row.consecutive_failures) == ("active", 0)
    assert not PolicyCheck.objects.filter(policy=victim_row, trigger="arena", ok=False).exists()
    mine = {p["slug"]: p for p in owner.get("/api/v1/policies/?mine=1").json()}
    assert mine["victim"]["aborts_blamed"] == settings.ARENA_CHECK_FAILURES_BEFORE_FAILING + 1
