"""Input serializers validate at the edge; output serializers document (and shape) what each role sees."""

from __future__ import annotations

from collections.abc import Mapping

from django.db.models import Q
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from arena.models import ACTION_SPACES, EvaluationSession, Policy, PolicyCheck, Preference
from arena.services.policies import ENDPOINT_FIELD_RE, SLUG_RE, policy_endpoint_nonce
from arena.webhooks import WEBHOOK_RE
from policy_server.check import same_behaviour

SLOT_CHOICES = ["A", "B"]


# JSON types each input field accepts. DRF would coerce 5 into "5", "true" into True and "7" into 7; the API
# refuses a value of the wrong type instead, as its schema says.
JSON_TYPES: tuple[tuple[type[serializers.Field], tuple[type, ...], str], ...] = (
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.CharField, (str,), "a string"),
    (serializers.ListField, (list,), "a list"),
    (serializers.DictField, (dict,), "an object"),
)


class InputSerializer(serializers.Serializer):
    """Base of the request-body serializers: a field given a JSON value of another type is refused (400
    ``invalid``, naming the field)."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            errors = {}
            for name, field in self.fields.items():
                value = data.get(name)
                expected = [(types, what) for cls, types, what in JSON_TYPES if isinstance(field, cls)]
                if value is None or not expected:
                    continue
                types, what = expected[0]
                if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                    errors[name] = [ErrorDetail(f"Expected {what}.", code="invalid")]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


# The services check these patterns (with error codes of their own, e.g. ``invalid_slug``); the fields
# document them.
@extend_schema_field({"type": "string", "pattern": SLUG_RE.pattern, "minLength": 3, "maxLength": 80})
class PolicySlugField(serializers.CharField):
    """3-80 lowercase letters, digits and hyphens (checked by ``policy_register``)."""


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
        "minLength": 1,
        "maxLength": 120,
    }
)
class DisplayNameField(serializers.CharField):
    """A display name: at least one character that is not whitespace (DRF strips surrounding whitespace), no
    NUL (DRF refuses it)."""


@extend_schema_field({"type": "string", "pattern": ENDPOINT_FIELD_RE.pattern, "maxLength": 500})
class EndpointUrlField(serializers.CharField):
    """A ws:// or wss:// address (checked by ``check_endpoint_url``), or ``dialout://<slug>``."""


@extend_schema_field({"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f]*$", "maxLength": 128})
class VersionTextField(serializers.CharField):
    """A version label or weights hash: no control characters (checked by ``check_version``)."""


@extend_schema_field({"type": "string", "pattern": WEBHOOK_RE.pattern, "maxLength": 500})
class WebhookUrlField(serializers.CharField):
    """An http:// or https:// address, or empty (checked by ``check_webhook_url``)."""


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


# --- Policies ---------------------------------------------------------------------------------------------


class PolicyRegisterIn(InputSerializer):
    slug = PolicySlugField(max_length=80)
    name = DisplayNameField(max_length=120)
    endpoint_url = EndpointUrlField(max_length=500)
    endpoint_api_key = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    organization = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    description = serializers.CharField(max_length=5000, required=False, default="", allow_blank=True)
    license = serializers.CharField(max_length=80, required=False, default="", allow_blank=True)
    open_weights = serializers.BooleanField(required=False, default=False)
    req_platform = serializers.CharField(max_length=80, required=False, default="", allow_blank=True)
    version_label = VersionTextField(
        max_length=120,
        required=False,
        default="",
        allow_blank=True,
        help_text="What runs: a checkpoint name, a git sha or free text.",
    )
    weights_hash = VersionTextField(max_length=128, required=False, default="", allow_blank=True)


class PolicyUpdateIn(InputSerializer):
    name = DisplayNameField(max_length=120, required=False)
    endpoint_url = EndpointUrlField(max_length=500, required=False)
    endpoint_api_key = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    license = serializers.CharField(max_length=80, required=False, allow_blank=True)
    open_weights = serializers.BooleanField(required=False)
    req_platform = serializers.CharField(max_length=80, required=False, allow_blank=True)
    videos_public = serializers.BooleanField(required=False)
    version_label = VersionTextField(
        max_length=120,
        required=False,
        allow_blank=True,
        help_text="Required with a new endpoint_url. A label (or weights_hash) other than the current one "
        "starts a new version: a new policy row with its own rating (slug <first slug>-v<n>), returned here; "
        "the old one is retired.",
    )
    weights_hash = VersionTextField(max_length=128, required=False, allow_blank=True)


