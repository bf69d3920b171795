"""Open-data tests: the named actors of the API tests and local-disk storage of the video tests, plus helpers
that record a finished session with a video and a trajectory the way a lab's client does."""

from __future__ import annotations

import hashlib

import numpy as np

from tests.api.actors import open_session, report_both
from tests.api.conftest import anonymous, lab1, lab2, outsider, owner, pool, robot1  # noqa: F401
from tests.videos.conftest import local_storage, s3_storage, seaweed  # noqa: F401
from tests.videos.test_trajectories import parquet_bytes
from tests.videos.videohelpers import BODY, declare, upload


def recorded_session(
    lab,
    *,
    reason: str = "A grasped the marker; B missed it",
    videos: dict | None = None,
    submit: bool = True,
    **preference,
) -> str:
    """A session of ``lab`` with one wrist video (``videos[slot]``: its MP4 bytes; default 10 KiB standing in
    for one) and one trajectory per slot, both episodes, and the preference (``preference``: extra fields such
    as ``reason_public``); with ``submit=False`` the session stays blind (no episodes, no preference). Returns
    the session id."""
    session = open_session(lab)
    sid = session["id"]
    for slot in "AB":
        video = (videos or {}).get(slot, BODY)
        started = declare(lab, sid, video, slot=slot).json()
        upload(started["upload"], video)
        assert lab.post(f"/api/v1/videos/{started['id']}/finish/").status_code == 200
        body = parquet_bytes(steps=30 if slot == "A" else 20)
        started = lab.post(
            f"/api/v1/sessions/{sid}/trajectories/",
            {"slot": slot, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()},
        ).json()
        upload(started["upload"], body)
        assert lab.post(f"/api/v1/trajectories/{started['id']}/finish/").status_code == 200
    if not submit:
        return sid
    report_both(lab, sid)
    response = lab.post(
        f"/api/v1/sessions/{sid}/preference/", {"choice": "A", "reason": reason, **preference}
    )
    assert response.status_code == 201, response.json()
    return sid


def mp4(directory, stem: str, frames: int) -> bytes:
    """A real H.264 MP4 of ``frames`` frames at 10 fps (128 x 96), made by the lab client's recorder."""
    from evaluator_client.video import VideoRecorder

    recorder = VideoRecorder(directory, stem, ["wrist"], source_hz=10, fps=10)
    for k in range(frames):
        image = np.zeros((96, 128, 3), dtype=np.uint8)
        image[:, : 4 + k % 120] = (200, (80 + k) % 256, 40)
        recorder.add({"wrist": image})
    (video,) = recorder.close()
    return video.path.read_bytes()
