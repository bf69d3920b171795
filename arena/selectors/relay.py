"""Reads of what the relay reported: a policy's error incidents, as its owner may see them."""

from __future__ import annotations

from typing import Any

from arena.models import EvaluationSession, Policy, PolicyIncident

INCIDENTS_SHOWN = 50


def incidents_for_owner(*, policy: Policy, limit: int = INCIDENTS_SHOWN) -> list[dict[str, Any]]:
    """The newest incidents of ``policy`` for its owner: the error text and the hour it happened.

    The session (and through it the lab and the exact time) is named only once the session's verdict is stored:
    before that, an owner who knew which session their policy runs in could follow or influence it.
    """
    incidents = PolicyIncident.objects.filter(policy=policy).select_related("session")[:limit]
    return [
        {
            "kind": incident.kind,
            "detail": incident.detail,
            "hour": incident.at.replace(minute=0, second=0, microsecond=0),
            "session": str(incident.session_id)
            if incident.session.state == EvaluationSession.State.SUBMITTED
            else None,
        }
        for incident in incidents
    ]
