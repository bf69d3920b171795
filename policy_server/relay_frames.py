"""What the blind relay lets through, frame by frame: only what the protocol allows, always re-encoded.

Policy to lab (every frame is decoded with the safe decoder and rebuilt; no byte of the policy's is forwarded):

- the metadata frame becomes the run requirements only (:func:`redact_metadata_frame`);
- an inference reply becomes ``{"actions": (H, D) float64}`` (1 <= H <= :data:`MAX_ACTION_HORIZON` and H the
  declared ``action_horizon`` if there is one, ``D`` set by the declared action space: 8 for joint spaces, 7 for
  cartesian ones, every value finite) plus
  ``server_timing.infer_ms`` rounded to :data:`TIMING_BUCKET_MS` if the policy reported it; every other key is
  dropped (:func:`reply_for_lab`). The rounding keeps what an openpi client logs useful while telling the lab
  nothing its own round-trip clock does not already tell it;
- a reset reply becomes ``{"reset": True}``, or RoboArena's exact text frame ``"reset successful"``;
- any other text frame (a traceback, "vote for me"), an undecodable or malformed frame, is a
  :class:`PolicyFault`: the lab gets one fixed text frame (:func:`lab_error_text`) and close 1011, the full text
  goes to the relay's log and to the owner's hook;
- a close from the policy becomes one of four fixed (code, reason) pairs (:func:`lab_close_for`): no reason
  text and no private close code of the policy's reaches the lab.

Lab to policy: binary frames only, decoded within the session's observation limit (:func:`observation_bytes`,
from the policy's declared cameras and resolution), a map, re-encoded (:func:`observation_for_policy`);
anything else is a :class:`LabFault` (close 1008 with a fixed reason naming the decoder's code). A
``session_id`` the lab sends (RoboArena's ``needs_session_id``) is replaced by an alias that names the episode
to the policy without naming the arena's session, which its owner could otherwise hand to a colluding lab or
match against the lab's records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

import numpy as np

from policy_server import wire
from policy_server.check import (
    ACTION_DIMS,
    ACTION_SPACES,
    MAX_IMAGE_SIDE,
    MetadataError,
    requirements_from_metadata,
)
from policy_server.client import ROBOARENA_METADATA_KEYS, ROBOARENA_RESET_REPLY, detect_dialect
from policy_server.server import NONCE_KEY, PROTOCOL_KEY, PROTOCOL_VERSION

PROPRIO_SHAPES = {
    "observation/joint_position": 7,
    "observation/cartesian_position": 6,
    "observation/gripper_position": 1,
}
"""DROID's proprioception keys and their lengths: 7 joint angles, the TCP pose (xyz + rpy), the gripper."""
MAX_PROMPT_CHARS = 2000
REQUIREMENT_KEYS = ROBOARENA_METADATA_KEYS | {"action_dim", "action_horizon", "needs_replica_state"}
RELAY_MARKER = "arena_relay"
MAX_REQUIREMENT_NUMBER = 100_000
MAX_ACTION_HORIZON = 400
"""Longest action chunk passed on: one whole RoboArena episode (400 steps at 15 Hz)."""
TIMING_BUCKET_MS = 50.0
MAX_TIMING_MS = 600_000.0
STATE_ALLOWANCE_BYTES = wire.MIB
"""Room in an observation for everything but images: state vectors, prompt, session id, replica state."""

BAD_GATEWAY = 1014
CLOSE_POLICY_ERROR = (1011, "policy error")
CLOSE_POLICY_UNAVAILABLE = (BAD_GATEWAY, "policy unavailable")
_LAB_CLOSES = {
    1008: (1008, "policy refused the frame"),
    1009: (1009, "frame too big for the policy"),
    1011: CLOSE_POLICY_ERROR,
}


