"""One blinded evaluation session, end to end: request a pair, run slot A then slot B from the same start
scene, score, decide, spool, upload, submit.

The robot is set up per policy (:func:`~evaluator_client.episode.configure_robot`: the action space and stereo
cameras that slot's requirements ask for) before it is reset for that slot, as RoboArena's evaluator builds a
``RobotEnv`` per policy. Each policy knows its episode as ``<session id>-<slot>`` (RoboArena's form): in every
observation when it asks for ``needs_session_id``, and in ``reset_info`` always.

Everything the session produces goes to the spool before it is sent (see :mod:`evaluator_client.spool`). A policy
that fails mid-episode aborts the session with that policy at fault; a robot failure blames the robot; an
operator who refuses to confirm the start scene aborts with the operator at fault.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evaluator_client.api import ArenaApi, ServerUnreachable
from evaluator_client.episode import (
    EpisodeAborted,
    EpisodeResult,
    RequirementsError,
    configure_robot,
    run_episode,
)
from evaluator_client.judge import Judge
from evaluator_client.robot import Robot
from evaluator_client.spool import Spool, new_key
from evaluator_client.trajectory import TrajectoryRecorder
from evaluator_client.video import VideoRecorder
from policy_server.check import ACTION_DIMS
from policy_server.client import PolicyClient, PolicyClientError

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
    results: dict[str, EpisodeResult] = {}
    progress: dict[str, int] = {}
    workdir = Path(tempfile.mkdtemp(prefix=f"arena-{sid[:8]}-"))
    for slot in SLOTS:
        requirements = session["slots"][slot]["requirements"]
        try:
            configure_robot(robot, requirements)
        except RequirementsError as exc:
            return _abort(api, spool, entry, f"slot {slot}: {exc}", "robot", log)
        robot.reset(seed)
        if not judge.confirm_start(robot.start_image()):
            return _abort(
                api, spool, entry, "the operator could not restore the start scene", "operator", log
            )
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
            with PolicyClient(
                session["slots"][slot]["relay_url"],
                connect_timeout=options.connect_timeout,
                request_timeout=options.request_timeout,
                session_id=f"{sid}-{slot}",
            ) as client:
                result = run_episode(
                    robot,
                    client,
                    prompt=task,
                    requirements=requirements,
                    max_steps=options.max_steps,
                    replan_steps=options.replan_steps,
                    stop=judge.should_stop,
                    recorder=recorder,
                    trajectory=trajectory,
                    on_step=lambda step, _p, bar=bar: bar.update(1),
                    realtime=options.realtime,
                    stop_on_success_steps=options.stop_on_success_steps,
                )
        except (PolicyClientError, EpisodeAborted, RequirementsError) as exc:
            recorder.close()
            fault = "robot" if getattr(exc, "party", "policy") == "robot" else f"policy_{slot.lower()}"
            if isinstance(exc, RequirementsError):
                fault = "robot"
            return _abort(api, spool, entry, f"slot {slot}: {exc}", fault, log)
        finally:
            bar.close()
        results[slot] = result
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
        spool.push_episodes(api, entry)
        log(
            f"  slot {slot}: {result.steps} steps, progress {progress[slot]}, "
            f"{'success' if result.success else 'no success'}"
        )
    choice, reason, valid = judge.preference(results["A"], results["B"])
    spool.set_preference(
        entry, choice=choice, reason=reason, valid=valid, reason_public=options.publish_reason
    )
    outcome = _send(api, spool, sid, log)
    outcome.choice, outcome.progress = choice, progress
    return outcome


def _abort(api: ArenaApi, spool: Spool, entry: dict, reason: str, fault: str, log) -> SessionOutcome:
    spool.set_abort(entry, reason=reason[:500], fault=fault)
    log(f"  aborted ({fault}): {reason}")
    outcome = _send(api, spool, entry["session_id"], log)
    if outcome.status == "submitted":
        outcome.status = "aborted"
    outcome.message = reason
    return outcome


def _send(api: ArenaApi, spool: Spool, sid: str, log) -> SessionOutcome:
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
    return SessionOutcome(session_id=sid, status=entry["status"], reveal=reveal)


def _plain(value: Any) -> Any:
    """JSON-safe copy of scene notes (numpy scalars and arrays become Python numbers and lists)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
