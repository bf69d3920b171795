"""Reads of sessions. ``session_for_evaluator`` is the only way evaluator-facing code sees a pair.

Before the preference is stored the view holds slot labels, the task, what each slot needs to run and a relay
address whose token carries the endpoint encrypted; nothing that identifies a policy (id, slug, name, owner,
organization, endpoint, metadata). Once the preference is stored, ``reveal`` names both policies.

Relay tokens are minted here only, for the lab key that asked (the relay's admission refuses them once that key
is revoked or the session closes, see ``arena.services.relay``).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from arena.errors import NotFound
from arena.models import SLOTS, ApiKey, EvaluationSession, Lab, Policy
from policy_server.relay_token import mint_token


def sessions_for_lab(*, lab: Lab, state: str | None = None) -> QuerySet[EvaluationSession]:
    qs = (
        EvaluationSession.objects.filter(lab=lab)
        .select_related("robot", "policy_a", "policy_b", "preference")
        .prefetch_related("episodes", "videos", "trajectories")
        .order_by("-created_at")
    )
    return qs.filter(state=state) if state else qs


def session_get_for_lab(*, lab: Lab, session_id: uuid.UUID | str) -> EvaluationSession:
    session = sessions_for_lab(lab=lab).filter(pk=session_id).first()
    if session is None:
        raise NotFound("session_not_found", "Your lab has no such session.")
    return session


def session_for_evaluator(session: EvaluationSession, *, minted_for: ApiKey | None) -> dict[str, Any]:
    """The redacted view of a session for its lab. See the module docstring for what it may contain.

    ``minted_for`` is the lab API key the relay tokens are minted for (None, e.g. for the web dashboard: no
    relay addresses).
    """
    preference = (
        getattr(session, "preference", None) if session.state == EvaluationSession.State.SUBMITTED else None
    )
    episodes = {e.slot: e for e in session.episodes.all()}
    videos = list(session.videos.all())
    trajectories = {t.slot: t for t in session.trajectories.all()}
    slots = {}
    for slot in SLOTS:
        policy = session.policy_in(slot)
        episode = episodes.get(slot)
        slots[slot] = {
            "requirements": policy.requirements(),
            "relay_url": _relay_url(session, slot, policy, minted_for)
            if session.is_open and minted_for is not None
            else None,
            "episode": None
            if episode is None
            else {
                "progress": episode.progress,
                "success": episode.success,
                "steps": episode.steps,
                "duration_s": episode.duration_s,
                "mean_latency_ms": episode.mean_latency_ms,
                "failure_reason": episode.failure_reason,
            },
            "videos": [
                {"id": str(v.id), "camera": v.camera, "state": v.state, "size": v.size}
                for v in videos
                if v.slot == slot
            ],
            "trajectory": None
            if slot not in trajectories
            else {
                "id": str(trajectories[slot].id),
                "state": trajectories[slot].state,
                "size": trajectories[slot].size,
                "n_steps": trajectories[slot].n_steps,
            },
        }
    return {
        "id": str(session.id),
        "state": session.state,
        "task": session.task,
        "task_category": session.task_category,
        "scene_notes": session.scene_notes,
        "robot": session.robot.name,
        "created_at": session.created_at,
        "lease_expires_at": session.lease_expires_at,
        "ended_at": session.ended_at,
        "slots": slots,
        "preference": None
        if preference is None
        else {
            "choice": preference.choice,
            "reason": preference.reason,
            "reason_public": preference.reason_public,
            "valid": preference.valid,
        },
        "abort": {"reason": session.abort_reason, "fault": session.abort_fault}
        if session.state == EvaluationSession.State.ABORTED
        else None,
        "reveal": None
        if preference is None
        else {slot: _public_identity(session.policy_in(slot)) for slot in SLOTS},
    }


def _public_identity(policy: Policy) -> dict[str, str]:
    return {"slug": policy.slug, "name": policy.name, "organization": policy.organization.name}


def _relay_url(session: EvaluationSession, slot: str, policy: Policy, minted_for: ApiKey) -> str:
    # The relay's admission checks the session's state and its current lease at every connection and while it
    # is open. The token's own expiry is only an outer bound: the lease as it stands plus one lease period, the
    # most one episode report extends it by, so that slot B's token (minted with the session) still connects
    # after slot A's report renewed the lease.
    remaining = (session.lease_expires_at - timezone.now()).total_seconds()
    ttl = max(1, int(remaining + settings.ARENA_SESSION_LEASE_MINUTES * 60))
    token = mint_token(
        endpoint=policy.endpoint_url,
        session_id=str(session.id),
        slot=slot,
        key=settings.ARENA_RELAY_SECRET,
        ttl_s=ttl,
        api_key=policy.endpoint_api_key or None,
        lab_key=minted_for.prefix,
    )
    return f"{settings.ARENA_RELAY_URL}/{token}"
