"""Run one policy episode on a robot: query action chunks, execute them at the control rate, record, score.

The policy is anything with ``infer(obs) -> {"actions": (H, D)}`` and ``reset()`` (a websocket client or an
in-process :class:`policy_server.base.BasePolicy`). The runner asks for a new chunk when the previous one is
used up: at most ``replan_steps`` actions of each chunk are executed open-loop. Only the observation keys the
policy's requirements ask for are sent (RoboArena's config: ``n_external_cameras``, ``needs_wrist_camera``,
``needs_stereo_camera`` for the ``_right`` frames, ``image_resolution`` with resize-with-pad, or the robot's
native frames when it is null; plus ``needs_replica_state`` for scripted baselines).

The robot is set up per policy, as RoboArena's evaluator builds its ``RobotEnv`` per policy: call
:func:`configure_robot` with the policy's requirements before resetting the robot for its episode.

Failures are attributed: anything raised by, or wrong in the answer of, the policy aborts with
:class:`PolicyFailure`; anything raised by the robot with :class:`RobotFailure`; a lost link to the policy's
relay (:class:`LinkLost`, raised by :class:`evaluator_client.link.RelayLink`) with
:class:`InfrastructureFailure`. Each carries ``party`` and the partial :class:`EpisodeResult`, so the caller can
abort the session and blame the right party.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from evaluator_client.robot import Robot
from policy_server.check import ACTION_DIMS, DEFAULT_ACTION_SPACE

PROPRIO_KEYS = (
    "observation/joint_position",
    "observation/cartesian_position",
    "observation/gripper_position",
)
WRIST_KEY = "observation/wrist_image_left"


class ActionPolicy(Protocol):
    def infer(self, obs: dict[str, Any]) -> dict[str, Any]: ...

    def reset(self) -> Any: ...


class Recorder(Protocol):
    def wants_frame(self, step: int) -> bool: ...

    def add(self, frames: Mapping[str, np.ndarray]) -> None: ...


class TrajectorySink(Protocol):
    def add_step(
        self,
        *,
        step: int,
        time_s: float,
        proprio: Mapping[str, Any],
        action: np.ndarray,
        chunk_index: int,
        chunk_start: bool,
        latency_s: float | None,
    ) -> None: ...


class RequirementsError(ValueError):
    """The policy asks for inputs this robot cannot provide (e.g. two exterior cameras on a one-camera rig)."""


@dataclass
class EpisodeResult:
    """What happened in one episode.

    ``progress``: the highest task progress (0-100) seen during the episode, ``final_progress`` the last one
    (both None on robots that cannot measure it); ``success``: at the end (None if unknown);
    ``stop_reason``: ``max_steps`` | ``operator`` | ``success`` | ``policy_error`` | ``robot_error`` |
    ``infrastructure_error``; ``failure``: None, ``"policy"``, ``"robot"`` or ``"infrastructure"``;
    ``timings``: seconds spent per phase (``policy``, ``observe``, ``apply``, ``record``).
    """

    steps: int = 0
    duration_s: float = 0.0
    mean_inference_ms: float = 0.0
    n_inferences: int = 0
    progress: float | None = None
    final_progress: float | None = None
    success: bool | None = None
    stop_reason: str = "max_steps"
    failure: str | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class EpisodeAborted(RuntimeError):
    """The episode stopped because one party failed; ``party`` is ``"policy"`` or ``"robot"``."""

    party = "unknown"

    def __init__(self, message: str, result: EpisodeResult) -> None:
        super().__init__(message)
        self.result = result


class PolicyFailure(EpisodeAborted):
    party = "policy"


class RobotFailure(EpisodeAborted):
    party = "robot"


class InfrastructureFailure(EpisodeAborted):
    party = "infrastructure"


class LinkLost(ConnectionError):
    """The connection to the policy's relay (or the relay's to the arena) was lost and could not be restored:
    neither the policy's fault nor the robot's."""


def _policy_side_failure(exc: BaseException) -> type[EpisodeAborted]:
    return InfrastructureFailure if isinstance(exc, LinkLost) else PolicyFailure


def resize_with_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 (H, W, C) to fit (height, width) keeping the aspect ratio (bilinear), zero-pad the rest."""
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image
    scale = min(height / src_h, width / src_w)
    new_h, new_w = max(1, round(src_h * scale)), max(1, round(src_w * scale))
    ys = np.clip((np.arange(new_h) + 0.5) / scale - 0.5, 0, src_h - 1)
    xs = np.clip((np.arange(new_w) + 0.5) / scale - 0.5, 0, src_w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, src_h - 1), np.minimum(x0 + 1, src_w - 1)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = image.astype(np.float32)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    resized = np.clip(np.rint(top * (1 - wy) + bottom * wy), 0, 255).astype(np.uint8)
    out = np.zeros((height, width, image.shape[2]), dtype=np.uint8)
    top_pad, left_pad = (height - new_h) // 2, (width - new_w) // 2
    out[top_pad : top_pad + new_h, left_pad : left_pad + new_w] = resized
    return out


