"""Double-blind: before the preference no evaluator-facing response identifies a policy."""

import base64
import json
import re

from arena.models import EvaluationSession, Policy
from tests.api.actors import EPISODE, open_session


def identifying_strings(policies) -> set[str]:
    out = set()
    for p in policies:
        host_port = re.match(r"wss?://([^/:]+):?(\d+)?", p.endpoint_url)
        out |= {
            str(p.pk) if p.pk > 99 else f'"id": {p.pk}',
            p.slug,
            p.name,
            p.owner.username,
            p.organization.name,
            p.organization.slug,
            p.endpoint_url,
            host_port.group(1),
        }
        if host_port.group(2):
            out.add(host_port.group(2))
    return {s for s in out if s}


def _appears(secret: str, text: str) -> bool:
    """Whether ``secret`` is in ``text``; a number (an id, a port) only as a number of its own, not as digits
    inside a token, a UUID or a timestamp, where random characters spell it by chance once ids grow."""
    if not secret.isdigit():
        return secret in text
    return re.search(rf"(?<![0-9A-Za-z_.-]){secret}(?![0-9A-Za-z_.-])", text) is not None


def leaks(response, secrets: set[str]) -> list[str]:
    text = response.content.decode()
    headers = " ".join(f"{k}: {v}" for k, v in response.headers.items())
    found = [s for s in secrets if _appears(s, text) or _appears(s, headers)]
    # Relay tokens are opaque: decoding them reveals nothing either (their bytes are random: only names and
    # addresses are looked for there, not bare numbers).
    for url in re.findall(r"ws://[^\"]+", text):
        token = url.rsplit("/", 1)[-1]
        padded = token + "=" * (-len(token) % 4)
        try:
            raw = base64.urlsafe_b64decode(padded).decode("latin-1")
        except ValueError:
            continue
        found += [s for s in secrets if not s.isdigit() and s in raw]
    return found


def test_every_evaluator_response_before_submission_is_blind(lab1, robot1, pool):
    secrets = identifying_strings(Policy.objects.select_related("organization", "owner"))
    responses = []
    created = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "open the drawer"})
    responses.append(created)
    sid = created.json()["id"]
    responses.append(lab1.get(f"/api/v1/sessions/{sid}/"))
    responses.append(lab1.get("/api/v1/sessions/"))
    responses.append(lab1.post(f"/api/v1/sessions/{sid}/episodes/", {**EPISODE, "slot": "A"}))
    responses.append(lab1.post(f"/api/v1/sessions/{sid}/episodes/", {**EPISODE, "slot": "A"}))  # 409
    responses.append(lab1.post(f"/api/v1/sessions/{sid}/preference/", {"choice": "A", "reason": "x"}))  # 409
    responses.append(
        lab1.post(f"/api/v1/sessions/{sid}/episodes/", {**EPISODE, "slot": "B", "progress": 101})
    )
    responses.append(lab1.post(f"/api/v1/sessions/{sid}/episodes/", {**EPISODE, "slot": "B"}))
    responses.append(lab1.get("/api/v1/sessions/?state=running"))
    for response in responses:
        assert response.status_code < 500
        assert leaks(response, secrets) == [], (response.request["PATH_INFO"], leaks(response, secrets))
    # The preference response reveals the pair...
    done = lab1.post(f"/api/v1/sessions/{sid}/preference/", {"choice": "A", "reason": "cleaner grasp"})
    session = EvaluationSession.objects.get(pk=sid)
    assert session.policy_a.slug in done.content.decode() and session.policy_b.slug in done.content.decode()
    # ...but never the endpoints.
    assert session.policy_a.endpoint_url not in done.content.decode()


def test_aborted_and_expired_sessions_stay_blind(lab1, robot1, pool):
    secrets = identifying_strings(Policy.objects.select_related("organization", "owner"))
    session = open_session(lab1)
    aborted = lab1.post(
        f"/api/v1/sessions/{session['id']}/abort/", {"reason": "robot e-stop", "fault": "robot"}
    )
    assert leaks(aborted, secrets) == []
    assert leaks(lab1.get(f"/api/v1/sessions/{session['id']}/"), secrets) == []


def test_session_view_has_only_the_documented_keys(lab1, robot1, pool):
    body = open_session(lab1)
    assert set(body) == {
        "id",
        "state",
        "task",
        "task_category",
        "scene_notes",
        "robot",
        "created_at",
        "lease_expires_at",
        "ended_at",
        "slots",
        "preference",
        "abort",
        "reveal",
    }
    assert set(body["slots"]["A"]) == {"requirements", "relay_url", "episode", "videos", "trajectory"}
    assert json.dumps(body["slots"]["A"]["requirements"]).count("acme") == 0
