"""Notifications: users' settings, the outbox of deliveries, and sending them (email, signed webhook).

:func:`notify` is called inside the transaction of the change it reports (a policy going failing, a session
expiring): it writes one :class:`~arena.models.NotificationDelivery` per enabled channel of each recipient and
hands their ids to Celery after commit (``arena.tasks.notification_deliver``), so a request never waits on a
mail server or a receiver, and a rolled-back change sends nothing. :func:`notification_attempt` makes one
attempt and logs it; the task retries a failed one with exponential backoff, up to
``ARENA_NOTIFY_MAX_ATTEMPTS`` attempts in all.

Events and the setting that turns them off: ``policy.failing``, ``policy.recovered`` and
``policy.behaviour_changed`` (``on_policy_health``, to the policy's owner), ``comparisons.digest``
(``on_comparisons``, to owners, after a refit, at most every ``ARENA_NOTIFY_DIGEST_MINUTES``) and
``session.undelivered`` (``on_session_undelivered``, to the members of a lab whose session's lease ran out
before its verdict arrived). No payload names the policies of a session that is still blind.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from arena import webhooks
from arena.errors import InvalidInput, PermissionDenied
from arena.models import NotificationDelivery, NotificationSettings, Policy, Preference, RankingSnapshot
from arena.models.notifications import new_webhook_secret
from policy_server import netguard

EVENTS = {
    "policy.failing": "on_policy_health",
    "policy.recovered": "on_policy_health",
    "policy.behaviour_changed": "on_policy_health",
    "comparisons.digest": "on_comparisons",
    "session.undelivered": "on_session_undelivered",
}
log = logging.getLogger(__name__)
SETTING_FIELDS = (
    "email_enabled",
    "webhook_url",
    "on_policy_health",
    "on_comparisons",
    "on_session_undelivered",
)
Delivery = NotificationDelivery


def notification_settings_get(*, user) -> NotificationSettings:
    """The user's settings, created with the defaults (and a fresh webhook secret) on first use."""
    row, _created = NotificationSettings.objects.get_or_create(user=user)
    return row


def check_webhook_url(url: str) -> None:
    """Refuse a webhook URL the arena would not POST to (400 ``invalid_webhook``, 403 ``webhook_not_allowed``)."""
    from arena.services.policies import endpoint_allow

    if len(url) > 500 or not webhooks.WEBHOOK_RE.fullmatch(url):
        raise InvalidInput(
            "invalid_webhook", "The webhook must be an http:// or https:// URL.", field="webhook_url"
        )
    try:
        webhooks.check_webhook_url(url, allow=endpoint_allow())
    except netguard.EndpointNotAllowed as exc:
        # 403 like endpoints: the URL has the documented form; the address guard refuses its host.
        raise PermissionDenied("webhook_not_allowed", f"Refused: {exc}.", field="webhook_url") from exc