def policy_action_space(requirements: Mapping[str, Any]) -> str:
    """The action space the policy's actions are in (:data:`DEFAULT_ACTION_SPACE` when it declares none)."""
    return requirements.get("action_space") or DEFAULT_ACTION_SPACE


def check_requirements(robot: Robot, requirements: Mapping[str, Any]) -> None:
    """Raise :class:`RequirementsError` when the robot cannot provide what the policy asks for: its cameras,
    or an action space the robot cannot be configured for (stereo is the robot's ``configure`` to refuse)."""
    n_exterior = int(requirements.get("n_external_cameras", 1))
    have_exterior = sum(1 for name in robot.cameras if name != "wrist")
    if n_exterior > have_exterior:
        raise RequirementsError(
            f"the policy needs {n_exterior} exterior cameras; this robot has {have_exterior}"
        )
    if requirements.get("needs_wrist_camera", True) and "wrist" not in robot.cameras:
        raise RequirementsError("the policy needs a wrist camera; this robot has none")
    space = policy_action_space(requirements)
    if space not in robot.action_spaces:
        raise RequirementsError(
            f"the policy outputs {space!r} actions; this robot runs only {', '.join(robot.action_spaces)}"
        )


def configure_robot(robot: Robot, requirements: Mapping[str, Any]) -> None:
    """Set ``robot`` up for one policy: its action space and, when it asks for them, stereo cameras.

    Call before ``robot.reset`` for that policy's episode. Raises :class:`RequirementsError` when the robot
    cannot (too few cameras, an action space or stereo it does not offer).
    """
    check_requirements(robot, requirements)
    try:
        robot.configure(
            action_space=policy_action_space(requirements),
            stereo=bool(requirements.get("needs_stereo_camera", False)),
        )
    except ValueError as exc:
        raise RequirementsError(f"the robot cannot be set up for this policy: {exc}") from exc


def filter_observation(
    obs: Mapping[str, Any], requirements: Mapping[str, Any], prompt: str
) -> dict[str, Any]:
    """The observation to send: proprioception, the requested cameras, the prompt.

    Images are resized with padding to ``image_resolution`` (H, W), or sent as the robot renders them when it
    is None; ``_right`` frames are added for a policy that needs stereo. Raises ``KeyError`` when ``obs``
    lacks a key the policy needs.
    """
    out: dict[str, Any] = {key: obs[key] for key in PROPRIO_KEYS}
    resolution = requirements.get("image_resolution")
    sides = ("left", "right") if requirements.get("needs_stereo_camera", False) else ("left",)
    cameras = [f"exterior_image_{i}" for i in range(1, int(requirements.get("n_external_cameras", 1)) + 1)]
    if requirements.get("needs_wrist_camera", True):
        cameras.append("wrist_image")
    keys = [f"observation/{camera}_{side}" for camera in cameras for side in sides]
    for key in keys:
        image = obs[key]
        out[key] = resize_with_pad(image, int(resolution[0]), int(resolution[1])) if resolution else image
    if requirements.get("needs_replica_state", False):
        out.update({key: value for key, value in obs.items() if key.startswith("replica/")})
    out["prompt"] = prompt
    return out


