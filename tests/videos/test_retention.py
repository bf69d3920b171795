"""The retention sweep (a Celery beat task) deletes videos of sessions that ended without a verdict more than
VIDEO_RETENTION_DAYS ago and reports objects without a row and verified rows without an object."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from arena.models import EvaluationSession, Video
from arena.storage import incoming_key
from arena.tasks import video_retention_sweep
from tests.api.actors import open_session
from tests.videos.videohelpers import BODY, declare, stored_keys, upload

State = EvaluationSession.State


def _recorded_session(lab, *, state: str, ended_days_ago: float) -> Video:
    session = open_session(lab)
    started = declare(lab, session["id"]).json()
    upload(started["upload"], BODY)
    assert lab.post(f"/api/v1/videos/{started['id']}/finish/").json()["state"] == "verified"
    ended = timezone.now() - timedelta(days=ended_days_ago)
    EvaluationSession.objects.filter(pk=session["id"]).update(state=state, ended_at=ended)
    return Video.objects.get(pk=started["id"])


def test_sweep_deletes_old_videos_of_sessions_without_a_verdict(
    storage, settings, pool, lab1, robot1, caplog
):
    settings.VIDEO_RETENTION_DAYS = 7
    old_aborted = _recorded_session(lab1, state=State.ABORTED, ended_days_ago=8)
    old_expired = _recorded_session(lab1, state=State.EXPIRED, ended_days_ago=30)
    recent_aborted = _recorded_session(lab1, state=State.ABORTED, ended_days_ago=6)
    old_submitted = _recorded_session(lab1, state=State.SUBMITTED, ended_days_ago=100)

    with caplog.at_level(logging.INFO, logger="arena.services.videos"):
        report = video_retention_sweep.delay().get()

    assert report == {
        "deleted": 2,
        "replays_deleted": 0,
        "orphan_count": 0,
        "orphans": [],
        "missing_count": 0,
        "missing": [],
    }
    states = {v.pk: v.state for v in Video.objects.all()}
    assert states[old_aborted.pk] == states[old_expired.pk] == Video.State.DELETED
    assert states[recent_aborted.pk] == states[old_submitted.pk] == Video.State.VERIFIED
    assert stored_keys(storage) == sorted([recent_aborted.object_key, old_submitted.object_key])
    assert "deleted 2, 0 objects without a row, 0 verified videos without an object" in caplog.text

    assert video_retention_sweep.delay().get()["deleted"] == 0


def test_sweep_reports_mismatches_between_bucket_and_database(storage, pool, lab1, robot1, caplog):
    kept = _recorded_session(lab1, state=State.SUBMITTED, ended_days_ago=1)
    lost = _recorded_session(lab1, state=State.SUBMITTED, ended_days_ago=1)
    storage.delete(key=lost.object_key)
    stray = "sessions/00000000-0000-0000-0000-000000000000/A/wrist-stray.mp4"
    upload_target = storage.upload_target(key=stray, content_type="video/mp4", size=len(BODY))
    upload(
        {
            "method": upload_target.method,
            "url": upload_target.url,
            "headers": upload_target.headers,
            "fields": upload_target.fields,
        },
        BODY,
    )
    pending = declare(lab1, open_session(lab1)["id"]).json()
    upload(pending["upload"], BODY)  # uploaded, not finished yet: expected, not an orphan

    with caplog.at_level(logging.WARNING, logger="arena.services.videos"):
        report = video_retention_sweep.delay().get()

    assert report == {
        "deleted": 0,
        "replays_deleted": 0,
        "orphan_count": 1,
        "orphans": [stray],
        "missing_count": 1,
        "missing": [str(lost.pk)],
    }
    assert "1 objects without a row, 1 verified videos without an object" in caplog.text
    assert kept.object_key in stored_keys(storage)


def test_sweep_deletes_uploads_replayed_after_the_video_was_finished(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = declare(lab1, session["id"]).json()
    upload(started["upload"], BODY)
    assert lab1.post(f"/api/v1/videos/{started['id']}/finish/").json()["state"] == "verified"
    upload(started["upload"], BODY[::-1])  # the upload URL is still valid: a replay nobody finishes
    video = Video.objects.get(pk=started["id"])
    assert stored_keys(storage) == sorted([video.object_key, incoming_key(video.object_key)])

    report = video_retention_sweep.delay().get()

    assert (report["replays_deleted"], report["orphan_count"]) == (1, 0)
    assert stored_keys(storage) == [video.object_key]
