"""Small policies for the policy_server tests (also importable by ``arena-policy serve`` in a subprocess)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from policy_server.base import BasePolicy

DROID_METADATA = {
    "image_resolution": [224, 224],
    "needs_wrist_camera": True,
    "n_external_cameras": 1,
    "needs_stereo_camera": False,
    "needs_session_id": False,
    "action_space": "joint_velocity",
}


class EchoPolicy(BasePolicy):
    """Actions echo the state: every row is ``joint_position (7) + gripper_position (1)``.

    Records what it saw (``seen_keys``, ``resets``) and, with ``delay_s``, how many calls overlapped.
    """

    def __init__(
        self, *, horizon: int = 10, metadata: dict[str, Any] | None = None, delay_s: float = 0.0
    ) -> None:
        self.horizon = horizon
        self._metadata = dict(DROID_METADATA if metadata is None else metadata)
        self.delay_s = delay_s
        self.seen_keys: list[list[str]] = []
        self.resets: list[dict[str, Any] | None] = []
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.seen_keys.append(sorted(obs))
            if self.delay_s:
                time.sleep(self.delay_s)
            state = np.concatenate([obs["observation/joint_position"], obs["observation/gripper_position"]])
            return {"actions": np.tile(state, (self.horizon, 1))}
        finally:
            with self._count_lock:
                self.active -= 1

    def reset(self, reset_info: dict[str, Any] | None = None) -> None:
        self.resets.append(reset_info)


class FailingPolicy(BasePolicy):
    """Raises on every inference."""

    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        raise RuntimeError("the policy exploded on purpose")


class FixedActionsPolicy(BasePolicy):
    """Returns the given actions whatever it is asked (for bad-action cases)."""

    def __init__(self, actions: Any) -> None:
        self.actions = actions

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        return {"actions": self.actions}


def make_echo() -> EchoPolicy:
    """Factory for ``arena-policy serve arena_test_policies:make_echo``."""
    return EchoPolicy()
