"""``arena-eval``: the evaluator lab's command-line client.

arena-eval configure --server URL --key KEY [robot profile options, e.g. --scene my-station.json]
arena-eval run [--robot replica|droid] [--judge auto|human] [--no-ui] [--sessions N] [--task TEXT]
arena-eval status
arena-eval flush
arena-eval abort SESSION [--reason TEXT] [--fault operator|robot|infrastructure]

Every ordinary failure (a bad option, an unreachable server, a busy port, end of input at a prompt, a refusal)
is one line on stderr and a non-zero exit; output cut short by a closed pipe (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

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
from evaluator_client.screen import OperatorScreen, ScreenError
from evaluator_client.spool import Spool

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a program ended by SIGPIPE
ABORT_FAULTS = ("operator", "robot", "infrastructure")
UNREACHABLE_HINTS = {
    "run": "anything recorded is kept in the spool: run `arena-eval flush` once the server answers",
    "flush": "nothing was lost: run `arena-eval flush` again once the server answers",
    "configure": "check --server and the network; nothing was saved",
}


class CliError(Exception):
    """A failure to report as one clear line."""


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        _silence_stdout()  # the reader left (`arena-eval status | head`): stop quietly, like other tools
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    home = Path(args.home).expanduser() if args.home else None
    try:
        return args.handler(args, home)
    except BrokenPipeError:
        raise
    except (ConfigError, CliError, ScreenError) as exc:
        _error(str(exc))
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    except ApiError as exc:
        field = f" (field {exc.field})" if exc.field else ""
        _error(f"the server refused: {exc.message}{field} [{exc.code}]")
        return EXIT_FAILED
    except ServerUnreachable as exc:
        hint = UNREACHABLE_HINTS.get(
            args.command, "check the server address (`arena-eval configure`) and the network"
        )
        _error(f"{exc}; {hint}")
        return EXIT_FAILED
    except EOFError:
        _error(f"no answer: the input ended at a prompt (Ctrl-D){_open_sessions_hint(args, home)}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        _error(f"interrupted; recorded results are kept in the spool{_open_sessions_hint(args, home)}")
        return EXIT_FAILED
    except OSError as exc:  # e.g. a data folder that cannot be written
        where = f" {exc.filename}" if exc.filename else ""
        _error(f"cannot use{where}: {exc.strerror or exc}")
        return EXIT_FAILED


def _error(line: str) -> None:
    print(f"arena-eval: {' '.join(line.split())}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _open_sessions_hint(args, home: Path | None) -> str:
    """``; session X is still open: ...`` for sessions a stopped run leaves without a verdict."""
    try:
        open_ids = [e["session_id"] for e in _spool(args, home).entries() if e["status"] == "running"]
    except (OSError, ValueError):
        return ""
    if not open_ids:
        return ""
    ids = ", ".join(open_ids)
    return f"; still open on the server: {ids} (`arena-eval abort {open_ids[0]}` closes it)"


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line, like every other failure (the usage is one ``--help``
    away); subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="arena-eval", description="Run blinded policy evaluations for the arena.")
    parser.add_argument(
        "--home", help="client folder with the configuration (default $ARENA_EVAL_HOME or ~/.arena-eval)"
    )
    parser.add_argument(
        "--data-dir",
        help="where session folders (recordings, start images, the spool) live (default $ARENA_EVAL_DATA; "
        "else the --home folder when one is given; else $XDG_DATA_HOME/arena-eval or ~/.local/share/arena-eval)",
    )
    sub = parser.add_subparsers(required=True, metavar="command", dest="command")

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
        metavar="SPACE",
        help=f"an action space the robot executes, one of {', '.join(ACTION_SPACES)} (repeat for several; "
        "default: every space the replica or DROID adapter runs for a replica:... or droid platform)",
    )
    c.set_defaults(handler=cmd_configure)

    r = sub.add_parser("run", help="run evaluation sessions")
    r.add_argument("--robot", choices=["replica", "droid"], default="replica", help="what runs the episodes")
    r.add_argument(
        "--judge",
        choices=["auto", "human"],
        default=None,
        help="who scores and compares the episodes: auto (the simulator's progress; replica only) or human "
        "(you, on the operator screen or, with --no-ui, at the terminal). Default: auto with --robot replica, "
        "human with --robot droid",
    )
    r.add_argument(
        "--no-ui",
        action="store_true",
        help="human judge: answer at the terminal instead of on the operator screen (the start image is saved "
        "as a PNG file whose path is printed)",
    )
    r.add_argument(
        "--ui-port",
        type=int,
        default=0,
        help="port of the operator screen (default: a free one; the URL is printed)",
    )
    r.add_argument(
        "--ui-host",
        default="127.0.0.1",
        help="address the operator screen listens on (default 127.0.0.1: this computer only; another of this "
        "computer's addresses, e.g. its LAN address, lets a tablet on that network open it)",
    )
    r.add_argument(
        "--keep-files",
        action="store_true",
        help="keep each session's folder (videos, start image) after it was sent (default: deleted)",
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
    f.add_argument("--keep-files", action="store_true", help="keep the folders of the sessions sent")
    f.set_defaults(handler=cmd_flush)

    a = sub.add_parser("abort", help="abort an open session (e.g. one a stopped run left open)")
    a.add_argument(
        "session", help="the session's id, or its first characters as `run` and `status` print them"
    )
    a.add_argument(
        "--reason", default="aborted by the operator (arena-eval abort)", help="why (sent to the server)"
    )
    a.add_argument(
        "--fault", choices=ABORT_FAULTS, default="operator", help="whose fault it was (default operator)"
    )
    a.add_argument("--keep-files", action="store_true", help="keep the session's local folder")
    a.set_defaults(handler=cmd_abort)
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


def _spool(args, home: Path | None) -> Spool:
    """The spool in the data folder (``--data-dir``, else :func:`~evaluator_client.config.default_data_dir`);
    entries an older client left in ``~/.arena-eval/spool`` are moved there."""
    data = Path(args.data_dir).expanduser() if getattr(args, "data_dir", None) else None
    spool = Spool(data or config_mod.default_data_dir(home), keep_files=getattr(args, "keep_files", False))
    old = config_mod.default_home() / "spool"
    if home is None and data is None and old.resolve() != spool.root.resolve() and old.is_dir():
        for folder in old.iterdir():
            if (folder / "entry.json").exists() and not (spool.root / folder.name).exists():
                shutil.move(str(folder), str(spool.root / folder.name))
    return spool


def cmd_run(args, home: Path | None) -> int:
    config = config_mod.load(home)
    check_profile_runs_on(config.robot, args.robot)
    spool = _spool(args, home)
    with _api(config) as api:
        return _run_sessions(args, config, api, spool)


def _run_sessions(args, config: Config, api: ArenaApi, spool: Spool) -> int:
    make_robot, next_task = _robot_factory(args, config)
    judge = _judge(args)
    try:
        return _run_with(args, config, api, spool, judge, make_robot, next_task)
    finally:
        close = getattr(judge, "close", None)
        if close is not None:
            close()


def _run_with(args, config: Config, api: ArenaApi, spool: Spool, judge, make_robot, next_task) -> int:
    from evaluator_client.runner import RunOptions, run_session

    _flush_quietly(api, spool, keep_files=args.keep_files)
    options = RunOptions(
        max_steps=args.max_steps,
        realtime=args.robot == "droid",
        show_progress=not args.quiet,
        keep_files=args.keep_files,
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
    spool = _spool(args, home)
    waiting = [e for e in spool.entries() if e["status"] in ("running", "ready", "failed")]
    for entry in waiting:
        note = entry["error"] or ""
        if entry["status"] == "running":
            note = f"no verdict yet: `arena-eval abort {entry['session_id'][:8]}` closes it"
        print(f"spooled  {entry['session_id']}  {entry['status']:<9} {entry['task'][:40]!r} {note}")
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
    spool = _spool(args, home)
    with _api(config) as api:
        report = spool.flush(api)
    print(
        f"sent {len(report.sent)}, still pending {len(report.pending)}, refused {len(report.failed)}, "
        f"abandoned {len(report.abandoned)}"
    )
    entries = {e["session_id"]: e for e in spool.entries()}
    for sid in report.pending:
        entry = entries[sid]
        if entry["status"] == "running":
            print(
                f"  pending {sid}: it has no verdict (its run stopped early) and the server still holds it "
                f"open; `arena-eval abort {sid}` closes it now, or the server expires it when its lease ends"
            )
        else:
            print(f"  pending {sid}: not sent ({entry['error']}); run `arena-eval flush` again once the "
                  "server answers")  # fmt: skip
    for sid in report.abandoned:
        print(f"  abandoned {sid}: the client stopped before the verdict and the server closed the session")
    for sid in report.failed:
        print(f"  refused {sid}: {entries[sid]['error']}; nothing more can be sent for it")
    _remove_sent(spool, report.sent, keep_files=args.keep_files)
    return EXIT_OK if not report.pending and not report.failed else EXIT_FAILED


def cmd_abort(args, home: Path | None) -> int:
    config = config_mod.load(home)
    spool = _spool(args, home)
    with _api(config) as api:
        sid = _resolve_session(api, spool, args.session)
        api.abort(sid, reason=args.reason, fault=args.fault, idem=uuid.uuid4().hex)
    if not args.keep_files:
        spool.remove(sid)
    else:
        for entry in spool.entries():
            if entry["session_id"] == sid:
                entry["status"], entry["error"] = "aborted", "aborted with arena-eval abort"
                spool.save(entry)
    print(f"aborted {sid} ({args.fault}): {args.reason}")
    return EXIT_OK


def _resolve_session(api: ArenaApi, spool: Spool, text: str) -> str:
    """The session id ``text`` names: a whole id, or the first characters of one of this lab's sessions."""
    text = text.strip().lower()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    if len(text) < 4:
        raise CliError(f"session {text!r}: give at least its first 4 characters")
    known = {e["session_id"] for e in spool.entries()}
    known |= {s["id"] for s in api.sessions(limit=100)["results"]}
    matches = sorted(sid for sid in known if sid.startswith(text))
    if not matches:
        raise CliError(f"no session of yours starts with {text!r}: `arena-eval status` lists them")
    if len(matches) > 1:
        raise CliError(f"{text!r} names {len(matches)} sessions ({', '.join(matches)}): give more characters")
    return matches[0]


