"""Who may see a video, and when: nobody while the session is blind; after the preference the lab and the
owners of both policies (owner user or organization member); everyone once both policies opted in to public
videos. Anyone else gets the same 404 as for a video that does not exist."""

from __future__ import annotations

import uuid

import pytest

from arena.models import Video
from tests.api.actors import activate, make_actor, open_session, register_policy, register_robot
from tests.videos.videohelpers import BODY, declare, download, submit_preference, upload

VIEWERS = ("lab1", "owner", "bob", "colleague", "lab2", "outsider", "anonymous")
ALLOWED_AFTER_PREFERENCE = {"lab1", "owner", "bob", "colleague"}


@pytest.fixture
def actors(local_storage, owner, lab1, lab2, outsider, anonymous) -> dict:
    """Two policies with different owners (Olivia of Acme, Bob); Carol works with Olivia."""
    bob = make_actor("bob", owner="bob", organization="Bob Robotics")
    colleague = make_actor("colleague", owner="carol", organization="Acme Robotics")
    register_policy(owner, "acme-pi0")
    register_policy(bob, "bob-octo")
    activate("acme-pi0")
    activate("bob-octo")
    register_robot(lab1)
    register_robot(lab2)
    return {
        "lab1": lab1,
        "owner": owner,
        "bob": bob,
        "colleague": colleague,
        "lab2": lab2,
        "outsider": outsider,
        "anonymous": anonymous,
    }


@pytest.fixture
def recorded(actors) -> tuple[str, str]:
    """An open session of lab 1 with one verified video: (session id, video id)."""
    lab1 = actors["lab1"]
    session = open_session(lab1)
    started = declare(lab1, session["id"]).json()
    upload(started["upload"], BODY)
    assert lab1.post(f"/api/v1/videos/{started['id']}/finish/").json()["state"] == "verified"
    return session["id"], started["id"]


def _visible(actors: dict, video_id: str) -> set[str]:
    seen = set()
    for name in VIEWERS:
        response = actors[name].get(f"/api/v1/videos/{video_id}/")
        if response.status_code == 200:
            seen.add(name)
        else:
            assert response.status_code == 404, (name, response.json())
            assert response.json()["error"] == {
                "code": "video_not_found",
                "message": "No such video.",
                "field": None,
            }
    return seen


def _make_public(actors: dict, *owners: str) -> None:
    for name, slug in (("owner", "acme-pi0"), ("bob", "bob-octo")):
        if name in owners:
            response = actors[name].patch(f"/api/v1/policies/{slug}/", {"videos_public": True})
            assert response.status_code == 200, response.json()


def test_blind_session_videos_are_private_to_everyone(actors, recorded):
    _, video_id = recorded
    assert _visible(actors, video_id) == set()
    _make_public(actors, "owner", "bob")
    assert _visible(actors, video_id) == set()


def test_after_the_preference_the_lab_and_both_owners_see_it(actors, recorded):
    session_id, video_id = recorded
    submit_preference(actors["lab1"], session_id)
    assert _visible(actors, video_id) == ALLOWED_AFTER_PREFERENCE
    for name in ALLOWED_AFTER_PREFERENCE:
        body = actors[name].get(f"/api/v1/videos/{video_id}/").json()
        assert set(body) == {"id", "slot", "camera", "state", "size", "url", "expires_at"}
        status, content = download(body["url"])
        assert status == 200 and content == BODY


def test_one_opt_in_is_not_enough_to_publish(actors, recorded):
    session_id, video_id = recorded
    submit_preference(actors["lab1"], session_id)
    _make_public(actors, "owner")
    assert _visible(actors, video_id) == ALLOWED_AFTER_PREFERENCE


def test_both_opt_ins_publish_to_everyone(actors, recorded):
    session_id, video_id = recorded
    submit_preference(actors["lab1"], session_id)
    _make_public(actors, "owner", "bob")
    assert _visible(actors, video_id) == set(VIEWERS)
    status, content = download(actors["anonymous"].get(f"/api/v1/videos/{video_id}/").json()["url"])
    assert status == 200 and content == BODY


def test_sessions_without_a_preference_stay_private(actors, recorded):
    session_id, video_id = recorded
    response = actors["lab1"].post(
        f"/api/v1/sessions/{session_id}/abort/", {"reason": "arm fault", "fault": "robot"}
    )
    assert response.status_code == 200, response.json()
    _make_public(actors, "owner", "bob")
    assert _visible(actors, video_id) == set()


def test_unknown_videos_look_like_hidden_ones(actors):
    assert _visible(actors, str(uuid.uuid4())) == set()


def test_visible_videos_that_are_not_verified_have_no_url(actors):
    lab1 = actors["lab1"]
    session = open_session(lab1)
    pending = declare(lab1, session["id"]).json()["id"]
    submit_preference(lab1, session["id"])
    body = lab1.get(f"/api/v1/videos/{pending}/").json()
    assert body["state"] == Video.State.PENDING and body["url"] is None and body["expires_at"] is None
