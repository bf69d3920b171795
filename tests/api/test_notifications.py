"""Notifications: signed webhooks (retried with backoff, never redirected, behind the address guard) and
emails, sent from Celery after commit, with a delivery log for the owner."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.utils import timezone

from arena.models import EvaluationSession, Lab, NotificationDelivery, Policy
from arena.ports import free_port
from arena.services.notifications import retry_countdown
from arena.services.policies import policy_check_record
from arena.tasks import (
    notification_resend_stalled_task,
    policy_check_one,
    ranking_refit,
    session_expire_overdue_task,
)
from policy_server.server import serve_in_thread
from tests.api.actors import activate, open_session, register_policy, report_both
from tests.api.test_fingerprint import TunablePolicy


class Receiver:
    """An HTTP server on loopback that records each POST and answers ``status`` (and ``location``)."""

    def __init__(self, status: int = 200, location: str = "") -> None:
        self.status, self.location, self.requests = status, location, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/arena?team=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kw) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What a receiver does: recompute the HMAC over '<timestamp>.<raw body>' and compare in constant time."""
    expected = hmac.new(secret.encode(), headers["X-Arena-Timestamp"].encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest(headers["X-Arena-Signature"], "sha256=" + expected.hexdigest())


def configure(owner, **settings) -> dict:
    response = owner.patch("/api/v1/me/notifications/", settings)
    assert response.status_code == 200, response.json()
    return response.json()


def fail_once(slug: str, capture) -> Policy:
    with capture(execute=True):
        return policy_check_record(
            policy=Policy.objects.get(slug=slug), ok=False, error_code="refused", message="nothing listens"
        )


def test_a_webhook_receiver_gets_a_signed_event(
    settings, owner, pool, receiver, django_capture_on_commit_callbacks
):
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 1
    hook = receiver()
    prefs = configure(owner, webhook_url=hook.url, email_enabled=False)
    assert len(prefs["webhook_secret"]) == 64
    assert fail_once("octo-droid", django_capture_on_commit_callbacks).status == "failing"

    ((headers, body),) = hook.requests
    assert verify(prefs["webhook_secret"], headers, body)
    assert not verify("0" * 64, headers, body)
    event = json.loads(body)
    assert event["event"] == headers["X-Arena-Event"] == "policy.failing"
    assert event["data"]["policy"] == "octo-droid" and event["data"]["status"] == "failing"
    assert event["id"] == headers["X-Arena-Delivery"]
    (logged,) = owner.get("/api/v1/me/notifications/deliveries/").json()
    assert (logged["state"], logged["attempts"], logged["channel"]) == ("delivered", 1, "webhook")
    assert logged["attempt_log"][0]["status"] == 200
    # A rotated secret signs the next event; the old one no longer verifies.
    rotated = configure(owner, rotate_secret=True)["webhook_secret"]
    with django_capture_on_commit_callbacks(execute=True):
        activate("octo-droid")
    headers, body = hook.requests[-1]
    assert json.loads(body)["event"] == "policy.recovered"
    assert verify(rotated, headers, body) and not verify(prefs["webhook_secret"], headers, body)


def test_a_failing_receiver_is_retried_with_backoff_and_logged(
    settings, owner, pool, receiver, django_capture_on_commit_callbacks
):
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 1
    settings.ARENA_NOTIFY_MAX_ATTEMPTS = 4
    broken = receiver(status=500)
    secret = configure(owner, webhook_url=broken.url, email_enabled=False)["webhook_secret"]
    fail_once("octo-droid", django_capture_on_commit_callbacks)

    assert len(broken.requests) == 4
    assert all(verify(secret, h, b) for h, b in broken.requests)
    assert len({h["X-Arena-Delivery"] for h, _ in broken.requests}) == 1  # one delivery, four attempts
    (logged,) = owner.get("/api/v1/me/notifications/deliveries/").json()
    assert (logged["state"], logged["attempts"]) == ("failed", 4)
    assert [(a["status"], a["error"]) for a in logged["attempt_log"]] == [(500, "http_5xx")] * 4
    # Exponential backoff between attempts (Celery's countdown; eager mode in tests runs them at once).
    assert [retry_countdown(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_countdown(30) == 3600


def test_redirects_are_not_followed(settings, owner, pool, receiver, django_capture_on_commit_callbacks):
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 1
    settings.ARENA_NOTIFY_MAX_ATTEMPTS = 1
    target = receiver()
    redirecting = receiver(status=307, location=target.url)
    configure(owner, webhook_url=redirecting.url, email_enabled=False)
    fail_once("octo-droid", django_capture_on_commit_callbacks)
    assert len(redirecting.requests) == 1 and target.requests == []
    delivery = NotificationDelivery.objects.get()
    assert delivery.state == "failed" and delivery.attempt_log[0]["error"] == "redirect_refused"


def test_webhooks_obey_the_address_guard(settings, owner, pool, receiver, django_capture_on_commit_callbacks):
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 1
    hook = receiver()
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "ftp://example.org/x",
        "http://user@example.org/",
    ):
        refused = owner.patch("/api/v1/me/notifications/", {"webhook_url": url})
        assert refused.status_code in (400, 403), url
        assert refused.json()["error"]["field"] == "webhook_url"
    configure(owner, webhook_url=hook.url, email_enabled=False)
    settings.ARENA_ENDPOINT_ALLOW = "public"  # loopback stored earlier, refused now: nothing is sent
    assert owner.patch("/api/v1/me/notifications/", {"webhook_url": hook.url}).status_code == 403
    fail_once("octo-droid", django_capture_on_commit_callbacks)
    assert hook.requests == []
    delivery = NotificationDelivery.objects.get()
    assert delivery.state == "failed" and delivery.attempts == 1
    assert delivery.attempt_log[0]["error"] == "address_not_allowed"


def test_owner_gets_an_email_when_a_policy_fails_and_recovers(
    settings, owner, pool, django_capture_on_commit_callbacks
):
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 2
    get_user_model().objects.filter(username="olivia").update(email="olivia@acme.example")
    fail_once("octo-droid", django_capture_on_commit_callbacks)
    assert mail.outbox == []  # one failure is not failing yet
    fail_once("octo-droid", django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        activate("octo-droid")
    assert [m.to for m in mail.outbox] == [["olivia@acme.example"]] * 2
    assert "octo-droid is failing" in mail.outbox[0].subject
    assert "octo-droid passes its health checks again" in mail.outbox[1].subject
    configure(owner, on_policy_health=False)
    fail_once("octo-droid", django_capture_on_commit_callbacks)
    fail_once("octo-droid", django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2


def test_lab_members_hear_of_a_session_that_expired_before_its_verdict(
    lab1, robot1, pool, django_capture_on_commit_callbacks
):
    member = get_user_model().objects.create(username="lena", email="lena@berkeley.example")
    Lab.objects.get(name="Berkeley Lab").members.add(member)
    session = open_session(lab1)
    EvaluationSession.objects.filter(pk=session["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert session_expire_overdue_task() == 1
    (message,) = mail.outbox
    assert message.to == ["lena@berkeley.example"] and session["id"] in message.subject
    stored = EvaluationSession.objects.get(pk=session["id"])
    for policy in (stored.policy_a, stored.policy_b):  # still blind: the mail names no policy
        assert policy.slug not in message.body and policy.name not in message.body
    with django_capture_on_commit_callbacks(execute=True):
        assert session_expire_overdue_task() == 0
    assert len(mail.outbox) == 1


def test_owners_get_a_digest_of_new_comparisons_after_a_refit(
    settings, owner, lab1, robot1, pool, django_capture_on_commit_callbacks
):
    settings.ARENA_NOTIFY_DIGEST_MINUTES = 0
    get_user_model().objects.filter(username="olivia").update(email="olivia@acme.example")
    for _ in range(2):
        session = open_session(lab1)
        report_both(lab1, session["id"])
        lab1.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "r"})
    with django_capture_on_commit_callbacks(execute=True):
        ranking_refit()
    (digest,) = mail.outbox
    assert digest.subject == "[policy-arena] 2 new comparisons of your policies"
    played = EvaluationSession.objects.filter(preference__isnull=False)
    for a, b in played.values_list("policy_a__slug", "policy_b__slug"):
        assert f"  {a}: " in digest.body and f"  {b}: " in digest.body
    with django_capture_on_commit_callbacks(execute=True):
        ranking_refit()
    assert len(mail.outbox) == 1  # nothing new, no digest


def test_a_delivery_whose_enqueue_was_lost_is_sent_by_the_sweep(owner, receiver):
    hook = receiver()
    configure(owner, webhook_url=hook.url, email_enabled=False)
    user = get_user_model().objects.get(username="olivia")
    written = timezone.now() - timedelta(minutes=6)
    lost = NotificationDelivery.objects.create(
        user=user,
        event="policy.failing",
        channel="webhook",
        target=hook.url,
        payload={"policy": "x"},
        created_at=written,
    )
    NotificationDelivery.objects.create(
        user=user, event="policy.failing", channel="webhook", target=hook.url, payload={"policy": "y"}
    )  # just written: its own enqueue is still on its way
    assert notification_resend_stalled_task() == 1
    ((headers, _body),) = hook.requests
    assert headers["X-Arena-Delivery"] == str(lost.pk)
    lost.refresh_from_db()
    assert lost.state == "delivered"
    assert notification_resend_stalled_task() == 0


def test_the_check_task_reports_a_dead_server_to_the_webhook(
    settings, owner, receiver, django_capture_on_commit_callbacks
):

    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 1
    settings.ARENA_CHECK_TIMEOUT_SECONDS = 2
    hook = receiver()
    secret = configure(owner, webhook_url=hook.url, email_enabled=False)["webhook_secret"]
    with serve_in_thread(TunablePolicy(0.3)) as server:
        register_policy(owner, "served", endpoint_url=server.url, version_label="ckpt-9")
        assert policy_check_one(Policy.objects.get(slug="served").pk) is True
    with django_capture_on_commit_callbacks(execute=True):
        assert policy_check_one(Policy.objects.get(slug="served").pk) is False
    ((headers, body),) = hook.requests
    assert verify(secret, headers, body)
    data = json.loads(body)["data"]
    assert (data["policy"], data["version"], data["status"]) == ("served", "ckpt-9", "failing")
    assert data["error"].startswith("refused")