class PolicyFault(Exception):
    """The policy failed or broke the protocol. ``kind`` is ``policy_error`` (it sent a text frame),
    ``bad_metadata``, ``bad_reply``, or ``endpoint_claimed`` / ``nonce_mismatch`` (the server's
    ``arena_nonce`` is not its owner's; the lab sees ``bad_metadata``); ``detail`` is the full story, for the
    owner and the relay's log only."""

    def __init__(self, kind: str, detail: str, *, lab_kind: str | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.lab_kind = lab_kind or kind
        """The code the lab sees (the owner's incident says ``kind``)."""


class LabFault(Exception):
    """A lab's frame is refused; ``code`` is a :class:`~policy_server.wire.WireError` code, ``text_frame`` or
    ``not_a_map``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code

    @property
    def close_reason(self) -> str:
        return f"invalid frame ({self.code})"


@dataclass(frozen=True)
class SessionShape:
    """What the relay learned from the metadata: ``action_dim`` of every reply, and ``observation_bytes``,
    the largest frame the lab may send in this session."""

    action_dim: int
    observation_bytes: int
    requirements: dict[str, Any] = field(default_factory=dict)


def lab_error_text(kind: str) -> str:
    """The only text frame a lab ever receives from the relay: fixed wording, the fault kind as its code."""
    return f"policy error (code {kind})"


def lab_close_for(upstream_code: int | None) -> tuple[int, str]:
    """The (code, reason) the lab sees when the policy closed with ``upstream_code``."""
    return _LAB_CLOSES.get(upstream_code or 0, CLOSE_POLICY_UNAVAILABLE)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REQUIREMENT_NUMBER


def _plain_requirement(key: str, value: Any) -> bool:
    """Whether ``value`` has the form requirement ``key`` takes, so that no free text (a policy's name
    smuggled into ``action_space``, say) passes the relay: numbers, a pair of numbers, action spaces, flags.
    """
    if key == "image_resolution":  # null: native frames (RoboArena's config allows it)
        return value is None or (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(_count(n) for n in value)
        )
    if key == "action_space":
        return value in ACTION_SPACES
    if key in ("n_external_cameras", "action_dim", "action_horizon"):
        return _count(value)
    return isinstance(value, bool)


def observation_bytes(requirements: dict[str, Any], *, limits: wire.Limits = wire.DEFAULT_LIMITS) -> int:
    """Largest observation frame (bytes) for a policy with these requirements: its uint8 RGB images at the
    declared resolution (``None``: native frames, counted as 4096 x 4096), two per camera on a stereo rig, plus
    :data:`STATE_ALLOWANCE_BYTES`; never more than ``limits.max_frame_bytes``."""
    cameras = requirements["n_external_cameras"] + int(requirements["needs_wrist_camera"])
    images = cameras * (2 if requirements["needs_stereo_camera"] else 1)
    resolution = requirements["image_resolution"]
    image = math.prod(resolution) * 3 if resolution else wire.IMAGE_BYTES_4K
    return min(limits.max_frame_bytes, images * image + STATE_ALLOWANCE_BYTES)


def _policy_map(frame: bytes, kind: str, what: str) -> dict[Any, Any]:
    """A policy's binary frame decoded within :data:`~policy_server.wire.REPLY_LIMITS`; a
    :class:`PolicyFault` of ``kind`` when it is undecodable or not a map (``what`` names it in the detail)."""
    try:
        decoded = wire.unpackb(frame, limits=wire.REPLY_LIMITS)
    except wire.WireError as exc:
        raise PolicyFault(kind, f"{what} is undecodable: {exc}") from exc
    if not isinstance(decoded, dict):
        raise PolicyFault(kind, f"{what} must be a map, got {type(decoded).__name__}")
    return decoded


NonceCheck = Callable[[Any], Optional[Tuple[str, str]]]  # typing's: evaluated at run time on 3.8
"""``check(served)``: None when the metadata's ``arena_nonce`` (None when absent) is acceptable, else
(incident kind, detail) for the owner (see ``policy_server.relay_admission.EndpointProof.check``)."""


def redact_metadata_frame(
    frame: str | bytes,
    *,
    limits: wire.Limits = wire.DEFAULT_LIMITS,
    check_nonce: NonceCheck | None = None,
) -> tuple[bytes, SessionShape]:
    """The policy's metadata frame as a lab may see it (the run requirements only), and the session's shape.

    Policy servers put anything in their metadata (model names, checkpoints, hosts); forwarded verbatim it would
    break the blinding. Kept: RoboArena's config keys, ``action_dim``, ``action_horizon``,
    ``needs_replica_state`` (each only with a value of its own form, see ``_plain_requirement``) and the
    markers by which clients recognise the server's dialect (an openpi server's frame gets ``arena_relay`` so
    that it is never mistaken for RoboArena's exact config). Raises :class:`PolicyFault` for a text frame, an
    undecodable frame, or requirements that contradict each other, and, given ``check_nonce``, for an
    ``arena_nonce`` it refuses (``arena_nonce`` itself is never kept).
    """
    if isinstance(frame, str):
        raise PolicyFault("policy_error", frame)
    metadata = _policy_map(frame, "bad_metadata", "the metadata frame")
    if check_nonce is not None:
        refused = check_nonce(metadata.get(NONCE_KEY))
        if refused is not None:
            # Nothing of this server's reaches the lab, not even which check failed.
            raise PolicyFault(*refused, lab_kind="bad_metadata")
    dialect = detect_dialect(metadata)
    kept = {k: v for k, v in metadata.items() if k in REQUIREMENT_KEYS and _plain_requirement(k, v)}
    try:
        requirements = requirements_from_metadata(kept)
    except MetadataError as exc:
        raise PolicyFault("bad_metadata", str(exc)) from exc
    # RoboArena's null resolution means native frames; requirements_from_metadata fills in its default.
    requirements["image_resolution"] = kept.get("image_resolution", requirements["image_resolution"])
    action_dim = ACTION_DIMS[requirements["action_space"]]
    if requirements["action_dim"] not in (None, action_dim):
        raise PolicyFault(
            "bad_metadata",
            f"action_dim {requirements['action_dim']} contradicts action_space {requirements['action_space']!r}",
        )
    if dialect == "arena":
        # The relay's own version, whatever the policy sent: a number of its choosing could name it.
        kept[PROTOCOL_KEY] = PROTOCOL_VERSION
    elif dialect == "openpi":
        kept[RELAY_MARKER] = 1
    shape = SessionShape(action_dim, observation_bytes(requirements, limits=limits), requirements)
    return wire.packb(kept), shape


def observation_for_policy(
    frame: str | bytes, *, limits: wire.Limits, shape: SessionShape, session_alias: str | None = None
) -> tuple[bytes, bool]:
    """The lab's frame decoded within ``limits``, cut to what the protocol allows and re-encoded for the policy;
    and whether it is a reset.

    An inference request carries exactly what the policy's requirements (``shape.requirements``) ask for, each
    of its own form (:func:`checked_request`); a reset carries nothing but ``endpoint`` and the session alias.
    Raises :class:`LabFault` for a text frame, a frame the safe decoder refuses, one that is not a map, or a
    request the requirements do not allow.
    """
    if isinstance(frame, str):
        raise LabFault("text_frame", "requests are msgpack binary frames, got a text frame")
    try:
        request = wire.unpackb(frame, limits=limits)
    except wire.WireError as exc:
        raise LabFault(exc.code, str(exc)) from exc
    if not isinstance(request, dict):
        raise LabFault("not_a_map", f"a request is a msgpack map, got {type(request).__name__}")
    checked = checked_request(request, shape.requirements, session_alias=session_alias)
    try:
        encoded = wire.packb(checked)
    except wire.WireError as exc:
        raise LabFault(exc.code, str(exc)) from exc
    return encoded, checked.get("endpoint") == "reset"


def image_keys(requirements: Mapping[str, Any]) -> list[str]:
    """The camera keys a policy with ``requirements`` receives: its exterior cameras, the wrist camera if it
    needs one, and each one's ``_right`` frame when it needs stereo."""
    keys = [
        f"observation/exterior_image_{i}_left" for i in range(1, int(requirements["n_external_cameras"]) + 1)
    ]
    if requirements["needs_wrist_camera"]:
        keys.append("observation/wrist_image_left")
    if requirements["needs_stereo_camera"]:
        keys += [key[: -len("_left")] + "_right" for key in keys]  # every key above ends in _left
    return keys


def checked_request(
    request: Mapping[Any, Any], requirements: Mapping[str, Any], *, session_alias: str | None = None
) -> dict[str, Any]:
    """``request`` cut to what the policy's requirements allow, every value checked for its form.

    Why: a policy's reaction to a request it never declared (an unknown ``endpoint``, a missing camera, an
    extra key it chokes on) differs from policy to policy, and a lab that provokes it learns which policy is
    behind a slot. The relay therefore answers such requests itself (:class:`LabFault`, the same for every
    policy) and forwards only well-formed ones: the declared cameras as uint8 (H, W, 3) at the declared
    resolution (any size up to :data:`~policy_server.check.MAX_IMAGE_SIDE` for native frames), the DROID
    proprioception (:data:`PROPRIO_SHAPES`, finite numbers), ``prompt`` (text up to :data:`MAX_PROMPT_CHARS`),
    the session alias to a policy that declares ``needs_session_id`` (whether or not the lab sent an id), and
    ``replica/*`` values for a policy that asks for the replica's state.
    """
    endpoint = request.get("endpoint", "infer")
    out: dict[str, Any] = {}
    if endpoint == "reset":
        # RoboArena's evaluator resets with the session id in reset_info: the policy gets the alias instead.
        if session_alias is not None and "session_id" in request:
            out["session_id"] = session_alias
        return {**out, "endpoint": "reset"}
    if endpoint != "infer":
        raise LabFault("unknown_endpoint", "a request's endpoint is 'infer' or 'reset'")
    if "endpoint" in request:
        out["endpoint"] = "infer"
    if session_alias is not None and requirements.get("needs_session_id"):
        # Supplied whether or not the lab sent one: a lab leaving it out would see which policies crash.
        out["session_id"] = session_alias
    resolution = requirements.get("image_resolution")
    for key in image_keys(requirements):
        image = request.get(key)
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.uint8
            or image.ndim != 3
            or image.shape[2] != 3
        ):
            raise LabFault("bad_observation", f"{key} must be a uint8 (H, W, 3) image")
        if resolution is not None and tuple(image.shape[:2]) != tuple(resolution):
            raise LabFault(
                "bad_observation", f"{key} must be {resolution[0]}x{resolution[1]}, as the policy asks"
            )
        if resolution is None and max(image.shape[:2]) > MAX_IMAGE_SIDE:
            raise LabFault("bad_observation", f"{key} is larger than {MAX_IMAGE_SIDE} pixels")
        out[key] = image
    for key, size in PROPRIO_SHAPES.items():
        value = request.get(key)
        if (
            not isinstance(value, np.ndarray)
            or value.dtype.kind not in "iuf"
            or value.shape != (size,)
            or not np.isfinite(value).all()
        ):
            raise LabFault("bad_observation", f"{key} must be {size} finite numbers")
        out[key] = value
    prompt = request.get("prompt")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise LabFault("bad_observation", f"prompt must be text of at most {MAX_PROMPT_CHARS} characters")
    out["prompt"] = prompt
    if requirements.get("needs_replica_state"):
        out.update({k: v for k, v in request.items() if isinstance(k, str) and k.startswith("replica/")})
    return out


