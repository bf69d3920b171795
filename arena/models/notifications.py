"""Who hears about what: each user's notification settings, and the log of every notification sent."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_webhook_secret() -> str:
    return secrets.token_hex(32)


class NotificationSettings(models.Model):
    """One user's choices. A user without a row gets the defaults (email on, no webhook)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_settings"
    )
    email_enabled = models.BooleanField(default=True, help_text="Send to the account's email address.")
    webhook_url = models.CharField(max_length=500, blank=True, help_text="http(s):// address; empty: none.")
    webhook_secret = models.CharField(
        max_length=64, default=new_webhook_secret, help_text="Key of the HMAC-SHA256 signature."
    )
    on_policy_health = models.BooleanField(
        default=True, help_text="A policy of yours goes failing, recovers, or changes behaviour."
    )
    on_comparisons = models.BooleanField(default=True, help_text="A digest when new comparisons arrive.")
    on_session_undelivered = models.BooleanField(
        default=True, help_text="A session of your lab closed before its results arrived."
    )
    digest_after_preference_id = models.BigIntegerField(
        default=0, help_text="The digest covers preferences after this id."
    )
    digest_sent_at = models.DateTimeField(null=True, blank=True)


class NotificationDelivery(models.Model):
    """One notification on one channel, with every attempt made to deliver it."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=40)
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=500, help_text="The address or URL, as configured when it was sent.")
    payload = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    attempt_log = models.JSONField(
        default=list, help_text="One entry per attempt: time, HTTP status (webhooks), error code."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"])]