def notification_settings_update(
    *, user, rotate_secret: bool = False, **changes: Any
) -> NotificationSettings:
    """Change the user's settings (keys of :data:`SETTING_FIELDS`); ``rotate_secret`` draws a new webhook key."""
    unknown = set(changes) - set(SETTING_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidInput("not_editable", f"{field} cannot be changed.", field=field)
    if changes.get("webhook_url"):
        check_webhook_url(changes["webhook_url"])
    with transaction.atomic():
        row = notification_settings_get(user=user)
        for field, value in changes.items():
            setattr(row, field, value)
        if rotate_secret:
            row.webhook_secret = new_webhook_secret()
        row.save()
    return row


def notify(*, users: Iterable, event: str, data: dict[str, Any]) -> list[NotificationDelivery]:
    """Queue ``event`` for each of ``users`` on the channels they enabled, sent after the caller's commit."""
    users = [u for u in {u.pk: u for u in users}.values()]
    flag = EVENTS[event]
    chosen = {row.user_id: row for row in NotificationSettings.objects.filter(user__in=users)}
    rows = []
    for user in users:
        prefs = chosen.get(user.pk) or NotificationSettings(user=user)
        if not getattr(prefs, flag):
            continue
        if prefs.email_enabled and user.email:
            rows.append(Delivery(user=user, event=event, channel=Delivery.Channel.EMAIL, target=user.email))
        if prefs.webhook_url:
            rows.append(
                Delivery(user=user, event=event, channel=Delivery.Channel.WEBHOOK, target=prefs.webhook_url)
            )
    for row in rows:
        row.payload = data
    Delivery.objects.bulk_create(rows)
    ids = [str(row.pk) for row in rows]
    if ids:
        transaction.on_commit(lambda: _enqueue(ids))
    return rows


def _enqueue(ids: list[str]) -> None:
    from arena.tasks import notification_deliver

    try:
        for delivery_id in ids:
            notification_deliver.delay(delivery_id)
    except Exception:  # the broker is down: the change is stored, the sweep sends these later
        log.exception("could not enqueue notifications; notification_resend_stalled will")


STALLED_AFTER = timedelta(minutes=5)


def notification_resend_stalled(*, now: datetime | None = None) -> int:
    """Hand Celery again the pending deliveries never attempted ``STALLED_AFTER`` after they were written (their
    enqueue was lost: a broker outage at commit); returns how many."""
    cutoff = (now or timezone.now()) - STALLED_AFTER
    ids = [
        str(pk)
        for pk in Delivery.objects.filter(
            state=Delivery.State.PENDING, attempts=0, created_at__lte=cutoff
        ).values_list("pk", flat=True)[:1000]
    ]
    _enqueue(ids)
    return len(ids)


def retry_countdown(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: ``ARENA_NOTIFY_RETRY_SECONDS * 2**(attempt - 1)``, at most 1 h."""
    return min(settings.ARENA_NOTIFY_RETRY_SECONDS * 2 ** max(attempt - 1, 0), 3600)


def webhook_body(delivery: NotificationDelivery) -> bytes:
    """The JSON a receiver gets: the delivery's id, event, creation time and data."""
    document = {
        "id": str(delivery.pk),
        "event": delivery.event,
        "created_at": delivery.created_at.isoformat(),
        "data": delivery.payload,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def notification_attempt(*, delivery_id: str) -> str:
    """Make one attempt at a pending delivery and log it; returns its state afterwards (``"pending"``: try
    again later)."""
    delivery = Delivery.objects.select_related("user").filter(pk=delivery_id).first()
    if delivery is None or delivery.state != Delivery.State.PENDING:
        return delivery.state if delivery else Delivery.State.FAILED
    status, error = _send(delivery)
    now = timezone.now()
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery.pk)
        delivery.attempts += 1
        delivery.attempt_log = [
            *delivery.attempt_log,
            {"at": now.isoformat(), "status": status, "error": error},
        ]
        if error is None:
            delivery.state, delivery.delivered_at = Delivery.State.DELIVERED, now
        elif delivery.attempts >= settings.ARENA_NOTIFY_MAX_ATTEMPTS or error == "address_not_allowed":
            delivery.state = Delivery.State.FAILED
        delivery.save(update_fields=["attempts", "attempt_log", "state", "delivered_at"])
    return delivery.state


def _send(delivery: NotificationDelivery) -> tuple[int | None, str | None]:
    if delivery.channel == Delivery.Channel.EMAIL:
        subject, text = describe(delivery.event, delivery.payload)
        try:
            send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, [delivery.target], fail_silently=False)
        except Exception:  # any backend's failure (SMTP, DNS, a refused address) is one failed attempt
            return None, "email_failed"
        return None, None
    secret = notification_settings_get(user=delivery.user).webhook_secret
    body = webhook_body(delivery)
    timestamp = str(int(time.time()))
    from arena.services.policies import endpoint_allow

    result = webhooks.webhook_post(
        delivery.target,
        body=body,
        headers={
            "Content-Type": "application/json",
            webhooks.EVENT_HEADER: delivery.event,
            webhooks.DELIVERY_HEADER: str(delivery.pk),
            webhooks.TIMESTAMP_HEADER: timestamp,
            webhooks.SIGNATURE_HEADER: webhooks.webhook_signature(secret, timestamp, body),
        },
        allow=endpoint_allow(),
        timeout=settings.ARENA_NOTIFY_TIMEOUT_SECONDS,
    )
    return result.status, result.error


def describe(event: str, data: dict[str, Any]) -> tuple[str, str]:
    """Subject and plain-text body of an event's email."""
    site = settings.ARENA_PUBLIC_URL.rstrip("/")
    if event.startswith("policy."):
        what = {
            "policy.failing": "is failing its health checks and left the pool",
            "policy.recovered": "passes its health checks again and is back in the pool",
            "policy.behaviour_changed": "answers the health check's probe differently without a new version",
        }[event]
        subject = f"[policy-arena] {data['policy']} {what.split(' and ')[0]}"
        text = f"Your policy {data['policy']} (version {data.get('version') or 'unlabelled'}) {what}.\n"
        if data.get("error"):
            text += f"Last check: {data['error']}\n"
        if event == "policy.behaviour_changed":
            text += "If you changed the checkpoint, declare a new version (PATCH the policy with version_label).\n"
        return subject, text + f"\n{site}/me/\n"
    if event == "comparisons.digest":
        lines = [
            f"  {p['policy']}: {p['new_comparisons']} new"
            + (f", score {p['score']:.0f} (rank {p['rank']})" if p.get("score") is not None else "")
            for p in data["policies"]
        ]
        return (
            f"[policy-arena] {data['new_comparisons']} new comparisons of your policies",
            "New comparisons since the last digest:\n" + "\n".join(lines) + f"\n\n{site}/leaderboard/\n",
        )
    return (
        f"[policy-arena] session {data['session']} could not be completed",
        f"Session {data['session']} of lab {data['lab']} ({data['task']!r}) {data['state']} before its verdict "
        "arrived: results still spooled for it will be refused. Its policies stay hidden.\n",
    )


def notify_policy_health(*, policy: Policy, event: str, error: str = "") -> None:
    data = {"policy": policy.slug, "version": policy.version_label, "status": policy.status}
    if error:
        data["error"] = error
    notify(users=[policy.owner], event=event, data=data)


def notify_sessions_undelivered(*, sessions: Iterable) -> None:
    """Tell each lab's members that these sessions closed (lease run out) without their verdict."""
    for session in sessions:
        notify(
            users=list(session.lab.members.all()),
            event="session.undelivered",
            data={
                "session": str(session.pk),
                "lab": session.lab.slug,
                "task": session.task,
                "state": session.state,
                "ended_at": session.ended_at.isoformat() if session.ended_at else None,
            },
        )


def notification_digest_send(*, now: datetime | None = None) -> int:
    """After a refit: each owner whose policies got new valid comparisons since their last digest (and whose
    last digest is at least ``ARENA_NOTIFY_DIGEST_MINUTES`` old) gets one; returns how many were queued."""
    now = now or timezone.now()
    newest = Preference.objects.aggregate(newest=Max("pk"))["newest"]
    if newest is None:
        return 0
    snapshot = RankingSnapshot.objects.order_by("-version").only("ratings").first()
    rated = {row["slug"]: row for row in snapshot.ratings} if snapshot else {}
    wait = timedelta(minutes=settings.ARENA_NOTIFY_DIGEST_MINUTES)
    owners = get_user_model().objects.filter(policies__isnull=False).distinct()
    queued = 0
    for owner in owners:
        with transaction.atomic():
            prefs = notification_settings_get(user=owner)
            prefs = NotificationSettings.objects.select_for_update().get(pk=prefs.pk)
            if prefs.digest_sent_at and now - prefs.digest_sent_at < wait:
                continue
            new = Preference.objects.filter(
                pk__gt=prefs.digest_after_preference_id, pk__lte=newest, valid=True
            )
            owned = set(Policy.objects.filter(owner=owner).values_list("slug", flat=True))
            counts: Counter[str] = Counter()
            mine = new.filter(Q(policy_a__owner=owner) | Q(policy_b__owner=owner))
            for a, b in mine.values_list("policy_a__slug", "policy_b__slug"):
                counts.update(slug for slug in (a, b) if slug in owned)
            prefs.digest_after_preference_id = newest
            if counts:
                prefs.digest_sent_at = now
                policies = [
                    {
                        "policy": slug,
                        "new_comparisons": n,
                        "score": rated.get(slug, {}).get("score"),
                        "rank": rated.get(slug, {}).get("rank"),
                    }
                    for slug, n in sorted(counts.items())
                ]
                data = {"new_comparisons": mine.count(), "policies": policies}
                notify(users=[owner], event="comparisons.digest", data=data)
                queued += 1
            prefs.save(update_fields=["digest_after_preference_id", "digest_sent_at"])
    return queued
