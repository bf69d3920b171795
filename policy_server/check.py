"""Health and capability check of a policy server: connect, read metadata, one dry-run infer.

This is the pre-registration and liveness probe: it tells whether a policy can be evaluated, what it
needs from a robot rig (:func:`requirements_from_metadata`), and how long one inference takes. Many
servers are checked in parallel by :func:`check_many`, so a slow or dead policy costs its own timeout,
not everyone's.

The endpoint is untrusted: every check connects through the address guard (:mod:`policy_server.netguard`)
and follows no redirect, and a failure is reported as a classified reason with a fixed sentence
(:data:`CHECK_MESSAGES`), never with anything the peer sent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from policy_server import netguard, wire
from policy_server.client import (
    AddressNotAllowed,
    BadAction,
    PolicyClient,
    PolicyClientError,
    PolicyError,
    PolicyProtocolError,
    PolicyTimeout,
    PolicyUnavailable,
)
from policy_server.server import NONCE_KEY, PROTOCOL_KEY

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
FINGERPRINT_DECIMALS = 2
"""Actions are rounded to this many decimals before hashing: float noise between runs, GPUs and batch sizes
(~1e-5) does not change the fingerprint, a different checkpoint does."""


class MetadataError(ValueError):
    """A policy's metadata declares a requirement that makes no sense; ``key`` names it."""

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


# The one sentence per failure an owner sees. Nothing a peer sent (a response body, a traceback, an exception's
# text) ever goes into a check message: a check of someone else's server must not read it out, and the
# difference between error texts must not turn the checker into a scanner.
CHECK_MESSAGES = {
    "address_not_allowed": "{detail}",
    "unreachable": "cannot connect to the endpoint: the host name does not resolve, or no route leads to it",
    "refused": "the endpoint's host refused the TCP connection: nothing listens on that port",
    "timeout": "no answer from the endpoint within {timeout} s ({stage})",
    "tls_error": "the TLS handshake with the endpoint failed (certificate or protocol)",
    "not_websocket": "the endpoint answered {answer} instead of a websocket handshake",
    "redirect_refused": "the endpoint answered with a redirect; the arena never follows redirects, "
    "register the final address",
    "unauthorized": "the endpoint refused the arena's credentials: check the endpoint API key",
    "bad_metadata": "the metadata frame is not a valid policy metadata map{detail}",
    "protocol_error": "the endpoint broke the wire protocol (an undecodable or malformed frame)",
    "policy_error": "the policy failed on {stage} (your server's log has the details)",
    "bad_action": "the dry-run reply's actions are {detail}",
    "not_connected": "the policy serves dial-out and is not connected to any relay "
    "(is `arena-policy serve --connect` running?)",
}
CHECK_ERRORS = tuple(CHECK_MESSAGES)


