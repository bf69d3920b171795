"""Blinding audit: before the preference, nothing an evaluator receives identifies a policy.

For every session state before submission (assigned, running, aborted, expired) a lab calls every
evaluator-facing endpoint, with valid and invalid input, and its bodies, headers and errors are searched for
each policy's database id, slug, name, owner, organization, endpoint host and port, endpoint key and
description. Relay tokens are opaque without the server's secret. Every frame reaching a lab through a real
relay (metadata, replies, reset confirmations, error text, close codes and reasons) carries nothing but run
requirements and actions, even from a policy that names itself everywhere it can.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from arena.models import EvaluationSession, Organization, Policy
from arena.services.policies import policy_check_record
from policy_server import wire
from policy_server.base import BasePolicy
from policy_server.check import dummy_observation, requirements_from_metadata
from policy_server.client import PolicyClient
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_frames import REQUIREMENT_KEYS
from policy_server.relay_token import TokenInvalid, open_token
from policy_server.server import PROTOCOL_KEY, serve_in_thread
from tests.api.actors import DROID_REQS, EPISODE, Actor, make_actor, register_robot
from tests.videos.videohelpers import declaration

# Three policies whose every identifying detail is distinctive enough to be searched for as text.
POLICIES = [
    {
        "pk": 918273,
        "slug": "zephyr-vla-7b",
        "name": "Zephyr VLA 7B",
        "description": "Zephyr, trained by Quasar",
        "endpoint_url": "ws://zephyr-gpu.quasar.example:47213",
        "endpoint_api_key": "sk-zephyr-1f9e",
    },
    {
        "pk": 827364,
        "slug": "orion-diffusion",
        "name": "Orion Diffusion Policy",
        "description": "Orion",
        "endpoint_url": "ws://10.77.31.9:51877/orion/v2",
        "endpoint_api_key": "",
    },
    {
        "pk": 736455,
        "slug": "nimbus-act",
        "name": "Nimbus ACT",
        "description": "Nimbus",
        "endpoint_url": "wss://[fd00::7a]:39541",
        "endpoint_api_key": "sk-nimbus-77c2",
    },
]
OWNER, ORGANIZATION = "quintessa", "Quasar Robotics Consortium"
STATES_BEFORE_SUBMISSION = ("assigned", "running", "aborted", "expired")


@dataclass
class Secret:
    """A string that must never reach an evaluator. Numbers only count as whole tokens (not inside a UUID,
    a timestamp's microseconds or a longer number)."""

    text: str
    whole_token: bool = False

    def found_in(self, haystack: str) -> bool:
        if self.whole_token:
            return re.search(rf"(?<![0-9A-Za-z]){re.escape(self.text)}(?![0-9A-Za-z])", haystack) is not None
        return self.text.lower() in haystack.lower()


def identifying_secrets() -> list[Secret]:
    found: list[Secret] = []
    for p in Policy.objects.select_related("organization", "owner").filter(
        pk__in=[d["pk"] for d in POLICIES]
    ):
        host_port = re.match(r"wss?://(\[[^\]]+\]|[^/:]+)(?::(\d+))?", p.endpoint_url)
        found += [Secret(str(p.pk), whole_token=True), Secret(host_port.group(2), whole_token=True)]
        found += [
            Secret(s)
            for s in (
                p.slug,
                p.name,
                p.description,
                p.owner.username,
                p.organization.name,
                p.organization.slug,
                p.endpoint_url,
                host_port.group(1).strip("[]"),
            )
        ]
        if p.endpoint_api_key:
            found.append(Secret(p.endpoint_api_key))
    found += [Secret(word) for word in ("zephyr", "orion", "nimbus", "quasar", "quintessa")]
    return found


def _decoded_tokens(text: str) -> list[str]:
    """Relay tokens found in a body, base64-decoded (what a curious evaluator would try)."""
    decoded = []
    for token in re.findall(r"wss?://[^\"/]+/([A-Za-z0-9_-]{20,})", text):
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded.append(raw.decode("latin-1"))
    return decoded


def leaks(response, secrets: list[Secret]) -> list[str]:
    text = response.content.decode()
    headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    haystacks = [text, headers, *_decoded_tokens(text)]
    return sorted({s.text for s in secrets for h in haystacks if s.found_in(h)})


@pytest.fixture
def blind_pool(db) -> list[Policy]:
    owner = make_actor("quintessa", owner=OWNER, organization=ORGANIZATION)
    organization = Organization.objects.get(name=ORGANIZATION)
    user = organization.members.get(username=OWNER)
    policies = []
    for spec in POLICIES:
        policy = Policy.objects.create(organization=organization, owner=user, license="MIT", **spec)
        policies.append(policy_check_record(policy=policy, ok=True, latency_ms=9.0, requirements=DROID_REQS))
    assert owner.get("/api/v1/policies/?mine=1").status_code == 200
    return policies


def _served_pool_session(endpoints: dict[str, tuple[str, str]]) -> tuple[Actor, dict]:
    """Quintessa's active policies, ``slug -> (name, endpoint URL)``, and a Berkeley lab session over them;
    returns the lab and the session's body."""
    make_actor("quintessa", owner=OWNER, organization=ORGANIZATION)
    organization = Organization.objects.get(name=ORGANIZATION)
    for slug, (name, url) in endpoints.items():
        policy = Policy.objects.create(
            slug=slug,
            name=name,
            organization=organization,
            owner=organization.members.get(),
            endpoint_url=url,
        )
        policy_check_record(policy=policy, ok=True, requirements=DROID_REQS)
    lab = make_actor("lab", lab="Berkeley Lab", organization="Berkeley")
    register_robot(lab)
    return lab, lab.post("/api/v1/sessions/", {"robot": "franka-1", "task": "open the drawer"}).json()


def _session_in(lab: Actor, state: str) -> tuple[dict, list]:
    """A session of ``lab`` brought to ``state``; returns its first body and the responses on the way."""
    created = lab.post("/api/v1/sessions/", {"robot": "franka-1", "task": "stack the cups"})
    assert created.status_code == 201, created.json()
    sid = created.json()["id"]
    on_the_way = [created, lab.post(f"/api/v1/sessions/{sid}/videos/", declaration())]
    if state in ("running", "expired"):
        on_the_way.append(lab.post(f"/api/v1/sessions/{sid}/episodes/", {**EPISODE, "slot": "A"}))
    if state == "aborted":
        on_the_way.append(
            lab.post(f"/api/v1/sessions/{sid}/abort/", {"reason": "gripper jam", "fault": "robot"})
        )
    if state == "expired":
        EvaluationSession.objects.filter(pk=sid).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
    return created.json(), on_the_way


def _every_evaluator_call(lab: Actor, other_lab: Actor, session: dict, video_id: str) -> list:
    """Every evaluator-facing endpoint, with valid and invalid input; none completes the session."""
    sid = session["id"]
    base = f"/api/v1/sessions/{sid}"
    return [
        lab.get(f"{base}/"),
        lab.get("/api/v1/sessions/"),
        *(lab.get(f"/api/v1/sessions/?state={state}") for state in EvaluationSession.State.values),
        lab.get("/api/v1/sessions/?state=bogus"),
        lab.post(f"{base}/episodes/", {**EPISODE, "slot": "A"}, idem=f"ep-{sid}"),
        lab.post(f"{base}/episodes/", {**EPISODE, "slot": "A"}, idem=f"ep-{sid}"),  # replayed
        lab.post(
            f"{base}/episodes/", {**EPISODE, "slot": "A", "progress": 1}, idem=f"ep-{sid}"
        ),  # key reused
        lab.post(f"{base}/episodes/", {**EPISODE, "slot": "C", "progress": 101}),
        lab.post(f"{base}/preference/", {"choice": "A", "reason": "cleaner"}),
        lab.post(f"{base}/preference/", {"choice": "maybe", "reason": ""}),
        lab.post(f"{base}/abort/", {"reason": "", "fault": "nobody"}),
        lab.post(f"{base}/videos/", declaration()),
        lab.post(f"{base}/videos/", declaration(camera="wrist", size=0)),
        lab.post(f"{base}/videos/", declaration(size=12)),  # declared differently
        lab.post(f"/api/v1/videos/{video_id}/finish/"),
        lab.get(f"/api/v1/videos/{video_id}/"),
        other_lab.get(f"{base}/"),
        other_lab.post(f"{base}/preference/", {"choice": "A", "reason": "r"}),
        other_lab.post(f"/api/v1/videos/{video_id}/finish/"),
        other_lab.get(f"/api/v1/videos/{video_id}/"),
        lab.get("/api/v1/me/"),
        lab.get("/api/v1/keys/"),
        lab.get("/api/v1/robots/"),
        lab.get(f"{base}/nothing/"),
    ]


@pytest.mark.parametrize("state", STATES_BEFORE_SUBMISSION)
def test_no_evaluator_response_identifies_a_policy(state, blind_pool, lab1, lab2, robot1):
    register_robot(lab2)
    secrets = identifying_secrets()
    session, responses = _session_in(lab1, state)
    video_id = responses[1].json()["id"]
    responses += _every_evaluator_call(lab1, lab2, session, video_id)
    if state in ("assigned", "running"):
        responses.append(
            lab1.post(f"/api/v1/sessions/{session['id']}/abort/", {"reason": "done", "fault": "operator"})
        )
    assert EvaluationSession.objects.get(pk=session["id"]).state != "submitted"
    assert {r.status_code for r in responses} >= {200, 201, 400, 404, 409}
    for response in responses:
        assert response.status_code < 500
        assert leaks(response, secrets) == [], (response.request["PATH_INFO"], response.content[:300])
    # The audit can see a leak: the answer to a preference does name the pair.
    fresh, _ = _session_in(lab1, "assigned")
    for slot in ("A", "B"):
        lab1.post(f"/api/v1/sessions/{fresh['id']}/episodes/", {**EPISODE, "slot": slot})
    revealed = lab1.post(f"/api/v1/sessions/{fresh['id']}/preference/", {"choice": "A", "reason": "r"})
    assert revealed.status_code == 201 and leaks(revealed, secrets)


def test_relay_tokens_are_opaque_without_the_servers_secret(settings, blind_pool, lab1, robot1):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 10
    tokens = []
    for _ in range(6):
        session = lab1.post("/api/v1/sessions/", {"robot": "franka-1", "task": "wipe the table"}).json()
        tokens += [session["slots"][slot]["relay_url"].rsplit("/", 1)[-1] for slot in ("A", "B")]
    endpoints = {open_token(t, key=settings.ARENA_RELAY_SECRET).endpoint for t in tokens}
    assert endpoints <= {p["endpoint_url"] for p in POLICIES} and len(endpoints) >= 2
    # The same length whatever the endpoint (its length would tell policies apart).
    assert len({len(t) for t in tokens}) == 1
    for token in tokens:
        with pytest.raises(TokenInvalid):
            open_token(token, key="another-relay-secret-of-32-bytes!")
        middle = len(token) // 2
        altered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
        with pytest.raises(TokenInvalid):
            open_token(altered, key=settings.ARENA_RELAY_SECRET)
        with pytest.raises(TokenInvalid):
            open_token(token[:-10], key=settings.ARENA_RELAY_SECRET)
    secrets = identifying_secrets()
    for raw in (base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)).decode("latin-1") for t in tokens):
        assert not [s.text for s in secrets if s.found_in(raw)]


