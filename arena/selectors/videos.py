"""Reads of session videos. ``video_visible_to`` is the one rule deciding who may see a video.

The same rule covers trajectories (``episode_data_visible_to``); ``videos_public`` is the owner's consent to
publishing its episodes, videos and trajectories alike.

Videos stay private while a session is blind: until its preference is stored nobody, not even the lab that
recorded them, gets a video or a playback URL through the API (the lab has its own recordings; serving them
back adds nothing and would be one more place where blinding could leak). Sessions that end without a
preference (aborted, expired) stay private for good. Once the preference is stored a video is visible to the
session's lab and to the owners of both policies (the policy's ``owner`` user or any member of the policy's
organization), and to everyone, anonymous callers included, when both policies opted in with
``videos_public``. Everyone else gets the same 404 as for a video that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Any

from arena.auth import Principal
from arena.errors import NotFound
from arena.models import EvaluationSession, Policy, Video
from arena.storage import get_storage


def _owns(user, policy: Policy) -> bool:
    return policy.owner_id == user.pk or policy.organization.members.filter(pk=user.pk).exists()


def video_visible_to(*, principal: Principal | None, video: Video) -> bool:
    """Whether ``principal`` (None: anonymous) may see ``video``. See the module docstring for the rule."""
    return episode_data_visible_to(principal=principal, session=video.session)


def episode_data_visible_to(*, principal: Principal | None, session: EvaluationSession) -> bool:
    """Whether ``principal`` may see the session's recorded episodes (videos and trajectories): the rule of the
    module docstring."""
    if session.state != EvaluationSession.State.SUBMITTED or not hasattr(session, "preference"):
        return False
    policies = (session.policy_a, session.policy_b)
    if all(p.videos_public for p in policies):
        return True
    if principal is None:
        return False
    if principal.is_lab:
        return principal.lab.pk == session.lab_id
    return any(_owns(principal.user, p) for p in policies)


def video_view(*, principal: Principal | None, video: Video) -> dict[str, Any]:
    """The API body of a video; ``url``: a GET URL for a verified video ``principal`` may see."""
    url = expires_at = None
    if video.state == Video.State.VERIFIED and video_visible_to(principal=principal, video=video):
        url, expires_at = get_storage().download_url(key=video.object_key)
    return {
        "id": str(video.id),
        "slot": video.slot,
        "camera": video.camera,
        "state": video.state,
        "size": video.size,
        "url": url,
        "expires_at": expires_at,
    }


def video_playback_url(*, principal: Principal | None, video_id: uuid.UUID | str) -> dict[str, Any]:
    """The view of a video with a playback URL, for whoever may see it; NotFound for everyone else."""
    video = (
        Video.objects.select_related(
            "session__preference",
            "session__policy_a__organization",
            "session__policy_b__organization",
        )
        .filter(pk=video_id)
        .first()
    )
    if video is None or not video_visible_to(principal=principal, video=video):
        raise NotFound("video_not_found", "No such video.")
    return video_view(principal=principal, video=video)