def _checked_actions(actions: Any, action_dim: int, horizon: int | None) -> np.ndarray:
    if isinstance(actions, list):
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PolicyFault("bad_reply", f"'actions' is a list that is not numeric: {exc}") from exc
    if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "biuf":
        raise PolicyFault("bad_reply", f"'actions' must be a numeric array, got {type(actions).__name__}")
    if actions.ndim != 2 or not 1 <= actions.shape[0] <= MAX_ACTION_HORIZON or actions.shape[1] != action_dim:
        raise PolicyFault(
            "bad_reply",
            f"'actions' must have shape (H, {action_dim}) with 1 <= H <= {MAX_ACTION_HORIZON}, got {actions.shape}",
        )
    if horizon is not None and actions.shape[0] != horizon:
        # As the health check requires: a chunk length that varies from the declared one could name the policy.
        raise PolicyFault(
            "bad_reply", f"'actions' has {actions.shape[0]} rows, the metadata declares {horizon}"
        )
    actions = np.ascontiguousarray(actions, dtype=np.float64)
    if not np.isfinite(actions).all():
        raise PolicyFault("bad_reply", "'actions' holds NaN or infinite values")
    return actions


def _coarse_timing(timing: Any) -> dict[str, float] | None:
    """``{"infer_ms": <rounded to TIMING_BUCKET_MS>}`` from the policy's ``server_timing``, or None."""
    infer_ms = timing.get("infer_ms") if isinstance(timing, dict) else None
    if isinstance(infer_ms, bool) or not isinstance(infer_ms, (int, float, np.integer, np.floating)):
        return None
    if not math.isfinite(infer_ms) or not 0 <= infer_ms <= MAX_TIMING_MS:
        return None
    return {"infer_ms": TIMING_BUCKET_MS * round(float(infer_ms) / TIMING_BUCKET_MS)}


def reply_for_lab(frame: str | bytes, *, shape: SessionShape, reset: bool) -> str | bytes:
    """The policy's answer to one request, as the lab may see it (see the module docstring).

    Raises :class:`PolicyFault` for a text frame (other than RoboArena's reset confirmation after a reset),
    an undecodable frame, or a reply without valid ``actions``.
    """
    if isinstance(frame, str):
        if reset and frame == ROBOARENA_RESET_REPLY:
            return ROBOARENA_RESET_REPLY
        raise PolicyFault("policy_error", frame)
    reply = _policy_map(frame, "bad_reply", "a reply")
    if reset:
        return wire.packb({"reset": True})
    if "actions" not in reply:
        raise PolicyFault("bad_reply", f"reply has no 'actions' (keys: {sorted(map(str, reply))[:20]})")
    horizon = shape.requirements.get("action_horizon")
    cut: dict[str, Any] = {"actions": _checked_actions(reply["actions"], shape.action_dim, horizon)}
    timing = _coarse_timing(reply.get("server_timing"))
    if timing is not None:
        cut["server_timing"] = timing
    return wire.packb(cut)
