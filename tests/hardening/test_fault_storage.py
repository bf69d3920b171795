"""Fault: S3 (a real SeaweedFS behind a link that can be cut) is unreachable while a lab uploads its videos.

The client keeps the session in its spool; a later flush completes it. Nothing is lost (every episode,
video and the preference arrive), nothing is doubled (one row each), and the server never answers 500.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from django.test import Client

from arena.models import Episode, EvaluationSession, Preference, Video
from arena.storage import S3Storage, get_storage
from evaluator_client.api import ArenaApi
from evaluator_client.spool import Spool
from tests.api.actors import EPISODE, activate, make_actor, register_policy, register_robot
from tests.client.proxy import FlakyLink
from tests.videos.conftest import seaweed  # noqa: F401

CAMERAS = ("exterior", "wrist")


@pytest.fixture
def s3_behind_link(seaweed, settings):  # noqa: F811
    """Settings pointing at SeaweedFS through a FlakyLink (a fresh bucket); yields the link."""
    link = FlakyLink("127.0.0.1", seaweed.port)
    for name, value in seaweed.env().items():
        setattr(settings, name, value)
    settings.S3_ENDPOINT_URL = link.url
    settings.S3_BUCKET = f"arena-fault-{uuid.uuid4().hex[:12]}"
    storage = get_storage()
    assert isinstance(storage, S3Storage)
    storage.ensure_bucket()
    yield link
    link.close()


def _spooled_session(api: ArenaApi, spool: Spool, folder: Path) -> dict:
    """A session whose episodes, two videos per slot and preference are all in the spool, none sent."""
    session = api.request_session(robot="franka-1", task="put the cube in the bowl", idem="req-1")
    entry = spool.create(session)
    for slot, progress in (("A", 70), ("B", 30)):
        spool.add_episode(entry, slot, {**EPISODE, "progress": progress})
        for camera in CAMERAS:
            body = f"{slot}-{camera}-".encode() * 700
            path = folder / f"{slot}_{camera}.mp4"
            path.write_bytes(body)
            spool.add_video(
                entry,
                slot=slot,
                camera=camera,
                path=path,
                size=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                content_type="video/mp4",
            )
    spool.set_preference(entry, choice="A", reason="A put the cube in", valid=True)
    return entry


def _state(session_id: str) -> tuple[str, int, int, dict[str, int]]:
    videos = Video.objects.filter(session_id=session_id)
    return (
        EvaluationSession.objects.get(pk=session_id).state,
        Episode.objects.filter(session_id=session_id).count(),
        Preference.objects.filter(session_id=session_id).count(),
        {state: videos.filter(state=state).count() for state in ("pending", "verified", "rejected")},
    )


@pytest.mark.django_db(transaction=True)
def test_uploads_while_s3_is_down_stay_spooled_then_flush_completes(s3_behind_link, live_server, tmp_path):
    link = s3_behind_link
    owner = make_actor("owner", owner="olivia", organization="Acme Robotics")
    for slug in ("alpha-policy", "beta-policy"):
        register_policy(owner, slug)
        activate(slug)
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    register_robot(lab)
    api, spool = ArenaApi(live_server.url, lab.key, timeout=10), Spool(tmp_path / "client")
    entry = _spooled_session(api, spool, tmp_path)
    sid = entry["session_id"]

    link.cut()
    for _ in range(2):  # a second attempt while S3 is still down declares nothing twice
        report = spool.flush(api)
        assert (report.sent, report.pending, report.failed) == ([], [sid], [])
        assert _state(sid) == ("running", 2, 0, {"pending": 1, "verified": 0, "rejected": 0})

    # S3 comes back for the upload but fails again before the server verifies it: the server answers 503,
    # the video stays pending and the client keeps it.
    link.restore()
    report = spool.flush(api, on_upload=lambda video: link.cut())
    assert report.pending == [sid]
    assert _state(sid) == ("running", 2, 0, {"pending": 1, "verified": 0, "rejected": 0})
    pending = Video.objects.get(session_id=sid)
    answer = Client().post(f"/api/v1/videos/{pending.pk}/finish/", HTTP_AUTHORIZATION=f"Api-Key {lab.key}")
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "storage_unavailable"

    link.restore()
    report = spool.flush(api)
    assert (report.sent, report.pending, report.failed) == ([sid], [], [])
    assert _state(sid) == ("submitted", 2, 1, {"pending": 0, "verified": 4, "rejected": 0})
    assert spool.flush(api).sent == []  # nothing left, nothing sent twice
    assert _state(sid) == ("submitted", 2, 1, {"pending": 0, "verified": 4, "rejected": 0})
    stored = set(get_storage().list_keys())
    assert stored == set(Video.objects.filter(session_id=sid).values_list("object_key", flat=True))
    assert not list(spool.root.glob(f"{sid}/*.mp4"))  # the client deletes its copies once verified
    api.close()
