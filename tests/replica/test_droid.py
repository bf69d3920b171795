"""The DROID adapter: set up per policy in the space it asks for, with native and stereo frames.

DROID cannot run here (it drives a Franka through a NUC), so these tests put a stand-in for DROID's package on
``sys.path`` (see :mod:`tests.client.droid_stand_in`). That is the robot boundary; everything above it is the
real adapter and the real episode runner.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import numpy as np
import pytest

from evaluator_client.droid import DroidRobot, DroidUnavailableError
from evaluator_client.episode import configure_robot, run_episode
from policy_server.base import BasePolicy
from tests.client.droid_stand_in import use_droid_stand_in


@pytest.mark.skipif(importlib.util.find_spec("droid") is not None, reason="DROID is installed here")
def test_missing_droid_explains_how_to_install():
    with pytest.raises(DroidUnavailableError) as info:
        DroidRobot()
    message = str(info.value)
    assert "github.com/droid-dataset/droid" in message and "pip install -e ." in message
    assert isinstance(info.value, ImportError)


@pytest.fixture
def droid(monkeypatch, request) -> ModuleType:
    """DROID's stand-in, importable as ``droid``: its ``droid.robot_env`` (``ENVS`` records the envs)."""
    return use_droid_stand_in(monkeypatch, request)


class Holds(BasePolicy):
    """Answers (4, D) chunks in its space: the current joints, or a pose/velocity of zeros; gripper closed."""

    def __init__(self, space: str) -> None:
        self.space = space
        self.seen: list[dict] = []

    @property
    def metadata(self) -> dict:
        return {"action_space": self.space, "image_resolution": None}

    def infer(self, obs: dict) -> dict:
        self.seen.append(obs)
        if self.space.startswith("joint"):
            row = np.append(obs["observation/joint_position"], 1.0)
        else:
            row = np.append(obs["observation/cartesian_position"], 1.0)
        if self.space.endswith("velocity"):
            row[:-1] = 0.5
        return {"actions": np.tile(row, (4, 1))}


@pytest.mark.parametrize(
    "spaces",
    [
        ("joint_position", "cartesian_velocity"),
        ("joint_velocity", "joint_position"),
        ("cartesian_position", "joint_velocity"),
    ],
)
def test_each_policy_drives_an_env_in_its_own_space(droid, spaces):
    robot = DroidRobot()
    for space in spaces:
        policy = Holds(space)
        configure_robot(robot, policy.metadata)
        robot.reset(7)
        run_episode(robot, policy, prompt="wipe the table", requirements=policy.metadata, max_steps=6)
        env = droid.ENVS[-1]
        assert (env.action_space, env.gripper_action_space) == (space, "position")
        assert len(env.steps) == 6 and not env.closed
        width = 8 if space.startswith("joint") else 7
        assert all(step.shape == (width,) for step in env.steps)
        assert all(step[-1] == 1.0 for step in env.steps)  # the gripper binarised at 0.5
    built = [env.action_space for env in droid.ENVS]
    assert built[-len(spaces) :] == list(spaces)
    assert all(env.closed for env in droid.ENVS[:-1])  # one live env at a time


def test_an_env_in_the_same_space_is_kept(droid):
    robot = DroidRobot(action_space="joint_velocity")
    robot.configure(action_space="joint_velocity")
    robot.configure(action_space="joint_velocity", stereo=True)
    assert len(droid.ENVS) == 1 and robot.stereo


def test_unsupported_space_is_refused(droid):
    robot = DroidRobot()
    with pytest.raises(ValueError, match="torque"):
        robot.configure(action_space="torque")


def test_frames_are_native_16_9_and_stereo_adds_the_right_imager(droid):
    robot = DroidRobot(n_exterior_cameras=2)
    robot.configure(action_space="joint_position", stereo=True)
    robot.reset(0)
    obs = robot.observe()
    for camera in ("exterior_image_1", "exterior_image_2", "wrist_image"):
        left, right = obs[f"observation/{camera}_left"], obs[f"observation/{camera}_right"]
        assert left.shape == right.shape == (288, 512, 3)
        # BGRA from the ZED becomes RGB: the blue channel is last, and differs between the two imagers
        assert (left[0, 0, 2], right[0, 0, 2]) == (40, 200)
    robot.configure(action_space="joint_position", stereo=False)
    assert not any(key.endswith("_right") for key in robot.observe())
    assert set(robot.camera_frames()) == {"exterior_1", "exterior_2", "wrist"}
