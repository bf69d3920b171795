"""Failed authentication is limited per client address: invalid API keys (then 429 ``too_many_failed_auth``,
valid keys from that address included, until the window ends) and failed web or admin sign-ins. The counts
live in the Django cache, shared by every process when REDIS_URL is set."""

from __future__ import annotations

from rest_framework.test import APIClient

from tests.web.conftest import PASSWORD, person

ATTACKER, NEIGHBOUR = "203.0.113.66", "198.51.100.20"


def test_invalid_keys_are_limited_per_address(settings, lab1):
    settings.ARENA_THROTTLE_FAILED_AUTH = "5/day"
    guesser = APIClient(REMOTE_ADDR=ATTACKER)
    codes = [
        guesser.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key pa_0123456789ab_guess{n}").status_code
        for n in range(7)
    ]
    assert codes == [401] * 5 + [429] * 2
    refused = guesser.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Api-Key {lab1.key}")
    assert refused.status_code == 429  # a right guess is not told apart from a wrong one
    error = refused.json()["error"]
    assert error["code"] == "too_many_failed_auth" and int(refused["Retry-After"]) > 0

    # A forged X-Forwarded-For does not buy a fresh budget (no trusted proxy is configured) ...
    forged = guesser.get(
        "/api/v1/me/", HTTP_AUTHORIZATION="Api-Key pa_0123456789ab_x", HTTP_X_FORWARDED_FOR=NEIGHBOUR
    )
    assert forged.status_code == 429
    # ... while another address, and anonymous reads without a key, are not affected.
    neighbour = APIClient(REMOTE_ADDR=NEIGHBOUR, HTTP_AUTHORIZATION=f"Api-Key {lab1.key}")
    assert neighbour.get("/api/v1/me/").status_code == 200
    assert guesser.get("/api/v1/leaderboard/").status_code == 200


def test_malformed_headers_count_as_failures(settings):
    settings.ARENA_THROTTLE_FAILED_AUTH = "2/day"
    guesser = APIClient(REMOTE_ADDR=ATTACKER)
    codes = [guesser.get("/api/v1/me/", HTTP_AUTHORIZATION="Bearer x").status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def _sign_in(client, username: str, password: str, path: str = "/accounts/login/"):
    return client.post(path, {"username": username, "password": password})


def test_failed_sign_ins_are_limited_per_address(settings, client, db):
    settings.ARENA_THROTTLE_LOGIN = "3/day"
    person("olivia")
    attacker = client.__class__(REMOTE_ADDR=ATTACKER)
    assert [_sign_in(attacker, "olivia", f"guess{n}").status_code for n in range(3)] == [200, 200, 200]
    blocked = _sign_in(attacker, "olivia", PASSWORD)
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) > 0
    assert "Too many failed sign-ins" in blocked.content.decode()
    assert "_auth_user_id" not in attacker.session  # the right password was not even checked

    elsewhere = client.__class__(REMOTE_ADDR=NEIGHBOUR)
    assert _sign_in(elsewhere, "olivia", PASSWORD).status_code == 302


def test_failed_admin_sign_ins_share_the_limit(settings, client, db):
    settings.ARENA_THROTTLE_LOGIN = "2/day"
    person("root", staff=True)
    attacker = client.__class__(REMOTE_ADDR=ATTACKER)
    assert _sign_in(attacker, "root", "guess", "/admin/login/").status_code == 200
    assert _sign_in(attacker, "root", "guess", "/accounts/login/").status_code == 200
    assert _sign_in(attacker, "root", PASSWORD, "/admin/login/").status_code == 429
