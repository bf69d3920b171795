"""The operators' console."""

from __future__ import annotations

from django.contrib import admin

from arena import models


@admin.register(models.Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]


class RobotInline(admin.TabularInline):
    model = models.Robot
    extra = 0


@admin.register(models.Lab)
class LabAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "organization",
        "integrity_flagged",
        "integrity_note",
        "votes_excluded",
        "policy_aborts",
        "created_at",
    ]
    list_filter = ["integrity_flagged", "votes_excluded"]
    search_fields = ["name"]
    filter_horizontal = ["members"]
    inlines = [RobotInline]
    actions = ["exclude_votes", "include_votes"]

    @admin.display(description="aborts blaming a policy")
    def policy_aborts(self, lab) -> int:
        """Sessions this lab aborted naming a policy at fault: for the integrity review (aborts never count
        against a policy; a lab that blames often while the policies' own checks pass deserves a look)."""
        faults = (models.EvaluationSession.Fault.POLICY_A, models.EvaluationSession.Fault.POLICY_B)
        return lab.sessions.filter(abort_fault__in=faults).count()

    @admin.action(description="Exclude the selected labs' votes from the ranking (refits)")
    def exclude_votes(self, request, queryset):
        queryset.update(votes_excluded=True)
        self._refit(request)

    @admin.action(description="Count the selected labs' votes again (refits)")
    def include_votes(self, request, queryset):
        queryset.update(votes_excluded=False)
        self._refit(request)

    def _refit(self, request) -> None:
        from arena.tasks import ranking_refit_soon

        ranking_refit_soon()
        self.message_user(request, "Done; the ranking is being refitted.")


class PolicyCheckInline(admin.TabularInline):
    model = models.PolicyCheck
    extra = 0
    can_delete = False
    readonly_fields = ["at", "trigger", "ok", "error_code", "message", "latency_ms", "fingerprint"]
    exclude = ["probe_answer"]

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-at")


@admin.register(models.Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "organization",
        "status",
        "last_check_at",
        "last_check_ok",
        "last_check_latency_ms",
        "consecutive_failures",
        "version_label",
        "behaviour_changed_at",
    ]
    list_filter = [
        "status",
        "organization",
        "open_weights",
        ("behaviour_changed_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["slug", "name"]
    readonly_fields = [
        "last_check_at",
        "last_check_ok",
        "last_check_error",
        "last_check_latency_ms",
        "consecutive_failures",
        "recheck_due_at",
        "endpoint_proven_at",
        "created_at",
        "version_number",
        "previous",
        "family",
        "fingerprint",
        "behaviour_changed_at",
    ]
    exclude = ["probe_answer"]
    inlines = [PolicyCheckInline]


class EpisodeInline(admin.TabularInline):
    model = models.Episode
    extra = 0


class VideoInline(admin.TabularInline):
    model = models.Video
    extra = 0
    readonly_fields = ["object_key", "size", "sha256", "state", "verified_at"]


@admin.register(models.EvaluationSession)
class EvaluationSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "lab", "robot", "policy_a", "policy_b", "state", "created_at", "lease_expires_at"]
    list_filter = ["state", "abort_fault", "lab", "task_category"]
    search_fields = ["id", "task"]
    date_hierarchy = "created_at"
    inlines = [EpisodeInline, VideoInline]


@admin.register(models.Preference)
class PreferenceAdmin(admin.ModelAdmin):
    list_display = ["session", "lab", "policy_a", "policy_b", "choice", "valid", "created_at"]
    list_filter = ["choice", "valid", "lab"]
    # Immutable: the ranking's running tallies count them as stored (see arena.services.tallies).
    readonly_fields = [
        "session",
        "choice",
        "reason",
        "valid",
        "policy_a",
        "policy_b",
        "lab",
        "task_category",
        "progress_a",
        "progress_b",
        "created_at",
    ]


@admin.register(models.ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["prefix", "name", "lab", "user", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    readonly_fields = ["prefix", "hashed_secret", "created_at", "last_used_at"]


@admin.register(models.KeyUse)
class KeyUseAdmin(admin.ModelAdmin):
    list_display = ["at", "api_key", "method", "path", "status", "ip"]
    list_filter = ["method", "status"]


@admin.register(models.RankingSnapshot)
class RankingSnapshotAdmin(admin.ModelAdmin):
    list_display = ["version", "created_at", "n_comparisons", "n_policies", "fit_seconds", "data_hash"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(models.NotificationDelivery)
class NotificationDeliveryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "user", "event", "channel", "state", "attempts", "delivered_at"]
    list_filter = ["state", "channel", "event"]
    readonly_fields = ["user", "event", "channel", "target", "payload", "state", "attempts", "attempt_log"]
