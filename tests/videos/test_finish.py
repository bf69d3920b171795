"""Finishing an upload checks the stored object against the declaration; a mismatch deletes it and rejects the
video. Runs against real SeaweedFS and local disk."""

from __future__ import annotations

import hashlib

from arena.models import Video
from arena.storage import incoming_key
from tests.api.actors import open_session
from tests.videos.videohelpers import BODY, declare, stored_keys, upload


def _finish(lab, video_id: str, **kw):
    return lab.post(f"/api/v1/videos/{video_id}/finish/", **kw)


def test_checksum_mismatch_rejects_and_deletes(storage, pool, lab1, robot1):
    session = open_session(lab1)
    forged = bytes(reversed(BODY))  # same size and type, other bytes
    started = declare(lab1, session["id"]).json()
    status, text = upload(started["upload"], forged)
    assert status in (200, 201, 204), text

    response = _finish(lab1, started["id"])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "video_rejected"
    assert Video.objects.get(pk=started["id"]).state == Video.State.REJECTED
    assert stored_keys(storage) == []
    # Finishing again gives the same answer and changes nothing.
    assert _finish(lab1, started["id"]).status_code == 422


def test_smaller_body_than_declared_is_rejected(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = declare(lab1, session["id"]).json()
    status, text = upload(started["upload"], BODY[:-1])
    assert status in (200, 201, 204), text
    assert _finish(lab1, started["id"]).json()["error"]["code"] == "video_rejected"
    assert stored_keys(storage) == []


def test_rejection_is_kept_inside_an_idempotent_request(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = declare(lab1, session["id"]).json()
    upload(started["upload"], BODY[::-1])
    first = lab1.post(f"/api/v1/videos/{started['id']}/finish/", idem="finish-1")
    again = lab1.post(f"/api/v1/videos/{started['id']}/finish/", idem="finish-1")
    assert first.status_code == again.status_code == 422
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Video.objects.get(pk=started["id"]).state == Video.State.REJECTED


def test_finish_before_upload_is_a_conflict_and_keeps_the_video_pending(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = declare(lab1, session["id"]).json()
    response = _finish(lab1, started["id"])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "video_not_uploaded"
    assert Video.objects.get(pk=started["id"]).state == Video.State.PENDING


def test_finish_is_idempotent_and_moves_the_object_out_of_reach_of_its_upload_url(
    storage, pool, lab1, robot1
):
    session = open_session(lab1)
    started = declare(lab1, session["id"]).json()
    upload(started["upload"], BODY)
    assert _finish(lab1, started["id"]).json()["state"] == "verified"
    video = Video.objects.get(pk=started["id"])
    assert stored_keys(storage) == [video.object_key]

    # Replaying the still-valid upload URL writes only the incoming key, never the verified object, and
    # finishing again deletes that replay: no object is left that no video row expects.
    upload(started["upload"], BODY[::-1])
    assert incoming_key(video.object_key) in stored_keys(storage)
    assert _finish(lab1, started["id"]).json()["state"] == "verified"
    assert stored_keys(storage) == [video.object_key]
    assert storage.sha256(key=video.object_key, limit=len(BODY)) == hashlib.sha256(BODY).hexdigest()


def test_another_lab_cannot_finish_the_video(storage, pool, lab1, lab2, robot1):
    session = open_session(lab1)
    started = declare(lab1, session["id"]).json()
    upload(started["upload"], BODY)
    response = _finish(lab2, started["id"])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "video_not_found"
    assert Video.objects.get(pk=started["id"]).state == Video.State.PENDING
