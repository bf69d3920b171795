"""Abuse: anonymous throttles, labs reaching for other labs' videos, conflicts of interest through
organization membership, hostile bodies, and the audit log of refused attempts."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from arena.auth import ApiKeyThrottle
from arena.models import ApiKey, EvaluationSession, KeyUse, Video
from arena.services.accounts import owner_get_or_create
from tests.api.actors import EPISODE, ROBOT, Actor, activate, open_session, register_policy, register_robot
from tests.videos.videohelpers import declaration, declare, submit_preference


def assert_error(response, status: int, code: str | None = None, field: str | None = None) -> None:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error["field"] == field, error


def test_anonymous_callers_are_throttled_per_address(monkeypatch, lab1):
    monkeypatch.setattr(ApiKeyThrottle, "THROTTLE_RATES", {"api_key": "100/min", "anon": "3/min"})
    here, elsewhere = APIClient(REMOTE_ADDR="203.0.113.7"), APIClient(REMOTE_ADDR="198.51.100.9")
    codes = [here.get("/api/v1/leaderboard/").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    throttled = here.get("/api/v1/policies/")
    assert_error(throttled, 429, "throttled")
    assert int(throttled["Retry-After"]) > 0
    assert elsewhere.get("/api/v1/leaderboard/").status_code == 200  # another address has its own budget
    assert lab1.get("/api/v1/me/").status_code == 200  # and keys have theirs


def test_a_lab_cannot_touch_another_labs_videos(local_storage, pool, lab1, lab2, robot1):
    register_robot(lab2)
    session = open_session(lab1)
    video = declare(lab1, session["id"]).json()
    assert_error(
        lab2.post(f"/api/v1/sessions/{session['id']}/videos/", declaration(camera="wrist")),
        404,
        "session_not_found",
    )
    assert_error(lab2.post(f"/api/v1/videos/{video['id']}/finish/"), 404, "video_not_found")
    submit_preference(lab1, session["id"])
    assert_error(lab2.get(f"/api/v1/videos/{video['id']}/"), 404, "video_not_found")
    assert Video.objects.count() == 1 and Video.objects.get().state == "pending"


@pytest.fixture
def local_storage(settings, tmp_path):
    for name in ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        setattr(settings, name, "")
    settings.VIDEO_DIR = tmp_path / "videos"


@pytest.mark.parametrize("stake", ["owner in the lab's organization", "owner in the lab"])
def test_a_lab_never_evaluates_policies_its_people_own(stake, owner, outsider, lab1, robot1, pool):
    lab = ApiKey.objects.get(prefix=lab1.key.split("_")[1]).lab
    olivia = pool[0].owner
    if stake == "owner in the lab's organization":
        owner_get_or_create(username=olivia.username, organization=lab.organization.name)
    else:
        lab.members.add(olivia)
    assert_error(lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "t"}), 409, "no_eligible_pair")
    for slug in ("oscar-one", "oscar-two"):
        register_policy(outsider, slug)
        activate(slug)
    for _ in range(3):
        session = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "t"})
        assert session.status_code == 201
    assert set(EvaluationSession.objects.values_list("policy_a__owner__username", flat=True)) == {"oscar"}
    assert set(EvaluationSession.objects.values_list("policy_b__owner__username", flat=True)) == {"oscar"}


WRONG_TYPES = [["a"], {"a": 1}, True, 12345, 1.5, "text"]
BODIES = {
    "/api/v1/robots/": {**ROBOT, "name": "franka-2"},
    "/api/v1/sessions/": {"robot": "franka-1", "task": "t"},
    "/api/v1/sessions/{sid}/episodes/": {**EPISODE, "slot": "A", "failure_reason": ""},
    "/api/v1/sessions/{sid}/preference/": {"choice": "A", "reason": "r", "valid": True},
    "/api/v1/sessions/{sid}/abort/": {"reason": "r", "fault": "robot"},
    "/api/v1/sessions/{sid}/videos/": declaration(),
}


def _same_json_type(a, b) -> bool:
    kind = {bool: "bool", int: "number", float: "number", str: "str", list: "list", dict: "dict"}
    return kind[type(a)] == kind[type(b)]


def test_a_wrong_type_in_any_field_is_refused_naming_the_field(local_storage, lab1, robot1, pool):
    session = open_session(lab1)
    refused = 0
    for path, body in BODIES.items():
        path = path.format(sid=session["id"])
        for field, good in body.items():
            for wrong in WRONG_TYPES:
                if _same_json_type(wrong, good) or (isinstance(good, float) and isinstance(wrong, int)):
                    continue
                response = lab1.post(path, {**body, field: wrong})
                assert_error(response, 400, field=field)
                refused += 1
    assert refused > 100
    assert EvaluationSession.objects.get(pk=session["id"]).state == "assigned"
    assert not Video.objects.exists()


@pytest.mark.parametrize(
    "body, code",
    [
        ("[" * 100_000 + "]" * 100_000, "malformed_body"),  # deeper than Python's JSON decoder recurses
        ('{"robot": "franka-1", "task": "a\\u0000b"}', "null_characters_not_allowed"),
        ('{"robot": "franka-1", "task": "a\\ud800b"}', "surrogate_characters_not_allowed"),
        ('{"robot": "franka-1", "task": "' + "é" * 501 + '"}', "max_length"),
        ('["robot", "franka-1"]', None),
        ("null", None),
        ('"franka-1"', None),
        ('{"robot": "franka-1", "task": "t"', "malformed_body"),
        ("\xff\xfe{}", "malformed_body"),
    ],
)
def test_hostile_bodies_are_refused_with_a_clear_error(lab1, robot1, pool, body, code):
    response = lab1.client.post(
        "/api/v1/sessions/",
        body.encode("utf-8", "surrogatepass") if "\xff" not in body else body.encode("latin-1"),
        content_type="application/json",
    )
    assert_error(response, 400, code)
    assert not EvaluationSession.objects.exists()


def test_unicode_round_trips_unchanged(lab1, robot1, pool):
    task = "放 the 🧊 in the bowl — ñ"
    response = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": task})
    assert response.status_code == 201 and response.json()["task"] == task


@pytest.mark.parametrize(
    "header", ["Api-Key pa_0000\x00aaaaaaa_secret", "Api-Key pa_é_x", "Bearer x", "Api-Key "]
)
def test_malformed_keys_are_refused(anonymous, header):
    response = anonymous.client.get("/api/v1/me/", HTTP_AUTHORIZATION=header)
    assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == "Api-Key"


def _uses(actor: Actor) -> list[tuple[str, str, int]]:
    key = ApiKey.objects.get(prefix=actor.key.split("_")[1])
    return list(KeyUse.objects.filter(api_key=key).order_by("pk").values_list("method", "path", "status"))


def test_refused_attempts_are_in_the_audit_log(monkeypatch, owner, lab1, lab2, robot1, pool):
    session = open_session(lab1)
    before = len(_uses(lab1))
    assert owner.get("/api/v1/sessions/").status_code == 403  # a refused read
    assert owner.post("/api/v1/robots/", ROBOT, idem="k1").status_code == 403  # refused, inside a transaction
    assert lab2.get(f"/api/v1/sessions/{session['id']}/").status_code == 404  # a read: not logged
    assert (
        lab2.post(f"/api/v1/sessions/{session['id']}/abort/", {"reason": "r", "fault": "robot"}).status_code
        == 404
    )
    assert _uses(owner)[-2:] == [("GET", "/api/v1/sessions/", 403), ("POST", "/api/v1/robots/", 403)]
    assert _uses(lab2)[-1] == ("POST", f"/api/v1/sessions/{session['id']}/abort/", 404)

    monkeypatch.setattr(ApiKeyThrottle, "THROTTLE_RATES", {"api_key": "1/min", "anon": "100/min"})
    cache.clear()
    assert lab1.get("/api/v1/robots/").status_code == 200
    assert lab1.get("/api/v1/robots/").status_code == 429
    assert _uses(lab1)[before:] == [("GET", "/api/v1/robots/", 429)]

    monkeypatch.setattr(ApiKeyThrottle, "THROTTLE_RATES", {"api_key": "100/min", "anon": "100/min"})
    prefix = lab1.key.split("_")[1]
    wrong_secret = APIClient(HTTP_AUTHORIZATION=f"Api-Key pa_{prefix}_not-the-secret")
    assert wrong_secret.get("/api/v1/me/").status_code == 401
    ApiKey.objects.filter(prefix=prefix).update(revoked_at=timezone.now())
    assert lab1.post("/api/v1/robots/", ROBOT).status_code == 401  # the revoked key, still in use
    assert _uses(lab1)[-2:] == [("GET", "/api/v1/me/", 401), ("POST", "/api/v1/robots/", 401)]
    unknown = APIClient(HTTP_AUTHORIZATION="Api-Key pa_0123456789ab_whatever")
    count = KeyUse.objects.count()
    assert unknown.post("/api/v1/robots/", ROBOT, format="json").status_code == 401
    assert KeyUse.objects.count() == count  # no key to attribute it to
