"""Policies under evaluation and their health-check history."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from arena.models.accounts import Organization


class Policy(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        ACTIVE = "active"
        FAILING = "failing"
        RETIRED = "retired"

    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=120)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="policies")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="policies")
    description = models.TextField(blank=True)
    license = models.CharField(max_length=80, blank=True)
    open_weights = models.BooleanField(default=False)
    endpoint_url = models.CharField(max_length=500, help_text="ws:// or wss:// address of the policy server")
    endpoint_api_key = models.CharField(
        max_length=200,
        blank=True,
        help_text="Sent by the relay to the policy server; never shown to evaluators.",
    )
    videos_public = models.BooleanField(
        default=False,
        help_text="Owner opts in to publishing its episodes: session videos and trajectories.",
    )

    # Requirements, read from the policy's metadata at check time.
    req_platform = models.CharField(max_length=80, blank=True, help_text="Empty: any platform.")
    req_image_height = models.PositiveSmallIntegerField(null=True, blank=True)
    req_image_width = models.PositiveSmallIntegerField(null=True, blank=True)
    req_n_external_cameras = models.PositiveSmallIntegerField(default=1)
    req_wrist_camera = models.BooleanField(default=True)
    req_stereo_camera = models.BooleanField(default=False)
    req_action_space = models.CharField(max_length=40, blank=True)
    req_replica_state = models.BooleanField(
        default=False,
        help_text="Reads the simulator's privileged state (scripted baselines): replica robots only.",
    )
    req_action_dim = models.PositiveSmallIntegerField(null=True, blank=True)
    req_action_horizon = models.PositiveSmallIntegerField(null=True, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_check_ok = models.BooleanField(null=True, blank=True)
    last_check_error = models.CharField(max_length=300, blank=True)
    last_check_latency_ms = models.FloatField(null=True, blank=True)
    consecutive_failures = models.PositiveSmallIntegerField(
        default=0,
        help_text="Failed checks in a row; only the arena's own checks count, never abort re-checks.",
    )
    recheck_due_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the re-check an abort asked for runs (jittered, one at a time).",
    )
    endpoint_proven_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the endpoint echoed this organization's registration nonce (needed for a shared endpoint).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    # Versions: each row is one version of a policy and has its own rating. A new version is a new row (slug
    # ``<first slug>-v<n>``) linked to the one it replaces, which is retired with its results kept.
    version_label = models.CharField(
        max_length=120,
        blank=True,
        help_text="What the owner says runs: a checkpoint name, a git sha, free text.",
    )
    weights_hash = models.CharField(max_length=128, blank=True, help_text="Optional hash of the weights.")
    version_number = models.PositiveSmallIntegerField(default=1)
    previous = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="successor"
    )
    family = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="later_versions",
        help_text="The first version (null on the first version itself).",
    )
    # Never public, never sent to a lab: with it a lab could recognise a policy by its answer to the probe.
    fingerprint = models.CharField(
        max_length=64,
        blank=True,
        help_text="Behavioural fingerprint of this version: its first passing check's answer to the probe.",
    )
    probe_answer = models.JSONField(
        null=True, blank=True, help_text="That answer, rounded (policy_server.check.behaviour_probe)."
    )
    behaviour_changed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When two checks in a row answered the probe differently from this version's fingerprint.",
    )

    class Meta:
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.slug

    @property
    def first_version(self) -> Policy:
        return self.family if self.family_id else self

    def requirements(self) -> dict:
        """What an evaluator needs to run this policy; contains nothing that identifies it."""
        resolution = (
            [self.req_image_height, self.req_image_width]
            if self.req_image_height and self.req_image_width
            else None
        )
        return {
            "platform": self.req_platform or None,
            "image_resolution": resolution,
            "n_external_cameras": self.req_n_external_cameras,
            "needs_wrist_camera": self.req_wrist_camera,
            "needs_stereo_camera": self.req_stereo_camera,
            "action_space": self.req_action_space or None,
            "action_dim": self.req_action_dim,
            "action_horizon": self.req_action_horizon,
            "needs_replica_state": self.req_replica_state,
        }


class PolicyCheck(models.Model):
    """One health check: connect, read metadata, dry-run infer."""

    class Trigger(models.TextChoices):
        ARENA = "arena", "the arena's own check (schedule, registration, owner)"
        ABORT = "abort", "a re-check after an abort blamed the policy"

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="checks")
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.ARENA)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    ok = models.BooleanField()
    error_code = models.CharField(max_length=60, blank=True)
    message = models.CharField(max_length=500, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    fingerprint = models.CharField(
        max_length=64, blank=True, help_text="Hash of the rounded answer to the probe (passing checks)."
    )
    probe_answer = models.JSONField(null=True, blank=True, help_text="The rounded answer itself.")

    class Meta:
        ordering = ["-at"]
