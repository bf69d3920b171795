"""Helpers for API tests. Named actors (see conftest.py): a policy owner (Olivia, Acme Robotics) with three active policies, two
evaluator labs (Berkeley, Stanford), Acme's own lab (which may not evaluate Acme's policies), and an outsider
(Oscar, an owner with nothing of his own). Each actor is an API client carrying its own key."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from unittest import mock

from django.core.management import call_command
from rest_framework.test import APIClient

from arena.models import ApiKey, Lab, Policy
from arena.services.policies import policy_check_record

DROID_CONFIG = {
    "image_resolution": [224, 224],
    "needs_wrist_camera": True,
    "n_external_cameras": 1,
    "needs_stereo_camera": False,
    "needs_session_id": False,
    "action_space": "joint_velocity",
}
"""A RoboArena ``PolicyServerConfig`` as a DROID joint-velocity policy (pi0-DROID style) serves it."""

DROID_REQS = {
    "image_resolution": [224, 224],
    "n_external_cameras": 1,
    "needs_wrist_camera": True,
    "needs_stereo_camera": False,
    "action_space": "joint_velocity",
    "action_dim": 8,
    "action_horizon": 10,
}


@dataclass
class Actor:
    name: str
    client: APIClient
    key: str

    def get(self, path: str, **kw):
        return self.client.get(path, **kw)

    def post(self, path: str, data=None, *, idem: str | None = None, **kw):
        headers = {"Idempotency-Key": idem} if idem else None
        return self.client.post(path, data if data is not None else {}, format="json", headers=headers, **kw)

    def patch(self, path: str, data, **kw):
        return self.client.patch(path, data, format="json", **kw)


def make_actor(
    name: str, *, lab: str | None = None, owner: str | None = None, organization: str | None = None
):
    from io import StringIO

    out = StringIO()
    if lab:
        call_command("issue_key", lab=lab, organization=organization, stdout=out)
    else:
        call_command("issue_key", owner=owner, organization=organization, stdout=out)
    key = out.getvalue().strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return Actor(name=name, client=client, key=key)


def activate(slug: str, requirements: dict | None = None) -> Policy:
    """Store a passing health check, as the check task does after probing the endpoint."""
    policy = Policy.objects.get(slug=slug)
    return policy_check_record(
        policy=policy, ok=True, latency_ms=12.0, requirements=requirements or DROID_REQS
    )


ROBOT = {
    "name": "franka-1",
    "platform": "droid",
    "n_external_cameras": 2,
    "has_wrist_camera": True,
    "has_stereo_camera": False,
    "action_spaces": ["joint_velocity", "joint_position"],
}


def register_robot(lab: Actor, **overrides) -> dict:
    response = lab.post("/api/v1/robots/", {**ROBOT, **overrides})
    assert response.status_code == 201, response.json()
    return response.json()


def _default_endpoint(slug: str) -> str:
    """A private address and port of the slug's own (32 bits of its CRC: no two slugs of a test share both)."""
    h = zlib.crc32(slug.encode())
    return f"ws://10.{(h >> 16) & 255}.{(h >> 8) & 255}.{h & 255}:{8000 + (h >> 24)}/{slug}"


def register_policy(owner: Actor, slug: str, **overrides) -> dict:
    body = {
        "slug": slug,
        "name": slug.replace("-", " ").title(),
        # One server per slug: a server another organization registered (same host and port, or the same
        # address and port) would need proof of control.
        "endpoint_url": _default_endpoint(slug),
        "description": "test policy",
        "license": "MIT",
        **overrides,
    }
    response = owner.post("/api/v1/policies/", body)
    assert response.status_code == 201, response.json()
    return response.json()


def request_session(lab: Actor, robot: str = "franka-1", task: str = "put the marker in the cup", **kw):
    return lab.post("/api/v1/sessions/", {"robot": robot, "task": task, **kw})


def open_session(lab: Actor) -> dict:
    response = request_session(lab)
    assert response.status_code == 201, response.json()
    return response.json()


EPISODE = {"progress": 60, "success": False, "steps": 300, "duration_s": 20.0, "mean_latency_ms": 45.0}


def report_both(lab: Actor, session_id: str) -> None:
    for slot, progress in (("A", 80), ("B", 40)):
        r = lab.post(
            f"/api/v1/sessions/{session_id}/episodes/", {**EPISODE, "slot": slot, "progress": progress}
        )
        assert r.status_code == 201, r.json()


def lab_of(actor: Actor) -> Lab:
    return ApiKey.objects.get(prefix=actor.key.split("_")[1]).lab


@contextmanager
def refits_deferred() -> Iterator[None]:
    """While this holds, a stored verdict asks for no refit; the caller refits (``arena.tasks.ranking_refit``)
    where it wants a snapshot. Under eager Celery each verdict's refit is a full fit of the board, its slices
    and defences: for a league of dozens of verdicts, minutes of snapshots that no test reads."""
    with mock.patch("arena.tasks.ranking_refit_soon", lambda: None):
        yield
