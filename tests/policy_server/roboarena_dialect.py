"""An emulation of RoboArena's policy server template (``roboarena/policy_server.py``), from its documented
behaviour, and a policy of the kind people serve with it.

The server: its metadata frame is exactly ``dataclasses.asdict(PolicyServerConfig)``; every request must carry
``endpoint`` (a request without it fails: the traceback goes out as a text frame, then close 1011 with the
template's reason); ``reset`` hands the rest of the request to ``policy.reset`` and is answered with the text
frame ``"reset successful"``; any other ``endpoint`` value is taken for ``infer``, whose reply is the policy's
answer packed as is (no ``server_timing``). It serves websockets only, with the template's options
(``compression=None, max_size=None``) and no ``GET /healthz``: plain HTTP gets the websockets library's refusal.

:class:`ConfigPolicy` reads exactly what its config asks for, the way a RoboArena policy indexes its
observation: a missing key (``session_id``, a ``_right`` frame, a camera) fails the request with a traceback,
as it would on RoboArena's server. It checks that frames have the configured size (16:9 native frames when
``image_resolution`` is None) and answers well-formed chunks in its action space from the proprioception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from policy_server._serving import ServerHandle, serve_in_thread
from policy_server.base import BasePolicy
from policy_server.wire import packb, unpackb

CLOSE_REASON = "Internal server error. Traceback included in previous frame."


@dataclasses.dataclass
class PolicyServerConfig:
    """RoboArena's server config: its fields and defaults."""

    image_resolution: tuple[int, int] | None = (224, 224)
    needs_wrist_camera: bool = True
    n_external_cameras: int = 1
    needs_stereo_camera: bool = False
    needs_session_id: bool = False
    action_space: str = "joint_position"


@dataclasses.dataclass(frozen=True)
class Case:
    """One config of the matrix, and the chunk length its policy answers."""

    config: PolicyServerConfig
    horizon: int = 8


CONFIG_MATRIX = {
    "joint_position": Case(PolicyServerConfig()),  # RoboArena's default config
    "joint_velocity": Case(
        PolicyServerConfig(action_space="joint_velocity"), horizon=10
    ),  # pi0-DROID's chunks
    "cartesian_position": Case(PolicyServerConfig(action_space="cartesian_position")),
    "cartesian_velocity": Case(PolicyServerConfig(action_space="cartesian_velocity")),
    "native_frames": Case(PolicyServerConfig(image_resolution=None)),
    "session_id": Case(PolicyServerConfig(needs_session_id=True)),
    "two_cameras": Case(PolicyServerConfig(n_external_cameras=2)),
    "wrist_only": Case(PolicyServerConfig(n_external_cameras=0)),
    "no_wrist": Case(PolicyServerConfig(needs_wrist_camera=False)),
    "stereo": Case(PolicyServerConfig(needs_stereo_camera=True, n_external_cameras=2)),
}
"""The configs the arena promises to run (prior-art.md, "Compatibility"), by name: each is health-checked
(``tests/policy_server/test_roboarena_configs.py``), evaluated in a replica session
(``tests/client/test_roboarena_matrix.py``) and on a DROID station (``tests/client/test_droid_sessions.py``)."""


def letterbox_top(native: tuple[int, int], resolution: tuple[int, int]) -> int:
    """The black rows above a (H, W) ``native`` frame resized with padding to ``resolution``, as DROID's and
    openpi's ``resize_with_pad`` place it (centred, the aspect ratio kept)."""
    (src_h, src_w), (height, width) = native, resolution
    scale = min(height / src_h, width / src_w)
    return (height - max(1, round(src_h * scale))) // 2


@contextlib.contextmanager
def serve_roboarena_in_thread(
    policy: BasePolicy, config: PolicyServerConfig | None = None
) -> Iterator[ServerHandle]:
    """Serve ``policy`` as RoboArena's template does. The metadata frame is ``asdict(config)``, or the policy's
    own metadata when no config is given (for tests of frames RoboArena's dataclass cannot produce)."""
    metadata = dataclasses.asdict(config) if config is not None else policy.metadata

    async def handle(ws: ServerConnection) -> None:
        await ws.send(packb(metadata))
        while True:
            try:
                request = unpackb(await ws.recv())
                endpoint = request["endpoint"]
                del request["endpoint"]
                if endpoint == "reset":
                    policy.reset(request)
                    reply: str | bytes = "reset successful"
                else:
                    reply = packb(policy.infer(request))
                await ws.send(reply)
            except ConnectionClosed:
                return
            except Exception:
                await ws.send(traceback.format_exc())
                await ws.close(CloseCode.INTERNAL_ERROR, CLOSE_REASON)
                return

    async def start() -> Server:
        return await serve(handle, "127.0.0.1", 0, compression=None, max_size=None)

    with serve_in_thread(start, host="127.0.0.1") as handle_:
        yield handle_


