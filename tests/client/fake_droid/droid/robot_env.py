"""``RobotEnv`` at the robot boundary: DROID's constructor, ``reset``, ``step``, ``get_observation``,
``read_cameras`` and ``close``, with a kinematic stand-in for the arm and cameras."""

from __future__ import annotations

from typing import Any

import numpy as np

from droid.misc import parameters

ENVS: list[RobotEnv] = []
"""Every env built, in order."""

RESET_JOINTS = np.array([0.0, -1 / 5 * np.pi, 0.0, -4 / 5 * np.pi, 0.0, 3 / 5 * np.pi, 0.0])
FRAME_SHAPE = (720, 1280, 4)  # the ZED's HD720, BGRA
SIDE_BLUE = {"left": 40, "right": 200}  # the blue channel tells the left imager from the right one
MAX_JOINT_STEP = 0.2  # rad per step at joint velocity 1, as DROID's IK solver limits it


class RobotEnv:
    def __init__(
        self,
        action_space: str = "cartesian_velocity",
        gripper_action_space: str | None = None,
        camera_kwargs: dict | None = None,
        do_reset: bool = True,
    ) -> None:
        assert action_space in (
            "cartesian_position",
            "joint_position",
            "cartesian_velocity",
            "joint_velocity",
        )
        self.action_space = action_space
        self.gripper_action_space = gripper_action_space
        self.check_action_range = "velocity" in action_space
        self.DoF = 7 if "cartesian" in action_space else 8
        self.steps: list[np.ndarray] = []
        self.resets = 0
        self.closed = False
        self.joints = RESET_JOINTS.copy()
        self.gripper = 0.0
        self._frames = {
            f"{camera}_{side}": np.full(FRAME_SHAPE, [blue, 90, 160, 255], dtype=np.uint8)
            for camera in (
                parameters.varied_camera_1_id,
                parameters.varied_camera_2_id,
                parameters.hand_camera_id,
            )
            for side, blue in SIDE_BLUE.items()
        }
        ENVS.append(self)
        if do_reset:
            self.reset()

    def reset(self) -> None:
        assert not self.closed, "reset on a closed env"
        self.resets += 1
        self.joints = RESET_JOINTS.copy()
        self.gripper = 0.0

    def step(self, action: np.ndarray) -> dict[str, Any]:
        assert not self.closed, "step on a closed env"
        action = np.asarray(action)
        assert len(action) == self.DoF, f"{self.action_space} takes {self.DoF} values, got {len(action)}"
        if self.check_action_range:
            assert action.max() <= 1 and action.min() >= -1, "velocity actions must lie in [-1, 1]"
        self.steps.append(action.copy())
        if self.action_space == "joint_position":
            self.joints = self.joints + np.clip(action[:7] - self.joints, -MAX_JOINT_STEP, MAX_JOINT_STEP)
        elif self.action_space == "joint_velocity":
            self.joints = self.joints + MAX_JOINT_STEP * action[:7]
        self.gripper = float(action[-1])
        return {}

    def read_cameras(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"image": dict(self._frames)}, {}

    def get_observation(self) -> dict[str, Any]:
        return {
            "robot_state": {
                "joint_positions": self.joints.tolist(),
                "cartesian_position": [0.45, 0.0, 0.35, np.pi, 0.0, 0.0],
                "gripper_position": self.gripper,
            },
            "image": dict(self._frames),
        }

    def close(self) -> None:
        self.closed = True
