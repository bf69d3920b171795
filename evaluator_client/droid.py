"""A DROID Franka station as a :class:`~evaluator_client.robot.Robot`, around ``droid.robot_env.RobotEnv``.

DROID is imported only when this adapter is constructed. Mapping to DROID's real API:

- ``configure(action_space=..., stereo=...)`` -> a ``RobotEnv(action_space=..., gripper_action_space="position")``
  for the space the next policy asks for, as RoboArena's evaluator builds one per policy (the previous env is
  closed first; an env already in that space is kept). Every DROID space is offered: ``joint_position``,
  ``joint_velocity``, ``cartesian_position``, ``cartesian_velocity``.
- ``reset(seed)`` -> ``RobotEnv.reset()`` (gripper open, arm to DROID's reset joints). A real scene cannot be
  seeded: the operator restores it from the start image; ``seed`` is only recorded in the scene notes.
- ``observe()`` -> ``RobotEnv.get_observation()``: ``robot_state["joint_positions"]`` (7,),
  ``["cartesian_position"]`` (6,), ``["gripper_position"]`` (scalar, 0 open); ``image[<camera id>_left]``
  (and ``_right`` once configured for stereo) BGRA frames from the ZED cameras, converted to RGB and brought
  to the native frame size (16:9, default 288 x 512, the size RoboArena's evaluator sends) with padding; the
  episode runner resizes them further to what each policy asks for. Camera ids come from DROID's
  ``droid.misc.parameters`` (``varied_camera_1_id``, ``varied_camera_2_id``, ``hand_camera_id``).
- ``apply(action)`` -> ``RobotEnv.step(action)``: joint spaces take (8,) = 7 joints + gripper, Cartesian spaces
  (7,); velocity actions are clipped to [-1, 1] (RobotEnv asserts that range) and the gripper is binarised at
  0.5 as DROID policy clients do.
- ``progress()`` / ``success()`` -> None: a real robot cannot know; the operator judges.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evaluator_client.episode import resize_with_pad
from evaluator_client.robot import DROID_ACTION_SPACES
from policy_server.check import ACTION_DIMS

INSTALL_HELP = (
    "the DROID robot adapter needs DROID's Python package, which is not importable here. Install it on the "
    "robot's control laptop: `git clone https://github.com/droid-dataset/droid && cd droid && pip install -e .`, "
    "then follow DROID's robot-side setup (NUC with Polymetis and the Franka controller, ZED SDK for the "
    "cameras, camera ids and nuc_ip in droid/misc/parameters.py); see https://droid-dataset.github.io. "
    "Without a robot, use the replica instead (--robot replica)."
)
NATIVE_FRAME_SIZE = (288, 512)
"""(H, W) pixels of the frames this adapter hands out: the ZED's 16:9 at the size RoboArena's evaluator uses."""


class DroidUnavailableError(ImportError):
    """DROID (``droid.robot_env``) cannot be imported on this machine."""


class DroidRobot:
    """A DROID station. ``n_exterior_cameras``: 1 or 2 (``varied_camera_1`` then ``varied_camera_2``).

    ``action_space`` is the space of the env built at construction (used until the first :meth:`configure`);
    ``frame_size`` the (H, W) of every camera frame handed out.
    """

    platform = "droid:franka"
    control_hz = 15.0
    action_spaces = list(DROID_ACTION_SPACES)

    def __init__(
        self,
        *,
        action_space: str = "joint_position",
        n_exterior_cameras: int = 1,
        frame_size: tuple[int, int] = NATIVE_FRAME_SIZE,
    ) -> None:
        try:
            from droid.misc import parameters
            from droid.robot_env import RobotEnv
        except ImportError as exc:
            raise DroidUnavailableError(INSTALL_HELP) from exc
        if n_exterior_cameras not in (1, 2):
            raise ValueError("n_exterior_cameras must be 1 or 2")
        self._robot_env_class = RobotEnv
        self.frame_size = frame_size
        self.stereo = False
        self._env: Any = None
        self.action_space = ""
        self._build_env(action_space)
        exterior_ids = [parameters.varied_camera_1_id, parameters.varied_camera_2_id][:n_exterior_cameras]
        self._camera_ids = {f"exterior_{i}": cam for i, cam in enumerate(exterior_ids, start=1)}
        self._camera_ids["wrist"] = parameters.hand_camera_id
        self.cameras = list(self._camera_ids)
        self._seed: int | None = None
        self._start_image: np.ndarray | None = None

    def _build_env(self, action_space: str) -> None:
        if action_space not in self.action_spaces:
            raise ValueError(f"unsupported action space {action_space!r}; DROID offers {self.action_spaces}")
        if self._env is not None:
            self._env.close()
            self._env = None
        self._env = self._robot_env_class(action_space=action_space, gripper_action_space="position")
        self.action_space = action_space

    def configure(self, *, action_space: str, stereo: bool = False) -> None:
        """Set the station up for the next policy: a ``RobotEnv`` in ``action_space``, stereo frames or not.

        Raises ``ValueError`` for a space DROID does not offer.
        """
        if action_space != self.action_space:
            self._build_env(action_space)
        self.stereo = stereo

    def reset(self, seed: int | None = None) -> None:
        self._seed = seed
        self._env.reset()
        self._start_image = self.camera_frames()["exterior_1"]

    def _images(self, raw: dict[str, Any], sides: tuple[str, ...] = ("left",)) -> dict[str, np.ndarray]:
        """``{"<camera>_<side>": RGB (H, W, 3) at frame_size}`` from DROID's ``{"<id>_<side>": BGRA}``."""
        frames = {}
        for name, cam_id in self._camera_ids.items():
            for side in sides:
                key = f"{cam_id}_{side}"
                if key not in raw:
                    raise RuntimeError(
                        f"DROID returned no image for camera {name} ({key}); check the camera ids"
                    )
                rgb = np.ascontiguousarray(raw[key][..., :3][..., ::-1])
                frames[f"{name}_{side}"] = resize_with_pad(rgb, *self.frame_size)
        return frames

    def observe(self) -> dict[str, Any]:
        raw = self._env.get_observation()
        state = raw["robot_state"]
        sides = ("left", "right") if self.stereo else ("left",)
        frames = self._images(raw["image"], sides)
        obs: dict[str, Any] = {
            "observation/joint_position": np.asarray(state["joint_positions"], dtype=np.float64),
            "observation/cartesian_position": np.asarray(state["cartesian_position"], dtype=np.float64),
            "observation/gripper_position": np.asarray([state["gripper_position"]], dtype=np.float64),
        }
        for side in sides:
            obs[f"observation/wrist_image_{side}"] = frames[f"wrist_{side}"]
            for i in range(1, len(self._camera_ids)):
                obs[f"observation/exterior_image_{i}_{side}"] = frames[f"exterior_{i}_{side}"]
        return obs

    def camera_frames(self) -> dict[str, np.ndarray]:
        frames = self._images(self._env.read_cameras()[0]["image"])
        return {name: frames[f"{name}_left"] for name in self.cameras}

    def apply(self, action: np.ndarray) -> None:
        action = np.asarray(action, dtype=np.float64).reshape(-1).copy()
        expected = ACTION_DIMS[self.action_space]
        if action.shape != (expected,):
            raise ValueError(f"{self.action_space} expects ({expected},) actions, got {action.shape}")
        if self.action_space.endswith("velocity"):
            action[:-1] = np.clip(action[:-1], -1.0, 1.0)
        action[-1] = 1.0 if action[-1] > 0.5 else 0.0
        self._env.step(action)

    def start_image(self) -> np.ndarray:
        if self._start_image is None:
            raise RuntimeError("reset() the robot before asking for its start image")
        return self._start_image.copy()

    def progress(self) -> float | None:
        return None

    def success(self) -> bool | None:
        return None

    def scene_notes(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "seed": self._seed,
            "control_hz": self.control_hz,
            "cameras": list(self.cameras),
        }