def _flush_quietly(api: ArenaApi, spool: Spool, *, keep_files: bool = False) -> None:
    if any(e["status"] == "ready" for e in spool.entries()):
        report = spool.flush(api)
        print(f"flushed the spool: sent {len(report.sent)}, pending {len(report.pending)}")
        _remove_sent(spool, report.sent, keep_files=keep_files)


def _remove_sent(spool: Spool, sent: list[str], *, keep_files: bool) -> None:
    if not keep_files:
        for sid in sent:
            spool.remove(sid)


def _judge_kind(args) -> str:
    kind = args.judge or ("human" if args.robot == "droid" else "auto")
    if kind == "auto" and args.robot != "replica":
        raise CliError("--judge auto needs the replica: only the simulator knows the task progress")
    return kind


def _judge(args):
    """The judge of ``arena-eval run``: the simulator, the operator screen, or the terminal (``--no-ui``)."""
    from evaluator_client.judge import AutoJudge, HumanJudge

    if _judge_kind(args) == "auto":
        return AutoJudge(margin=args.margin)
    if args.no_ui:
        return HumanJudge(input_fn=lambda prompt: input(prompt))
    screen = OperatorScreen(host=args.ui_host, port=args.ui_port, sessions=args.sessions)
    print(f"operator screen: {screen.url}  (open it in a browser on this computer)", flush=True)
    return screen


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
