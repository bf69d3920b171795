"""Reads of policies: the public list, an owner's own, and one by slug."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from arena.errors import NotFound
from arena.models import Policy


def policies_public() -> QuerySet[Policy]:
    """Every policy that is or was in the pool (not pending), for the public list."""
    return (
        Policy.objects.exclude(status=Policy.Status.PENDING)
        .select_related("organization", "previous", "successor")
        .order_by("slug")
    )


def policies_for_owner(*, user) -> QuerySet[Policy]:
    return (
        Policy.objects.filter(Q(owner=user) | Q(organization__members=user))
        .distinct()
        .select_related("organization", "previous", "successor")
        .order_by("slug")
    )


def policy_get(*, slug: str) -> Policy:
    policy = Policy.objects.select_related("organization", "owner").filter(slug=slug).first()
    if policy is None:
        raise NotFound("policy_not_found", f"No policy with slug {slug!r}.", field="slug")
    return policy


def policy_get_for_owner(*, user, slug: str) -> Policy:
    policy = policies_for_owner(user=user).filter(slug=slug).first()
    if policy is None:
        raise NotFound("policy_not_found", f"You have no policy with slug {slug!r}.", field="slug")
    return policy


def policy_versions(*, policy: Policy, ratings: list[dict] | None = None) -> list[dict]:
    """Every version of ``policy``'s family that is or was in the pool, oldest first, each with its rating
    row of ``ratings`` (a snapshot's rows; None when the version has none)."""
    first = policy.first_version
    by_slug = {row["slug"]: row for row in ratings or []}
    versions = (
        Policy.objects.filter(Q(pk=first.pk) | Q(family=first))
        .exclude(status=Policy.Status.PENDING)
        .order_by("version_number", "pk")
    )
    return [{"policy": v, "rating": by_slug.get(v.slug), "current": v.pk == policy.pk} for v in versions]
