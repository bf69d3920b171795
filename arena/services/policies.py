"""Writes for policies: registration, updates, retirement and health-check results."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arena.errors import Conflict, InvalidInput, PermissionDenied
from arena.models import ACTION_SPACES, Organization, Policy, PolicyCheck
from arena.services.accounts import check_owner_in_organization
from policy_server.relay_token import MAX_ENDPOINT_AND_KEY_BYTES, endpoint_fits

# Both are also the OpenAPI patterns of the fields (ECMA dialect): ASCII classes only, matched with fullmatch.
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,78}[a-z0-9]$")
ENDPOINT_RE = re.compile(r"^wss?://[A-Za-z0-9._\-\[\]:]+(:[0-9]{1,5})?(/[!-~]*)?$")
EDITABLE_FIELDS = (
    "name",
    "description",
    "license",
    "open_weights",
    "endpoint_url",
    "endpoint_api_key",
    "req_platform",
    "videos_public",
)


def check_endpoint_url(url: str) -> None:
    if not ENDPOINT_RE.fullmatch(url or ""):
        raise InvalidInput(
            "invalid_endpoint",
            "The endpoint must be a ws:// or wss:// URL, e.g. ws://host:8000.",
            field="endpoint_url",
        )


def check_relay_capacity(endpoint_url: str, endpoint_api_key: str) -> None:
    """Relay tokens have one fixed size, so the endpoint and its key must fit in it together."""
    if not endpoint_fits(endpoint_url, endpoint_api_key):
        raise InvalidInput(
            "endpoint_too_long",
            f"The endpoint URL and its API key may take {MAX_ENDPOINT_AND_KEY_BYTES} bytes together "
            "(UTF-8); shorten one of them.",
            field="endpoint_url",
        )


def policy_register(
    *,
    owner,
    slug: str,
    name: str,
    endpoint_url: str,
    organization: Organization | None = None,
    description: str = "",
    license: str = "",
    open_weights: bool = False,
    endpoint_api_key: str = "",
    req_platform: str = "",
) -> Policy:
    """Register a policy as pending; a health check runs after commit and activates it when it passes."""
    if not SLUG_RE.fullmatch(slug):
        raise InvalidInput(
            "invalid_slug", "A slug is 3-80 lowercase letters, digits and hyphens.", field="slug"
        )
    check_endpoint_url(endpoint_url)
    check_relay_capacity(endpoint_url, endpoint_api_key)
    if organization is None:
        orgs = list(owner.organizations.all()[:2])
        if len(orgs) != 1:
            raise InvalidInput(
                "organization_required",
                "You belong to several organizations: name one.",
                field="organization",
            )
        organization = orgs[0]
    check_owner_in_organization(user=owner, organization=organization)
    with transaction.atomic():
        if Policy.objects.filter(slug=slug).exists():
            raise Conflict("slug_taken", f"The slug {slug!r} is taken.", field="slug")
        policy = Policy.objects.create(
            slug=slug,
            name=name,
            organization=organization,
            owner=owner,
            description=description,
            license=license,
            open_weights=open_weights,
            endpoint_url=endpoint_url,
            endpoint_api_key=endpoint_api_key,
            req_platform=req_platform,
        )
        _schedule_check(policy)
    return policy


def policy_update(*, owner, policy: Policy, **changes: Any) -> Policy:
    """Change editable fields. A new endpoint sends the policy back to pending until it passes a check."""
    check_policy_owner(owner=owner, policy=policy)
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise InvalidInput("not_editable", f"{field} cannot be changed.", field=field)
    if policy.status == Policy.Status.RETIRED:
        raise Conflict("policy_retired", "A retired policy cannot be changed.")
    if "endpoint_url" in changes:
        check_endpoint_url(changes["endpoint_url"])
    with transaction.atomic():
        policy = Policy.objects.select_for_update().get(pk=policy.pk)
        check_relay_capacity(
            changes.get("endpoint_url", policy.endpoint_url),
            changes.get("endpoint_api_key", policy.endpoint_api_key),
        )
        endpoint_changed = any(
            k in changes and changes[k] != getattr(policy, k) for k in ("endpoint_url", "endpoint_api_key")
        )
        for field, value in changes.items():
            setattr(policy, field, value)
        if endpoint_changed:
            policy.status = Policy.Status.PENDING
            policy.consecutive_failures = 0
        policy.save()
        if endpoint_changed:
            _schedule_check(policy)
    return policy


def policy_retire(*, owner, policy: Policy) -> Policy:
    """Take a policy out of the pool for good. Its past comparisons stay in the ranking's history."""
    check_policy_owner(owner=owner, policy=policy)
    with transaction.atomic():
        policy = Policy.objects.select_for_update().get(pk=policy.pk)
        if policy.status != Policy.Status.RETIRED:
            policy.status = Policy.Status.RETIRED
            policy.retired_at = timezone.now()
            policy.save(update_fields=["status", "retired_at"])
    return policy


