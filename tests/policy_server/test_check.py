"""policy_check and check_many: a dry run against live servers, with a machine-readable verdict."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from arena_test_policies import DROID_METADATA, EchoPolicy, FailingPolicy, FixedActionsPolicy
from roboarena_dialect import serve_roboarena_in_thread
from websockets.asyncio.server import Server, ServerConnection, serve

from arena.ports import free_port
from policy_server._serving import serve_in_thread
from policy_server.check import (
    MetadataError,
    check_many,
    dummy_observation,
    policy_check,
    requirements_from_metadata,
)
from policy_server.relay import serve_relay_in_thread
from policy_server.relay_token import mint_token
from policy_server.server import serve_in_thread as serve_policy_in_thread


def dead_url() -> str:
    return f"ws://127.0.0.1:{free_port()}"


def test_healthy_policy_passes_with_normalised_requirements() -> None:
    metadata = {
        **DROID_METADATA,
        "n_external_cameras": 2,
        "image_resolution": [180, 320],
        "platform": "droid",
    }
    policy = EchoPolicy(metadata=metadata, horizon=15)
    with serve_policy_in_thread(policy) as server:
        result = policy_check(server.url)
    assert result.ok and result.error is None, result.message
    assert result.dialect == "arena"
    assert result.metadata == metadata
    assert result.requirements == {
        "platform": "droid",
        "image_resolution": [180, 320],
        "n_external_cameras": 2,
        "needs_wrist_camera": True,
        "needs_stereo_camera": False,
        "needs_session_id": False,
        "action_space": "joint_velocity",
        "action_dim": 8,
        "action_horizon": 15,
        "needs_replica_state": False,
    }
    assert result.latency_ms is not None and result.latency_ms > 0
    assert result.checked_at.tzinfo is not None
    (seen,) = policy.seen_keys
    assert seen == sorted(
        [
            "observation/exterior_image_1_left",
            "observation/exterior_image_2_left",
            "observation/wrist_image_left",
            "observation/joint_position",
            "observation/cartesian_position",
            "observation/gripper_position",
            "prompt",
        ]
    )
    json.dumps(result.to_dict())


def test_dummy_observation_follows_the_requirements() -> None:
    requirements = requirements_from_metadata(
        {
            "image_resolution": (96, 128),
            "n_external_cameras": 1,
            "needs_wrist_camera": False,
            "needs_stereo_camera": True,
            "needs_session_id": True,
        }
    )
    obs = dummy_observation(requirements)
    assert sorted(k for k in obs if "image" in k) == [
        "observation/exterior_image_1_left",
        "observation/exterior_image_1_right",
    ]
    image = obs["observation/exterior_image_1_left"]
    assert image.shape == (96, 128, 3) and image.dtype == np.uint8
    assert obs["observation/joint_position"].shape == (7,)
    assert obs["observation/cartesian_position"].shape == (6,)
    assert obs["observation/gripper_position"].shape == (1,)
    assert isinstance(obs["prompt"], str) and obs["session_id"]


def test_empty_metadata_gets_openpi_droid_defaults() -> None:
    requirements = requirements_from_metadata({})
    assert requirements["image_resolution"] == [224, 224]
    assert requirements["n_external_cameras"] == 1 and requirements["needs_wrist_camera"] is True
    assert requirements["platform"] is None and requirements["action_dim"] is None


@pytest.mark.parametrize(
    "metadata",
    [
        {"image_resolution": [224]},
        {"image_resolution": [0, 224]},
        {"image_resolution": "224x224"},
        {"n_external_cameras": 3},
        {"n_external_cameras": True},
        {"needs_wrist_camera": "yes"},
        {"action_space": "torque"},
        {"action_dim": 6},
        {"platform": 7},
    ],
)
def test_nonsense_metadata_is_refused(metadata: dict) -> None:
    with pytest.raises(MetadataError):
        requirements_from_metadata(metadata)


def test_roboarena_dialect_policy_passes() -> None:
    with serve_roboarena_in_thread(EchoPolicy(metadata=DROID_METADATA)) as server:
        result = policy_check(server.url)
    assert result.ok, result.message
    assert result.dialect == "roboarena"


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        (FailingPolicy(), "policy_error"),
        (FixedActionsPolicy(np.zeros((10, 6))), "bad_action"),
        (FixedActionsPolicy(np.full((10, 8), np.nan)), "bad_action"),
        (FixedActionsPolicy(np.zeros(8)), "bad_action"),
        (EchoPolicy(metadata={"action_space": "flying"}), "bad_metadata"),
        (EchoPolicy(metadata={"action_horizon": 4}), "bad_action"),
        (EchoPolicy(metadata={"action_dim": 9}), "bad_action"),
    ],
    ids=["raises", "six-dims", "nan", "one-dim", "bad-space", "horizon-mismatch", "dim-mismatch"],
)
def test_broken_policies_fail_with_a_code(policy, error: str) -> None:
    with serve_policy_in_thread(policy) as server:
        result = policy_check(server.url)
    assert not result.ok
    assert result.error == error, result.message
    assert result.message


def test_unreachable_and_unauthorized() -> None:
    assert policy_check(dead_url(), timeout=2).error == "refused"
    with serve_policy_in_thread(EchoPolicy(), api_key="sesame") as server:
        assert policy_check(server.url).error == "unauthorized"
        assert policy_check(server.url, api_key="sesame").ok


def test_slow_policy_times_out_within_the_budget() -> None:
    with serve_policy_in_thread(EchoPolicy(delay_s=1.5)) as server:
        started = time.monotonic()
        result = policy_check(server.url, timeout=0.5)
        elapsed = time.monotonic() - started
    assert result.error == "timeout"
    assert elapsed < 1.5
    assert result.requirements is not None


def test_server_that_never_sends_metadata_times_out() -> None:
    async def silent(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def start() -> Server:
        return await serve(silent, "127.0.0.1", 0)

    with serve_in_thread(start, host="127.0.0.1") as server:
        assert policy_check(server.url, timeout=0.3).error == "timeout"


def test_garbage_metadata_is_bad_metadata() -> None:
    async def garbage(ws: ServerConnection) -> None:
        await ws.send(b"\xc1\xc1")
        await ws.wait_closed()

    async def start() -> Server:
        return await serve(garbage, "127.0.0.1", 0)

    with serve_in_thread(start, host="127.0.0.1") as server:
        assert policy_check(server.url).error == "bad_metadata"


def test_check_through_the_relay_with_a_bearer_token() -> None:
    secret = "another relay secret for the check test"
    with serve_policy_in_thread(EchoPolicy()) as policy, serve_relay_in_thread(secret) as relay:
        token = mint_token(endpoint=policy.url, session_id="s", slot="A", key=secret, ttl_s=60)
        result = policy_check(relay.url, headers={"Authorization": f"Bearer {token}"})
    assert result.ok, result.message


class MeetingPolicy(EchoPolicy):
    """Answers only once all ``parties`` policies sharing ``barrier`` are being asked at the same moment: checks
    run one after another would break the barrier (a handshake, not a clock)."""

    def __init__(self, barrier: threading.Barrier) -> None:
        super().__init__()
        self.barrier = barrier

    def infer(self, obs):  # type: ignore[no-untyped-def]
        self.barrier.wait()
        return super().infer(obs)


def test_check_many_runs_in_parallel_and_keeps_order() -> None:
    threads_before = threading.active_count()  # other tests' servers may still be winding down
    barrier = threading.Barrier(3, timeout=30)
    with (
        serve_policy_in_thread(MeetingPolicy(barrier)) as a,
        serve_policy_in_thread(MeetingPolicy(barrier)) as b,
        serve_policy_in_thread(MeetingPolicy(barrier)) as c,
        serve_policy_in_thread(FailingPolicy()) as bad,
    ):
        urls = [a.url, dead_url(), b.url, bad.url, c.url]
        results = check_many(urls, concurrency=8, timeout=60)
    # the three dry runs met at the barrier, so they ran at once; the order of the answers is the order asked
    assert [r.error for r in results] == [None, "refused", None, "policy_error", None]
    assert not barrier.broken
    assert threading.active_count() - threads_before < 40


def test_check_many_aligns_api_keys() -> None:
    with serve_policy_in_thread(EchoPolicy(), api_key="k1") as a, serve_policy_in_thread(EchoPolicy()) as b:
        results = check_many([a.url, b.url, a.url], api_keys=["k1", None, None])
    assert [r.error for r in results] == [None, None, "unauthorized"]
    with pytest.raises(ValueError, match="api_keys"):
        check_many([a.url], api_keys=[])
    assert check_many([]) == []


@pytest.mark.parametrize("name", ["expert", "noisy", "slow", "confused", "random"])
def test_every_baseline_passes_its_check_in_any_episode(name: str) -> None:
    """The dry run's replica state has every key the replica sends: the confused baseline, whose episodes mostly
    head for the decoy target, used to fail its check whenever its current episode did (``decoy_target_pos``)."""
    from policy_server.baselines import make_baseline

    for seed in range(4):
        with serve_policy_in_thread(make_baseline(name, seed=seed)) as server:
            result = policy_check(server.url, timeout=60)
        assert result.ok, (seed, result.error, result.message)
