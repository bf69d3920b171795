"""Health and capability check of a policy server: connect, read metadata, one dry-run infer.

This is the pre-registration and liveness probe: it tells whether a policy can be evaluated, what it
needs from a robot rig (:func:`requirements_from_metadata`), and how long one inference takes. Many
servers are checked in parallel by :func:`check_many`, so a slow or dead policy costs its own timeout,
not everyone's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from policy_server import wire
from policy_server.client import (
    BadAction,
    PolicyClient,
    PolicyError,
    PolicyProtocolError,
    PolicyTimeout,
    PolicyUnauthorized,
    PolicyUnavailable,
)
from policy_server.server import PROTOCOL_KEY

ACTION_SPACES = ("joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity")
ACTION_DIMS = {"joint_position": 8, "joint_velocity": 8, "cartesian_position": 7, "cartesian_velocity": 7}
"""Width of one action row per DROID action space: 7 joints + gripper, or xyz + roll-pitch-yaw + gripper."""
DEFAULT_ACTION_SPACE = "joint_velocity"
"""The space of a policy whose metadata declares none: openpi's DROID checkpoints (pi0-, pi0-FAST-, pi05-DROID)
send empty metadata and answer (10, 8) / (15, 8) joint-velocity chunks. (RoboArena's servers always declare one:
their config's default is ``joint_position``.)"""
DEFAULT_IMAGE_RESOLUTION = (224, 224)
NATIVE_DRY_RUN_RESOLUTION = (288, 512)
"""Frame size (H, W) of the dry run for a policy asking for native frames (``image_resolution: null``):
16:9 like DROID's ZED cameras, at the size RoboArena's evaluator sends them."""
MIN_ACTION_DIM = 7
MAX_IMAGE_SIDE = 4096
DRY_RUN_PROMPT = "pick up the red block and put it in the bowl"


class MetadataError(ValueError):
    """A policy's metadata declares a requirement that makes no sense."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`policy_check`.

    ``error`` is ``None`` when ``ok``, else one of ``"unreachable"``, ``"unauthorized"``, ``"timeout"``,
    ``"bad_metadata"``, ``"protocol_error"``, ``"policy_error"``, ``"bad_action"``; ``message`` is a
    sentence for people. ``latency_ms`` is the dry-run round trip. ``requirements`` is the normalised
    form of the metadata (see :func:`requirements_from_metadata`) with ``action_dim`` and
    ``action_horizon`` taken from the dry run.
    """

    ok: bool
    error: str | None
    message: str
    latency_ms: float | None = None
    metadata: dict[str, Any] | None = None
    requirements: dict[str, Any] | None = None
    dialect: str | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (arrays in metadata become lists, ``checked_at`` an ISO 8601 string)."""
        data = asdict(self)
        data["metadata"] = _jsonable(self.metadata)
        data["checked_at"] = self.checked_at.isoformat()
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _bool(metadata: Mapping[str, Any], key: str, default: bool) -> bool:
    value = metadata.get(key)
    if value is None:
        return default
    if not isinstance(value, bool | np.bool_):
        raise MetadataError(f"{key} must be true or false, got {value!r}")
    return bool(value)


def _positive_int(metadata: Mapping[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise MetadataError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def requirements_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What the policy needs from a rig, with openpi-DROID defaults for whatever the metadata leaves out.

    Returns ``platform`` (str or None), ``image_resolution`` ([H, W] pixels; default 224x224 when the key is
    absent, as openpi's DROID client resizes; None when the metadata says ``null``: native frames),
    ``n_external_cameras`` (0-2, default 1), ``needs_wrist_camera`` (default True), ``needs_stereo_camera``
    (default False), ``needs_session_id`` (default False), ``action_space`` (default
    :data:`DEFAULT_ACTION_SPACE`),
    ``action_dim`` and ``action_horizon`` (ints, or None when the metadata does not declare them).
    Raises :class:`MetadataError` for a declared value of the wrong type or range.
    """
    platform = metadata.get("platform")
    if platform is not None and not isinstance(platform, str):
        raise MetadataError(f"platform must be a string, got {platform!r}")
    resolution = metadata.get("image_resolution", DEFAULT_IMAGE_RESOLUTION)
    if resolution is not None and (
        not isinstance(resolution, list | tuple | np.ndarray)
        or len(resolution) != 2
        or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in resolution)
        or not all(1 <= n <= MAX_IMAGE_SIDE for n in resolution)
    ):
        raise MetadataError(
            f"image_resolution must be [H, W] in 1..{MAX_IMAGE_SIDE} pixels or null, got {resolution!r}"
        )
    cameras = metadata.get("n_external_cameras", 1)
    if isinstance(cameras, bool) or not isinstance(cameras, int | np.integer) or not 0 <= cameras <= 2:
        raise MetadataError(f"n_external_cameras must be 0, 1 or 2, got {cameras!r}")
    action_space = metadata.get("action_space", DEFAULT_ACTION_SPACE)
    if action_space not in ACTION_SPACES:
        raise MetadataError(f"action_space must be one of {', '.join(ACTION_SPACES)}, got {action_space!r}")
    requirements = {
        "platform": platform,
        "image_resolution": None if resolution is None else [int(resolution[0]), int(resolution[1])],
        "n_external_cameras": int(cameras),
        "needs_wrist_camera": _bool(metadata, "needs_wrist_camera", True),
        "needs_stereo_camera": _bool(metadata, "needs_stereo_camera", False),
        "needs_session_id": _bool(metadata, "needs_session_id", False),
        "action_space": action_space,
        "action_dim": _positive_int(metadata, "action_dim"),
        "action_horizon": _positive_int(metadata, "action_horizon"),
        "needs_replica_state": _bool(metadata, "needs_replica_state", False),
    }
    if requirements["action_dim"] is not None and requirements["action_dim"] < MIN_ACTION_DIM:
        raise MetadataError(f"action_dim must be at least {MIN_ACTION_DIM}, got {requirements['action_dim']}")
    return requirements


