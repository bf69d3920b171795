"""The config matrix: a policy served in RoboArena's template dialect, with each ``PolicyServerConfig`` people
use, is registered through the API, passes its health check, and is evaluated end to end in a replica session
through the relay: the robot is set up per slot for that policy, the preference is stored and the reveal names
it. The policy (``ConfigPolicy``) fails the request on anything its config asks for and did not get.
"""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
import requests

from arena.models import Episode, EvaluationSession, Preference
from arena.tasks import policy_check_all
from evaluator_client.replica import NATIVE_RESOLUTION
from tests.policy_server.roboarena_dialect import (
    CONFIG_MATRIX,
    ConfigPolicy,
    PolicyServerConfig,
    letterbox_top,
    serve_roboarena_in_thread,
)

MAX_STEPS = 10
RUN = (
    "run",
    "--robot",
    "replica",
    "--judge",
    "auto",
    "--max-steps",
    str(MAX_STEPS),
    "--quiet",
    "--seed",
    "5",
)


# The opponent runs in another space than most cases, so the robot is set up anew between the two slots.
PARTNER = PolicyServerConfig(action_space="cartesian_velocity", image_resolution=(180, 320))


@pytest.mark.parametrize("name", list(CONFIG_MATRIX))
def test_roboarena_config_is_evaluated_end_to_end(arena, name):
    case = CONFIG_MATRIX[name]
    policy = ConfigPolicy(case.config, horizon=case.horizon)
    partner = ConfigPolicy(PARTNER)
    slug = f"cfg-{name.replace('_', '-')}"
    with (
        serve_roboarena_in_thread(policy, case.config) as server,
        serve_roboarena_in_thread(partner, PARTNER) as partner_server,
    ):
        arena.register(slug, server.url)
        arena.register("partner", partner_server.url)
        checked = len(policy.session_ids)  # the health check's dry run sent one
        arena.configure(None, "--exterior-cameras", "2", "--stereo")
        assert arena.eval(*RUN) == 0

    session = EvaluationSession.objects.get()
    assert session.state == "submitted", session.abort_reason
    assert Preference.objects.filter(session=session).exists()
    slot = "A" if session.policy_a.slug == slug else "B"
    episode = Episode.objects.get(session=session, slot=slot)
    assert (episode.steps, episode.failure_reason) == (MAX_STEPS, "")
    reveal = arena.lab_get(f"/sessions/{session.id}/")["reveal"]
    assert reveal[slot]["slug"] == slug

    # The relay hands the policy an alias of the episode, never the arena's session id (which its owner could
    # pass to a colluding lab): the same in the reset and in every observation.
    assert len(policy.resets) == 1
    episode_id = policy.resets[0]["session_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", episode_id) and session.id.hex not in episode_id
    assert policy.resets == [{"session_id": episode_id}]  # RoboArena's reset_info, nothing of the lab's
    n_inferences = -(-MAX_STEPS // case.horizon)
    if case.config.needs_session_id:
        assert policy.session_ids[checked:] == [episode_id] * n_inferences
    first = "exterior_image_1" if case.config.n_external_cameras else "wrist_image"
    frame = policy.frame_shapes[f"observation/{first}_left"]
    padding = policy.top_padding[f"observation/{first}_left"]
    native = (NATIVE_RESOLUTION[1], NATIVE_RESOLUTION[0])  # the replica's native 16:9 frame, (H, W)
    if case.config.image_resolution is None:
        assert (frame, padding) == ((*native, 3), 0)
    else:  # letterboxed: 16:9 into a square leaves black bars above and below
        assert frame == (*case.config.image_resolution, 3)
        assert padding == letterbox_top(native, case.config.image_resolution) > 0
    assert policy.images_sent == set(policy.image_keys())  # what the config asks for, nothing more
    assert ("observation/exterior_image_2_left" in policy.images_sent) == (
        case.config.n_external_cameras == 2
    )
    assert ("observation/wrist_image_right" in policy.images_sent) == case.config.needs_stereo_camera


def owner_get(arena, slug: str) -> dict:
    response = requests.get(
        f"{arena.url}/api/v1/policies/{slug}/",
        headers={"Authorization": f"Api-Key {arena.owner_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("declared", "answered", "shape"),
    [("cartesian_velocity", "joint_velocity", "(8, 8)"), ("joint_position", "cartesian_position", "(8, 7)")],
)
def test_a_policy_whose_chunks_do_not_fit_its_space_never_enters_the_pool(arena, declared, answered, shape):
    """A Cartesian policy answering (N, 8) used to pass its check, then abort every session it was given."""
    config = PolicyServerConfig(action_space=declared)
    misfit = ConfigPolicy(PolicyServerConfig(action_space=answered))
    with serve_roboarena_in_thread(misfit, config) as server:
        shown = arena.register("misfit", server.url, active=False)
    assert shown["status"] == "pending"
    error = owner_get(arena, "misfit")["last_check_error"]  # what the owner reads
    assert error.startswith("bad_action: ") and f"{declared!r}" in error and shape in error


class Redeployed(ConfigPolicy):
    """Answers in its config's space until ``misfit`` is set; then one column too many (a redeployment that
    swapped in a joint-space checkpoint behind a Cartesian config)."""

    misfit = False

    def infer(self, obs):
        reply = super().infer(obs)
        if self.misfit:
            reply["actions"] = np.hstack([reply["actions"], np.zeros((len(reply["actions"]), 1), np.float32)])
        return reply


def test_an_active_policy_whose_chunks_stop_fitting_leaves_the_pool(arena, settings):
    """The periodic check catches it too: the policy goes ``failing`` with the reason, and is assigned no more."""
    config = PolicyServerConfig(action_space="cartesian_velocity")
    drifting = Redeployed(config)
    partners = {"pol-jp": PolicyServerConfig(), "pol-jv": PolicyServerConfig(action_space="joint_velocity")}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(serve_roboarena_in_thread(drifting, config))
        arena.register("drifting", server.url)
        for slug, partner in partners.items():
            partner_server = stack.enter_context(serve_roboarena_in_thread(ConfigPolicy(partner), partner))
            arena.register(slug, partner_server.url)
        drifting.misfit = True
        for _ in range(settings.ARENA_CHECK_FAILURES_BEFORE_FAILING):
            policy_check_all()
        shown = owner_get(arena, "drifting")
        assert shown["status"] == "failing"
        assert shown["last_check_error"].startswith("bad_action: ")
        assert "'cartesian_velocity'" in shown["last_check_error"] and "(8, 8)" in shown["last_check_error"]
        assert {owner_get(arena, slug)["status"] for slug in partners} == {"active"}
        arena.configure()
        assert arena.eval(*RUN) == 0
    session = EvaluationSession.objects.get()
    assert session.state == "submitted", session.abort_reason
    assert {session.policy_a.slug, session.policy_b.slug} == set(partners)


def test_an_openpi_droid_checkpoint_server_is_evaluated_end_to_end(arena, openpi_droid_server):
    """openpi's reference server with empty metadata, answering (10, 8): taken as joint velocity (the DROID
    default) and run in the replica; an openpi server passes every key to its policy, so none is added."""
    partner = ConfigPolicy(PARTNER)
    with serve_roboarena_in_thread(partner, PARTNER) as partner_server:
        shown = arena.register("openpi-droid", openpi_droid_server)
        arena.register("partner", partner_server.url)
        arena.configure()
        assert arena.eval(*RUN) == 0
    assert shown["requirements"]["action_space"] == "joint_velocity"
    session = EvaluationSession.objects.get()
    assert session.state == "submitted", session.abort_reason
    slot = "A" if session.policy_a.slug == "openpi-droid" else "B"
    assert Episode.objects.get(session=session, slot=slot).steps == MAX_STEPS
    assert arena.lab_get(f"/sessions/{session.id}/")["reveal"][slot]["slug"] == "openpi-droid"


def test_a_robot_is_assigned_policies_in_every_space_it_declares_and_no_other(arena):
    """Declaring several spaces used to run only the alphabetically first (the other policy aborted, the robot
    blamed); the server matches on all of them and the client runs each."""
    configs = {
        "pol-jp": PolicyServerConfig(action_space="joint_position"),
        "pol-cv": PolicyServerConfig(action_space="cartesian_velocity"),
        "pol-jv": PolicyServerConfig(action_space="joint_velocity"),
    }
    with contextlib.ExitStack() as stack:
        for slug, config in configs.items():
            server = stack.enter_context(serve_roboarena_in_thread(ConfigPolicy(config), config))
            arena.register(slug, server.url)
        arena.configure(None, "--action-space", "joint_position", "--action-space", "cartesian_velocity")
        assert arena.eval(*RUN) == 0
    session = EvaluationSession.objects.get()
    assert session.state == "submitted", session.abort_reason
    assert {session.policy_a.slug, session.policy_b.slug} == {"pol-jp", "pol-cv"}
