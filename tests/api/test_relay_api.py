"""The arena's internal relay API: only a relay's derived credential opens it; the incidents it stores are for
the policy's owner only, and name no session before the verdict."""

from __future__ import annotations

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from arena.models import EvaluationSession
from policy_server.relay_admission import ArenaLink
from policy_server.relay_token import TokenClaims, relay_api_credential
from tests.api.actors import activate, open_session, register_policy, report_both

TRACEBACK = 'Traceback (most recent call last):\n  File "/home/olivia/pi0/serve.py", line 7\nKeyError: "x"'


def relay_client(credential: str | None = None) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Relay {credential or relay_api_credential(settings.ARENA_RELAY_SECRET)}"
    )
    return client


def claim(session_id: str, slot: str = "A", lab_key: str = "", connection: str = "ab" * 16) -> dict:
    return {"session": session_id, "slot": slot, "lab_key": lab_key, "connection": connection}


def lab_prefix(lab) -> str:
    return lab.key.split("_")[1]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Relay wrong",
        "Relay " + "0" * 64,
        "Bearer {secret}",
        "Relay {secret}",  # the raw secret is not the credential
    ],
    ids=["missing", "garbage", "wrong-hex", "bearer-secret", "raw-secret"],
)
@pytest.mark.parametrize("path", ["admit", "status", "release", "incidents", "attach", "detach", "locate"])
def test_the_relay_api_refuses_anything_but_the_derived_credential(db, header, path):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header.format(secret=settings.ARENA_RELAY_SECRET))
    response = client.post(f"/api/v1/relay/{path}/", {}, format="json")
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] in ("not_authenticated", "authentication_failed")


def test_lab_and_owner_keys_do_not_open_the_relay_api(owner, lab1, pool, robot1):
    session = open_session(lab1)
    for actor in (owner, lab1):
        response = actor.post("/api/v1/relay/admit/", claim(session["id"], lab_key=lab_prefix(lab1)))
        assert response.status_code in (401, 403)


def test_admission_names_the_nonce_the_slots_policy_must_serve(owner, lab1, pool, robot1):
    """The relay learns at the handshake which ``arena_nonce`` the policy's metadata may carry (its
    organization's) and whether it must (only once the policy proved control of its endpoint)."""
    from django.utils import timezone

    from arena.models import Policy

    relay = relay_client()
    session = open_session(lab1)
    slug = EvaluationSession.objects.get(pk=session["id"]).policy_a.slug
    own = {owner.get(f"/api/v1/policies/{p.slug}/").json()["endpoint_nonce"] for p in pool}
    admitted = relay.post(
        "/api/v1/relay/admit/", claim(session["id"], lab_key=lab_prefix(lab1)), format="json"
    )
    assert admitted.status_code == 200, admitted.json()
    assert admitted.json()["endpoint_proof"] == {"required": False, "nonces": sorted(own)}
    Policy.objects.filter(slug=slug).update(endpoint_proven_at=timezone.now())
    relay.post("/api/v1/relay/release/", {"connections": ["ab" * 16]}, format="json")
    again = relay.post("/api/v1/relay/admit/", claim(session["id"], lab_key=lab_prefix(lab1)), format="json")
    assert again.status_code == 200 and again.json()["endpoint_proof"]["required"] is True


def test_admission_answers_by_session_state_and_key(owner, lab1, lab2, pool, robot1):
    relay = relay_client()
    session = open_session(lab1)
    admitted = relay.post(
        "/api/v1/relay/admit/", claim(session["id"], lab_key=lab_prefix(lab1)), format="json"
    )
    assert admitted.status_code == 200 and admitted.json()["lease_s"] > 0
    busy = relay.post(
        "/api/v1/relay/admit/",
        claim(session["id"], lab_key=lab_prefix(lab1), connection="cd" * 16),
        format="json",
    )
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "slot_in_use"
    foreign_key = relay.post(
        "/api/v1/relay/admit/", claim(session["id"], "B", lab_key=lab_prefix(lab2)), format="json"
    )
    assert foreign_key.status_code == 403 and foreign_key.json()["error"]["code"] == "key_revoked"
    status = relay.post(
        "/api/v1/relay/status/",
        {"connections": [claim(session["id"], lab_key=lab_prefix(lab1))]},
        format="json",
    )
    assert status.json() == {"closed": []}
    lab1.post(f"/api/v1/sessions/{session['id']}/abort/", {"reason": "e-stop", "fault": "robot"})
    status = relay.post(
        "/api/v1/relay/status/",
        {"connections": [claim(session["id"], lab_key=lab_prefix(lab1))]},
        format="json",
    )
    assert status.json() == {"closed": ["ab" * 16]}
    closed = relay.post(
        "/api/v1/relay/admit/", claim(session["id"], "B", lab_key=lab_prefix(lab1)), format="json"
    )
    assert closed.status_code == 409 and closed.json()["error"]["code"] == "session_closed"


def _incident(session_id: str, slot: str = "A", detail: str = TRACEBACK):
    return relay_client().post(
        "/api/v1/relay/incidents/",
        {"session": session_id, "slot": slot, "kind": "policy_error", "detail": detail},
        format="json",
    )


