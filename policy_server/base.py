"""The interface every served policy implements."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np


class BasePolicy(abc.ABC):
    """A policy that maps one observation dict to a chunk of actions.

    ``infer`` receives the observation exactly as the client sent it (numpy arrays decoded read-only,
    strings as str) and returns a dict holding at least ``"actions"``: an ``(H, action_dim)`` float array.
    ``reset`` is called between episodes. ``metadata`` is sent to every client on connect; for RoboArena
    compatibility it holds ``image_resolution``, ``needs_wrist_camera``, ``n_external_cameras``,
    ``needs_stereo_camera``, ``needs_session_id`` and ``action_space``.
    """

    @abc.abstractmethod
    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]: ...

    def reset(self, reset_info: dict[str, Any] | None = None) -> None:  # noqa: B027 - optional hook
        """Forget episode state. The default policy is stateless."""

    @property
    def metadata(self) -> dict[str, Any]:
        return {}