class RequirementsOut(serializers.Serializer):
    platform = serializers.CharField(allow_null=True)
    image_resolution = serializers.ListField(child=serializers.IntegerField(), allow_null=True)
    n_external_cameras = serializers.IntegerField()
    needs_wrist_camera = serializers.BooleanField()
    needs_stereo_camera = serializers.BooleanField()
    action_space = serializers.CharField(allow_null=True)
    action_dim = serializers.IntegerField(allow_null=True)
    action_horizon = serializers.IntegerField(allow_null=True)
    needs_replica_state = serializers.BooleanField()


class PublicRequirementsOut(serializers.Serializer):
    """Which robot classes can run a policy, and nothing finer: the exact requirements (resolution, cameras,
    action space, dimension, horizon) would fingerprint the policy against the ones a lab sees for its slots."""

    platform = serializers.CharField(allow_null=True, help_text="The one platform it runs on; null: any.")
    needs_replica_state = serializers.BooleanField(help_text="True: replica robots only.")


def public_requirements(policy: Policy) -> dict:
    exact = policy.requirements()
    return {"platform": exact["platform"], "needs_replica_state": exact["needs_replica_state"]}


class PolicyPublicOut(serializers.ModelSerializer):
    organization = serializers.CharField(source="organization.name")
    requirements = serializers.SerializerMethodField()
    previous_version = serializers.SlugRelatedField(
        source="previous",
        slug_field="slug",
        read_only=True,
        allow_null=True,
        help_text="The version this one replaced.",
    )
    next_version = serializers.SerializerMethodField(help_text="The version that replaced this one.")

    class Meta:
        model = Policy
        fields = [
            "slug",
            "name",
            "organization",
            "description",
            "license",
            "open_weights",
            "status",
            "requirements",
            "created_at",
            "version_label",
            "weights_hash",
            "version_number",
            "previous_version",
            "next_version",
        ]

    @extend_schema_field(PublicRequirementsOut)
    def get_requirements(self, policy: Policy) -> dict:
        return PublicRequirementsOut(public_requirements(policy)).data

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_next_version(self, policy: Policy) -> str | None:
        try:
            return policy.successor.slug
        except Policy.successor.RelatedObjectDoesNotExist:
            return None


class PolicyOwnerOut(PolicyPublicOut):
    """What the policy's owners see: the public fields plus exact requirements, endpoint, exact health and
    abort statistics."""

    requirements = serializers.SerializerMethodField()
    aborts_blamed = serializers.SerializerMethodField(
        help_text="Sessions aborted by a lab that named this policy at fault (they never count as failed checks)."
    )
    endpoint_nonce = serializers.SerializerMethodField(
        help_text="Your registration nonce for this endpoint (null for a dial-out policy). Serve it as arena_nonce in "
        "the server's metadata: it proves control when another organization has the server, and a policy of "
        "another organization that reaches the server under another name fails its checks (endpoint_claimed)."
    )

    class Meta(PolicyPublicOut.Meta):
        fields = PolicyPublicOut.Meta.fields + [
            "endpoint_url",
            "req_platform",
            "videos_public",
            "last_check_at",
            "last_check_ok",
            "last_check_error",
            "last_check_latency_ms",
            "consecutive_failures",
            "aborts_blamed",
            "endpoint_nonce",
            "endpoint_proven_at",
            "retired_at",
            "behaviour_changed_at",
        ]

    @extend_schema_field(RequirementsOut)
    def get_requirements(self, policy: Policy) -> dict:
        return RequirementsOut(policy.requirements()).data

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_endpoint_nonce(self, policy: Policy) -> str | None:
        return policy_endpoint_nonce(policy=policy)

    def get_aborts_blamed(self, policy: Policy) -> int:
        fault = EvaluationSession.Fault
        return EvaluationSession.objects.filter(
            Q(policy_a=policy, abort_fault=fault.POLICY_A) | Q(policy_b=policy, abort_fault=fault.POLICY_B)
        ).count()


