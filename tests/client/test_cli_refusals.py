"""The real ``arena-eval`` executable, in a subprocess: a robot profile its robot cannot run is refused with one
line naming the field, and a run whose every session aborted exits non-zero; never a traceback."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from arena.models import EvaluationSession
from evaluator_client import config as config_mod
from evaluator_client.replica.scene import SCENES_DIR
from policy_server.check import DRY_RUN_PROMPT
from tests.policy_server.roboarena_dialect import ConfigPolicy, PolicyServerConfig, serve_roboarena_in_thread

ARENA_EVAL = Path(sys.executable).with_name("arena-eval")


def arena_eval(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ARENA_EVAL), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


CONFIGURE = ("configure", "--server", "http://127.0.0.1:9", "--key", "pa_x_y", "--robot", "r1")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (("--platform", "droid", "--exterior-cameras", "3"), "robot.n_external_cameras"),
        (("--platform", "replica:tabletop-v1", "--exterior-cameras", "4"), "robot.n_external_cameras"),
        (("--platform", "widowx"), "robot.action_spaces"),
        (("--platform", "replica:tabletop-v1", "--scene", "workbench-v1"), "robot.scene"),
        (("--scene", "/nowhere/my-station.json"), "robot.scene"),
        (("--platform", "droid", "--scene", "workbench-v1"), "robot.scene"),
        (("--action-space", "torque"), "robot.action_spaces"),
        (
            ("--platform", "droid", "--action-space", "joint_position", "--action-space", "eef_delta"),
            "robot.action_spaces",
        ),
    ],
    ids=[
        "droid-3-cameras",
        "replica-4-cameras",
        "unknown-platform-no-spaces",
        "scene-of-another-platform",
        "missing-scene-file",
        "scene-on-droid",
        "replica-torque-space",
        "droid-unknown-space",
    ],
)
def test_configure_refuses_a_profile_the_robot_cannot_run(tmp_path, options, field):
    result = arena_eval(tmp_path, *CONFIGURE, *options)
    assert result.returncode == 2
    assert one_line_error(result).startswith(f"arena-eval: {field}: ")
    assert not (tmp_path / "config.json").exists()


def test_a_scene_mujoco_cannot_build_is_refused_in_one_line(tmp_path):
    """A flat mesh passes the file's own checks; only building the model shows it (it used to crash `run`)."""
    folder = tmp_path / "station"
    shutil.copytree(SCENES_DIR, folder)
    (folder / "meshes" / "coaster.obj").write_text(
        "v -0.04 -0.04 0\nv 0.04 0.04 0\nv 0.04 -0.04 0\nv -0.04 0.04 0\n"
    )
    spec = json.loads((folder / "workbench-v1.json").read_text())
    spec["name"] = "my-station"
    spec["objects"][0]["mesh"] = "meshes/coaster.obj"
    (folder / "my-station.json").write_text(json.dumps(spec))
    result = arena_eval(tmp_path / "home", *CONFIGURE, "--scene", str(folder / "my-station.json"))
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith("arena-eval: robot.scene: scene 'my-station': MuJoCo cannot build it: ")
    assert "mesh 'meshes/coaster.obj' has coplanar vertices" in line
    assert not (tmp_path / "home" / "config.json").exists()


def test_a_space_the_robot_cannot_run_is_named_with_the_spaces_it_runs(tmp_path):
    result = arena_eval(tmp_path, *CONFIGURE, "--platform", "droid", "--action-space", "eef_delta")
    line = one_line_error(result)
    assert (
        "'eef_delta'" in line
        and "joint_position, joint_velocity, cartesian_position, cartesian_velocity" in line
    )


def test_a_hand_edited_profile_with_a_space_the_robot_cannot_run_is_refused_by_run(tmp_path):
    profile = config_mod.RobotProfile(
        name="r1", platform="replica:tabletop-v1", action_spaces=["joint_position"]
    )
    path = config_mod.save(config_mod.Config("http://127.0.0.1:9", "pa_x_y", profile), tmp_path)
    path.write_text(path.read_text().replace('"joint_position"', '"joint_torque"'))
    result = arena_eval(tmp_path, "run", "--robot", "replica", "--quiet")
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith("arena-eval: ") and "robot.action_spaces: 'joint_torque'" in line


def test_a_malformed_option_is_one_line_naming_it(tmp_path):
    result = arena_eval(tmp_path, *CONFIGURE, "--exterior-cameras", "two")
    assert result.returncode == 2
    line = one_line_error(result)
    assert "--exterior-cameras" in line and "'two'" in line and "--help" in line


@pytest.mark.parametrize(
    ("platform", "robot", "hint"),
    [("replica:tabletop-v1", "droid", "--robot replica"), ("droid", "replica", "--robot droid")],
)
def test_run_refuses_a_robot_of_another_platform(tmp_path, platform, robot, hint):
    profile = config_mod.RobotProfile(name="r1", platform=platform, action_spaces=["joint_position"])
    config_mod.save(config_mod.Config("http://127.0.0.1:9", "pa_x_y", profile), tmp_path)
    result = arena_eval(tmp_path, "run", "--robot", robot, "--quiet")
    assert result.returncode == 2
    line = one_line_error(result)
    assert line.startswith("arena-eval: robot.platform: ") and hint in line


@pytest.mark.skipif(importlib.util.find_spec("droid") is not None, reason="DROID is installed here")
def test_run_on_droid_without_droid_says_how_to_install(tmp_path):
    profile = config_mod.RobotProfile(name="r1", platform="droid", action_spaces=["joint_position"])
    config_mod.save(config_mod.Config("http://127.0.0.1:9", "pa_x_y", profile), tmp_path)
    result = arena_eval(tmp_path, "run", "--robot", "droid", "--quiet", "--task", "wipe the table")
    assert result.returncode == 1
    line = one_line_error(result)
    assert line.startswith("arena-eval: the DROID robot adapter needs") and "droid-dataset/droid" in line


class FailsInSessions(ConfigPolicy):
    """Passes its health check, then fails on every observation an evaluator sends."""

    def infer(self, obs):
        if obs["prompt"] != DRY_RUN_PROMPT:
            raise RuntimeError("the policy lost its GPU")
        return super().infer(obs)


def test_run_exits_non_zero_when_every_session_aborted(arena):
    config = PolicyServerConfig(action_space="cartesian_velocity")
    with (
        serve_roboarena_in_thread(FailsInSessions(config), config) as failing,
        serve_roboarena_in_thread(FailsInSessions(config), config) as failing_too,
    ):
        arena.register("gpu-less", failing.url)
        arena.register("gpu-less-too", failing_too.url)
        arena.configure()
        result = arena_eval(
            arena.home, "run", "--robot", "replica", "--judge", "auto", "--max-steps", "10", "--quiet",
            "--task", "put the red block in the bowl",
        )  # fmt: skip
    assert EvaluationSession.objects.get().state == "aborted"
    assert result.returncode == 1
    assert "1 aborted" in result.stdout
    assert one_line_error(result).startswith("arena-eval: every session aborted (the last: slot A: ")