def policy_check_request(*, owner, policy: Policy) -> None:
    check_policy_owner(owner=owner, policy=policy)
    if policy.status == Policy.Status.RETIRED:
        raise Conflict("policy_retired", "A retired policy is not checked.")
    policy_check_schedule(policy_id=policy.pk)


def policy_check_record(
    *,
    policy: Policy,
    ok: bool,
    error_code: str = "",
    message: str = "",
    latency_ms: float | None = None,
    requirements: dict[str, Any] | None = None,
) -> Policy:
    """Store one health-check result; N failures in a row make the policy ``failing``, a pass makes it active."""
    now = timezone.now()
    with transaction.atomic():
        policy = Policy.objects.select_for_update().get(pk=policy.pk)
        PolicyCheck.objects.create(
            policy=policy,
            at=now,
            ok=ok,
            error_code=error_code[:60],
            message=message[:500],
            latency_ms=latency_ms,
        )
        policy.last_check_at = now
        policy.last_check_ok = ok
        policy.last_check_error = "" if ok else f"{error_code}: {message}"[:300]
        policy.last_check_latency_ms = latency_ms
        if ok:
            policy.consecutive_failures = 0
            if requirements:
                _apply_requirements(policy, requirements)
            if policy.status in (Policy.Status.PENDING, Policy.Status.FAILING):
                policy.status = Policy.Status.ACTIVE
        else:
            policy.consecutive_failures += 1
            threshold = settings.ARENA_CHECK_FAILURES_BEFORE_FAILING
            if policy.status == Policy.Status.ACTIVE and policy.consecutive_failures >= threshold:
                policy.status = Policy.Status.FAILING
        policy.save()
    return policy


def check_policy_owner(*, owner, policy: Policy) -> None:
    if policy.owner_id != owner.pk and not policy.organization.members.filter(pk=owner.pk).exists():
        raise PermissionDenied("not_policy_owner", "Only the policy's owner or organization may do this.")


def _apply_requirements(policy: Policy, req: dict[str, Any]) -> None:
    resolution = req.get("image_resolution")
    policy.req_image_height, policy.req_image_width = (
        (int(resolution[0]), int(resolution[1])) if resolution else (None, None)
    )
    policy.req_n_external_cameras = int(req.get("n_external_cameras") or 0)
    policy.req_wrist_camera = bool(req.get("needs_wrist_camera"))
    policy.req_stereo_camera = bool(req.get("needs_stereo_camera"))
    action_space = req.get("action_space") or ""
    policy.req_action_space = action_space if action_space in ACTION_SPACES else ""
    policy.req_replica_state = bool(req.get("needs_replica_state"))
    policy.req_action_dim = req.get("action_dim")
    policy.req_action_horizon = req.get("action_horizon")
    if req.get("platform") and not policy.req_platform:
        policy.req_platform = str(req["platform"])[:80]


def _schedule_check(policy: Policy) -> None:
    if settings.ARENA_CHECK_ON_REGISTER:
        policy_check_schedule(policy_id=policy.pk)


def policy_check_schedule(*, policy_id: int) -> None:
    """Health-check the policy once the current transaction commits (never from inside it)."""
    transaction.on_commit(lambda: _enqueue_check(policy_id))


def _enqueue_check(policy_id: int) -> None:
    from arena.tasks import policy_check_one

    policy_check_one.delay(policy_id)