class PolicyCheckOut(serializers.Serializer):
    """One health check as its owner sees it: exact time, a classified error code and a fixed sentence."""

    at = serializers.DateTimeField()
    ok = serializers.BooleanField()
    trigger = serializers.ChoiceField(
        choices=PolicyCheck.Trigger.choices,
        help_text="arena: the arena's own check (counts toward failing); abort: a re-check after an abort.",
    )
    error_code = serializers.CharField()
    message = serializers.CharField()
    latency_ms = serializers.FloatField(allow_null=True)
    fingerprint_matches = serializers.SerializerMethodField(
        help_text="Whether the answer to the check's fixed probe matched this version's first one, within one "
        "rounding step (null: failed check). The answer is never shown: it could tell a lab which policy it runs."
    )

    @extend_schema_field(serializers.BooleanField(allow_null=True))
    def get_fingerprint_matches(self, check: PolicyCheck) -> bool | None:
        if check.probe_answer is None or check.policy.probe_answer is None:
            return None
        return same_behaviour(check.probe_answer, check.policy.probe_answer)


# --- Accounts ---------------------------------------------------------------------------------------------


class RobotIn(InputSerializer):
    name = serializers.SlugField(max_length=80)
    platform = serializers.CharField(max_length=80)
    n_external_cameras = serializers.IntegerField(min_value=0, max_value=4)
    has_wrist_camera = serializers.BooleanField()
    has_stereo_camera = serializers.BooleanField(required=False, default=False)
    action_spaces = serializers.ListField(
        child=serializers.ChoiceField(choices=list(ACTION_SPACES)),
        min_length=1,
        max_length=len(ACTION_SPACES),
    )


class RobotOut(serializers.Serializer):
    name = serializers.CharField()
    platform = serializers.CharField()
    n_external_cameras = serializers.IntegerField()
    has_wrist_camera = serializers.BooleanField()
    has_stereo_camera = serializers.BooleanField()
    action_spaces = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class KeyIn(InputSerializer):
    name = serializers.CharField(max_length=80, required=False, default="", allow_blank=True)


class KeyOut(serializers.Serializer):
    prefix = serializers.CharField()
    name = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class NewKeyOut(KeyOut):
    key = serializers.CharField(help_text="Shown once; store it now.")


class MeOut(serializers.Serializer):
    role = serializers.ChoiceField(choices=["lab", "owner"])
    name = serializers.CharField()
    organization = serializers.CharField()
    key_prefix = serializers.CharField()


class NotificationSettingsIn(InputSerializer):
    email_enabled = serializers.BooleanField(required=False)
    webhook_url = WebhookUrlField(max_length=500, required=False, allow_blank=True)
    on_policy_health = serializers.BooleanField(required=False)
    on_comparisons = serializers.BooleanField(required=False)
    on_session_undelivered = serializers.BooleanField(required=False)
    rotate_secret = serializers.BooleanField(required=False, default=False)


class NotificationSettingsOut(serializers.Serializer):
    email = serializers.CharField(source="user.email", help_text="Where emails go (the account's address).")
    email_enabled = serializers.BooleanField()
    webhook_url = serializers.CharField()
    webhook_secret = serializers.CharField(
        help_text="Key of X-Arena-Signature: sha256=HMAC-SHA256(secret, '<X-Arena-Timestamp>.<body>')."
    )
    on_policy_health = serializers.BooleanField()
    on_comparisons = serializers.BooleanField()
    on_session_undelivered = serializers.BooleanField()


class DeliveryAttemptOut(serializers.Serializer):
    at = serializers.CharField()
    status = serializers.IntegerField(allow_null=True, help_text="The receiver's HTTP status (webhooks).")
    error = serializers.CharField(allow_null=True)


class NotificationDeliveryOut(serializers.Serializer):
    id = serializers.UUIDField()
    event = serializers.CharField()
    channel = serializers.CharField()
    target = serializers.CharField()
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    attempt_log = DeliveryAttemptOut(many=True)
    payload = serializers.DictField()
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)


