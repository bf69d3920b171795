"""PolicyClient against our server and RoboArena's dialect: dialects, resets, errors, latency."""

from __future__ import annotations

import numpy as np
import pytest
from arena_test_policies import DROID_METADATA, EchoPolicy, FailingPolicy, FixedActionsPolicy
from roboarena_dialect import serve_roboarena_in_thread

from arena.ports import free_port
from policy_server import wire
from policy_server.client import (
    BadAction,
    PolicyClient,
    PolicyError,
    PolicyTimeout,
    PolicyUnauthorized,
    PolicyUnavailable,
    detect_dialect,
    validate_actions,
)
from policy_server.server import PROTOCOL_KEY, serve_in_thread

OBS = {
    "observation/joint_position": np.linspace(-1, 1, 7),
    "observation/gripper_position": np.array([1.0]),
    "prompt": "stack the cups",
}


@pytest.mark.parametrize(
    ("metadata", "dialect"),
    [
        ({**DROID_METADATA, PROTOCOL_KEY: 1}, "arena"),
        ({PROTOCOL_KEY: 1}, "arena"),
        (DROID_METADATA, "roboarena"),
        ({}, "openpi"),
        ({**DROID_METADATA, "model": "pi0"}, "openpi"),
        ({"image_resolution": [224, 224]}, "openpi"),
    ],
)
def test_dialect_is_told_from_the_metadata(metadata: dict, dialect: str) -> None:
    assert detect_dialect(metadata) == dialect


def test_arena_dialect_infer_reset_and_latency(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy) as server, PolicyClient(server.url, action_dim=8) as client:
        assert client.dialect == "arena"
        assert client.metadata["action_space"] == "joint_velocity"
        for _ in range(5):
            result = client.infer(OBS)
            np.testing.assert_allclose(
                result["actions"][:, :7], np.tile(OBS["observation/joint_position"], (10, 1))
            )
            assert "infer_ms" in result["server_timing"]
        client.reset({"episode": 2})
        stats = client.latency()
    assert echo_policy.resets == [{"episode": 2}]
    assert "endpoint" not in echo_policy.seen_keys[0]
    assert stats.n == 5 and len(client.latencies_ms) == 5
    assert 0 < stats.p50_ms <= stats.p99_ms and stats.mean_ms > 0


def test_roboarena_dialect_sends_endpoint_and_accepts_its_text_reset() -> None:
    policy = EchoPolicy(metadata=DROID_METADATA)
    with serve_roboarena_in_thread(policy) as server, PolicyClient(server.url) as client:
        assert client.dialect == "roboarena"
        assert client.metadata == DROID_METADATA
        assert client.infer(OBS)["actions"].shape == (10, 8)
        client.reset({"episode": 7})
        assert client.infer(OBS)["actions"].shape == (10, 8)
    assert policy.resets == [{"episode": 7}]
    assert len(policy.seen_keys) == 2


def test_roboarena_failure_on_reset_is_a_policy_error() -> None:
    class BrokenReset(EchoPolicy):
        def reset(self, reset_info=None):
            raise RuntimeError("cannot reset the arm")

    with (
        serve_roboarena_in_thread(BrokenReset(metadata=DROID_METADATA)) as server,
        PolicyClient(server.url) as c,
    ):
        with pytest.raises(PolicyError, match="cannot reset the arm") as failed:
            c.reset()
    assert "Traceback" in failed.value.traceback


def test_traceback_text_frame_becomes_policy_error() -> None:
    with serve_in_thread(FailingPolicy()) as server, PolicyClient(server.url) as client:
        with pytest.raises(PolicyError, match="the policy exploded on purpose") as failed:
            client.infer(OBS)
        assert "Traceback" in failed.value.traceback
        # The server closed the websocket; the next call reconnects and fails the same way.
        with pytest.raises(PolicyError):
            client.infer(OBS)


@pytest.mark.parametrize(
    ("actions", "action_dim", "message"),
    [
        (np.full((10, 8), np.nan), None, "NaN or infinite"),
        (np.array([[0.0] * 7 + [np.inf]]), None, "NaN or infinite"),
        (np.zeros(8), None, r"shape \(H, D\)"),
        (np.zeros((0, 8)), None, r"H >= 1"),
        (np.zeros((10, 7)), 8, "action dim 7, expected 8"),
        ("forward", None, "numeric array"),
    ],
)
def test_bad_actions_are_refused(actions: object, action_dim: int | None, message: str) -> None:
    with serve_in_thread(FixedActionsPolicy(actions)) as server:
        with PolicyClient(server.url, action_dim=action_dim) as client:
            with pytest.raises(BadAction, match=message):
                client.infer(OBS)


def test_missing_actions_are_refused() -> None:
    with pytest.raises(BadAction, match="no 'actions'"):
        validate_actions({"action": np.zeros((1, 8))})


def test_lists_of_numbers_are_accepted_as_actions() -> None:
    assert validate_actions({"actions": [[0.0] * 8] * 2}).shape == (2, 8)


def test_unreachable_server_raises_unavailable_after_retries() -> None:
    with pytest.raises(PolicyUnavailable, match="after 2 attempt"):
        PolicyClient(f"ws://127.0.0.1:{free_port()}", retries=1, retry_delay_s=0.01, connect_timeout=1)


def test_wrong_api_key_is_unauthorized_without_retrying(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy, api_key="sesame") as server:
        with pytest.raises(PolicyUnauthorized) as refused:
            PolicyClient(server.url, api_key="wrong", retries=5, retry_delay_s=10)
        assert refused.value.status == 401
        with PolicyClient(server.url, api_key="sesame") as client:
            assert client.infer(OBS)["actions"].shape == (10, 8)
        with PolicyClient(server.url, headers={"Authorization": "Api-Key sesame"}) as client:
            assert client.dialect == "arena"


def test_api_key_and_authorization_header_conflict() -> None:
    with pytest.raises(ValueError, match="not both"):
        PolicyClient("ws://127.0.0.1:1", api_key="a", headers={"authorization": "Bearer b"})


def test_slow_policy_times_out_and_the_next_call_reconnects() -> None:
    policy = EchoPolicy(delay_s=0.6)
    with serve_in_thread(policy) as server, PolicyClient(server.url, request_timeout=0.2) as client:
        with pytest.raises(PolicyTimeout, match="0.2 s"):
            client.infer(OBS)
        client.request_timeout = 5
        assert client.infer(OBS)["actions"].shape == (10, 8)
        assert len(client.latencies_ms) == 1


def test_server_gone_mid_episode_is_unavailable(echo_policy: EchoPolicy) -> None:
    with serve_in_thread(echo_policy) as server:
        client = PolicyClient(server.url, retries=0)
        client.infer(OBS)
        server.stop()
        with pytest.raises(PolicyUnavailable, match="connection lost"):
            client.infer(OBS)
        with pytest.raises(PolicyUnavailable, match="cannot connect"):
            client.infer(OBS)


def test_frames_over_the_server_limit_are_refused_clearly(echo_policy: EchoPolicy) -> None:
    big = {**OBS, "observation/exterior_image_1_left": np.zeros((224, 224, 3), np.uint8)}
    limits = wire.Limits(max_frame_bytes=10_000)
    with serve_in_thread(echo_policy, limits=limits) as server, PolicyClient(server.url) as client:
        assert client.infer(OBS)["actions"].shape == (10, 8)
        with pytest.raises(PolicyError, match="too big"):
            client.infer(big)
