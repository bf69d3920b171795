"""Hardening fixtures: the named actors of the API tests, and ``world``, an arena with objects in each state.

``world`` holds three active Acme policies and a pending one (Olivia's), Berkeley's robot and one session per
state (assigned, running with one episode, ready with both episodes, submitted, aborted, expired), a pending
video and a verified one (local disk), so that generated requests can name objects that exist.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone

from arena.models import EvaluationSession, Policy
from tests.api.actors import EPISODE, Actor, open_session, register_policy, report_both
from tests.api.conftest import acme_lab, anonymous, lab1, lab2, outsider, owner, pool, robot1  # noqa: F401
from tests.videos.videohelpers import BODY, declare, upload


@dataclass
class World:
    owner: Actor
    lab: Actor
    other_lab: Actor
    outsider: Actor
    policies: list[Policy]
    sessions: dict[str, str] = field(default_factory=dict)  # state label -> session id
    videos: dict[str, str] = field(default_factory=dict)  # "pending" / "verified" -> video id
    slugs: list[str] = field(default_factory=list)
    key_prefixes: list[str] = field(default_factory=list)


def _session_in(lab: Actor, label: str) -> str:
    session = open_session(lab)
    sid = session["id"]
    if label == "running":
        assert lab.post(f"/api/v1/sessions/{sid}/episodes/", {**EPISODE, "slot": "A"}).status_code == 201
    elif label in ("ready", "submitted"):
        report_both(lab, sid)
        if label == "submitted":
            done = lab.post(f"/api/v1/sessions/{sid}/preference/", {"choice": "B", "reason": "steadier"})
            assert done.status_code == 201, done.json()
    elif label == "aborted":
        assert (
            lab.post(f"/api/v1/sessions/{sid}/abort/", {"reason": "e-stop", "fault": "robot"}).status_code
            == 200
        )
    elif label == "expired":
        EvaluationSession.objects.filter(pk=sid).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
    return sid


def _verified_video(lab: Actor, session_id: str) -> str:
    started = declare(lab, session_id, camera="exterior-1")
    assert started.status_code == 201, started.json()
    status, text = upload(started.json()["upload"], BODY)
    assert status in (200, 201, 204), text
    finished = lab.post(f"/api/v1/videos/{started.json()['id']}/finish/")
    assert finished.status_code == 200, finished.json()
    return started.json()["id"]


@pytest.fixture
def world(settings, tmp_path, owner, lab1, lab2, outsider, pool, robot1) -> World:  # noqa: F811
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 50
    settings.VIDEO_DIR = tmp_path / "videos"
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        setattr(settings, name, "")
    register_policy(owner, "pending-policy", endpoint_url="ws://pending.acme.example:9000")
    world = World(owner=owner, lab=lab1, other_lab=lab2, outsider=outsider, policies=pool)
    for label in ("assigned", "running", "ready", "submitted", "aborted", "expired"):
        world.sessions[label] = _session_in(lab1, label)
    video_session = open_session(lab1)["id"]
    world.videos["verified"] = _verified_video(lab1, video_session)
    report_both(lab1, video_session)
    assert (
        lab1.post(f"/api/v1/sessions/{video_session}/preference/", {"choice": "A", "reason": "r"}).status_code
        == 201
    )
    pending = declare(
        lab1, world.sessions["assigned"], camera="wrist", sha256=hashlib.sha256(b"x").hexdigest()
    )
    assert pending.status_code == 201, pending.json()
    world.videos["pending"] = pending.json()["id"]
    world.slugs = [p.slug for p in Policy.objects.order_by("slug")]
    # Spare keys to revoke (the keys the actors use stay valid), and keys of other principals (404 to revoke).
    spare = [actor.post("/api/v1/keys/", {"name": "spare"}).json()["prefix"] for actor in (owner, lab1)]
    world.key_prefixes = spare + [actor.key.split("_")[1] for actor in (lab2, outsider)]
    return world