def _frames_from_obs(robot: Robot, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    exterior = [name for name in robot.cameras if name != "wrist"]
    frames = {name: obs[f"observation/exterior_image_{i}_left"] for i, name in enumerate(exterior, start=1)}
    if "wrist" in robot.cameras:
        frames["wrist"] = obs[WRIST_KEY]
    return frames


def _proprioception(robot: Robot) -> Mapping[str, Any]:
    """The robot's proprioception now: its ``proprioception()`` when it has one (cheap: no images), else the
    proprioception keys of a full observation."""
    read = getattr(robot, "proprioception", None)
    obs = read() if callable(read) else robot.observe()
    return {key: obs[key] for key in PROPRIO_KEYS}


def _validated_chunk(answer: Any, action_dim: int) -> np.ndarray:
    if not isinstance(answer, Mapping) or "actions" not in answer:
        raise ValueError("the policy's answer has no 'actions'")
    actions = np.asarray(answer["actions"], dtype=np.float64)
    if actions.ndim == 1:
        actions = actions[None, :]
    if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != action_dim:
        raise ValueError(f"expected actions of shape (H, {action_dim}), got {actions.shape}")
    if not np.all(np.isfinite(actions)):
        raise ValueError("the policy's actions contain NaN or inf")
    return actions


def run_episode(
    robot: Robot,
    policy: ActionPolicy,
    *,
    prompt: str,
    requirements: Mapping[str, Any] | None = None,
    max_steps: int = 400,
    replan_steps: int = 8,
    stop: Callable[[], bool] | None = None,
    on_step: Callable[[int, float | None], None] | None = None,
    recorder: Recorder | None = None,
    trajectory: TrajectorySink | None = None,
    realtime: bool = False,
    stop_on_success_steps: int | None = None,
) -> EpisodeResult:
    """Run one episode of ``policy`` on ``robot`` from its current state (reset the robot before).

    ``requirements``: the policy's metadata (RoboArena config); default one exterior camera, a wrist camera,
    native resolution, :data:`DEFAULT_ACTION_SPACE`. The robot must be set up for them
    (:func:`configure_robot`). ``stop``: polled before every step, True ends the episode (operator stop).
    ``on_step(step, progress)``: called after every executed step. ``recorder``: receives camera frames for
    the steps it wants. ``trajectory``: receives every executed step (proprioception before the action, the
    action, its time since the start, its chunk and the chunk's round-trip latency). ``realtime``: sleep so steps run at ``robot.control_hz`` (real robots); the replica
    runs as fast as it can. ``stop_on_success_steps``: end early once success has held this many steps.
    Raises :class:`RequirementsError` before the first step, :class:`PolicyFailure` / :class:`RobotFailure`
    during it.
    """
    requirements = dict(requirements or {})
    check_requirements(robot, requirements)
    space = policy_action_space(requirements)
    if robot.action_space != space:
        raise RequirementsError(
            f"the robot is set up for {robot.action_space!r}, the policy outputs {space!r}: "
            "call configure_robot(robot, requirements) before resetting it for the episode"
        )
    if replan_steps < 1:
        raise ValueError("replan_steps must be at least 1")
    action_dim = ACTION_DIMS[space]
    result = EpisodeResult()
    timings = {"policy": 0.0, "observe": 0.0, "apply": 0.0, "record": 0.0}
    result.timings = timings
    latencies: list[float] = []
    period = 1.0 / robot.control_hz
    started = time.perf_counter()

    def abort(kind: type[EpisodeAborted], exc: BaseException) -> EpisodeAborted:
        result.stop_reason = f"{kind.party}_error"
        result.failure = kind.party
        result.error = f"{type(exc).__name__}: {exc}"
        _finish(result, started, latencies)
        return kind(f"{kind.party} failed after {result.steps} steps: {result.error}", result)

    try:
        policy.reset()
    except Exception as exc:
        raise abort(_policy_side_failure(exc), exc) from exc

    chunk: np.ndarray | None = None
    used = 0
    chunk_index = -1
    success_streak = 0
    peak: float | None = None
    for step in range(max_steps):
        if stop is not None and stop():
            result.stop_reason = "operator"
            break
        tick = time.perf_counter()
        want_frame = recorder is not None and recorder.wants_frame(step)
        frames: dict[str, np.ndarray] | None = None
        proprio: Mapping[str, Any] | None = None
        if chunk is None or used >= min(replan_steps, len(chunk)):
            try:
                t0 = time.perf_counter()
                obs = robot.observe()
                timings["observe"] += time.perf_counter() - t0
                sent = filter_observation(obs, requirements, prompt)
            except Exception as exc:
                raise abort(RobotFailure, exc) from exc
            try:
                t0 = time.perf_counter()
                answer = policy.infer(sent)
                elapsed = time.perf_counter() - t0
                chunk = _validated_chunk(answer, action_dim)
            except Exception as exc:
                raise abort(_policy_side_failure(exc), exc) from exc
            timings["policy"] += elapsed
            latencies.append(elapsed)
            used = 0
            chunk_index += 1
            proprio = obs
            if want_frame:
                frames = _frames_from_obs(robot, obs)
        try:
            if want_frame and frames is None:
                t0 = time.perf_counter()
                frames = robot.camera_frames()
                timings["observe"] += time.perf_counter() - t0
            if frames is not None and recorder is not None:
                t0 = time.perf_counter()
                recorder.add(frames)
                timings["record"] += time.perf_counter() - t0
            if trajectory is not None:
                t0 = time.perf_counter()
                proprio = proprio if proprio is not None else _proprioception(robot)
                timings["observe"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            robot.apply(chunk[used])
            timings["apply"] += time.perf_counter() - t0
            if trajectory is not None and proprio is not None:
                trajectory.add_step(
                    step=step,
                    time_s=t0 - started,
                    proprio=proprio,
                    action=chunk[used],
                    chunk_index=chunk_index,
                    chunk_start=used == 0,
                    latency_s=latencies[-1] if used == 0 else None,
                )
            progress = robot.progress()
            success = robot.success()
        except Exception as exc:
            raise abort(RobotFailure, exc) from exc
        used += 1
        result.steps = step + 1
        if progress is not None:
            peak = progress if peak is None else max(peak, progress)
            result.progress, result.final_progress = peak, progress
        result.success = success
        if on_step is not None:
            on_step(result.steps, progress)
        success_streak = success_streak + 1 if success else 0
        if stop_on_success_steps is not None and success_streak >= stop_on_success_steps:
            result.stop_reason = "success"
            break
        if realtime:
            remaining = period - (time.perf_counter() - tick)
            if remaining > 0:
                time.sleep(remaining)
    _finish(result, started, latencies)
    return result


def _finish(result: EpisodeResult, started: float, latencies: list[float]) -> None:
    result.duration_s = time.perf_counter() - started
    result.n_inferences = len(latencies)
    result.mean_inference_ms = 1000.0 * float(np.mean(latencies)) if latencies else 0.0