def dummy_observation(requirements: Mapping[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """A DROID observation with exactly the cameras the requirements ask for.

    Images are uint8 (H, W, 3) noise, at :data:`NATIVE_DRY_RUN_RESOLUTION` for a policy asking for native
    frames; ``observation/joint_position`` (7,), ``observation/cartesian_position``
    (6,) and ``observation/gripper_position`` (1,) are float64; ``prompt`` is a task instruction.
    """
    rng = np.random.default_rng(seed)
    height, width = requirements["image_resolution"] or NATIVE_DRY_RUN_RESOLUTION
    sides = ("left", "right") if requirements["needs_stereo_camera"] else ("left",)

    def image() -> np.ndarray:
        return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)

    obs: dict[str, Any] = {}
    for camera in range(1, requirements["n_external_cameras"] + 1):
        for side in sides:
            obs[f"observation/exterior_image_{camera}_{side}"] = image()
    if requirements["needs_wrist_camera"]:
        for side in sides:
            obs[f"observation/wrist_image_{side}"] = image()
    obs["observation/joint_position"] = rng.uniform(-1.0, 1.0, size=7)
    obs["observation/cartesian_position"] = rng.uniform(-0.5, 0.5, size=6)
    obs["observation/gripper_position"] = rng.uniform(0.0, 1.0, size=1)
    obs["prompt"] = DRY_RUN_PROMPT
    if requirements["needs_session_id"]:
        obs["session_id"] = "policy-check"
    if requirements.get("needs_replica_state"):
        obs["replica/state"] = dummy_replica_state(rng)
    return obs


def dummy_replica_state(rng: np.random.Generator) -> dict[str, Any]:
    """A plausible ``replica/state`` (the MuJoCo replica's privileged state, read by scripted baselines):
    a pick-and-place of a 2.5 cm block into a bowl, positions in metres on a table at z = 0."""
    obj = np.array([*rng.uniform(-0.15, 0.15, size=2), 0.025])
    return {
        "task": "pick_place",
        "object_pos": obj,
        "object_yaw": np.array([0.0]),
        "object_half_size": np.array([0.025, 0.025, 0.025]),
        "target_pos": np.array([0.2, 0.1, 0.0]),
        "target_kind": "bowl",
        "target_radius": np.array([0.06]),
        "decoy_object_pos": obj + np.array([0.1, 0.0, 0.0]),
        "decoy_object_yaw": np.array([0.0]),
        "grasped": np.array([False]),
    }


def _failure(error: str, message: str, **found: Any) -> CheckResult:
    return CheckResult(ok=False, error=error, message=message, **found)


def policy_check(
    url: str,
    *,
    timeout: float = 8.0,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> CheckResult:
    """Check one policy server within about ``timeout`` seconds in total. Never raises for a bad policy."""
    deadline = time.monotonic() + timeout
    try:
        client = PolicyClient(
            url, api_key=api_key, headers=headers, connect_timeout=timeout, request_timeout=timeout, retries=0
        )
    except PolicyUnauthorized as exc:
        return _failure("unauthorized", f"the server refused our credentials: {exc}")
    except PolicyTimeout as exc:
        return _failure("timeout", f"no handshake or metadata within {timeout} s: {exc}")
    except PolicyUnavailable as exc:
        return _failure("unreachable", f"cannot connect: {exc}")
    except PolicyError as exc:
        return _failure("policy_error", f"the server failed on connect: {exc}")
    except PolicyProtocolError as exc:
        return _failure("bad_metadata", str(exc))
    with client:
        metadata = {k: v for k, v in client.metadata.items() if k != PROTOCOL_KEY}
        found: dict[str, Any] = {"metadata": metadata, "dialect": client.dialect}
        try:
            requirements = requirements_from_metadata(metadata)
        except MetadataError as exc:
            return _failure("bad_metadata", str(exc), **found)
        found["requirements"] = requirements
        client.request_timeout = max(deadline - time.monotonic(), 0.1)
        client.action_dim = requirements["action_dim"]
        try:
            result = client.infer(dummy_observation(requirements))
        except PolicyTimeout:
            return _failure("timeout", f"no answer to a dry-run inference within {timeout} s", **found)
        except PolicyError as exc:
            return _failure("policy_error", f"the policy failed on a dry-run observation: {exc}", **found)
        except BadAction as exc:
            return _failure("bad_action", str(exc), **found)
        except (PolicyProtocolError, wire.WireError) as exc:
            return _failure("protocol_error", str(exc), **found)
        except PolicyUnavailable as exc:
            return _failure("unreachable", f"connection lost during the dry run: {exc}", **found)
    horizon, dim = result["actions"].shape
    mismatch = action_space_mismatch(metadata, requirements["action_space"], result["actions"].shape)
    if mismatch:
        return _failure("bad_action", f"the dry-run reply's actions are {mismatch}", **found)
    declared_horizon = requirements["action_horizon"]
    if declared_horizon is not None and horizon != declared_horizon:
        return _failure(
            "bad_action", f"actions have horizon {horizon}, metadata declares {declared_horizon}", **found
        )
    found["requirements"] = {**requirements, "action_dim": int(dim), "action_horizon": int(horizon)}
    latency_ms = client.latencies_ms[-1]
    return CheckResult(
        ok=True,
        error=None,
        message=f"ok: actions ({horizon}, {dim}) in {latency_ms:.1f} ms",
        latency_ms=latency_ms,
        **found,
    )


def action_space_mismatch(
    metadata: Mapping[str, Any], action_space: str, shape: tuple[int, ...]
) -> str | None:
    """``None`` when ``(H, D)`` actions can be rows of ``action_space``, else the end of the sentence "the
    dry-run reply's actions are ...", naming the shape and the space.

    ``metadata`` is what the policy declared (to tell a declared space from the default one).
    """
    expected = ACTION_DIMS[action_space]
    if shape[-1] == expected:
        return None
    declared = (
        f"declares action_space {action_space!r}"
        if "action_space" in metadata
        else f"declares no action_space, so it is taken for {action_space!r} (openpi's DROID default)"
    )
    return f"{tuple(int(n) for n in shape)}, but the policy {declared}, whose actions are (H, {expected})"


def check_many(
    urls: Sequence[str],
    *,
    concurrency: int = 16,
    timeout: float = 8.0,
    api_keys: Sequence[str | None] | None = None,
) -> list[CheckResult]:
    """:func:`policy_check` every URL, ``concurrency`` at a time; results in the order of ``urls``.

    ``api_keys``, if given, holds one key (or None) per URL. The whole call takes about
    ``ceil(len(urls) / concurrency) * timeout`` seconds at worst.
    """
    keys = list(api_keys) if api_keys is not None else [None] * len(urls)
    if len(keys) != len(urls):
        raise ValueError(f"{len(urls)} urls but {len(keys)} api_keys")
    if not urls:
        return []
    with ThreadPoolExecutor(
        max_workers=max(1, min(concurrency, len(urls))), thread_name_prefix="check"
    ) as pool:
        return list(pool.map(lambda url, key: policy_check(url, timeout=timeout, api_key=key), urls, keys))
