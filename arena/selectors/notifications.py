"""Reads of notifications: a user's delivery log."""

from __future__ import annotations

from django.db.models import QuerySet

from arena.models import NotificationDelivery

DELIVERIES_SHOWN = 50


def deliveries_for_user(*, user, limit: int = DELIVERIES_SHOWN) -> QuerySet[NotificationDelivery]:
    """The user's newest deliveries (any channel, any state), newest first."""
    return NotificationDelivery.objects.filter(user=user).order_by("-created_at")[:limit]
