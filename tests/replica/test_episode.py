"""The episode runner: chunking, stopping, requirement filtering, failure attribution."""

from typing import Any

import numpy as np
import pytest

from evaluator_client.episode import (
    PolicyFailure,
    RequirementsError,
    RobotFailure,
    configure_robot,
    filter_observation,
    resize_with_pad,
    run_episode,
)
from evaluator_client.replica import NATIVE_RESOLUTION, Replica
from policy_server.base import BasePolicy
from policy_server.baselines import make_baseline


class Recording(BasePolicy):
    """Wraps a baseline and keeps every observation it was sent (to check chunking and filtering)."""

    def __init__(
        self, inner: BasePolicy, *, horizon: int | None = None, metadata: dict | None = None
    ) -> None:
        self.inner = inner
        self.horizon = horizon
        self.sent: list[dict[str, Any]] = []
        self.resets = 0
        self._metadata = metadata if metadata is not None else inner.metadata

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def reset(self, reset_info=None) -> None:
        self.resets += 1
        self.inner.reset()

    def infer(self, obs):
        self.sent.append(dict(obs))
        actions = self.inner.infer(obs)["actions"]
        return {"actions": actions[: self.horizon] if self.horizon else actions}


@pytest.fixture(scope="module")
def robot():
    replica = Replica("pick_place", seed=2, n_exterior_cameras=2)
    yield replica
    replica.close()


def test_max_steps_and_replan_steps(robot):
    policy = Recording(make_baseline("expert"))
    robot.configure(action_space=policy.metadata["action_space"])
    robot.reset(2)
    result = run_episode(
        robot,
        policy,
        prompt="put the red block in the bowl",
        requirements=policy.metadata,
        max_steps=20,
        replan_steps=5,
    )
    assert result.steps == 20 and result.stop_reason == "max_steps"
    assert len(policy.sent) == 4 == result.n_inferences
    assert policy.resets == 1
    assert result.mean_inference_ms > 0 and result.duration_s > 0
    assert 0 <= result.progress <= 100


def test_short_chunks_are_requeried_when_used_up(robot):
    policy = Recording(make_baseline("expert"), horizon=3)
    robot.configure(action_space=policy.metadata["action_space"])
    robot.reset(2)
    run_episode(robot, policy, prompt="x", requirements=policy.metadata, max_steps=12, replan_steps=8)
    assert len(policy.sent) == 4


def test_operator_stop(robot):
    robot.reset(2)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 7

    policy = make_baseline("expert")
    robot.configure(action_space=policy.metadata["action_space"])
    result = run_episode(robot, policy, prompt="x", requirements=policy.metadata, max_steps=100, stop=stop)
    assert result.steps == 7 and result.stop_reason == "operator"


def test_only_requested_keys_are_sent(robot):
    robot.configure(action_space="cartesian_velocity")
    robot.reset(2)
    requirements = {
        "image_resolution": [180, 320],
        "n_external_cameras": 2,
        "needs_wrist_camera": False,
        "action_space": "cartesian_velocity",
    }
    policy = Recording(make_baseline("random"), metadata=requirements)
    run_episode(robot, policy, prompt="stack it", requirements=requirements, max_steps=1)
    sent = policy.sent[0]
    assert set(sent) == {
        "observation/joint_position",
        "observation/cartesian_position",
        "observation/gripper_position",
        "observation/exterior_image_1_left",
        "observation/exterior_image_2_left",
        "prompt",
    }
    assert sent["observation/exterior_image_1_left"].shape == (180, 320, 3)
    assert sent["prompt"] == "stack it"


def test_replica_state_only_for_policies_that_ask(robot):
    obs = robot.observe()
    assert not any(k.startswith("replica/") for k in filter_observation(obs, {"n_external_cameras": 1}, "p"))
    assert "replica/state" in filter_observation(obs, {"needs_replica_state": True}, "p")


def test_resize_with_pad_keeps_aspect_ratio():
    image = np.full((100, 200, 3), 255, dtype=np.uint8)
    out = resize_with_pad(image, 224, 224)
    assert out.shape == (224, 224, 3)
    assert out[0, 112].sum() == 0 and out[112, 112].min() == 255  # padded top, image in the middle
    assert (out[:, :, 0] == 255).sum() == 112 * 224


