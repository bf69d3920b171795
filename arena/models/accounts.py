"""Who takes part: organizations, their members, evaluator labs and their robots, and API keys."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

ACTION_SPACES = ("joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity")


class Organization(models.Model):
    """A university lab, company or group. Policies and evaluator labs belong to one."""

    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=80, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="organizations", blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Lab(models.Model):
    """An evaluator site: people and robots that run sessions. Never evaluates its organization's policies."""

    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=80, unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="labs")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="labs", blank=True)
    votes_excluded = models.BooleanField(
        default=False, help_text="Operator decision: this lab's preferences are left out of the ranking."
    )
    integrity_flagged = models.BooleanField(
        default=False,
        help_text="Set by the ranking job when the lab disagrees with the consensus unusually often.",
    )
    integrity_note = models.CharField(max_length=300, blank=True)
    publish_reasons = models.BooleanField(
        default=False,
        help_text="Default for sessions that do not say: the evaluator's reason text may be published.",
    )
    publish_name = models.BooleanField(
        default=False, help_text="Public pages and releases name the lab; otherwise only its pseudonym."
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Robot(models.Model):
    """A robot (real or a simulated replica) a lab evaluates on, with what it can provide and execute."""

    lab = models.ForeignKey(Lab, on_delete=models.CASCADE, related_name="robots")
    name = models.SlugField(max_length=80)
    platform = models.CharField(max_length=80, help_text="e.g. droid, replica:tabletop-v1")
    n_external_cameras = models.PositiveSmallIntegerField(default=1)
    has_wrist_camera = models.BooleanField(default=True)
    has_stereo_camera = models.BooleanField(default=False)
    action_spaces = models.JSONField(default=list, help_text=f"Subset of {', '.join(ACTION_SPACES)}")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["lab", "name"], name="robot_name_unique_per_lab")]

    def __str__(self) -> str:
        return f"{self.lab.slug}/{self.name}"


class ApiKey(models.Model):
    """A revocable credential. Stored as a SHA-256 of the secret: keys carry 256 bits of entropy, so a slow
    password hash would add latency without adding safety. Shown once, as ``pa_<prefix>_<secret>``."""

    prefix = models.CharField(max_length=16, unique=True)
    hashed_secret = models.CharField(max_length=64)
    name = models.CharField(max_length=80, blank=True)
    lab = models.ForeignKey(Lab, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(lab__isnull=False, user__isnull=True)
                | models.Q(lab__isnull=True, user__isnull=False),
                name="api_key_has_exactly_one_principal",
            )
        ]

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def role(self) -> str:
        return "lab" if self.lab_id else "owner"

    def __str__(self) -> str:
        return f"pa_{self.prefix}_… ({self.role})"


class KeyUse(models.Model):
    """Audit log: one row per authenticated write (and per refused attempt) made with a key."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="uses")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=300)
    status = models.PositiveSmallIntegerField()
    ip = models.GenericIPAddressField(null=True, blank=True)
