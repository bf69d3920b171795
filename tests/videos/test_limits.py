"""Per-session limits on video declarations: at most ARENA_VIDEOS_PER_CAMERA x (the robot's cameras) videos per
slot, and at most ARENA_SESSION_VIDEO_MAX_BYTES declared over the session's live videos."""

from __future__ import annotations

import pytest

from tests.api.actors import open_session
from tests.videos.videohelpers import BODY, declare


@pytest.fixture
def session(local_storage, pool, lab1, robot1) -> dict:
    return open_session(lab1)  # robot1: two external cameras and a wrist camera


def test_declarations_per_slot_are_bounded_by_the_robots_cameras(session, lab1, settings):
    settings.ARENA_VIDEOS_PER_CAMERA = 2
    for n in range(6):
        assert declare(lab1, session["id"], camera=f"cam-{n}").status_code == 201
    refused = declare(lab1, session["id"], camera="cam-6")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "too_many_videos"
    assert refused.json()["error"]["field"] == "camera"
    assert declare(lab1, session["id"], camera="cam-0").status_code == 201  # a retry of a declared one
    assert declare(lab1, session["id"], camera="cam-6", slot="B").status_code == 201  # slot B has its own


def test_declared_bytes_per_session_are_bounded(session, lab1, settings):
    settings.ARENA_SESSION_VIDEO_MAX_BYTES = 3 * len(BODY)
    for camera in ("wrist", "left", "right"):
        assert declare(lab1, session["id"], camera=camera).status_code == 201
    refused = declare(lab1, session["id"], camera="extra", slot="B")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "session_video_bytes_exceeded"
    assert refused.json()["error"]["field"] == "size"
    assert declare(lab1, session["id"], camera="wrist").status_code == 201  # the same one again: not twice
