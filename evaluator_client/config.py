"""The lab's client configuration: server, API key and robot profile, in a file only its owner can read."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

ACTION_SPACES = ("joint_position", "joint_velocity", "cartesian_position", "cartesian_velocity")


class ConfigError(Exception):
    """The configuration is missing or a field is wrong; the message names the field."""


def default_home() -> Path:
    return Path(os.environ.get("ARENA_EVAL_HOME") or Path.home() / ".arena-eval")


@dataclass
class RobotProfile:
    name: str = "replica-1"
    platform: str = "replica:tabletop-v1"
    n_external_cameras: int = 1
    has_wrist_camera: bool = True
    has_stereo_camera: bool = False
    action_spaces: list[str] = field(default_factory=lambda: ["cartesian_velocity"])

    def check(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError("robot.name: use letters, digits, '-' and '_' only")
        if not 0 <= self.n_external_cameras <= 4:
            raise ConfigError("robot.n_external_cameras: must be 0-4")
        unknown = [s for s in self.action_spaces if s not in ACTION_SPACES]
        if unknown or not self.action_spaces:
            raise ConfigError(f"robot.action_spaces: choose from {', '.join(ACTION_SPACES)}")


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
