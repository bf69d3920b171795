"""Open-data tests: the named actors of the API tests and local-disk storage of the video tests, plus helpers
that record a finished session with a video and a trajectory the way a lab's client does."""

from __future__ import annotations

import hashlib

from tests.api.actors import open_session, report_both
from tests.api.conftest import anonymous, lab1, lab2, outsider, owner, pool, robot1  # noqa: F401
from tests.videos.conftest import local_storage  # noqa: F401
from tests.videos.test_trajectories import parquet_bytes
from tests.videos.videohelpers import BODY, declare, upload


def recorded_session(
    lab, *, reason: str = "A grasped the marker; B missed it", videos: dict | None = None, **preference
) -> str:
    """A session of ``lab`` with one wrist video (``videos[slot]``: its MP4 bytes; default 10 KiB standing in
    for one) and one trajectory per slot, both episodes, and the preference (``preference``: extra fields such
    as ``reason_public``). Returns the session id."""
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
    report_both(lab, sid)
    response = lab.post(
        f"/api/v1/sessions/{sid}/preference/", {"choice": "A", "reason": reason, **preference}
    )
    assert response.status_code == 201, response.json()
    return sid
