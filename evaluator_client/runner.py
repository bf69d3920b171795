"""One blinded evaluation session, end to end: request a pair, run slot A then slot B from the same start
scene, score, decide, spool, upload, submit.

The robot is set up per policy (:func:`~evaluator_client.episode.configure_robot`: the action space and stereo
cameras that slot's requirements ask for) before it is reset for that slot, as RoboArena's evaluator builds a
``RobotEnv`` per policy. Each policy knows its episode as ``<session id>-<slot>`` (RoboArena's form): in every
observation when it asks for ``needs_session_id``, and in ``reset_info`` always.

Everything the session produces goes to the spool before it is sent (see :mod:`evaluator_client.spool`); the
session's folder there holds its recordings and start image while it runs, and is removed once the session is
submitted or its abort accepted (unless ``RunOptions.keep_files``). A policy that fails mid-episode aborts the
session with that policy at fault; a robot failure blames the robot; a lost relay or arena is nobody's
(``infrastructure``: see :mod:`evaluator_client.link`); an operator who gives up on the start scene, or aborts,
names the fault (operator by default). Both episodes run before the judge scores them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from evaluator_client.api import ArenaApi, ServerUnreachable
from evaluator_client.episode import (
    EpisodeAborted,
    EpisodeResult,
    LinkLost,
    RequirementsError,
    configure_robot,
    run_episode,
)
from evaluator_client.judge import Judge
from evaluator_client.link import RelayLink
from evaluator_client.robot import Robot
from evaluator_client.spool import Spool, new_key
from evaluator_client.trajectory import TrajectoryRecorder
from evaluator_client.video import VideoRecorder, png_bytes
from policy_server.check import ACTION_DIMS
from policy_server.client import PolicyClientError

SLOTS = ("A", "B")


@dataclass
class SessionOutcome:
    session_id: str
    status: str  # submitted | aborted | spooled (results kept locally, to be flushed) | failed
    choice: str | None = None
    reveal: dict | None = None
    message: str = ""
    progress: dict[str, int] | None = None


@dataclass
class RunOptions:
    max_steps: int = 400
    replan_steps: int = 8
    realtime: bool = False
    show_progress: bool = True
    connect_timeout: float = 10.0
    request_timeout: float = 30.0
    stop_on_success_steps: int | None = None  # end an episode once success held this long (None: run to max)
    keep_files: bool = False  # keep the session's folder (videos, start image) after it was sent
    publish_reason: bool | None = None  # may the reason be published (None: the lab's default on the server)


def run_session(
    *,
    api: ArenaApi,
    spool: Spool,
    robot_name: str,
    make_robot: Callable[[str], Robot],
    judge: Judge,
    task: str,
    task_category: str = "",
    seed: int | None = None,
    options: RunOptions | None = None,
    log: Callable[[str], None] = print,
) -> SessionOutcome:
    """Run one session. ``make_robot(task)`` returns the robot for the typed task (the replica builds the scene
    for it; a real robot ignores it). Network failures after the pair is assigned leave the results spooled."""
    options = options or RunOptions()
    seed = random.SystemRandom().randrange(2**31) if seed is None else seed
    robot = make_robot(task)
    robot.reset(seed)
    scene = {"seed": seed, **_plain(robot.scene_notes())}
    session = api.request_session(
        robot=robot_name,
        task=task,
        task_category=task_category,
        scene_notes=json.dumps(scene, sort_keys=True),
        idem=new_key(),
    )
    entry = spool.create(session, scene=scene)
    sid = session["id"]
    log(f"session {sid[:8]}: task {task!r}, scene seed {seed}")
    judge.session_started(sid, task)
    results: dict[str, EpisodeResult] = {}
    progress: dict[str, int] = {}
    workdir = spool.folder(sid)
    start_image: Any = None
    start_path = workdir / "start.png"
    for slot in SLOTS:
        requirements = session["slots"][slot]["requirements"]
        try:
            configure_robot(robot, requirements)
        except RequirementsError as exc:
            return _finish(judge, _abort(api, spool, entry, f"slot {slot}: {exc}", "robot", log, options))
        robot.reset(seed)
        if start_image is None:  # the scene before slot A is the one to restore for B too
            start_image = robot.start_image()
            start_path.write_bytes(png_bytes(start_image))
        if not judge.confirm_start(start_image, slot=slot, image_path=start_path):
            reason, fault = judge.abort_requested() or (
                "the operator could not restore the start scene",
                "operator",
            )
            return _finish(judge, _abort(api, spool, entry, reason, fault, log, options))
        judge.episode_started(slot, options.max_steps, list(robot.cameras))
        recorder = VideoRecorder(workdir, f"{slot}", robot.cameras, source_hz=robot.control_hz)
        trajectory = TrajectoryRecorder(action_dim=ACTION_DIMS[robot.action_space])
        bar = tqdm(
            total=options.max_steps,
            desc=f"slot {slot}",
            unit="step",
            leave=False,
            disable=not options.show_progress,
        )
        try:
            with RelayLink(
                session["slots"][slot]["relay_url"],
                connect_timeout=options.connect_timeout,
                request_timeout=options.request_timeout,
                session_id=f"{sid}-{slot}",
            ) as link:
                result = run_episode(
                    robot,
                    link,
                    prompt=task,
                    requirements=requirements,
                    max_steps=options.max_steps,
                    replan_steps=options.replan_steps,
                    stop=judge.should_stop,
                    recorder=_Watched(recorder, judge),
                    trajectory=trajectory,
                    on_step=lambda step, _p, bar=bar: (bar.update(1), judge.show_step(step)),
                    realtime=options.realtime,
                    stop_on_success_steps=options.stop_on_success_steps,
                )
                reconnects = link.reconnects
        except (PolicyClientError, LinkLost, EpisodeAborted, RequirementsError) as exc:
            recorder.close()
            return _finish(
                judge, _abort(api, spool, entry, f"slot {slot}: {exc}", _fault(exc, slot), log, options)
            )
        finally:
            bar.close()
        judge.episode_finished(slot, result)
        operator_abort = judge.abort_requested()
        if operator_abort is not None:
            recorder.close()
            reason, fault = operator_abort
            return _finish(judge, _abort(api, spool, entry, f"slot {slot}: {reason}", fault, log, options))
        results[slot] = result
        for video in recorder.close():
            spool.add_video(
                entry,
                slot=slot,
                camera=video.camera,
                path=video.path,
                size=video.size_bytes,
                sha256=video.sha256,
                content_type=video.content_type,
            )
        if len(trajectory):
            written = trajectory.write(
                workdir / f"{slot}_trajectory.parquet",
                metadata={
                    "session_id": sid,
                    "slot": slot,
                    "action_space": robot.action_space,
                    "control_hz": robot.control_hz,
                    "scene": {"seed": seed, **_plain(robot.scene_notes())},
                },
            )
            spool.add_trajectory(
                entry, slot=slot, path=written.path, size=written.size_bytes, sha256=written.sha256
            )
        relinked = f", reconnected to the relay {reconnects}x" if reconnects else ""
        log(f"  slot {slot}: {result.steps} steps, {'success' if result.success else 'no success'}{relinked}")
    for slot in SLOTS:
        result = results[slot]
        progress[slot] = judge.progress(slot, result)
        spool.add_episode(
            entry,
            slot,
            {
                "progress": progress[slot],
                "success": bool(result.success),
                "steps": result.steps,
                "duration_s": round(result.duration_s, 3),
                "mean_latency_ms": round(result.mean_inference_ms, 3) if result.n_inferences else None,
                "failure_reason": result.error or "",
            },
        )
    spool.push_episodes(api, entry)
    log(f"  progress: A {progress['A']}, B {progress['B']}")
    choice, reason, valid = judge.preference(results["A"], results["B"])
    spool.set_preference(
        entry, choice=choice, reason=reason, valid=valid, reason_public=options.publish_reason
    )
    outcome = _send(api, spool, sid, log, options)
    outcome.choice, outcome.progress = choice, progress
    return _finish(judge, outcome)


class _Watched:
    """The episode's recorder, whose frames the judge sees too (the operator screen's live view)."""

    def __init__(self, recorder: VideoRecorder, judge: Judge) -> None:
        self.recorder, self.judge = recorder, judge

    def wants_frame(self, step: int) -> bool:
        return self.recorder.wants_frame(step)

    def add(self, frames: Mapping[str, Any]) -> None:
        self.recorder.add(frames)
        self.judge.show_frames(frames)


def _fault(exc: Exception, slot: str) -> str:
    """The abort's fault for an episode that ended with ``exc``: the robot's, the link's, else the policy's."""
    if isinstance(exc, RequirementsError):
        return "robot"
    if isinstance(exc, LinkLost):  # the relay could not be reached, even after a second try
        return "infrastructure"
    if isinstance(exc, PolicyClientError):  # raised while connecting: RelayLink raised it as the policy's
        return f"policy_{slot.lower()}"
    party = getattr(exc, "party", "policy")
    return party if party in ("robot", "infrastructure") else f"policy_{slot.lower()}"


def _finish(judge: Judge, outcome: SessionOutcome) -> SessionOutcome:
    judge.session_finished(outcome)
    return outcome


def _abort(
    api: ArenaApi, spool: Spool, entry: dict, reason: str, fault: str, log, options: RunOptions
) -> SessionOutcome:
    spool.set_abort(entry, reason=reason[:500], fault=fault)
    log(f"  aborted ({fault}): {reason}")
    outcome = _send(api, spool, entry["session_id"], log, options)
    if outcome.status == "submitted":
        outcome.status = "aborted"
    outcome.message = reason
    return outcome


def _send(api: ArenaApi, spool: Spool, sid: str, log, options: RunOptions) -> SessionOutcome:
    try:
        report = spool.flush(api, only=sid)
    except ServerUnreachable as exc:  # flush already handles it; this guards the upload callback path
        log(f"  kept in the spool ({exc}); run `arena-eval flush` later")
        return SessionOutcome(session_id=sid, status="spooled", message=str(exc))
    entry = next(e for e in spool.entries() if e["session_id"] == sid)
    if sid in report.failed:
        log(f"  the server refused it: {entry['error']}")
        return SessionOutcome(session_id=sid, status="failed", message=entry["error"] or "")
    if sid in report.pending:
        log(f"  kept in the spool ({entry['error']}); run `arena-eval flush` later")
        return SessionOutcome(session_id=sid, status="spooled", message=entry["error"] or "")
    reveal = entry.get("reveal")
    if reveal:
        log(
            f"  revealed: A = {reveal['A']['name']} ({reveal['A']['organization']}), "
            f"B = {reveal['B']['name']} ({reveal['B']['organization']})"
        )
    if entry["status"] in ("submitted", "aborted") and not options.keep_files:
        spool.remove(sid)
    return SessionOutcome(session_id=sid, status=entry["status"], reveal=reveal)


def _plain(value: Any) -> Any:
    """JSON-safe copy of scene notes (numpy scalars and arrays become Python numbers and lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
