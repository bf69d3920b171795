"""Health checks against real policy servers, and the blind relay path an evaluator uses."""

import numpy as np
import pytest

from arena.models import Policy
from arena.tasks import policy_check_all, policy_check_one
from policy_server.base import BasePolicy
from policy_server.check import dummy_observation, requirements_from_metadata
from policy_server.client import PolicyClient
from policy_server.server import serve_in_thread
from tests.api.actors import DROID_CONFIG, register_policy, register_robot, request_session


class ConstantPolicy(BasePolicy):
    """Always the same 10-step chunk of 8-dim actions; tells which policy answered through ``marker``."""

    def __init__(self, marker: float) -> None:
        self.marker = marker

    def infer(self, obs):
        return {"actions": np.full((10, 8), self.marker, dtype=np.float32)}

    @property
    def metadata(self):
        return dict(DROID_CONFIG)


@pytest.fixture
def two_servers():
    with serve_in_thread(ConstantPolicy(0.25)) as first, serve_in_thread(ConstantPolicy(0.75)) as second:
        yield first, second


def test_registration_check_activates_a_live_policy(owner, two_servers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        register_policy(owner, "live-one", endpoint_url=two_servers[0].url)
    policy = Policy.objects.get(slug="live-one")
    assert policy.status == "active"
    assert policy.last_check_ok and policy.last_check_latency_ms > 0
    assert policy.requirements()["action_space"] == "joint_velocity"
    assert policy.requirements()["action_dim"] == 8


def test_dead_endpoint_stays_out_of_the_pool(settings, owner):
    settings.ARENA_CHECK_TIMEOUT_SECONDS = 2
    register_policy(owner, "dead-one", endpoint_url="ws://127.0.0.1:9")
    assert policy_check_one(Policy.objects.get(slug="dead-one").pk) is False
    policy = Policy.objects.get(slug="dead-one")
    assert policy.status == "pending" and policy.last_check_error.startswith("refused")


def test_periodic_check_marks_a_dead_policy_failing(settings, owner, two_servers):
    settings.ARENA_CHECK_FAILURES_BEFORE_FAILING = 1
    settings.ARENA_CHECK_TIMEOUT_SECONDS = 2
    register_policy(owner, "live-a", endpoint_url=two_servers[0].url)
    register_policy(owner, "live-b", endpoint_url=two_servers[1].url)
    assert policy_check_all() == 2
    assert set(Policy.objects.values_list("status", flat=True)) == {"active"}
    two_servers[1].stop()
    policy_check_all()
    assert Policy.objects.get(slug="live-b").status == "failing"
    assert Policy.objects.get(slug="live-a").status == "active"


def test_evaluator_reaches_each_slot_through_the_relay_only(arena_relay, owner, lab1, two_servers):
    relay = arena_relay
    for slug, server in zip(("live-a", "live-b"), two_servers, strict=True):
        register_policy(owner, slug, endpoint_url=server.url)
        policy_check_one(Policy.objects.get(slug=slug).pk)
    register_robot(lab1)
    session = request_session(lab1).json()
    markers = {}
    for slot in "AB":
        relay_url = session["slots"][slot]["relay_url"]
        assert relay_url.startswith(relay.url.rstrip("/"))
        assert str(two_servers[0].port) not in relay_url and str(two_servers[1].port) not in relay_url
        with PolicyClient(relay_url) as client:
            obs = dummy_observation(
                requirements_from_metadata(client.metadata)
            )  # what the relay lets through
            markers[slot] = float(client.infer(obs)["actions"][0, 0])
    from arena.models import EvaluationSession

    stored = EvaluationSession.objects.get(pk=session["id"])
    expected = {"live-a": 0.25, "live-b": 0.75}
    assert markers == {"A": expected[stored.policy_a.slug], "B": expected[stored.policy_b.slug]}
