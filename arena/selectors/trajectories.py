"""Reads of episode trajectories, visible by the rule of ``arena.selectors.videos.episode_data_visible_to``."""

from __future__ import annotations

import uuid
from typing import Any

from arena.auth import Principal
from arena.errors import NotFound
from arena.models import Trajectory
from arena.selectors.videos import episode_data_visible_to
from arena.storage import get_storage


def trajectory_view(*, principal: Principal | None, trajectory: Trajectory) -> dict[str, Any]:
    """The API body of a trajectory; ``url``: a GET URL of the Parquet file when ``principal`` may see it."""
    url = expires_at = None
    if trajectory.state == Trajectory.State.VERIFIED and episode_data_visible_to(
        principal=principal, session=trajectory.session
    ):
        url, expires_at = get_storage().download_url(key=trajectory.object_key)
    return {
        "id": str(trajectory.id),
        "slot": trajectory.slot,
        "state": trajectory.state,
        "size": trajectory.size,
        "sha256": trajectory.sha256,
        "n_steps": trajectory.n_steps,
        "url": url,
        "expires_at": expires_at,
    }


def trajectory_download(*, principal: Principal | None, trajectory_id: uuid.UUID | str) -> dict[str, Any]:
    """The view of a trajectory with its download URL, for whoever may see it; NotFound for everyone else."""
    trajectory = (
        Trajectory.objects.select_related(
            "session__preference", "session__policy_a__organization", "session__policy_b__organization"
        )
        .filter(pk=trajectory_id)
        .first()
    )
    if trajectory is None or not episode_data_visible_to(principal=principal, session=trajectory.session):
        raise NotFound("trajectory_not_found", "No such trajectory.")
    return trajectory_view(principal=principal, trajectory=trajectory)
