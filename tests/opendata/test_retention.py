"""Storage stays bounded: the retention sweep deletes the episodes (videos and trajectories) of sessions without
a verdict, and, when ARENA_UNPUBLISHED_RETENTION_DAYS is set, of old submitted sessions that may not be
published; published ones and release files stay, and trajectories and releases are not reported as orphans."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from arena.models import EvaluationSession, Policy, Trajectory, Video
from arena.services.ranking import ranking_snapshot_create
from arena.services.releases import release_build
from arena.tasks import video_retention_sweep
from tests.api.actors import register_policy
from tests.opendata.conftest import recorded_session


def _ended(sid: str, days: float, **fields) -> None:
    EvaluationSession.objects.filter(pk=sid).update(ended_at=timezone.now() - timedelta(days=days), **fields)


def test_sweep_bounds_unpublished_episode_data(local_storage, pool, lab1, robot1, owner, settings):
    settings.VIDEO_RETENTION_DAYS = 7
    settings.ARENA_UNPUBLISHED_RETENTION_DAYS = 30
    Policy.objects.update(videos_public=True)
    published = recorded_session(lab1)
    release_build(snapshot=ranking_snapshot_create())
    unpublished = recorded_session(lab1)
    aborted = recorded_session(lab1, submit=False)
    recent = recorded_session(lab1)
    register_policy(owner, "shy-policy")  # its owner never publishes its episodes
    shy = Policy.objects.get(slug="shy-policy")
    EvaluationSession.objects.filter(pk__in=[unpublished, recent]).update(policy_b=shy)
    _ended(published, 100)
    _ended(unpublished, 40)
    _ended(aborted, 8, state=EvaluationSession.State.ABORTED)
    _ended(recent, 5)

    report = video_retention_sweep.delay().get()

    def states(sid):
        return {v.state for v in Video.objects.filter(session_id=sid)} | {
            t.state for t in Trajectory.objects.filter(session_id=sid)
        }

    assert states(aborted) == states(unpublished) == {"deleted"}
    assert states(recent) == states(published) == {"verified"}
    assert report["deleted"] == 8  # 2 sessions x 2 slots x (a video and a trajectory)
    assert report["orphan_count"] == 0 and report["missing_count"] == 0
    for trajectory in Trajectory.objects.filter(state="deleted"):
        assert local_storage.head(key=trajectory.object_key) is None
    assert any(k.startswith(settings.ARENA_RELEASE_PREFIX) for k in local_storage.list_keys())
