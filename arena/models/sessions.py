"""Double-blind evaluation sessions: a pair of policies run on one robot for one task, and the verdict."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from arena.models.accounts import ApiKey, Lab, Robot
from arena.models.policies import Policy

SLOTS = ("A", "B")


class EvaluationSession(models.Model):
    class State(models.TextChoices):
        ASSIGNED = "assigned"
        RUNNING = "running"
        SUBMITTED = "submitted"
        ABORTED = "aborted"
        EXPIRED = "expired"

    OPEN_STATES = (State.ASSIGNED, State.RUNNING)

    class Fault(models.TextChoices):
        POLICY_A = "policy_a"
        POLICY_B = "policy_b"
        ROBOT = "robot"
        OPERATOR = "operator"
        # The relay or the arena went away (lost connection, refused, unreachable): no party's fault.
        INFRASTRUCTURE = "infrastructure"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    lab = models.ForeignKey(Lab, on_delete=models.PROTECT, related_name="sessions")
    robot = models.ForeignKey(Robot, on_delete=models.PROTECT, related_name="sessions")
    created_by = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    task = models.CharField(max_length=500, help_text="Instruction typed by the evaluator before assignment.")
    task_category = models.SlugField(max_length=60, blank=True)
    scene_notes = models.TextField(blank=True)
    policy_a = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="+")
    policy_b = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="+")
    pair_probability = models.FloatField(
        help_text="Probability with which the sampler chose this unordered pair (for inverse-propensity weights)."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.ASSIGNED, db_index=True)
    lease_expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    abort_reason = models.CharField(max_length=500, blank=True)
    abort_fault = models.CharField(max_length=16, choices=Fault.choices, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(policy_a=models.F("policy_b")), name="session_two_different_policies"
            )
        ]
        indexes = [models.Index(fields=["lab", "state"])]

    def __str__(self) -> str:
        return str(self.id)

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

    def policy_in(self, slot: str) -> Policy:
        return self.policy_a if slot == "A" else self.policy_b


class Episode(models.Model):
    """One policy's run within a session."""

    session = models.ForeignKey(EvaluationSession, on_delete=models.CASCADE, related_name="episodes")
    slot = models.CharField(max_length=1, choices=[(s, s) for s in SLOTS])
    progress = models.PositiveSmallIntegerField(help_text="0-100, the evaluator's estimate of task progress.")
    success = models.BooleanField()
    steps = models.PositiveIntegerField()
    duration_s = models.FloatField()
    mean_latency_ms = models.FloatField(null=True, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "slot"], name="one_episode_per_slot")]


class Preference(models.Model):
    class Choice(models.TextChoices):
        A = "A"
        B = "B"
        TIE = "tie"

    session = models.OneToOneField(EvaluationSession, on_delete=models.CASCADE, related_name="preference")
    choice = models.CharField(max_length=3, choices=Choice.choices)
    reason = models.TextField()
    reason_public = models.BooleanField(
        default=False, help_text="The lab lets the reason be published (per session, or its lab's default)."
    )
    valid = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Copied from the session and its episodes when the preference is stored (all immutable from then on), so
    # the ranking job aggregates 10^6 comparisons with one GROUP BY over this table, without a join.
    policy_a = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="+")
    policy_b = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="+")
    lab = models.ForeignKey(Lab, on_delete=models.PROTECT, related_name="+")
    task_category = models.SlugField(max_length=60, blank=True)
    progress_a = models.PositiveSmallIntegerField(help_text="Slot A's episode progress, 0-100")
    progress_b = models.PositiveSmallIntegerField(help_text="Slot B's episode progress, 0-100")


class Video(models.Model):
    """A camera recording of one episode, uploaded by the lab straight to storage."""

    class State(models.TextChoices):
        PENDING = "pending"
        VERIFIED = "verified"
        REJECTED = "rejected"
        DELETED = "deleted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(EvaluationSession, on_delete=models.CASCADE, related_name="videos")
    slot = models.CharField(max_length=1, choices=[(s, s) for s in SLOTS])
    camera = models.SlugField(max_length=40)
    object_key = models.CharField(max_length=300, unique=True)
    content_type = models.CharField(max_length=60)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    poster_key = models.CharField(
        max_length=320, blank=True, help_text="The first frame as a JPEG, made at verification; empty: none."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "slot", "camera"], name="one_video_per_camera_and_slot"
            )
        ]


class Trajectory(models.Model):
    """One episode's recorded proprioception and actions: a Parquet file uploaded like a video.

    Declared, uploaded to a presigned URL, then verified (size, SHA-256, Parquet magic bytes and schema) before
    it counts; visible by the same rule as the session's videos (``arena.selectors.videos``).
    """

    class State(models.TextChoices):
        PENDING = "pending"
        VERIFIED = "verified"
        REJECTED = "rejected"
        DELETED = "deleted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(EvaluationSession, on_delete=models.CASCADE, related_name="trajectories")
    slot = models.CharField(max_length=1, choices=[(s, s) for s in SLOTS])
    object_key = models.CharField(max_length=300, unique=True)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    n_steps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Rows, read from the verified file."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "slot"], name="one_trajectory_per_slot")]