class CartesianOnly(Replica):
    """A robot that declares fewer spaces than DROID has (as the gripper-only replica once did)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.action_spaces = ["cartesian_velocity", "cartesian_position"]

    def configure(self, *, action_space: str, stereo: bool = False) -> None:
        if action_space not in self.action_spaces:
            raise ValueError(f"unsupported action space {action_space!r}")
        super().configure(action_space=action_space, stereo=stereo)


def test_requirements_the_robot_cannot_meet():
    one_camera = Replica("push", seed=0)
    with pytest.raises(RequirementsError, match="2 exterior cameras"):
        configure_robot(one_camera, {"n_external_cameras": 2})
    with pytest.raises(RequirementsError, match="2 exterior cameras"):
        run_episode(one_camera, make_baseline("expert"), prompt="x", requirements={"n_external_cameras": 2})
    cartesian = CartesianOnly("push", seed=0)
    with pytest.raises(RequirementsError, match="'joint_velocity' actions; this robot runs only cartesian"):
        configure_robot(cartesian, {"action_space": "joint_velocity"})


def test_the_robot_is_set_up_per_policy(robot):
    """A robot that offers the policy's space runs it once configured; unconfigured, the runner says so."""
    joint = {"action_space": "joint_velocity", "needs_stereo_camera": True, "image_resolution": None}
    hold = Recording(make_baseline("random"), metadata=joint)
    configure_robot(robot, {"action_space": "cartesian_velocity"})
    with pytest.raises(RequirementsError, match="call configure_robot"):
        run_episode(robot, hold, prompt="x", requirements=joint, max_steps=1)

    class Still(BasePolicy):
        def infer(self, obs):
            return {"actions": np.zeros((10, 8))}

    configure_robot(robot, joint)
    robot.reset(2)
    assert robot.action_space == "joint_velocity" and robot.stereo
    result = run_episode(robot, Still(), prompt="x", requirements=joint, max_steps=3)
    assert result.steps == 3 and result.failure is None
    configure_robot(robot, {"action_space": "cartesian_velocity"})
    assert robot.action_space == "cartesian_velocity" and not robot.stereo


def test_native_and_stereo_frames_are_sent_as_asked(robot):
    configure_robot(robot, {"action_space": "cartesian_velocity", "needs_stereo_camera": True})
    robot.reset(2)
    obs = robot.observe()
    stereo_native = {"needs_stereo_camera": True, "image_resolution": None, "n_external_cameras": 2}
    sent = filter_observation(obs, stereo_native, "p")
    native = (NATIVE_RESOLUTION[1], NATIVE_RESOLUTION[0], 3)
    for camera in ("exterior_image_1", "exterior_image_2", "wrist_image"):
        assert sent[f"observation/{camera}_left"].shape == sent[f"observation/{camera}_right"].shape == native
    square = filter_observation(obs, {"needs_stereo_camera": True, "image_resolution": [224, 224]}, "p")
    assert square["observation/wrist_image_right"].shape == (224, 224, 3)
    assert not any(k.endswith("_right") for k in filter_observation(obs, {"image_resolution": None}, "p"))
    configure_robot(robot, {"action_space": "cartesian_velocity"})


def test_a_native_frame_is_letterboxed_to_the_policys_square_resolution(robot):
    """The replica's 320 x 180 frame becomes 224 x 126 inside 224 x 224: 49 black rows above and below, as the
    16:9 ZED frames DROID policies were trained on."""
    configure_robot(robot, {"action_space": "cartesian_velocity"})
    robot.reset(2)
    sent = filter_observation(robot.observe(), {"image_resolution": [224, 224]}, "p")
    for key in ("observation/exterior_image_1_left", "observation/wrist_image_left"):
        image = sent[key]
        assert image.shape == (224, 224, 3)
        assert image[:48].max() == 0 and image[-48:].max() == 0
        rows = image.max(axis=(1, 2))
        assert np.all(rows[52:172] > 0)


class Crashing(BasePolicy):
    def __init__(self, answer) -> None:
        self.answer = answer

    def infer(self, obs):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    "answer, message",
    [
        (RuntimeError("CUDA out of memory"), "CUDA out of memory"),
        ({"actions": np.zeros((10, 8))}, "shape"),
        ({"actions": np.full((10, 7), np.nan)}, "NaN"),
        ({"action": np.zeros((10, 7))}, "no 'actions'"),
    ],
)
def test_policy_failures_blame_the_policy(robot, answer, message):
    cartesian = {"action_space": "cartesian_velocity"}
    configure_robot(robot, cartesian)
    robot.reset(2)
    with pytest.raises(PolicyFailure, match=message) as info:
        run_episode(robot, Crashing(answer), prompt="x", requirements=cartesian, max_steps=5)
    assert info.value.party == "policy"
    assert info.value.result.failure == "policy" and info.value.result.stop_reason == "policy_error"


class FaultyReplica(Replica):
    """A replica whose controller faults after a few steps, like a robot hitting a joint limit."""

    def apply(self, action):
        if self.data.time > 0.3:
            raise RuntimeError("joint limit reflex")
        super().apply(action)


def test_robot_failures_blame_the_robot():
    policy = make_baseline("expert")
    faulty = FaultyReplica("pick_place", seed=0, action_space=policy.metadata["action_space"])
    with pytest.raises(RobotFailure, match="joint limit") as info:
        run_episode(faulty, policy, prompt="x", requirements=policy.metadata, max_steps=50)
    assert info.value.party == "robot"
    assert info.value.result.steps == 5


def test_stop_when_success_is_held():
    policy = make_baseline("expert")
    replica = Replica("push", seed=1, action_space=policy.metadata["action_space"])
    result = run_episode(replica, policy, prompt="x", requirements=policy.metadata, stop_on_success_steps=5)
    assert result.stop_reason == "success" and result.success
    assert result.steps < 400 and result.progress == 100
