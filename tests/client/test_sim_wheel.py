"""The lab's install from the README, word for word but from a freshly built wheel: ``pip install
'<wheel>[sim]'`` in a new virtual environment, then ``arena-eval configure`` and ``arena-eval run`` in the
replica against a live arena (server, relay and two registered baselines)."""

from __future__ import annotations

import pytest

from arena.models import EvaluationSession, Preference, Video
from tests.packaging.wheel import build_wheel, fresh_venv, ok, run

# Run in the fresh venv: the second shipped scene (an OBJ mesh object and photo backgrounds, files beside the
# scene's JSON) builds and renders from the installed wheel, with its background composited.
SECOND_SCENE = """
import os
os.environ.setdefault("MUJOCO_GL", "egl")
from evaluator_client.replica import Replica
robot = Replica("pick_place", scene="workbench-v1", n_exterior_cameras=2)
robot.reset()
frame = robot.observe()["observation/exterior_image_1_left"]
assert frame.shape[0] * 16 == frame.shape[1] * 9, frame.shape
print("workbench-v1 ok", frame.shape)
"""


@pytest.mark.packaging
@pytest.mark.timeout(1800)
def test_the_sim_extra_runs_a_replica_session_against_a_live_arena(network, tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    scripts = fresh_venv(tmp_path / "venv", f"{wheel}[sim]")
    outside, home = tmp_path / "elsewhere", tmp_path / "lab-home"
    outside.mkdir()
    eval_ = [scripts / "arena-eval", "--home", home]
    configure = [
        *eval_,
        "configure",
        "--server",
        network.url,
        "--key",
        network.lab_key,
        "--robot",
        "replica-1",
    ]
    ok(run(configure, timeout=300, cwd=outside))
    session = [
        *eval_,
        "run",
        "--robot",
        "replica",
        "--judge",
        "auto",
        "--max-steps",
        "60",
        "--quiet",
        "--seed",
        "3",
    ]
    ok(run(session, timeout=900, cwd=outside))
    assert [s.state for s in EvaluationSession.objects.all()] == ["submitted"]
    assert Preference.objects.count() == 1
    assert Video.objects.filter(state="verified").count() == 4  # 2 slots x (exterior, wrist)
    assert "submitted" in ok(run([*eval_, "status"], timeout=120, cwd=outside))
    assert "workbench-v1 ok" in ok(run([scripts / "python", "-c", SECOND_SCENE], timeout=300, cwd=outside))