def test_incidents_are_shown_to_the_policys_owner_only(owner, outsider, lab1, anonymous, pool, robot1):
    session = open_session(lab1)
    stored = EvaluationSession.objects.select_related("policy_a", "lab").get(pk=session["id"])
    assert _incident(session["id"]).status_code == 201
    path = f"/api/v1/policies/{stored.policy_a.slug}/incidents/"
    seen = owner.get(path)
    assert seen.status_code == 200
    (incident,) = seen.json()
    assert incident["detail"] == TRACEBACK and incident["kind"] == "policy_error"
    assert incident["hour"].endswith(":00:00Z") and incident["session"] is None
    body = seen.content.decode()
    assert session["id"] not in body and stored.lab.name not in body and "Berkeley" not in body
    assert lab1.get(path).status_code == 403
    assert anonymous.get(path).status_code == 401
    assert outsider.get(path).status_code == 404
    # Nor does it show on the public policy or on the lab's session view.
    assert "/home/olivia" not in anonymous.get(f"/api/v1/policies/{stored.policy_a.slug}/").content.decode()
    assert "/home/olivia" not in lab1.get(f"/api/v1/sessions/{session['id']}/").content.decode()
    # Once the verdict is stored the owner may learn which session it was.
    report_both(lab1, session["id"])
    assert (
        lab1.post(f"/api/v1/sessions/{session['id']}/preference/", {"choice": "A", "reason": "r"}).status_code
        == 201
    )
    assert owner.get(path).json()[0]["session"] == session["id"]


def test_incidents_per_slot_are_bounded(owner, lab1, pool, robot1):
    session = open_session(lab1)
    answers = [_incident(session["id"], detail=f"error {n}").json()["stored"] for n in range(25)]
    assert answers == [True] * 20 + [False] * 5
    slug = EvaluationSession.objects.get(pk=session["id"]).policy_a.slug
    assert len(owner.get(f"/api/v1/policies/{slug}/incidents/").json()) == 20


def test_incident_text_over_8_kib_is_refused(owner, lab1, pool, robot1):
    session = open_session(lab1)
    assert _incident(session["id"], detail="x" * 8193).status_code == 400


def test_the_relays_report_reaches_the_owner(live_server, owner, lab1, pool, robot1):
    """The relay's own client (``ArenaLink.report_policy_error``, the relay's error hook) against the live
    arena: the text is cut to 8 KiB and shown to the owner."""
    session = open_session(lab1)
    link = ArenaLink(live_server.url, settings.ARENA_RELAY_SECRET)
    try:
        claims = TokenClaims(
            endpoint="ws://unused", session_id=session["id"], slot="B", expires_at=0, lab_key=""
        )
        link.report_policy_error(claims, "policy_error", TRACEBACK + "é" * 10_000)
        link.flush_reports()
    finally:
        link.close()
    slug = EvaluationSession.objects.get(pk=session["id"]).policy_b.slug
    (incident,) = owner.get(f"/api/v1/policies/{slug}/incidents/").json()
    assert incident["detail"].startswith(TRACEBACK)
    assert len(incident["detail"].encode()) <= 8192


def test_a_10_and_a_400_character_endpoint_give_tokens_of_one_length(owner, lab1, robot1):
    long_prefix = "ws://policy.example.org:8000/"
    endpoints = {"short-one": "ws://h0:80", "long-one": long_prefix + "p" * (400 - len(long_prefix))}
    assert sorted(len(e) for e in endpoints.values()) == [10, 400]
    for slug, endpoint in endpoints.items():
        register_policy(owner, slug, endpoint_url=endpoint, endpoint_api_key="k" * 100)
        activate(slug)
    session = open_session(lab1)
    tokens = [session["slots"][slot]["relay_url"].rsplit("/", 1)[1] for slot in "AB"]
    assert len(tokens[0]) == len(tokens[1])


def test_an_endpoint_and_key_too_long_for_a_token_are_refused(owner):
    response = owner.post(
        "/api/v1/policies/",
        {
            "slug": "too-long",
            "name": "Too long",
            "endpoint_url": "ws://policy.example.org:8000/" + "p" * 400,
            "endpoint_api_key": "k" * 200,
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "endpoint_too_long"
    assert response.json()["error"]["field"] == "endpoint_url"


def test_slot_b_token_outlives_the_lease_it_was_minted_under(settings, lab1, pool, robot1):
    """The arena checks the live lease at every handshake; the token's own expiry leaves room for the renewal
    slot A's episode report brings (one lease period), so slot B can still connect after it."""
    from policy_server.relay_token import open_token

    session = open_session(lab1)
    lease_end = EvaluationSession.objects.get(pk=session["id"]).lease_expires_at.timestamp()
    token = session["slots"]["B"]["relay_url"].rsplit("/", 1)[1]
    expires_at = open_token(token, key=settings.ARENA_RELAY_SECRET).expires_at
    period = settings.ARENA_SESSION_LEASE_MINUTES * 60
    assert lease_end + period - 5 <= expires_at <= lease_end + period + 5