class SelfNamingPolicy(BasePolicy):
    """A policy whose metadata names it, its checkpoint, owner and host, also inside requirement keys."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self._metadata = metadata

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        if obs.get("prompt") == "explode":
            raise RuntimeError(f"{self._metadata.get('policy_name')} at {self._metadata.get('host')} crashed")
        return {
            "actions": np.zeros((10, 8)),
            "whoami": self._metadata.get("policy_name", ""),
            "diffusion_steps": 17,
            "server_timing": {"act_model_ms": 12.3456, "zephyr_ms": 1.0},
        }


IDENTIFYING_METADATA = {
    "policy_name": "Zephyr VLA 7B",
    "model": "zephyr-vla-7b",
    "checkpoint": "gs://quasar-models/zephyr/step-90000",
    "owner": OWNER,
    "organization": ORGANIZATION,
    "host": "zephyr-gpu.quasar.example",
}
SMUGGLED = {
    "action_space": "Zephyr VLA 7B",
    "image_resolution": [224, "zephyr"],
    "needs_session_id": "quasar",
}


def test_metadata_through_the_relay_carries_requirements_only(arena_relay):
    requirements = {k: v for k, v in DROID_REQS.items() if k in REQUIREMENT_KEYS}
    self_naming = SelfNamingPolicy({**requirements, **IDENTIFYING_METADATA, **SMUGGLED})
    plain = SelfNamingPolicy(dict(requirements))
    with serve_in_thread(self_naming) as named, serve_in_thread(plain) as other:
        lab, session = _served_pool_session(
            {"zephyr-vla-7b": ("zephyr-vla-7b", named.url), "plain-policy": ("plain-policy", other.url)}
        )
        seen = {}
        for slot in ("A", "B"):
            with PolicyClient(session["slots"][slot]["relay_url"], connect_timeout=10) as client:
                seen[slot] = dict(client.metadata)
    named_slot = (
        "A" if EvaluationSession.objects.get(pk=session["id"]).policy_a.slug == "zephyr-vla-7b" else "B"
    )
    for received in seen.values():
        assert set(received) <= REQUIREMENT_KEYS | {PROTOCOL_KEY}, received
        text = wire.packb(received).decode("latin-1").lower()
        assert not [w for w in ("zephyr", "quasar", OWNER, "gs://", "127.0.0.1") if w in text], received
        assert received["action_dim"] == DROID_REQS["action_dim"]
    # What survives of the self-naming policy's metadata: its well-formed requirements, nothing else.
    assert seen[named_slot] == {
        **{k: v for k, v in requirements.items() if k not in SMUGGLED},
        PROTOCOL_KEY: 1,
    }


def _every_frame_through(relay_url: str) -> list[str]:
    """Every frame a lab receives on one relayed connection, as text: metadata, two replies, a reset answer,
    the answer to an observation that makes the policy raise, and the closing code and reason."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    obs = {**dummy_observation(requirements_from_metadata({})), "prompt": "open the drawer"}
    received: list[str | bytes] = []
    with connect(relay_url, open_timeout=10) as ws:
        received.append(ws.recv(timeout=10))
        for request in (obs, obs, {"endpoint": "reset"}, {**obs, "prompt": "explode"}):
            ws.send(wire.packb({"endpoint": "infer", **request}))
            try:
                received.append(ws.recv(timeout=10))
            except ConnectionClosed:
                break
        try:
            while True:
                received.append(ws.recv(timeout=10))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            received.append(f"close {closed.rcvd.code} {closed.rcvd.reason}")
    return [frame.decode("latin-1") if isinstance(frame, bytes) else frame for frame in received]