class ConfigPolicy(BasePolicy):
    """A RoboArena policy for ``config``: checks its observation, answers ``(horizon, D)`` chunks.

    Actions, from the proprioception of the observation: ``joint_position`` targets a small step from the
    current joints, ``joint_velocity`` a small normalised velocity, ``cartesian_position`` a pose a few
    millimetres along +x per row, ``cartesian_velocity`` a slow +x motion; the gripper stays open. Records
    ``frame_shapes`` (key -> shape of the last frame seen), ``top_padding`` (key -> how many all-black rows
    the last frame starts with: the letterbox of a resize with padding), ``images_sent`` (every image key
    of the last observation, asked for or not), ``session_ids`` (of observations) and ``resets`` (every
    ``reset_info``).
    """

    def __init__(self, config: PolicyServerConfig, *, horizon: int = 8) -> None:
        self.config = config
        self.horizon = horizon
        self.frame_shapes: dict[str, tuple[int, ...]] = {}
        self.top_padding: dict[str, int] = {}
        self.images_sent: set[str] = set()
        self.session_ids: list[str] = []
        self.resets: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def metadata(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def image_keys(self) -> list[str]:
        """The image keys this config asks for."""
        cameras = [f"exterior_image_{i}" for i in range(1, self.config.n_external_cameras + 1)]
        if self.config.needs_wrist_camera:
            cameras.append("wrist_image")
        sides = ("left", "right") if self.config.needs_stereo_camera else ("left",)
        return [f"observation/{camera}_{side}" for camera in cameras for side in sides]

    def _check_frame(self, key: str, image: np.ndarray) -> None:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{key}: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        if self.config.image_resolution is not None:
            if (height, width) != tuple(self.config.image_resolution):
                raise ValueError(f"{key}: expected {self.config.image_resolution}, got {(height, width)}")
        elif abs(width * 9 - height * 16) > 16:
            raise ValueError(f"{key}: a native frame is 16:9, got {width} x {height}")

    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        joints = np.asarray(obs["observation/joint_position"], dtype=np.float64)
        pose = np.asarray(obs["observation/cartesian_position"], dtype=np.float64)
        gripper = np.asarray(obs["observation/gripper_position"], dtype=np.float64)
        if joints.shape != (7,) or pose.shape != (6,) or gripper.shape != (1,):
            raise ValueError(f"bad proprioception shapes {joints.shape} {pose.shape} {gripper.shape}")
        if not isinstance(obs["prompt"], str):
            raise ValueError("prompt must be a string")
        with self._lock:
            self.images_sent = {key for key in obs if key.startswith("observation/") and "_image_" in key}
            for key in self.image_keys():
                self._check_frame(key, obs[key])
                self.frame_shapes[key] = obs[key].shape
                lit_rows = np.flatnonzero(obs[key].reshape(obs[key].shape[0], -1).any(axis=1))
                self.top_padding[key] = int(lit_rows[0]) if lit_rows.size else obs[key].shape[0]
            if self.config.needs_session_id:
                session_id = obs["session_id"]
                if not isinstance(session_id, str):
                    raise ValueError(f"session_id must be a string, got {session_id!r}")
                self.session_ids.append(session_id)
        steps = np.arange(1, self.horizon + 1)[:, None]
        space = self.config.action_space
        if space == "joint_position":
            arm = joints + 0.02 * steps * np.array([1, -1, 1, -1, 1, -1, 1])
        elif space == "joint_velocity":
            arm = np.tile(0.3 * np.array([1, -1, 1, -1, 1, -1, 1]), (self.horizon, 1))
        elif space == "cartesian_position":
            arm = np.tile(pose, (self.horizon, 1)) + 0.003 * steps * np.array([1, 0, 0, 0, 0, 0])
        else:
            arm = np.tile([0.2, 0.0, 0.0, 0.0, 0.0, 0.0], (self.horizon, 1))
        return {"actions": np.hstack([arm, np.zeros((self.horizon, 1))]).astype(np.float32)}

    def reset(self, reset_info: dict[str, Any] | None = None) -> None:
        info = dict(reset_info or {})
        if self.config.needs_session_id and not isinstance(info["session_id"], str):
            raise ValueError(f"reset_info's session_id must be a string, got {info['session_id']!r}")
        with self._lock:
            self.resets.append(info)
