"""What the public may see of finished sessions: the one gatekeeper for the session browser and releases.

A session is published when it is revealed (its preference is stored) and the owners of both policies opted in
to publishing their episodes (``Policy.videos_public``). Its reason text is published only when the lab let it
(``Preference.reason_public``, per session or the lab's default). A lab is named only when it opted in
(``Lab.publish_name``); otherwise by a stable pseudonym, an HMAC of its id with ARENA_PSEUDONYM_SECRET.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import date
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet

from arena.errors import NotFound
from arena.models import EvaluationSession, Lab, Trajectory, Video

REPLICA_PREFIX = "replica"


def lab_pseudonym(lab_id: int) -> str:
    """``lab-<12 hex>``: HMAC-SHA256 of the lab's id with ARENA_PSEUDONYM_SECRET; stable, not reversible."""
    digest = hmac.new(settings.ARENA_PSEUDONYM_SECRET.encode(), f"lab:{lab_id}".encode(), hashlib.sha256)
    return f"lab-{digest.hexdigest()[:12]}"


def lab_public_name(lab: Lab) -> str:
    """The lab's name when it opted in to being named, else its pseudonym."""
    return lab.name if lab.publish_name else lab_pseudonym(lab.pk)


def published_sessions() -> QuerySet[EvaluationSession]:
    """Every session whose episodes may be published, newest first."""
    return (
        EvaluationSession.objects.filter(
            state=EvaluationSession.State.SUBMITTED,
            preference__isnull=False,
            policy_a__videos_public=True,
            policy_b__videos_public=True,
        )
        .select_related("preference", "policy_a", "policy_b", "robot", "lab")
        .order_by("-ended_at", "-created_at")
    )


def robot_type(platform: str) -> str:
    """``replica`` for simulated replicas (platform ``replica:...``), else ``real``."""
    return "replica" if platform.split(":", 1)[0] == REPLICA_PREFIX else "real"


def published_sessions_filtered(
    *,
    policy: str = "",
    task_category: str = "",
    robot: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[EvaluationSession]:
    """:func:`published_sessions` narrowed: ``policy`` slug in either slot, ``task_category``, ``robot``
    (``real`` or ``replica``), ended on or after ``since`` and on or before ``until`` (UTC dates)."""
    sessions = published_sessions()
    if policy:
        sessions = sessions.filter(Q(policy_a__slug=policy) | Q(policy_b__slug=policy))
    if task_category:
        sessions = sessions.filter(task_category=task_category)
    if robot == "replica":
        sessions = sessions.filter(robot__platform__startswith=REPLICA_PREFIX)
    elif robot == "real":
        sessions = sessions.exclude(robot__platform__startswith=REPLICA_PREFIX)
    if since:
        sessions = sessions.filter(ended_at__date__gte=since)
    if until:
        sessions = sessions.filter(ended_at__date__lte=until)
    return sessions


def scene_of(session: EvaluationSession) -> dict[str, Any]:
    """The session's scene notes as data (the client sends JSON); ``{"notes": text}`` when they are not."""
    try:
        notes = json.loads(session.scene_notes) if session.scene_notes else {}
    except ValueError:
        return {"notes": session.scene_notes}
    return notes if isinstance(notes, dict) else {"notes": session.scene_notes}


def published_session_summary(session: EvaluationSession) -> dict[str, Any]:
    """The public facts of one published session (no reason unless the lab let it, no lab name unless it
    opted in)."""
    preference = session.preference
    return {
        "id": str(session.id),
        "ended_at": session.ended_at,
        "task": session.task,
        "task_category": session.task_category,
        "robot_type": robot_type(session.robot.platform),
        "platform": session.robot.platform,
        "lab": lab_public_name(session.lab),
        "policy_a": session.policy_a,
        "policy_b": session.policy_b,
        "choice": preference.choice,
        "progress": {"A": preference.progress_a, "B": preference.progress_b},
        "reason": preference.reason if preference.reason_public else None,
    }


def published_session(*, session_id: uuid.UUID | str) -> dict[str, Any]:
    """A published session with its verified videos and trajectories (``{"videos": {slot: [Video]},
    "trajectories": {slot: Trajectory}}``); NotFound for any session that is not published."""
    session = published_sessions().filter(pk=session_id).first()
    if session is None:
        raise NotFound("session_not_found", "No such published session.")
    videos: dict[str, list[Video]] = {"A": [], "B": []}
    for video in session.videos.filter(state=Video.State.VERIFIED).order_by("camera"):
        videos[video.slot].append(video)
    trajectories = {t.slot: t for t in session.trajectories.filter(state=Trajectory.State.VERIFIED)}
    return {
        **published_session_summary(session),
        "session": session,
        "scene": scene_of(session),
        "videos": videos,
        "trajectories": trajectories,
    }
