"""``arena-eval run --robot droid``: a session on a DROID station whose two policies ask for different action
spaces drives a ``RobotEnv`` in each policy's own space, as RoboArena's evaluator does (DROID's package is the
stand-in of :mod:`tests.client.droid_stand_in`; the server, relay, policies, CLI and adapter are real)."""

from __future__ import annotations

from arena.models import EvaluationSession, Preference
from tests.client.droid_stand_in import use_droid_stand_in
from tests.policy_server.roboarena_dialect import ConfigPolicy, PolicyServerConfig, serve_roboarena_in_thread

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
