"""``arena-eval run --robot droid``: a session on a DROID station whose two policies ask for different action
spaces drives a ``RobotEnv`` in each policy's own space, as RoboArena's evaluator does (DROID's package is the
stand-in of :mod:`tests.client.droid_stand_in`; the server, relay, policies, CLI and adapter are real)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from arena.models import EvaluationSession, Preference
from evaluator_client.droid import NATIVE_FRAME_SIZE
from tests.client.droid_stand_in import use_droid_stand_in
from tests.policy_server.roboarena_dialect import (
    CONFIG_MATRIX,
    ConfigPolicy,
    PolicyServerConfig,
    letterbox_top,
    serve_roboarena_in_thread,
)

MAX_STEPS = 6


def test_each_policy_runs_in_its_own_space_on_a_droid_station(arena, monkeypatch, request):
    droid = use_droid_stand_in(monkeypatch, request)
    joint = PolicyServerConfig(action_space="joint_position", image_resolution=None)
    cartesian = PolicyServerConfig(action_space="cartesian_velocity", needs_session_id=True)
    policies = {"joint-pol": ConfigPolicy(joint), "cart-pol": ConfigPolicy(cartesian)}
    answers = iter(["y", "y", "40", "60", "B", "B moved further", "y"])  # both episodes run, then the scores
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    with (
        serve_roboarena_in_thread(policies["joint-pol"], joint) as joint_server,
        serve_roboarena_in_thread(policies["cart-pol"], cartesian) as cartesian_server,
    ):
        arena.register("joint-pol", joint_server.url)
        arena.register("cart-pol", cartesian_server.url)
        code = arena.eval("configure", "--server", arena.url, "--key", arena.lab_key, "--robot", "franka-1",
                          "--platform", "droid")  # fmt: skip
        assert code == 0
        task = ("--task", "wipe the table", "--max-steps", str(MAX_STEPS), "--quiet", "--no-ui")
        assert arena.eval("run", "--robot", "droid", *task) == 0
    assert next(answers, None) is None
    session = EvaluationSession.objects.get()
    assert session.state == "submitted" and Preference.objects.get(session=session).choice == "B"
    spaces = {"A": session.policy_a.req_action_space, "B": session.policy_b.req_action_space}
    driven = [(env.action_space, env.gripper_action_space, len(env.steps)) for env in droid.ENVS if env.steps]
    assert driven == [(spaces["A"], "position", MAX_STEPS), (spaces["B"], "position", MAX_STEPS)]
    for env in droid.ENVS:
        width = 8 if env.action_space.startswith("joint") else 7
        assert all(step.shape == (width,) for step in env.steps)
    assert all(env.closed for env in droid.ENVS[:-1])
    # the joint policy asked for native frames: DROID's 16:9 at the adapter's size
    assert policies["joint-pol"].frame_shapes["observation/exterior_image_1_left"] == (288, 512, 3)
    cart_slot = "A" if session.policy_a.slug == "cart-pol" else "B"
    # the relay hands the policy an alias of the session's slot, never the arena's session id
    alias = policies["cart-pol"].session_ids[-1]
    assert len(alias) == 32 and session.id.hex not in alias and f"{session.id}-{cart_slot}" != alias


# The opponent runs in another space than the case, so the station builds a new RobotEnv between the two slots.
PARTNER = PolicyServerConfig(action_space="cartesian_velocity", image_resolution=(180, 320))
PARTNER_OF_CARTESIAN_VELOCITY = PolicyServerConfig(action_space="joint_velocity")
JUDGED = ["y", "y", "40", "60", "B", "B moved further", "y"]  # both scenes ready, the scores, the verdict
ALIAS = re.compile(r"[0-9a-f]{32}")


def _run_on_droid(arena, monkeypatch, *configure: str) -> EvaluationSession:
    answers = iter(JUDGED)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    code = arena.eval("configure", "--server", arena.url, "--key", arena.lab_key, "--robot", "franka-1",
                      "--platform", "droid", *configure)  # fmt: skip
    assert code == 0
    task = ("--task", "wipe the table", "--max-steps", str(MAX_STEPS), "--quiet", "--no-ui")
    assert arena.eval("run", "--robot", "droid", *task) == 0
    assert next(answers, None) is None
    session = EvaluationSession.objects.get()
    assert session.state == "submitted", session.abort_reason
    assert Preference.objects.get(session=session).choice == "B"
    return session


def _driven(droid) -> list[tuple[str, str | None, int]]:
    """(action space, gripper space, steps) of every env that was stepped, in the order they were built."""
    return [(env.action_space, env.gripper_action_space, len(env.steps)) for env in droid.ENVS if env.steps]


@pytest.mark.parametrize("name", list(CONFIG_MATRIX))
def test_every_config_drives_a_robot_env_in_its_own_space(arena, monkeypatch, request, name):
    """The DROID column of the config matrix: each config, registered through the API and evaluated through the
    relay on a two-camera stereo station, gets a ``RobotEnv`` in its own space, the frames and ids it asks for."""
    droid = use_droid_stand_in(monkeypatch, request)
    case = CONFIG_MATRIX[name]
    config = case.config
    partner_config = PARTNER_OF_CARTESIAN_VELOCITY if config.action_space == PARTNER.action_space else PARTNER
    policy, partner = ConfigPolicy(config, horizon=case.horizon), ConfigPolicy(partner_config)
    slug = f"cfg-{name.replace('_', '-')}"
    with (
        serve_roboarena_in_thread(policy, config) as server,
        serve_roboarena_in_thread(partner, partner_config) as partner_server,
    ):
        arena.register(slug, server.url)
        arena.register("partner", partner_server.url)
        checked = len(policy.session_ids)  # the health check's dry run sent one
        session = _run_on_droid(arena, monkeypatch, "--exterior-cameras", "2", "--stereo")
    slot = "A" if session.policy_a.slug == slug else "B"
    assert arena.lab_get(f"/sessions/{session.id}/")["reveal"][slot]["slug"] == slug
    spaces = {"A": session.policy_a.req_action_space, "B": session.policy_b.req_action_space}
    assert spaces[slot] == config.action_space
    assert _driven(droid) == [(spaces["A"], "position", MAX_STEPS), (spaces["B"], "position", MAX_STEPS)]
    width = 8 if config.action_space.startswith("joint") else 7
    (env,) = [env for env in droid.ENVS if env.steps and env.action_space == config.action_space]
    assert all(step.shape == (width,) for step in env.steps)
    assert all(env.closed for env in droid.ENVS[:-1])  # one live env at a time

    (reset_info,) = policy.resets
    assert ALIAS.fullmatch(reset_info["session_id"]) and reset_info == {
        "session_id": reset_info["session_id"]
    }
    n_inferences = -(-MAX_STEPS // case.horizon)
    expected_ids = [reset_info["session_id"]] * n_inferences if config.needs_session_id else []
    assert policy.session_ids[checked:] == expected_ids
    first = "exterior_image_1" if config.n_external_cameras else "wrist_image"
    frame = policy.frame_shapes[f"observation/{first}_left"]
    padding = policy.top_padding[f"observation/{first}_left"]
    if config.image_resolution is None:
        assert (frame, padding) == ((*NATIVE_FRAME_SIZE, 3), 0)
    else:  # letterboxed: the ZED's 16:9 into a square leaves black bars above and below
        assert frame == (*config.image_resolution, 3)
        assert padding == letterbox_top(NATIVE_FRAME_SIZE, config.image_resolution) > 0
    assert policy.images_sent == set(policy.image_keys())  # what the config asks for, nothing more
    assert ("observation/exterior_image_2_left" in policy.images_sent) == (config.n_external_cameras == 2)
    assert ("observation/wrist_image_right" in policy.images_sent) == config.needs_stereo_camera


def test_an_openpi_droid_checkpoint_runs_as_joint_velocity_on_a_droid_station(
    arena, monkeypatch, request, openpi_droid_server
):
    """openpi's reference server with the empty metadata of openpi's DROID checkpoints, answering (10, 8): taken
    as joint velocity, so the station builds a joint-velocity ``RobotEnv`` for it (clipped to [-1, 1])."""
    droid = use_droid_stand_in(monkeypatch, request)
    partner = ConfigPolicy(PARTNER)
    with serve_roboarena_in_thread(partner, PARTNER) as partner_server:
        shown = arena.register("openpi-droid", openpi_droid_server)
        arena.register("partner", partner_server.url)
        session = _run_on_droid(arena, monkeypatch)
    assert shown["requirements"]["action_space"] == "joint_velocity"
    slot = "A" if session.policy_a.slug == "openpi-droid" else "B"
    assert arena.lab_get(f"/sessions/{session.id}/")["reveal"][slot]["slug"] == "openpi-droid"
    spaces = {"A": session.policy_a.req_action_space, "B": session.policy_b.req_action_space}
    assert _driven(droid) == [(spaces["A"], "position", MAX_STEPS), (spaces["B"], "position", MAX_STEPS)]
    (env,) = [env for env in droid.ENVS if env.steps and env.action_space == "joint_velocity"]
    assert all(step.shape == (8,) and np.abs(step).max() <= 1 for step in env.steps)
