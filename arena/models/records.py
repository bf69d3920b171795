"""Bookkeeping: idempotent request replays and immutable ranking snapshots."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from arena.models.accounts import ApiKey, Lab
from arena.models.policies import Policy


class IdempotencyRecord(models.Model):
    """The first response to a POST carrying an ``Idempotency-Key``; retries get it back verbatim."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=100)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=300)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_unique_per_key")
        ]


class RankingSnapshot(models.Model):
    """One immutable fit of the ranking. Rows are only ever added; pages read the newest."""

    version = models.PositiveIntegerField(unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    method = models.CharField(max_length=300)
    data_hash = models.CharField(max_length=64)
    n_comparisons = models.PositiveIntegerField()
    n_policies = models.PositiveIntegerField()
    fit_seconds = models.FloatField()
    ratings = models.JSONField(
        help_text="One entry per policy: slug, score, ci_low, ci_high, rank, counts..."
    )
    matrices = models.JSONField(help_text="Policy slugs in order, pairwise win-fraction and count matrices.")
    breakdowns = models.JSONField(default=dict)
    integrity = models.JSONField(default=dict)
    model = models.JSONField(
        default=dict,
        help_text="Board-wide fit parameters: order effect and its CI (nats), tie parameter, prior.",
    )
    fitted_rows = models.JSONField(
        default=dict,
        help_text="Exactly the rows the fit used (columns, rows), as downloaded; data_hash is the CSV's sha256.",
    )
    slices = models.JSONField(
        default=dict,
        help_text="Leaderboards refitted on slices of the comparisons (robot type, real/replica, task category), "
        "and the real-vs-replica agreement.",
    )

    class Meta:
        ordering = ["-version"]


class ComparisonTally(models.Model):
    """Running counts of valid preferences per (policy A, policy B, choice, lab, task category, robot platform).

    Updated in the same transaction as each preference (an upsert), so the ranking job reads at most a few
    hundred thousand tally rows instead of scanning every stored comparison. ``manage.py rebuild_tallies``
    recomputes them from the preferences.
    """

    policy_a = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="+")
    policy_b = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="+")
    choice = models.CharField(max_length=3)
    lab = models.ForeignKey(Lab, on_delete=models.CASCADE, related_name="+")
    task_category = models.SlugField(max_length=60, blank=True)
    platform = models.CharField(max_length=80, blank=True, help_text="The session robot's platform.")
    n = models.PositiveIntegerField()
    progress_a_sum = models.PositiveBigIntegerField()
    progress_b_sum = models.PositiveBigIntegerField()
    last_preference_id = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["policy_a", "policy_b", "choice", "lab", "task_category", "platform"],
                name="one_tally_per_cell_and_platform",
            )
        ]


class Release(models.Model):
    """A published, immutable dataset built from one ranking snapshot (LeRobot dataset v3 layout).

    ``manifest``: ``{"files": [{"path", "size", "sha256"}...], ...}``; ``data_hash``: SHA-256 of the manifest's
    file list, so two releases with equal data have equal hashes. Files live under ``prefix`` in storage.
    """

    class State(models.TextChoices):
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    version = models.PositiveIntegerField(unique=True)
    snapshot = models.ForeignKey(RankingSnapshot, on_delete=models.PROTECT, related_name="releases")
    state = models.CharField(max_length=10, choices=State.choices, default=State.BUILDING)
    prefix = models.CharField(max_length=200)
    manifest = models.JSONField(default=dict)
    data_hash = models.CharField(max_length=64, blank=True)
    n_sessions = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    build_seconds = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-version"]