class LabPublicationIn(InputSerializer):
    publish_reasons = serializers.BooleanField(required=False)
    publish_name = serializers.BooleanField(required=False)


class LabPublicationOut(serializers.Serializer):
    publish_reasons = serializers.BooleanField(help_text="Default for sessions that do not say.")
    publish_name = serializers.BooleanField(help_text="Public pages and releases show your lab's name.")
    pseudonym = serializers.CharField(help_text="How public pages and releases name your lab otherwise.")


# --- Sessions ---------------------------------------------------------------------------------------------


class SessionListQuery(serializers.Serializer):
    state = serializers.ChoiceField(choices=EvaluationSession.State.values, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=200, required=False, default=50)


class SessionRequestIn(InputSerializer):
    robot = serializers.SlugField(max_length=80)
    task = serializers.CharField(max_length=500)
    task_category = serializers.SlugField(max_length=60, required=False, default="", allow_blank=True)
    scene_notes = serializers.CharField(max_length=5000, required=False, default="", allow_blank=True)


class EpisodeIn(InputSerializer):
    slot = serializers.ChoiceField(choices=SLOT_CHOICES)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    success = serializers.BooleanField()
    steps = serializers.IntegerField(min_value=0, max_value=1_000_000)
    duration_s = serializers.FloatField(min_value=0, max_value=86_400)
    mean_latency_ms = serializers.FloatField(min_value=0, max_value=600_000, required=False, allow_null=True)
    failure_reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class PreferenceIn(InputSerializer):
    choice = serializers.ChoiceField(choices=Preference.Choice.values)
    reason = serializers.CharField(max_length=5000)
    valid = serializers.BooleanField(required=False, default=True)
    reason_public = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Whether the reason may be published once the session is revealed; omitted or null: your "
        "lab's default (GET /api/v1/lab/).",
    )


class AbortIn(InputSerializer):
    reason = serializers.CharField(max_length=500)
    fault = serializers.ChoiceField(choices=EvaluationSession.Fault.values)


class EpisodeOut(serializers.Serializer):
    progress = serializers.IntegerField()
    success = serializers.BooleanField()
    steps = serializers.IntegerField()
    duration_s = serializers.FloatField()
    mean_latency_ms = serializers.FloatField(allow_null=True)
    failure_reason = serializers.CharField()


class SlotVideoOut(serializers.Serializer):
    id = serializers.UUIDField()
    camera = serializers.CharField()
    state = serializers.CharField()
    size = serializers.IntegerField()


class SlotTrajectoryOut(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.CharField()
    size = serializers.IntegerField()
    n_steps = serializers.IntegerField(allow_null=True)


class SlotOut(serializers.Serializer):
    requirements = RequirementsOut()
    relay_url = serializers.CharField(allow_null=True, help_text="Websocket address of the blind relay.")
    episode = EpisodeOut(allow_null=True)
    videos = SlotVideoOut(many=True)
    trajectory = SlotTrajectoryOut(allow_null=True, help_text="The slot's declared trajectory, if any.")


class SlotsOut(serializers.Serializer):
    A = SlotOut()
    B = SlotOut()


class PreferenceOut(serializers.Serializer):
    choice = serializers.CharField()
    reason = serializers.CharField()
    reason_public = serializers.BooleanField()
    valid = serializers.BooleanField()


class AbortOut(serializers.Serializer):
    reason = serializers.CharField()
    fault = serializers.CharField()


class IdentityOut(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    organization = serializers.CharField()


class RevealOut(serializers.Serializer):
    A = IdentityOut()
    B = IdentityOut()


class SessionOut(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=EvaluationSession.State.values)
    task = serializers.CharField()
    task_category = serializers.CharField()
    scene_notes = serializers.CharField()
    robot = serializers.CharField()
    created_at = serializers.DateTimeField()
    lease_expires_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    slots = SlotsOut()
    preference = PreferenceOut(allow_null=True)
    abort = AbortOut(allow_null=True)
    reveal = RevealOut(allow_null=True, help_text="Null until the preference is stored.")


class SessionListOut(serializers.Serializer):
    count = serializers.IntegerField()
    results = SessionOut(many=True)
