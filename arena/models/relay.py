"""What the relay tells the arena: which connection serves each session slot, and policies' error reports."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from arena.models.policies import Policy
from arena.models.sessions import SLOTS, EvaluationSession


class RelayAttachment(models.Model):
    """The one relay connection serving a session's slot, until ``lease_expires_at`` (renewed by the relay's
    status calls). A second connection to the slot is refused while the lease lives, whichever relay asks."""

    session = models.ForeignKey(EvaluationSession, on_delete=models.CASCADE, related_name="+")
    slot = models.CharField(max_length=1, choices=[(s, s) for s in SLOTS])
    connection = models.CharField(max_length=64, unique=True, help_text="Chosen by the relay, random.")
    lease_expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "slot"], name="one_relay_connection_per_slot")
        ]


class PolicyDialout(models.Model):
    """Where a dial-out policy (endpoint ``dialout://<slug>``) is connected now: the relay holding its link,
    reachable by the other relays and the health check at ``relay_url``, until ``lease_expires_at`` (renewed
    by that relay). The newest link wins (see ``policy_server.relay``)."""

    policy = models.OneToOneField(Policy, on_delete=models.CASCADE, related_name="dialout")
    relay_url = models.CharField(max_length=300, help_text="The relay's internal ws(s):// address.")
    connection = models.CharField(max_length=64, unique=True, help_text="Chosen by the relay, random.")
    lease_expires_at = models.DateTimeField()
    attached_at = models.DateTimeField(default=timezone.now)


class PolicyIncident(models.Model):
    """A policy's error as the relay saw it (a traceback, say), for the policy's owner only.

    The lab got a generic error instead. ``session`` is kept for operators and shown to the owner only once the
    session's verdict is stored; until then the owner sees the text and a coarse time.
    """

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="incidents")
    session = models.ForeignKey(EvaluationSession, on_delete=models.CASCADE, related_name="+")
    slot = models.CharField(max_length=1, choices=[(s, s) for s in SLOTS])
    kind = models.CharField(max_length=40)
    detail = models.TextField(help_text="At most 8 KiB of the policy's own error text.")
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["policy", "at"])]
