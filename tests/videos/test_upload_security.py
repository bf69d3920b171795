"""Upload URLs let a lab write one object, of the declared type and at most the declared size, before they
expire; every other use is refused by the storage itself (S3) or by the signed-URL view (local disk), and
nothing is stored. Each test runs against real SeaweedFS and against local disk."""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import urlparse

import pytest

from tests.api.actors import open_session
from tests.videos.videohelpers import BODY, declare, download, stored_keys, submit_preference, upload


def _start(lab, session_id: str, body: bytes = BODY, **overrides) -> dict:
    response = declare(lab, session_id, body, **overrides)
    assert response.status_code == 201, response.json()
    return response.json()


def test_happy_path_upload_finish_and_play_back(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = _start(lab1, session["id"])
    assert set(started) == {"id", "upload", "expires_at"}
    assert set(started["upload"]) == {"method", "url", "headers", "fields"}

    status, text = upload(started["upload"], BODY)
    assert status in (200, 201, 204), text
    finished = lab1.post(f"/api/v1/videos/{started['id']}/finish/")
    assert finished.status_code == 200, finished.json()
    assert finished.json()["state"] == "verified"
    assert finished.json()["url"] is None  # the session is still blind

    submit_preference(lab1, session["id"])
    video = lab1.get(f"/api/v1/videos/{started['id']}/").json()
    assert video["state"] == "verified" and video["size"] == len(BODY)
    status, body = download(video["url"])
    assert status == 200 and body == BODY
    assert [k for k in stored_keys(storage)] == [k for k in stored_keys(storage) if k.startswith("sessions/")]
    assert len(stored_keys(storage)) == 1


def test_upload_url_reveals_nothing_about_the_policies(storage, pool, lab1, robot1):
    """The URL, fields and signed policy/token name only the session, slot, camera and random bits."""
    session = open_session(lab1)
    target = _start(lab1, session["id"])["upload"]
    if target["method"] == "POST":
        signed = base64.b64decode(target["fields"]["policy"]).decode()
        key = target["fields"]["key"]
    else:
        payload = urlparse(target["url"]).path.rstrip("/").rsplit("/", 1)[1].split(":")[0]
        signed = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
        key = json.loads(signed)["k"]
    assert re.fullmatch(rf"incoming/sessions/{session['id']}/A/wrist-[0-9a-f]{{32}}\.mp4", key)
    text = f"{target} {signed}"
    for policy in pool:
        for secret in (policy.slug, policy.name, policy.endpoint_url, policy.organization.name, "policy_"):
            assert secret not in text


def test_wrong_content_type_is_refused(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = _start(lab1, session["id"])
    status, text = upload(started["upload"], BODY, content_type="text/html")
    assert status in (403, 415), text
    assert stored_keys(storage) == []


def test_body_larger_than_declared_is_refused(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = _start(lab1, session["id"])
    status, text = upload(started["upload"], BODY + b"x")
    assert status in (400, 413), text
    assert "EntityTooLarge" in text or "too_large" in text
    assert stored_keys(storage) == []


def test_expired_url_is_refused(storage, settings, pool, lab1, robot1):
    settings.VIDEO_URL_TTL_SECONDS = 1
    session = open_session(lab1)
    started = _start(lab1, session["id"])
    time.sleep(2.1)
    status, text = upload(started["upload"], BODY)
    assert status == 403, text
    assert "expired" in text
    assert stored_keys(storage) == []


def _flip_last(text: str) -> str:
    return text[:-1] + ("A" if text[-1] != "A" else "B")


def test_tampered_signature_is_refused(storage, pool, lab1, robot1):
    session = open_session(lab1)
    started = _start(lab1, session["id"])
    target = started["upload"]
    if target["method"] == "POST":
        fields = {**target["fields"], "x-amz-signature": _flip_last(target["fields"]["x-amz-signature"])}
        status, text = upload(target, BODY, fields=fields)
        assert "SignatureDoesNotMatch" in text
    else:
        status, text = upload(target, BODY, url=_flip_last(target["url"].rstrip("/")) + "/")
        assert "bad_signature" in text
    assert status == 403, text
    assert stored_keys(storage) == []


def test_url_of_one_session_cannot_write_another_sessions_object(storage, pool, lab1, lab2, robot1):
    """Lab 2 uses its own valid upload grant to write the object lab 1 was told to upload."""
    from tests.api.actors import register_robot

    register_robot(lab2)
    victim = _start(lab1, open_session(lab1)["id"])["upload"]
    attacker = _start(lab2, open_session(lab2)["id"])["upload"]
    if attacker["method"] == "POST":
        fields = {**attacker["fields"], "key": victim["fields"]["key"]}
        status, text = upload(attacker, BODY, fields=fields)
        assert "Policy Condition failed" in text
    else:
        victim_payload = urlparse(victim["url"]).path.rstrip("/").rsplit("/", 1)[1].rsplit(":", 1)[0]
        attacker_token = urlparse(attacker["url"]).path.rstrip("/").rsplit("/", 1)[1]
        forged = f"{victim_payload}:{attacker_token.rsplit(':', 1)[1]}"
        status, text = upload(attacker, BODY, url=f"/files/videos/upload/{forged}/")
        assert "bad_signature" in text
    assert status == 403, text
    assert stored_keys(storage) == []


@pytest.mark.parametrize("method", ["post", "get", "delete"])
def test_local_upload_accepts_only_put(local_storage, pool, lab1, robot1, client, method):
    session = open_session(lab1)
    started = _start(lab1, session["id"])
    response = getattr(client, method)(urlparse(started["upload"]["url"]).path)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert stored_keys(local_storage) == []


def test_local_files_are_not_served_in_s3_mode(s3_storage, client):
    response = client.get("/files/videos/anything/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