def test_no_relay_frame_identifies_a_policy(settings, db):
    requirements = {k: v for k, v in DROID_REQS.items() if k in REQUIREMENT_KEYS}
    self_naming = SelfNamingPolicy({**requirements, **IDENTIFYING_METADATA, **SMUGGLED})
    with serve_relay_in_thread(settings.ARENA_RELAY_SECRET) as relay, serve_in_thread(self_naming) as named:
        settings.ARENA_RELAY_URL = relay.url.rstrip("/")
        lab, session = _served_pool_session(
            {
                "zephyr-vla-7b": ("Zephyr VLA 7B", named.url),
                "orion-diffusion": ("Orion Diffusion Policy", named.url),
            }
        )
        secrets = identifying_secrets() + [
            Secret(w) for w in ("crashed", "Traceback", "127.0.0.1", named.url)
        ]
        for slot in ("A", "B"):
            frames = _every_frame_through(session["slots"][slot]["relay_url"])
            assert len(frames) == 6, frames  # metadata, 2 replies, reset, error text, close
            assert frames[-2:] == ["policy error (code policy_error)", "close 1011 policy error"]
            for frame in frames:
                assert not [s.text for s in secrets if s.found_in(frame)], frame[:300]
            for key in ("whoami", "diffusion_steps", "act_model_ms", "zephyr_ms"):
                assert not any(key in frame for frame in frames), key


