"""POST /api/v1/sessions/: pair assignment rules."""

import uuid

import pytest

from arena.models import EvaluationSession, Policy
from tests.api.actors import activate, register_policy, register_robot, request_session


def test_assigns_two_different_active_policies(lab1, robot1, pool):
    response = request_session(lab1)
    assert response.status_code == 201
    body = response.json()
    uuid.UUID(body["id"], version=4)
    assert body["state"] == "assigned"
    assert body["task"] == "put the marker in the cup"
    session = EvaluationSession.objects.get(pk=body["id"])
    assert session.policy_a_id != session.policy_b_id
    assert {session.policy_a.status, session.policy_b.status} == {"active"}
    assert 0 < session.pair_probability <= 1
    for slot in "AB":
        assert body["slots"][slot]["relay_url"].startswith("ws://")
        assert body["slots"][slot]["requirements"]["action_space"] == "joint_velocity"


def test_only_policies_the_robot_can_run(owner, lab1, pool):
    register_robot(lab1, name="one-cam", n_external_cameras=1, action_spaces=["joint_velocity"])
    # Needs two exterior cameras: the one-camera robot cannot run it.
    Policy.objects.filter(slug="octo-droid").update(req_n_external_cameras=2)
    # Needs cartesian velocities: not executable either.
    Policy.objects.filter(slug="diffusion-droid").update(req_action_space="cartesian_velocity")
    response = request_session(lab1, robot="one-cam")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_eligible_pair"
    register_policy(owner, "another-droid")
    activate("another-droid")
    session = EvaluationSession.objects.get(pk=request_session(lab1, robot="one-cam").json()["id"])
    assert {session.policy_a.slug, session.policy_b.slug} == {"pi0-fast-droid", "another-droid"}


def test_platform_requirement(owner, lab1, pool):
    register_robot(lab1, name="sim", platform="replica:tabletop-v1")
    Policy.objects.update(req_platform="droid")
    assert request_session(lab1, robot="sim").json()["error"]["code"] == "no_eligible_pair"


def test_never_the_labs_own_organization(acme_lab, pool):
    register_robot(acme_lab)
    response = request_session(acme_lab)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_eligible_pair"


def test_failing_pending_and_retired_policies_are_not_assigned(owner, lab1, robot1, pool):
    Policy.objects.filter(slug="pi0-fast-droid").update(status="failing")
    Policy.objects.filter(slug="octo-droid").update(status="retired")
    register_policy(owner, "pending-droid")
    assert request_session(lab1).json()["error"]["code"] == "no_eligible_pair"


def test_open_session_cap_per_lab(settings, lab1, lab2, robot1, pool):
    settings.ARENA_MAX_OPEN_SESSIONS_PER_LAB = 2
    assert request_session(lab1).status_code == 201
    assert request_session(lab1).status_code == 201
    third = request_session(lab1)
    assert third.status_code == 409
    assert third.json()["error"]["code"] == "too_many_open_sessions"
    # The cap is per lab.
    register_robot(lab2)
    assert request_session(lab2).status_code == 201


def test_unknown_robot_and_missing_task(lab1, robot1, pool):
    unknown = request_session(lab1, robot="nope")
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "robot")
    blank = request_session(lab1, task="")
    assert (blank.status_code, blank.json()["error"]["field"]) == (400, "task")


def test_another_labs_robot_is_not_found(lab1, lab2, robot1, pool):
    assert request_session(lab2).json()["error"]["code"] == "robot_not_found"


@pytest.mark.parametrize("who", ["owner", "anonymous"])
def test_only_labs_request_sessions(request, who, robot1, pool):
    actor = request.getfixturevalue(who)
    assert request_session(actor).status_code in (401, 403)


def test_lab_lists_only_its_sessions(lab1, lab2, robot1, pool):
    mine = request_session(lab1).json()
    register_robot(lab2)
    request_session(lab2)
    listed = lab1.get("/api/v1/sessions/").json()
    assert listed["count"] == 1 and listed["results"][0]["id"] == mine["id"]
    assert lab2.get(f"/api/v1/sessions/{mine['id']}/").status_code == 404
    assert lab1.get("/api/v1/sessions/?state=submitted").json()["count"] == 0
    assert lab1.get("/api/v1/sessions/?state=bogus").status_code == 400


def test_policies_reading_simulator_state_only_go_to_replicas(lab1, robot1, pool):
    Policy.objects.update(req_replica_state=True)
    assert request_session(lab1).json()["error"]["code"] == "no_eligible_pair"  # franka-1 is a real DROID
    register_robot(lab1, name="sim-1", platform="replica:tabletop-v1")
    assert request_session(lab1, robot="sim-1").status_code == 201


def test_stereo_and_wrist_needs_are_matched(lab1, pool):
    """A policy asking for stereo frames (or a wrist camera) is assigned only to a robot registered with them."""
    register_robot(lab1, name="mono", has_stereo_camera=False)
    register_robot(lab1, name="no-wrist", has_stereo_camera=True, has_wrist_camera=False)
    register_robot(lab1, name="zed", has_stereo_camera=True)
    Policy.objects.filter(slug__in=["octo-droid", "diffusion-droid"]).update(req_stereo_camera=True)
    assert request_session(lab1, robot="mono").json()["error"]["code"] == "no_eligible_pair"
    assert request_session(lab1, robot="no-wrist").json()["error"]["code"] == "no_eligible_pair"
    response = request_session(lab1, robot="zed")  # two of the three need stereo: any pair holds one
    assert response.status_code == 201, response.json()


def test_a_robot_is_matched_on_every_space_it_declares(lab1, pool):
    """Not only the alphabetically first one (which used to be the only one run), and no undeclared one."""
    register_robot(lab1, name="multi", action_spaces=["joint_position", "cartesian_velocity"])
    assert (
        request_session(lab1, robot="multi").json()["error"]["code"] == "no_eligible_pair"
    )  # all joint_velocity
    Policy.objects.filter(slug="octo-droid").update(req_action_space="joint_position")
    Policy.objects.filter(slug="diffusion-droid").update(req_action_space="cartesian_velocity")
    response = request_session(lab1, robot="multi")
    assert response.status_code == 201, response.json()
    session = EvaluationSession.objects.get(pk=response.json()["id"])
    assert {session.policy_a.slug, session.policy_b.slug} == {"octo-droid", "diffusion-droid"}
