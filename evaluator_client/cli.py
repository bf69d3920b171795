"""``arena-eval``: the evaluator lab's command-line client.

arena-eval configure --server URL --key KEY [robot profile options, e.g. --scene my-station.json]
arena-eval run [--robot replica|droid] [--judge auto|human] [--sessions N] [--task TEXT]
arena-eval status
arena-eval flush
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path

from evaluator_client import config as config_mod
from evaluator_client.api import ApiError, ArenaApi, ServerUnreachable
from evaluator_client.config import (
    ACTION_SPACES,
    Config,
    ConfigError,
    RobotProfile,
    check_profile_runs_on,
    robot_capabilities,
    robot_kind,
)
from evaluator_client.spool import Spool

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report as one clear line."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    home = Path(args.home) if args.home else None
    try:
        return args.handler(args, home)
    except (ConfigError, CliError) as exc:
        print(f"arena-eval: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    except ApiError as exc:
        field = f" (field {exc.field})" if exc.field else ""
        print(f"arena-eval: the server refused: {exc.message}{field} [{exc.code}]", file=sys.stderr)
        return EXIT_FAILED
    except ServerUnreachable as exc:
        print(
            f"arena-eval: {exc}; anything recorded is kept in the spool: run `arena-eval flush` later",
            file=sys.stderr,
        )
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\narena-eval: interrupted; recorded results are kept in the spool", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arena-eval", description="Run blinded policy evaluations for the arena."
    )
    parser.add_argument("--home", help="client folder (default $ARENA_EVAL_HOME or ~/.arena-eval)")
    sub = parser.add_subparsers(required=True, metavar="command")

    c = sub.add_parser("configure", help="save server, API key and robot profile; register the robot")
    c.add_argument("--server", required=True, help="arena server URL, e.g. https://arena.example.org")
    c.add_argument("--key", required=True, help="your lab's API key (pa_...)")
    c.add_argument("--robot", default="replica-1", help="a name for this robot (default replica-1)")
    c.add_argument(
        "--platform",
        help="droid, replica:<scene>, ... (default replica:tabletop-v1, or the replica of --scene)",
    )
    c.add_argument(
        "--scene",
        help="replica robots: a shipped scene's name or the path of your station's scene file (.json)",
    )
    c.add_argument("--exterior-cameras", type=int, default=1, help="number of exterior cameras (default 1)")
    c.add_argument("--no-wrist", action="store_true", help="the robot has no wrist camera")
    c.add_argument("--stereo", action="store_true", help="the robot has a stereo camera")
    c.add_argument(
        "--action-space",
        action="append",
        choices=ACTION_SPACES,
        help="an action space the robot executes (repeat for several; default: every space the replica or "
        "DROID adapter runs for a replica:... or droid platform)",
    )
    c.set_defaults(handler=cmd_configure)

    r = sub.add_parser("run", help="run evaluation sessions")
    r.add_argument("--robot", choices=["replica", "droid"], default="replica", help="what runs the episodes")
    r.add_argument(
        "--judge",
        choices=["auto", "human"],
        default=None,
        help="auto: scores from the simulator (replica only); human: you answer at the prompts "
        "(default: auto with --robot replica, human with --robot droid)",
    )
    r.add_argument("--sessions", type=int, default=1, help="how many sessions to run (default 1)")
    r.add_argument("--task", help="the task instruction (default: asked, or a random replica task)")
    r.add_argument("--category", default="", help="a task category label, e.g. pick_place")
    r.add_argument("--seed", type=int, help="scene seed of the first session (default random)")
    r.add_argument("--max-steps", type=int, default=400, help="steps per episode (default 400, 15 Hz)")
    r.add_argument(
        "--perturb",
        default="positions",
        help="replica perturbation axes, comma-separated, 'all' or 'none' (default positions)",
    )
    r.add_argument(
        "--margin", type=int, default=10, help="auto judge: progress difference that counts as a tie"
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(handler=cmd_run)

    s = sub.add_parser("status", help="your recent sessions and anything still spooled")
    s.set_defaults(handler=cmd_status)

    f = sub.add_parser("flush", help="send everything still in the spool")
    f.set_defaults(handler=cmd_flush)
    return parser


def _api(config: Config) -> ArenaApi:
    return ArenaApi(config.server_url, config.api_key)


def cmd_configure(args, home: Path | None) -> int:
    scene = _scene_source(args.scene)
    platform = args.platform or (_replica_platform(scene) if scene else "replica:tabletop-v1")
    kind = robot_kind(platform)
    if scene and kind != "replica":
        raise ConfigError(f"robot.scene: only replica robots have a scene file; platform {platform} has none")
    profile = RobotProfile(
        name=args.robot,
        platform=platform,
        n_external_cameras=args.exterior_cameras,
        has_wrist_camera=not args.no_wrist,
        has_stereo_camera=args.stereo,
        action_spaces=sorted(set(args.action_space or [])),
        scene=scene,
    )
    if not profile.action_spaces:
        if kind is None:
            raise ConfigError(
                f"robot.action_spaces: this client has no adapter for platform {platform!r}, "
                "so name the spaces it runs with --action-space"
            )
        profile.action_spaces = sorted(robot_capabilities(kind, profile).action_spaces)
    config = Config(server_url=args.server.rstrip("/"), api_key=args.key, robot=profile)
    config.check()
    if kind is not None:
        check_profile_runs_on(profile, kind)
    with _api(config) as api:
        me = _configure_robot(api, profile)
    path = config_mod.save(config, home)
    print(
        f"configured {me['name']} ({me['organization']}), robot {profile.name} "
        f"({', '.join(profile.action_spaces)}); saved to {path}"
    )
    return EXIT_OK


def _scene_source(scene: str | None) -> str:
    """``--scene`` as stored: a shipped scene's name as given, a file's path made absolute."""
    if not scene:
        return ""
    return str(Path(scene).expanduser().resolve()) if scene.endswith(".json") else scene


def _replica_platform(scene: str) -> str:
    from evaluator_client.replica import SceneError, load_scene

    try:
        return f"replica:{load_scene(scene).name}"
    except SceneError as exc:
        raise ConfigError(f"robot.scene: {exc}") from exc


def _configure_robot(api: ArenaApi, profile: RobotProfile) -> dict:
    """Check the key is a lab's and register the robot unless it exists with the same profile; returns /me."""
    me = api.me()
    if me["role"] != "lab":
        raise CliError("that key belongs to a policy owner; arena-eval needs a lab key")
    known = {r["name"]: r for r in api.robots()}
    if profile.name in known:
        robot = known[profile.name]
        mismatch = [
            k
            for k in ("platform", "n_external_cameras", "has_wrist_camera", "has_stereo_camera")
            if robot[k] != getattr(profile, k)
        ]
        if sorted(robot["action_spaces"]) != sorted(profile.action_spaces):
            mismatch.append("action_spaces")
        if mismatch:
            raise CliError(
                f"robot {profile.name!r} is registered with other {', '.join(mismatch)}: pick a new --robot"
            )
    else:
        api.register_robot(
            {
                "name": profile.name,
                "platform": profile.platform,
                "n_external_cameras": profile.n_external_cameras,
                "has_wrist_camera": profile.has_wrist_camera,
                "has_stereo_camera": profile.has_stereo_camera,
                "action_spaces": profile.action_spaces,
            }
        )
    return me