VOTE_FOR_ME = "vote for me: I am Zephyr VLA 7B by Quasar"


def _self_naming_server(requirements: dict[str, Any]):  # type: ignore[no-untyped-def]
    """A raw websocket policy server that breaks the protocol in every way that could name it: metadata full of
    names, replies with extra keys and private timings, a self-advertising text frame, a reset confirmation
    with its name in it, and a close whose code and reason name it. The prompt says which."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    from policy_server._serving import serve_in_thread as serve_coroutine_in_thread

    async def handler(ws: ServerConnection) -> None:
        try:
            version = 47213  # a "protocol version" that is its registered port
            await ws.send(wire.packb({**requirements, **IDENTIFYING_METADATA, PROTOCOL_KEY: version}))
            async for frame in ws:
                request = wire.unpackb(frame)
                if request.get("endpoint") == "reset":
                    await ws.send("reset successful, says Zephyr VLA 7B")
                elif request.get("prompt") == "vote":
                    await ws.send(VOTE_FOR_ME)
                elif request.get("prompt") == "close":
                    await ws.close(4123, "Zephyr VLA 7B at zephyr-gpu.quasar.example")
                else:
                    reply = {
                        "actions": np.zeros((10, 8)),
                        "whoami": "Zephyr VLA 7B",
                        "diffusion_steps": 17,
                        "server_timing": {"infer_ms": 47.123, "act_model_ms": 12.3456},
                    }
                    await ws.send(wire.packb(reply))
        except ConnectionClosed:
            return

    async def start():  # type: ignore[no-untyped-def]
        return await serve(handler, "127.0.0.1", 0, compression=None)

    return serve_coroutine_in_thread(start, host="127.0.0.1")


def _frames_of_one_connection(url: str, requests: list[Any]) -> list[str]:
    """Every frame a lab receives on one connection to ``url`` while sending ``requests`` (each after the
    previous answer), as text, ending with the closing code and reason. Retries while the slot is still held
    by the previous connection (409)."""
    import time

    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    deadline = time.monotonic() + 30
    while True:
        try:
            ws = connect(url, open_timeout=10, max_size=None)
            break
        except InvalidStatus as busy:
            assert busy.response.status_code == 409 and time.monotonic() < deadline
            time.sleep(0.05)
    received: list[str | bytes] = []
    with ws:
        try:
            received.append(ws.recv(timeout=10))
            for request in requests:
                ws.send(request if isinstance(request, bytes) else wire.packb(request))
                received.append(ws.recv(timeout=10))
            ws.close()
        except ConnectionClosed:
            pass
    assert ws.protocol.close_rcvd is not None
    received.append(f"close {ws.protocol.close_rcvd.code} {ws.protocol.close_rcvd.reason}")
    return [frame.decode("latin-1") if isinstance(frame, bytes) else frame for frame in received]


def test_no_relay_frame_identifies_a_policy_that_breaks_the_protocol(arena_relay):
    """Every kind of frame the relay can send a lab, provoked from both sides (the policy's chatty replies,
    text frames, reset text and close; the lab's unknown endpoint and oversize frame; the policy gone), on a
    real session: none carries a name, a number of the policy's choosing, or anything but requirements,
    actions, a coarse timing and fixed error texts."""
    requirements = {k: v for k, v in DROID_REQS.items() if k in REQUIREMENT_KEYS}
    obs = {**dummy_observation(requirements_from_metadata({})), "prompt": "open the drawer"}
    with _self_naming_server(requirements) as named:
        lab, session = _served_pool_session(
            {
                "zephyr-vla-7b": ("Zephyr VLA 7B", named.url),
                "orion-diffusion": ("Orion Diffusion Policy", named.url),
            }
        )
        url = session["slots"]["A"]["relay_url"]
        too_big = {**obs, "observation/exterior_image_1_left": np.zeros((1024, 1024, 3), np.uint8)}
        connections = {
            "chatty": _frames_of_one_connection(url, [obs, obs, {"endpoint": "reset"}]),
            "vote": _frames_of_one_connection(url, [{**obs, "prompt": "vote"}]),
            "close": _frames_of_one_connection(url, [{**obs, "prompt": "close"}]),
            "unknown endpoint": _frames_of_one_connection(url, [{**obs, "endpoint": "whoami"}]),
            "oversize": _frames_of_one_connection(url, [wire.packb(too_big)]),
        }
        named.stop()
        connections["gone"] = _frames_of_one_connection(url, [])
    port = named.url.rsplit(":", 1)[1]
    secrets = identifying_secrets() + [
        Secret(text) for text in ("vote for me", "says", "Traceback", "127.0.0.1", named.url, "act_model")
    ]
    # In text (error texts, close reasons); numbers inside binary frames are checked by decoding them below.
    secrets.append(Secret(port, whole_token=True))
    expected_ends = {
        "chatty": ["policy error (code policy_error)", "close 1011 policy error"],
        "vote": ["policy error (code policy_error)", "close 1011 policy error"],
        "close": ["close 1014 policy unavailable"],
        "unknown endpoint": ["close 1008 invalid frame (unknown_endpoint)"],
        # websockets' reason names the session's bound: a function of the requirements the lab already has.
        "oversize": [
            f"close 1009 frame with {len(wire.packb(too_big))} bytes exceeds limit of {2 * 224 * 224 * 3 + 2**20} bytes"
        ],
        "gone": ["close 1014 policy unavailable"],
    }
    for scenario, frames in connections.items():
        assert frames[-len(expected_ends[scenario]) :] == expected_ends[scenario], (scenario, frames)
        for frame in frames:
            assert not [s.text for s in secrets if s.found_in(frame)], (scenario, frame[:300])
        for key in ("whoami", "diffusion_steps", "zephyr"):
            assert not any(key in frame.lower() for frame in frames), (scenario, key)
    metadata = wire.unpackb(connections["chatty"][0].encode("latin-1"))
    assert metadata == {**requirements, PROTOCOL_KEY: 1}
    replies = [wire.unpackb(frame.encode("latin-1")) for frame in connections["chatty"][1:3]]
    assert all(
        set(r) == {"actions", "server_timing"} and r["server_timing"] == {"infer_ms": 50.0} for r in replies
    )
