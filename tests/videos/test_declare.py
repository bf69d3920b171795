"""Declaring a video: the lab's own open session only, one video per (slot, camera), validated input, and a
renewed lease. These need no object storage beyond local disk."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from arena.models import EvaluationSession, Video
from tests.api.actors import open_session, register_robot
from tests.videos.videohelpers import BODY, declaration, declare, submit_preference


@pytest.fixture
def session(local_storage, pool, lab1, robot1) -> dict:
    return open_session(lab1)


def test_same_declaration_again_gives_a_fresh_url_for_the_same_object(session, lab1):
    first = declare(lab1, session["id"])
    key = Video.objects.get().object_key
    second = declare(lab1, session["id"])
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert Video.objects.get().object_key == key


def test_another_declaration_for_the_same_camera_is_a_conflict(session, lab1):
    assert declare(lab1, session["id"]).status_code == 201
    response = declare(lab1, session["id"], BODY + b"more")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "video_declared_differently",
        "message": "Slot A's wrist video was declared with another type, size or checksum.",
        "field": "camera",
    }
    assert declare(lab1, session["id"], BODY + b"more", slot="B").status_code == 201
    assert declare(lab1, session["id"], BODY + b"more", camera="external-1").status_code == 201


def test_a_verified_video_cannot_be_declared_again(session, lab1):
    video_id = declare(lab1, session["id"]).json()["id"]
    Video.objects.filter(pk=video_id).update(state=Video.State.VERIFIED)
    response = declare(lab1, session["id"])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "video_verified"


def test_a_rejected_video_may_be_declared_again_with_a_new_object(session, lab1):
    first = declare(lab1, session["id"]).json()
    old_key = Video.objects.get(pk=first["id"]).object_key
    Video.objects.filter(pk=first["id"]).update(state=Video.State.REJECTED)
    again = declare(lab1, session["id"], BODY + b"fixed")
    assert again.status_code == 201
    video = Video.objects.get(pk=again.json()["id"])
    assert str(video.pk) == first["id"]
    assert video.state == Video.State.PENDING and video.size == len(BODY) + 5 and video.object_key != old_key


@pytest.mark.parametrize(
    ("override", "field", "code"),
    [
        ({"slot": "C"}, "slot", "invalid_choice"),
        ({"camera": "Wrist Cam"}, "camera", "invalid"),
        ({"camera": "Wrist"}, "camera", "invalid_camera"),
        ({"content_type": "text/html"}, "content_type", "invalid_choice"),
        ({"size": 0}, "size", "min_value"),
        ({"sha256": "ab" * 31}, "sha256", "invalid"),
    ],
)
def test_invalid_declarations_are_refused(session, lab1, override, field, code):
    response = lab1.post(f"/api/v1/sessions/{session['id']}/videos/", declaration(**override))
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["code"] == code
    assert Video.objects.count() == 0


def test_size_above_the_limit_is_refused(session, lab1, settings):
    settings.VIDEO_MAX_BYTES = len(BODY) - 1
    response = declare(lab1, session["id"])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_size"


def test_upper_case_checksums_are_accepted_and_stored_lower_case(session, lab1):
    body = declaration()
    response = lab1.post(
        f"/api/v1/sessions/{session['id']}/videos/", {**body, "sha256": body["sha256"].upper()}
    )
    assert response.status_code == 201
    assert Video.objects.get().sha256 == body["sha256"]


def test_declaring_renews_the_lease(session, lab1):
    soon = timezone.now() + timedelta(minutes=1)
    EvaluationSession.objects.filter(pk=session["id"]).update(lease_expires_at=soon)
    assert declare(lab1, session["id"]).status_code == 201
    assert EvaluationSession.objects.get(pk=session["id"]).lease_expires_at > soon + timedelta(minutes=10)


def test_only_the_labs_own_open_session(session, lab1, lab2, owner):
    register_robot(lab2)
    response = declare(lab2, session["id"])
    assert response.status_code == 404 and response.json()["error"]["code"] == "session_not_found"
    assert declare(owner, session["id"]).status_code == 403

    EvaluationSession.objects.filter(pk=session["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = declare(lab1, session["id"])
    assert response.status_code == 409 and response.json()["error"]["code"] == "lease_expired"
    assert EvaluationSession.objects.get(pk=session["id"]).state == EvaluationSession.State.EXPIRED
    assert Video.objects.count() == 0


def test_no_declarations_after_the_preference(session, lab1):
    submit_preference(lab1, session["id"])
    response = declare(lab1, session["id"])
    assert response.status_code == 409 and response.json()["error"]["code"] == "session_submitted"
