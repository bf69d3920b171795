"""/me/: notification settings, the webhook secret and the delivery log; a policy's version and behaviour flag."""

from __future__ import annotations

import pytest
from django.test import Client

from arena.models import NotificationDelivery, NotificationSettings, Policy
from arena.services.policies import policy_check_record
from tests.api.actors import activate, register_policy
from tests.web.conftest import PASSWORD


@pytest.fixture
def olivia(olivia_user) -> Client:
    client = Client()
    assert client.login(username="olivia", password=PASSWORD)
    return client


def test_owner_configures_notifications_and_reads_the_delivery_log(
    settings, owner, olivia, django_capture_on_commit_callbacks
):
    page = olivia.get("/me/").content.decode()
    secret = NotificationSettings.objects.get(user__username="olivia").webhook_secret
    assert 'id="notifications"' in page and secret in page

    refused = olivia.post(
        "/me/notifications/", {"webhook_url": "http://169.254.169.254/", "email_enabled": "on"}
    )
    assert refused.status_code == 400 and "metadata" in refused.content.decode()

    # A receiver that does not answer: the attempt is logged as failed.
    settings.ARENA_NOTIFY_MAX_ATTEMPTS = 1
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 1
    saved = olivia.post(
        "/me/notifications/", {"webhook_url": "http://127.0.0.1:9/hook", "on_policy_health": "on"}
    )
    assert saved.status_code == 302
    prefs = NotificationSettings.objects.get(user__username="olivia")
    assert (prefs.webhook_url, prefs.email_enabled, prefs.on_comparisons) == (
        "http://127.0.0.1:9/hook",
        False,
        False,
    )
    register_policy(owner, "acme-vla", version_label="vla-7b-step-40k")
    activate("acme-vla")
    with django_capture_on_commit_callbacks(execute=True):
        policy_check_record(policy=Policy.objects.get(slug="acme-vla"), ok=False, error_code="refused")
    delivery = NotificationDelivery.objects.get()
    assert delivery.state == "failed" and delivery.attempt_log[0]["error"] == "refused"

    page = olivia.get("/me/").content.decode()
    log = page[page.index('id="deliveries"') :]
    assert f'data-delivery="{delivery.id}"' in log and "policy.failing" in log and "refused" in log
    assert "vla-7b-step-40k" in page

    olivia.post("/me/notifications/", {"webhook_url": "http://127.0.0.1:9/hook", "rotate_secret": "on"})
    assert NotificationSettings.objects.get(user__username="olivia").webhook_secret != secret


def test_a_flagged_policy_is_marked_for_its_owner_only(owner, olivia, anonymous):
    register_policy(owner, "acme-vla")
    activate("acme-vla")
    Policy.objects.filter(slug="acme-vla").update(behaviour_changed_at="2026-12-01T10:00:00Z")
    assert "behaviour-changed" in olivia.get("/me/").content.decode()
    assert "probe" not in anonymous.client.get("/policies/acme-vla/").content.decode()