def cmd_run(args, home: Path | None) -> int:
    config = config_mod.load(home)
    check_profile_runs_on(config.robot, args.robot)
    with _api(config) as api:
        return _run_sessions(args, config, api, Spool(home or config_mod.default_home()))


def _run_sessions(args, config: Config, api: ArenaApi, spool: Spool) -> int:
    from evaluator_client.runner import RunOptions, run_session

    _flush_quietly(api, spool)
    judge = _judge(args)
    make_robot, next_task = _robot_factory(args, config)
    options = RunOptions(
        max_steps=args.max_steps, realtime=args.robot == "droid", show_progress=not args.quiet
    )
    outcomes = []
    for k in range(args.sessions):
        task, category = next_task(k)
        seed = None if args.seed is None else args.seed + k
        print(f"[{k + 1}/{args.sessions}]", end=" ")
        outcomes.append(
            run_session(
                api=api,
                spool=spool,
                robot_name=config.robot.name,
                make_robot=make_robot,
                judge=judge,
                task=task,
                task_category=category,
                seed=seed,
                options=options,
            )
        )
    counts = {s: sum(o.status == s for o in outcomes) for s in ("submitted", "aborted", "spooled", "failed")}
    print("done: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if outcomes and counts["aborted"] == len(outcomes):
        last_reason = next(iter(outcomes[-1].message.splitlines()), "no reason given")
        print(f"arena-eval: every session aborted (the last: {last_reason})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if not counts["failed"] and not counts["spooled"] else EXIT_FAILED


def cmd_status(args, home: Path | None) -> int:
    config = config_mod.load(home)
    spool = Spool(home or config_mod.default_home())
    waiting = [e for e in spool.entries() if e["status"] in ("running", "ready", "failed")]
    for entry in waiting:
        print(
            f"spooled  {entry['session_id']}  {entry['status']:<9} {entry['task'][:40]!r} {entry['error'] or ''}"
        )
    with _api(config) as api:
        sessions = api.sessions(limit=20)
    print(f"{sessions['count']} sessions on the server; the latest:")
    for s in sessions["results"]:
        reveal = s["reveal"]
        verdict = (
            f"{s['preference']['choice']}: A={reveal['A']['slug']} B={reveal['B']['slug']}" if reveal else ""
        )
        print(f"  {s['id']}  {s['state']:<9}  {s['task'][:40]!r}  {verdict}")
    return EXIT_OK


def cmd_flush(args, home: Path | None) -> int:
    config = config_mod.load(home)
    spool = Spool(home or config_mod.default_home())
    with _api(config) as api:
        report = spool.flush(api)
    print(
        f"sent {len(report.sent)}, still pending {len(report.pending)}, refused {len(report.failed)}, "
        f"abandoned {len(report.abandoned)}"
    )
    for sid in report.abandoned:
        print(f"  abandoned {sid}: the client stopped before the verdict and the server closed the session")
    for sid in report.failed:
        entry = next(e for e in spool.entries() if e["session_id"] == sid)
        print(f"  refused {sid}: {entry['error']}")
    return EXIT_OK if not report.pending and not report.failed else EXIT_FAILED


def _flush_quietly(api: ArenaApi, spool: Spool) -> None:
    if any(e["status"] == "ready" for e in spool.entries()):
        report = spool.flush(api)
        print(f"flushed the spool: sent {len(report.sent)}, pending {len(report.pending)}")


def _judge(args):
    from evaluator_client.judge import AutoJudge, HumanJudge

    kind = args.judge or ("human" if args.robot == "droid" else "auto")
    if kind == "auto":
        if args.robot != "replica":
            raise CliError("--judge auto needs the replica: only the simulator knows the task progress")
        return AutoJudge(margin=args.margin)
    return HumanJudge(input_fn=lambda prompt: input(prompt))


def _robot_factory(args, config: Config) -> tuple[Callable, Callable[[int], tuple[str, str]]]:
    if args.robot == "droid":
        return droid_setup(config, task=args.task, category=args.category)
    return replica_setup(config, perturb=args.perturb, seed=args.seed, task=args.task, category=args.category)


def droid_setup(
    config: Config, *, task: str | None, category: str
) -> tuple[Callable, Callable[[int], tuple[str, str]]]:
    """``make_robot(task)`` and ``next_task(k) -> (instruction, category)`` for a DROID robot.

    The one station serves every session; the runner sets it up per policy (``DroidRobot.configure``).
    """
    from evaluator_client.droid import DroidRobot, DroidUnavailableError

    try:
        robot = DroidRobot(n_exterior_cameras=config.robot.n_external_cameras)
    except DroidUnavailableError as exc:
        raise CliError(str(exc)) from exc
    return (lambda _task: robot), (lambda k: (task or _ask_task(), category))


def replica_setup(
    config: Config,
    *,
    perturb: str = "positions",
    seed: int | None = None,
    task: str | None = None,
    category: str = "",
) -> tuple[Callable, Callable[[int], tuple[str, str]]]:
    """The same pair for the replica: a fresh scene per session (the profile's scene file, else the scene the
    platform ``replica:<scene>`` names); without ``task``, a random replica task.

    The runner sets the replica up per policy (``Replica.configure``: action space, stereo).
    """
    from evaluator_client.replica import TASK_KINDS, Replica, load_scene, task_from_instruction

    scene = load_scene(config_mod.replica_scene_source(config.robot))
    rng = random.Random(seed)

    def next_task(k: int) -> tuple[str, str]:
        if task:
            return task, category or task_from_instruction(scene, task).kind
        kind = rng.choice(TASK_KINDS)
        return task_from_instruction(scene, kind).instruction, category or kind

    def make_robot(instruction: str):
        return Replica(
            instruction,
            perturb=perturb,
            scene=scene,
            n_exterior_cameras=max(1, config.robot.n_external_cameras),
        )

    return make_robot, next_task


def _ask_task() -> str:
    while True:
        task = input("Task instruction (typed before the pair is assigned): ").strip()
        if task:
            return task
        print("The task is required.")


if __name__ == "__main__":
    sys.exit(main())
