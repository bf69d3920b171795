"""The lab's client configuration: server, API key and robot profile, in a file only its owner can read.

A profile also has to fit the robot that runs it: :func:`check_profile_runs_on` compares it with what the
adapter for its platform (the replica for ``replica:<scene>``, the DROID adapter for ``droid``/``droid:...``)
can do: action spaces, exterior cameras, stereo.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

ACTION_SPACES = ("joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity")
ROBOT_KINDS = ("replica", "droid")


class ConfigError(Exception):
    """The configuration is missing or a field is wrong; the message names the field."""


DATA_DIR_ENV = "ARENA_EVAL_DATA"


def default_home() -> Path:
    return Path(os.environ.get("ARENA_EVAL_HOME") or Path.home() / ".arena-eval")


def default_data_dir(home: Path | None = None) -> Path:
    """Where the client keeps its session folders (the spool): ``$ARENA_EVAL_DATA``; else the client folder
    when one was chosen (``home``, from ``--home``, or ``$ARENA_EVAL_HOME``), so that it holds everything;
    else ``$XDG_DATA_HOME/arena-eval``, by default ``~/.local/share/arena-eval``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    if home is not None:
        return home
    if os.environ.get("ARENA_EVAL_HOME"):
        return default_home()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share") / "arena-eval"


@dataclass
class RobotProfile:
    name: str = "replica-1"
    platform: str = "replica:tabletop-v1"
    n_external_cameras: int = 1
    has_wrist_camera: bool = True
    has_stereo_camera: bool = False
    action_spaces: list[str] = field(default_factory=lambda: ["cartesian_velocity"])
    scene: str = ""
    """Replica robots: the scene file the replica builds (a shipped scene's name, or a path to the lab's own
    file); empty: the shipped scene the platform ``replica:<scene>`` names."""

    def check(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("robot.name: use letters, digits, '-' and '_' only")
        if not 0 <= self.n_external_cameras <= 4:
            raise ConfigError("robot.n_external_cameras: must be 0-4")
        unknown = [s for s in self.action_spaces if s not in ACTION_SPACES]
        if unknown or not self.action_spaces:
            what = f"{', '.join(map(repr, unknown))} is not a DROID action space; " if unknown else ""
            raise ConfigError(f"robot.action_spaces: {what}choose from {', '.join(ACTION_SPACES)}")


@dataclass(frozen=True)
class RobotCapabilities:
    """What one of this client's robot adapters can be set up for."""

    kind: str
    action_spaces: tuple[str, ...]
    exterior_cameras: tuple[int, int]  # (fewest, most)
    stereo: bool


def robot_kind(platform: str) -> str | None:
    """``"replica"`` or ``"droid"``: the adapter of this client that runs ``platform``; None for other robots."""
    if platform.startswith("replica:"):
        return "replica"
    if platform == "droid" or platform.startswith("droid:"):
        return "droid"
    return None


def replica_scene_source(profile: RobotProfile) -> str:
    """The scene file (name or path) a replica robot with this profile builds."""
    if profile.scene:
        return profile.scene
    if robot_kind(profile.platform) == "replica":
        return profile.platform.split(":", 1)[1]
    return "tabletop-v1"


def robot_capabilities(kind: str, profile: RobotProfile) -> RobotCapabilities:
    """What adapter ``kind`` (``"replica"`` or ``"droid"``) can run, as the adapters declare it. For the
    replica, the exterior cameras are those of the profile's scene (:func:`replica_scene_source`), whose name
    must be the one its platform ``replica:<scene>`` names, and which MuJoCo must be able to build; every
    replica camera renders a stereo pair."""
    if kind == "replica":
        from evaluator_client.replica import ACTION_SPACES as REPLICA_SPACES
        from evaluator_client.replica import SceneError, load_scene
        from evaluator_client.replica.scene import check_scene_builds

        try:
            scene = load_scene(replica_scene_source(profile))
            check_scene_builds(scene)
        except SceneError as exc:
            raise ConfigError(f"robot.{'scene' if profile.scene else 'platform'}: {exc}") from exc
        if robot_kind(profile.platform) == "replica" and profile.platform != f"replica:{scene.name}":
            raise ConfigError(
                f"robot.scene: the scene file is {scene.name!r}, the robot's platform is {profile.platform}"
            )
        return RobotCapabilities(kind, tuple(REPLICA_SPACES), (1, len(scene.exterior_cameras)), True)
    if kind == "droid":
        from evaluator_client.droid import DroidRobot

        return RobotCapabilities(kind, tuple(DroidRobot.action_spaces), (1, 2), True)
    raise ValueError(f"unknown robot kind {kind!r}; this client runs {', '.join(ROBOT_KINDS)}")


def check_profile_runs_on(profile: RobotProfile, kind: str) -> None:
    """Raise :class:`ConfigError` (naming the field) when adapter ``kind`` cannot run ``profile``."""
    declared = robot_kind(profile.platform)
    if declared is not None and declared != kind:
        raise ConfigError(
            f"robot.platform: robot {profile.name!r} is a {profile.platform} robot; run it with --robot {declared}"
        )
    can = robot_capabilities(kind, profile)
    missing = [space for space in profile.action_spaces if space not in can.action_spaces]
    if missing:
        raise ConfigError(
            f"robot.action_spaces: the {kind} cannot run {', '.join(missing)} "
            f"(it runs {', '.join(can.action_spaces)})"
        )
    fewest, most = can.exterior_cameras
    if not fewest <= profile.n_external_cameras <= most:
        raise ConfigError(
            f"robot.n_external_cameras: the {kind} has {fewest} to {most} exterior cameras, "
            f"not {profile.n_external_cameras}"
        )
    if profile.has_stereo_camera and not can.stereo:
        raise ConfigError(f"robot.has_stereo_camera: the {kind} renders no stereo frames")


@dataclass
class Config:
    server_url: str
    api_key: str
    robot: RobotProfile

    def check(self) -> None:
        if not self.server_url.startswith(("http://", "https://")):
            raise ConfigError("server_url: must start with http:// or https://")
        if not self.api_key.startswith("pa_"):
            raise ConfigError("api_key: a lab key looks like pa_<prefix>_<secret> (ask the operator for one)")
        self.robot.check()


def config_path(home: Path | None = None) -> Path:
    return (home or default_home()) / "config.json"


def save(config: Config, home: Path | None = None) -> Path:
    """Write the configuration with 0600 permissions (it holds the lab's API key)."""
    config.check()
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(config), fh, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def load(home: Path | None = None) -> Config:
    path = config_path(home)
    if not path.exists():
        raise ConfigError(f"no configuration at {path}: run `arena-eval configure` first")
    try:
        raw = json.loads(path.read_text())
        config = Config(
            server_url=raw["server_url"], api_key=raw["api_key"], robot=RobotProfile(**raw["robot"])
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is not a valid configuration ({exc}): run `arena-eval configure` again"
        ) from exc
    config.check()
    return config
