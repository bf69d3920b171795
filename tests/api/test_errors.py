"""Every error is {"error": {"code", "message", "field"}} with a 4xx status."""

import pytest

from tests.api.actors import open_session


def assert_error(response, status: int, code: str, field=None):
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"}
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert error["field"] == field


def test_malformed_json(lab1):
    response = lab1.client.post("/api/v1/robots/", "{not json", content_type="application/json")
    assert_error(response, 400, "malformed_body")


def test_wrong_content_type(lab1):
    response = lab1.client.post("/api/v1/robots/", "name=x", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")


def test_oversize_body(settings, lab1):
    response = lab1.client.post(
        "/api/v1/robots/", '{"name": "' + "x" * 300_000 + '"}', content_type="application/json"
    )
    assert_error(response, 413, "body_too_large")


def test_unknown_endpoint_is_json_404(lab1):
    assert_error(lab1.get("/api/v1/nothing-here/"), 404, "not_found")


def test_method_not_allowed(lab1):
    assert_error(lab1.client.delete("/api/v1/sessions/"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "body, field, code",
    [
        (
            {"slot": "C", "progress": 1, "success": True, "steps": 1, "duration_s": 1},
            "slot",
            "invalid_choice",
        ),
        (
            {"slot": "A", "progress": 101, "success": True, "steps": 1, "duration_s": 1},
            "progress",
            "max_value",
        ),
        (
            {"slot": "A", "progress": -1, "success": True, "steps": 1, "duration_s": 1},
            "progress",
            "min_value",
        ),
        ({"slot": "A", "progress": 5, "steps": 1, "duration_s": 1}, "success", "required"),
        (
            {"slot": "A", "progress": "lots", "success": True, "steps": 1, "duration_s": 1},
            "progress",
            "invalid",
        ),
    ],
)
def test_episode_validation_names_the_field(lab1, robot1, pool, body, field, code):
    session = open_session(lab1)
    assert_error(lab1.post(f"/api/v1/sessions/{session['id']}/episodes/", body), 400, code, field)


def test_preference_needs_a_reason(lab1, robot1, pool):
    session = open_session(lab1)
    assert_error(
        lab1.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": ""}),
        400,
        "blank",
        "reason",
    )


def test_throttled_per_key(lab1, lab2):
    from arena.auth import ApiKeyThrottle

    original = ApiKeyThrottle.THROTTLE_RATES
    ApiKeyThrottle.THROTTLE_RATES = {**original, "api_key": "3/min"}
    try:
        codes = [lab1.get("/api/v1/me/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        response = lab1.get("/api/v1/me/")
        assert_error(response, 429, "throttled")
        assert int(response["Retry-After"]) > 0
        assert lab2.get("/api/v1/me/").status_code == 200  # another key has its own budget
    finally:
        ApiKeyThrottle.THROTTLE_RATES = original
