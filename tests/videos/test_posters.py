"""Poster frames: the first frame of a verified video, stored as a JPEG beside it, on both storage backends;
an undecodable file or a server without PyAV leaves the video verified and without a poster."""

from __future__ import annotations

import sys

from arena.models import Video
from arena.services.videos import video_poster_make, video_retention_sweep
from tests.api.actors import open_session
from tests.videos.videohelpers import BODY, declare, mp4, stored_keys, upload


def _verified(lab, body: bytes, capture) -> Video:
    """Upload and finish a video; the poster task runs after the finish commits (``capture`` runs the
    callbacks that the test's transaction would otherwise hold back)."""
    session = open_session(lab)
    started = declare(lab, session["id"], body).json()
    status, text = upload(started["upload"], body)
    assert status in (200, 201, 204), text
    with capture(execute=True):
        assert lab.post(f"/api/v1/videos/{started['id']}/finish/").json()["state"] == "verified"
    return Video.objects.get(pk=started["id"])


def test_verifying_a_video_stores_its_first_frame_as_a_jpeg(
    storage, pool, lab1, robot1, django_capture_on_commit_callbacks
):
    video = _verified(lab1, mp4(), django_capture_on_commit_callbacks)
    assert video.poster_key.endswith(".jpg") and video.poster_key.startswith(f"sessions/{video.session_id}/")
    jpeg = b"".join(storage.open(key=video.poster_key))
    assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"
    assert storage.head(key=video.poster_key).content_type == "image/jpeg"
    assert stored_keys(storage) == sorted([video.object_key, video.poster_key])
    # the retention sweep expects the poster: no orphan
    assert video_retention_sweep()["orphan_count"] == 0
    # making it again changes nothing
    assert video_poster_make(video_id=video.pk).poster_key == video.poster_key


def test_an_undecodable_video_is_verified_without_a_poster(
    storage, pool, lab1, robot1, django_capture_on_commit_callbacks
):
    video = _verified(lab1, BODY, django_capture_on_commit_callbacks)
    assert video.state == Video.State.VERIFIED and video.poster_key == ""
    assert stored_keys(storage) == [video.object_key]


def test_without_pyav_videos_get_no_poster(
    local_storage, pool, lab1, robot1, monkeypatch, django_capture_on_commit_callbacks
):
    body = mp4()
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError, as on a server without it
    video = _verified(lab1, body, django_capture_on_commit_callbacks)
    assert video.state == Video.State.VERIFIED and video.poster_key == ""
    # called directly (not through the task, whose errors Celery would swallow) it returns without a poster
    assert video_poster_make(video_id=video.pk).poster_key == ""