@dataclass(frozen=True)
class CheckResult:
    """Outcome of :func:`policy_check`.

    ``error`` is ``None`` when ``ok``, else one of :data:`CHECK_ERRORS` (``"address_not_allowed"``,
    ``"unreachable"``, ``"refused"``, ``"timeout"``, ``"tls_error"``, ``"not_websocket"``,
    ``"redirect_refused"``, ``"unauthorized"``, ``"bad_metadata"``, ``"protocol_error"``, ``"policy_error"``,
    ``"bad_action"``); ``message`` is that error's fixed sentence for people. ``latency_ms`` is the dry-run round trip. ``requirements`` is the normalised
    form of the metadata (see :func:`requirements_from_metadata`) with ``action_dim`` and
    ``action_horizon`` taken from the dry run. ``fingerprint`` and ``probe`` (passing checks only) are
    :func:`behaviour_fingerprint` and :func:`behaviour_probe` of the dry-run answer: the dry-run observation is
    fixed, so a deterministic policy gives the same answer at every check until its weights or code change.
    """

    ok: bool
    error: str | None
    message: str
    latency_ms: float | None = None
    metadata: dict[str, Any] | None = None
    requirements: dict[str, Any] | None = None
    dialect: str | None = None
    fingerprint: str | None = None
    probe: dict[str, Any] | None = None
    checked_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (arrays in metadata become lists, ``checked_at`` an ISO 8601 string)."""
        data = asdict(self)
        data.pop("probe")  # 10^2-10^3 integers; ``fingerprint`` names them
        data["metadata"] = _jsonable(self.metadata)
        data["checked_at"] = self.checked_at.isoformat()
        return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _bool(metadata: Mapping[str, Any], key: str, default: bool) -> bool:
    value = metadata.get(key)
    if value is None:
        return default
    if not isinstance(value, (bool, np.bool_)):
        raise MetadataError(f"{key} must be true or false, got {value!r}", key=key)
    return bool(value)


def _positive_int(metadata: Mapping[str, Any], key: str) -> int | None:
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise MetadataError(f"{key} must be a positive integer, got {value!r}", key=key)
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
        raise MetadataError(f"platform must be a string, got {platform!r}", key="platform")
    resolution = metadata.get("image_resolution", DEFAULT_IMAGE_RESOLUTION)
    if resolution is not None and (
        not isinstance(resolution, (list, tuple, np.ndarray))
        or len(resolution) != 2
        or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in resolution)
        or not all(1 <= n <= MAX_IMAGE_SIDE for n in resolution)
    ):
        raise MetadataError(
            f"image_resolution must be [H, W] in 1..{MAX_IMAGE_SIDE} pixels or null, got {resolution!r}",
            key="image_resolution",
        )
    cameras = metadata.get("n_external_cameras", 1)
    if isinstance(cameras, bool) or not isinstance(cameras, (int, np.integer)) or not 0 <= cameras <= 2:
        raise MetadataError(
            f"n_external_cameras must be 0, 1 or 2, got {cameras!r}", key="n_external_cameras"
        )
    action_space = metadata.get("action_space", DEFAULT_ACTION_SPACE)
    if action_space not in ACTION_SPACES:
        raise MetadataError(
            f"action_space must be one of {', '.join(ACTION_SPACES)}, got {action_space!r}",
            key="action_space",
        )
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
        raise MetadataError(
            f"action_dim must be at least {MIN_ACTION_DIM}, got {requirements['action_dim']}",
            key="action_dim",
        )
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
    """A plausible ``replica/state`` with every key of the replica's privileged state (read by scripted
    baselines; see ``evaluator_client.replica.env.Replica.privileged_state``): a pick-and-place of a 2.5 cm block
    into a bowl, positions in metres in the robot base frame, the table surface at z = 0."""
    obj = np.array([0.55 + rng.uniform(-0.1, 0.1), rng.uniform(-0.15, 0.15), 0.025])
    return {
        "task": "pick_place",
        "table_z": np.array([0.0]),
        "object_pos": obj,
        "object_yaw": np.array([0.0]),
        "object_half_size": np.array([0.025, 0.025, 0.025]),
        "target_pos": np.array([0.6, 0.2, 0.0]),
        "target_kind": "bowl",
        "target_radius": np.array([0.06]),
        "decoy_target_pos": np.array([0.6, -0.2, 0.0]),
        "grasped": np.array([False]),
    }


def _failure(error: str, found: Mapping[str, Any] | None = None, **fields: Any) -> CheckResult:
    """A failed check with the fixed sentence of ``error`` (``fields`` fill its placeholders)."""
    return CheckResult(ok=False, error=error, message=CHECK_MESSAGES[error].format(**fields), **(found or {}))


def _connect_failure(exc: PolicyUnavailable) -> CheckResult:
    if isinstance(exc, AddressNotAllowed):
        if exc.address_class == "unresolvable":
            return _failure("unreachable")
        return _failure("address_not_allowed", detail=netguard.refusal_sentence(exc.address_class))
    if exc.reason == "not_websocket":
        answer = f"HTTP {exc.status // 100}xx" if exc.status else "something that is not HTTP"
        return _failure("not_websocket", answer=answer)
    if exc.reason in CHECK_MESSAGES:
        return _failure(exc.reason)
    return _failure("unreachable")


def policy_check(
    url: str,
    *,
    timeout: float = 8.0,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
    endpoint_allow: frozenset[str] | None = None,
) -> CheckResult:
    """Check one policy server within about ``timeout`` seconds in total. Never raises for a bad policy.

    The connection goes through the endpoint guard with ``endpoint_allow`` (address classes, see
    :mod:`policy_server.netguard`; default ``$ARENA_ENDPOINT_ALLOW``, else public only): a refused address
    gets ``address_not_allowed`` without any packet sent to it. A failure's ``message`` is the fixed sentence of its ``error`` (:data:`CHECK_MESSAGES`), never text
    the peer sent.
    """
    deadline = time.monotonic() + timeout
    try:
        client = PolicyClient(
            url,
            api_key=api_key,
            headers=headers,
            connect_timeout=timeout,
            request_timeout=timeout,
            retries=0,
            endpoint_allow=netguard.allow_from_env() if endpoint_allow is None else endpoint_allow,
        )
    except PolicyUnavailable as exc:
        return _connect_failure(exc)
    except PolicyTimeout:
        return _failure("timeout", timeout=timeout, stage="handshake or metadata")
    except PolicyError:
        return _failure("policy_error", stage="connect")
    except PolicyProtocolError:
        return _failure("bad_metadata", detail="")
    with client:
        metadata = {k: v for k, v in client.metadata.items() if k != PROTOCOL_KEY}
        found: dict[str, Any] = {"metadata": metadata, "dialect": client.dialect}
        try:
            requirements = requirements_from_metadata(metadata)
        except MetadataError as exc:
            return _failure(
                "bad_metadata", found, detail=f": {exc.key} has a value of the wrong type or range"
            )
        found["requirements"] = requirements
        client.request_timeout = max(deadline - time.monotonic(), 0.1)
        client.action_dim = requirements["action_dim"]
        try:
            result = client.infer(dummy_observation(requirements))
        except PolicyTimeout:
            return _failure("timeout", found, timeout=timeout, stage="dry-run inference")
        except PolicyError:
            return _failure("policy_error", found, stage="a dry-run observation")
        except BadAction:
            detail = "missing, not a finite numeric (H, D) array, or of another action dim than declared"
            return _failure("bad_action", found, detail=detail)
        except (PolicyProtocolError, wire.WireError):
            return _failure("protocol_error", found)
        except PolicyUnavailable:
            return _failure("unreachable", found)
    horizon, dim = result["actions"].shape
    mismatch = action_space_mismatch(metadata, requirements["action_space"], result["actions"].shape)
    if mismatch:
        return _failure("bad_action", found, detail=mismatch)
    declared_horizon = requirements["action_horizon"]
    if declared_horizon is not None and horizon != declared_horizon:
        detail = f"of horizon {horizon}, the metadata declares {declared_horizon}"
        return _failure("bad_action", found, detail=detail)
    found["requirements"] = {**requirements, "action_dim": int(dim), "action_horizon": int(horizon)}
    latency_ms = client.latencies_ms[-1]
    return CheckResult(
        ok=True,
        error=None,
        message=f"ok: actions ({horizon}, {dim}) in {latency_ms:.1f} ms",
        latency_ms=latency_ms,
        fingerprint=behaviour_fingerprint(result["actions"]),
        probe=behaviour_probe(result["actions"]),
        **found,
    )


def behaviour_probe(actions: Any) -> dict[str, Any]:
    """The dry-run answer in fingerprint form: ``{"shape": [H, D], "steps": [...]}``, the actions in steps of
    ``10**-FINGERPRINT_DECIMALS`` (ints, row-major). Compare two with :func:`same_behaviour`."""
    values = np.asarray(actions, dtype=np.float64)
    steps = np.rint(values * 10.0**FINGERPRINT_DECIMALS).astype(np.int64) + 0  # + 0 maps -0 to 0
    return {"shape": [int(n) for n in values.shape], "steps": steps.ravel().tolist()}


def behaviour_fingerprint(actions: Any) -> str:
    """SHA-256 (64 hex characters) of :func:`behaviour_probe`: a short name for the policy's answer to the
    fixed dry-run observation. Float noise next to a rounding boundary can change it; compare answers with
    :func:`same_behaviour`, which tolerates that.

    The arena keeps both from labs: anyone holding them could send the probe through a session's relay and
    recognise the policy in the slot.
    """
    probe = behaviour_probe(actions)
    digest = hashlib.sha256(("x".join(str(n) for n in probe["shape"]) + ":").encode())
    digest.update(np.asarray(probe["steps"], dtype="<i8").tobytes())
    return digest.hexdigest()


def same_behaviour(first: Mapping[str, Any], second: Mapping[str, Any], *, tolerance_steps: int = 1) -> bool:
    """Whether two :func:`behaviour_probe` answers have the same shape and differ by at most
    ``tolerance_steps`` rounding steps in every entry (a value next to a rounding boundary lands on either side)."""
    if list(first.get("shape", ())) != list(second.get("shape", ())):
        return False
    a = np.asarray(first.get("steps", ()), dtype=np.int64)
    b = np.asarray(second.get("steps", ()), dtype=np.int64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tolerance_steps))


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


def served_nonce(
    url: str,
    *,
    api_key: str | None = None,
    timeout: float = 8.0,
    endpoint_allow: frozenset[str] | None = None,
) -> str | None:
    """The ``arena_nonce`` string in the endpoint's metadata frame, or None (no such key, not a string, or the
    endpoint cannot be read). Connects through the address guard like :func:`policy_check`; only the metadata
    frame is read."""
    try:
        with PolicyClient(
            url,
            api_key=api_key,
            connect_timeout=timeout,
            request_timeout=timeout,
            retries=0,
            endpoint_allow=netguard.allow_from_env() if endpoint_allow is None else endpoint_allow,
        ) as client:
            value = client.metadata.get(NONCE_KEY)
    except PolicyClientError:
        return None
    return value if isinstance(value, str) else None


def not_connected() -> CheckResult:
    """The result for a dial-out policy that no relay holds a link to (nothing to connect to)."""
    return CheckResult(ok=False, error="not_connected", message=CHECK_MESSAGES["not_connected"])


def check_many(
    urls: Sequence[str],
    *,
    concurrency: int = 16,
    timeout: float = 8.0,
    api_keys: Sequence[str | None] | None = None,
    endpoint_allow: frozenset[str] | None = None,
) -> list[CheckResult]:
    """:func:`policy_check` every URL, ``concurrency`` at a time; results in the order of ``urls``.

    ``api_keys``, if given, holds one key (or None) per URL; ``endpoint_allow`` applies to all. The whole call
    takes about
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
        return list(
            pool.map(
                lambda url, key: policy_check(
                    url, timeout=timeout, api_key=key, endpoint_allow=endpoint_allow
                ),
                urls,
                keys,
            )
        )
