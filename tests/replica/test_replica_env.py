"""The replica: determinism, perturbations, instruction mapping, action spaces, observations."""

import json

import numpy as np
import pytest

from evaluator_client.replica import (
    AXES,
    PerturbationError,
    Replica,
    ReplicaError,
    UnknownTaskError,
    load_scene,
)
from evaluator_client.replica.tasks import task_from_instruction
from evaluator_client.robot import Robot
from policy_server.baselines import make_baseline


def rollout(robot: Replica, steps: int = 40) -> list[np.ndarray]:
    policy = make_baseline("noisy", seed=3)
    poses = []
    for step in range(steps):
        if step % 8 == 0:
            obs = robot.proprioception()
            obs["replica/state"] = robot.privileged_state()
            chunk = policy.infer(obs)["actions"]
        robot.apply(chunk[step % 8])
        poses.append(
            np.concatenate(
                [robot.proprioception()["observation/joint_position"], robot.privileged_state()["object_pos"]]
            )
        )
    return poses


def test_is_a_robot_with_droid_observation_keys():
    robot = Replica("pick_place", seed=0, n_exterior_cameras=2)
    assert isinstance(robot, Robot)
    obs = robot.observe()
    for key in (
        "observation/exterior_image_1_left",
        "observation/exterior_image_2_left",
        "observation/wrist_image_left",
    ):
        assert obs[key].shape == (180, 320, 3) and obs[key].dtype == np.uint8
    assert obs["observation/joint_position"].shape == (7,)
    assert obs["observation/cartesian_position"].shape == (6,)
    assert obs["observation/gripper_position"].shape == (1,)
    assert robot.platform == "replica:tabletop-v1" and robot.control_hz == 15
    assert robot.cameras == ["exterior_1", "exterior_2", "wrist"]
    assert set(robot.action_spaces) == {
        "joint_position",
        "joint_velocity",
        "cartesian_position",
        "cartesian_velocity",
    }
    robot.close()


def test_same_seed_same_start_image_and_rollout():
    a = Replica("stack", seed=5, perturb="all")
    b = Replica("stack", seed=5, perturb="all")
    assert np.array_equal(a.start_image(), b.start_image())
    assert np.array_equal(
        a.observe()["observation/wrist_image_left"], b.observe()["observation/wrist_image_left"]
    )
    assert np.array_equal(np.array(rollout(a)), np.array(rollout(b)))
    # Reset after a rollout returns to exactly the same start.
    a.reset(5)
    assert np.array_equal(a.start_image(), b.start_image())
    a.reset(6)
    assert not np.array_equal(a.start_image(), b.start_image())


@pytest.mark.parametrize("axis", AXES)
def test_each_perturbation_axis_changes_the_scene(axis):
    nominal = Replica("pick_place", seed=11, perturb="none")
    perturbed = Replica("pick_place", seed=11, perturb=[axis])
    assert set(perturbed.perturbation) <= {axis} and nominal.perturbation == {}
    if axis == "distractors" and not perturbed.perturbation["distractors"]:
        perturbed.reset(12)
    assert perturbed.perturbation[axis]
    differs = [
        not np.array_equal(nominal.render(cam), perturbed.render(cam)) for cam in ("exterior_1", "wrist")
    ]
    assert any(differs)
    json.dumps(perturbed.scene_notes())


def test_axes_are_independent_of_each_other():
    only_positions = Replica("push", seed=4, perturb=["positions"])
    everything = Replica("push", seed=4, perturb="all")
    assert only_positions.perturbation["positions"] == everything.perturbation["positions"]


def test_unknown_axis_is_refused():
    with pytest.raises(PerturbationError, match="unknown perturbation axes"):
        Replica("push", perturb=["gravity"])


@pytest.mark.parametrize(
    "text, kind, obj, target",
    [
        ("pick_place", "pick_place", "red_block", "bowl"),
        ("put the red block in the bowl", "pick_place", "red_block", "bowl"),
        ("Place the yellow block on the green square.", "pick_place", "yellow_block", "green_square"),
        ("push the blue cube to the green square", "push", "blue_block", "green_square"),
        ("stack the yellow block on the red block", "stack", "yellow_block", "red_block"),
        ("stack", "stack", "red_block", "blue_block"),
    ],
)
def test_instructions_map_to_tasks(text, kind, obj, target):
    task = task_from_instruction(load_scene(), text)
    assert (task.kind, task.object, task.target) == (kind, obj, target)


@pytest.mark.parametrize("text", ["dance", "push the red block into the bowl"])
def test_unmappable_instructions_are_refused(text):
    with pytest.raises(UnknownTaskError):
        task_from_instruction(load_scene(), text)


def test_cartesian_velocity_moves_the_tcp_by_droid_limits():
    robot = Replica("pick_place", seed=0, perturb="none")
    command = np.array([0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
    for _ in range(4):
        robot.apply(command)
    start = robot.proprioception()["observation/cartesian_position"].copy()
    for _ in range(4):
        robot.apply(command)
    moved = robot.proprioception()["observation/cartesian_position"] - start
    assert moved[1] == pytest.approx(4 * 0.3 * 0.075, abs=0.006)
    assert abs(moved[0]) < 0.003 and abs(moved[2]) < 0.003
    assert np.allclose(moved[3:], 0.0, atol=0.01)


def test_cartesian_position_reaches_an_absolute_target():
    robot = Replica("pick_place", seed=0, perturb="none", action_space="cartesian_position")
    target = np.array([0.5, 0.1, 0.15, np.pi, 0.0, 0.3, 0.0])
    for _ in range(15):
        robot.apply(target)
    pose = robot.proprioception()["observation/cartesian_position"]
    assert np.allclose(pose[:3], target[:3], atol=0.005)
    assert pose[5] == pytest.approx(0.3, abs=0.02)


def test_gripper_closes_and_opens_at_most_a_quarter_per_step():
    robot = Replica("pick_place", seed=0, perturb="none")
    close, release = np.array([0, 0, 0, 0, 0, 0, 1.0]), np.zeros(7)
    robot.apply(close)
    assert 0.15 < robot.proprioception()["observation/gripper_position"][0] <= 0.26
    for _ in range(4):
        robot.apply(close)
    assert robot.proprioception()["observation/gripper_position"][0] > 0.95
    for _ in range(5):
        robot.apply(release)
    assert robot.proprioception()["observation/gripper_position"][0] < 0.05


def test_bad_actions_are_refused():
    robot = Replica("pick_place", seed=0)
    with pytest.raises(ReplicaError, match="expects a \\(7,\\)"):
        robot.apply(np.zeros(8))
    with pytest.raises(ReplicaError, match="NaN"):
        robot.apply(np.full(7, np.nan))
    with pytest.raises(ValueError, match="unsupported action space 'joint_torque'"):
        Replica("pick_place", action_space="joint_torque")
