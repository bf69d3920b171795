"""The robot side of an evaluation: what the episode runner needs from a real robot or the replica.

Observations use DROID's keys: ``observation/exterior_image_1_left`` (and ``_2_left`` with two exterior
cameras) and ``observation/wrist_image_left`` as uint8 (H, W, 3) RGB at the camera's native resolution (16:9
for DROID's ZED cameras), plus the ``..._right`` images of each stereo pair when configured ``stereo``; ``observation/joint_position`` (7,),
``observation/cartesian_position`` (6,) ``[x, y, z, roll, pitch, yaw]`` (m, rad, extrinsic xyz Euler),
``observation/gripper_position`` (1,) in [0, 1] (0 open). Keys under ``replica/`` are simulator-only.

Actions are one step of a DROID action space (``(7,)`` for the Cartesian spaces, ``(8,)`` for the joint
spaces: 7 values + gripper). Each implementation lists what it supports in ``action_spaces``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

DROID_ACTION_SPACES = ("joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity")


@runtime_checkable
class Robot(Protocol):
    """A controllable robot with cameras.

    ``platform``: e.g. ``"replica:tabletop-v1"`` or ``"droid:franka"``; ``cameras``: camera names, exterior
    first then ``"wrist"``; ``control_hz``: control steps per second; ``action_space``: the space ``apply``
    interprets; ``action_spaces``: every space the robot can be configured for.
    """

    platform: str
    cameras: list[str]
    control_hz: float
    action_space: str
    action_spaces: list[str]

    def configure(self, *, action_space: str, stereo: bool = False) -> None:
        """Set up the robot for one policy before ``reset``: the action space ``apply`` interprets (one of
        ``action_spaces``) and whether ``observe`` adds the ``_right`` stereo images. Raises ValueError naming
        the space when the robot cannot run it."""

    def reset(self, seed: int | None = None) -> None:
        """Bring the scene to the start state for ``seed`` (deterministic on the replica)."""

    def observe(self) -> dict[str, Any]:
        """The current observation dict (DROID keys; see the module docstring)."""

    def apply(self, action: np.ndarray) -> None:
        """Execute one control step of ``action`` in ``action_space``."""

    def camera_frames(self) -> dict[str, np.ndarray]:
        """The current image of every camera in ``cameras``: uint8 (H, W, 3)."""

    def start_image(self) -> np.ndarray:
        """An exterior image of the start scene, for the operator to restore it before the next episode."""

    def progress(self) -> float | None:
        """Task progress in [0, 100] when the robot can know it (the replica), else None."""

    def success(self) -> bool | None:
        """Whether the task is achieved when the robot can know it (the replica), else None."""

    def scene_notes(self) -> dict[str, Any]:
        """Plain data describing the start scene (seed, perturbations, ...) for the session record."""
