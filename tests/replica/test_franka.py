"""The replica's robot is DROID's: Franka Panda kinematics and limits, the four DROID action spaces, real
contact grasps, 16:9 native frames and ZED stereo pairs."""

import numpy as np
import pytest

from evaluator_client.replica import Replica, ReplicaError
from evaluator_client.robot import Robot

# Franka Emika's published modified DH table for the Panda, and its joint limits (rad, rad/s).
DH_A = [0, 0, 0, 0.0825, -0.0825, 0, 0.088]
DH_D = [0.333, 0, 0.316, 0, 0.384, 0, 0]
DH_ALPHA = [0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2]
FLANGE_D = 0.107
Q_MIN = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
Q_MAX = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
DQ_MAX = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
HZ = 15


def dh_flange(q: np.ndarray) -> np.ndarray:
    """Flange pose (4, 4) in the base frame: product of Craig's RotX(alpha) TransX(a) RotZ(theta) TransZ(d)."""

    def rot_x(a):
        return np.array(
            [[1, 0, 0, 0], [0, np.cos(a), -np.sin(a), 0], [0, np.sin(a), np.cos(a), 0], [0, 0, 0, 1]]
        )

    def rot_z(t):
        return np.array(
            [[np.cos(t), -np.sin(t), 0, 0], [np.sin(t), np.cos(t), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
        )

    def trans(x, z):
        out = np.eye(4)
        out[0, 3], out[2, 3] = x, z
        return out

    pose = np.eye(4)
    for i in range(7):
        pose = pose @ rot_x(DH_ALPHA[i]) @ trans(DH_A[i], 0) @ rot_z(q[i]) @ trans(0, DH_D[i])
    return pose @ trans(0, FLANGE_D)


@pytest.fixture(scope="module")
def robot():
    replica = Replica("pick_place", seed=0, perturb="none", n_exterior_cameras=2)
    yield replica
    replica.close()


def test_forward_kinematics_match_the_published_dh_parameters(robot):
    import mujoco

    rng = np.random.default_rng(0)
    base = mujoco.mj_name2id(robot.model, mujoco.mjtObj.mjOBJ_BODY, "link0")
    hand = mujoco.mj_name2id(robot.model, mujoco.mjtObj.mjOBJ_BODY, "hand")
    for _ in range(25):
        q = rng.uniform(Q_MIN, Q_MAX)
        robot.reset(0)
        robot.data.qpos[robot._arm_q] = q
        mujoco.mj_forward(robot.model, robot.data)
        base_rot = robot.data.xmat[base].reshape(3, 3)
        flange_pos = base_rot.T @ (robot.data.xpos[hand] - robot.data.xpos[base])
        flange_rot = base_rot.T @ robot.data.xmat[hand].reshape(3, 3)
        expected = dh_flange(q)
        assert np.allclose(flange_pos, expected[:3, 3], atol=1e-9)
        assert np.allclose(flange_rot, expected[:3, :3], atol=1e-9)
        # The observed TCP is 15 cm beyond the flange along its z axis, in the base frame.
        obs = robot.proprioception()
        assert np.allclose(obs["observation/joint_position"], q)
        tcp = expected[:3, 3] + 0.150 * expected[:3, 2]
        assert np.allclose(obs["observation/cartesian_position"][:3], tcp, atol=1e-9)


def test_joint_position_reads_seven_franka_angles_inside_the_limits(robot):
    robot.configure(action_space="joint_velocity")
    robot.reset(0)
    rng = np.random.default_rng(1)
    for _ in range(120):
        robot.apply(np.concatenate([rng.uniform(-1, 1, 7), [rng.uniform()]]))
        q = robot.proprioception()["observation/joint_position"]
        assert q.shape == (7,)
        assert np.all(q >= Q_MIN - 0.02) and np.all(q <= Q_MAX + 0.02)
    robot.configure(action_space="joint_position")
    robot.reset(0)
    beyond = np.concatenate([Q_MAX + 1.0, [0.0]])
    for _ in range(60):
        robot.apply(beyond)
    q = robot.proprioception()["observation/joint_position"]
    assert np.all(q <= Q_MAX + 0.02) and np.all(q >= Q_MIN - 0.02)


def test_a_joint_target_is_followed_within_the_velocity_limits(robot):
    robot.configure(action_space="joint_position")
    robot.reset(0)
    start = robot.proprioception()["observation/joint_position"].copy()
    target = start + np.array([0.4, 0.3, 0.35, 0.4, -0.45, -0.3, 0.6])
    clock = robot.data.time
    robot.apply(np.concatenate([target, [0.0]]))
    assert robot.data.time - clock == pytest.approx(1 / HZ, abs=1e-6)  # one step is 1/15 s of physics
    first = robot.proprioception()["observation/joint_position"] - start
    assert np.all(np.abs(first) <= DQ_MAX / HZ + 0.01)
    for _ in range(20):
        robot.apply(np.concatenate([target, [0.0]]))
    assert np.allclose(robot.proprioception()["observation/joint_position"], target, atol=0.01)


@pytest.mark.parametrize("joint", range(7))
def test_a_joint_velocity_moves_each_joint_in_its_commanded_direction(robot, joint):
    robot.configure(action_space="joint_velocity")
    for sign in (1.0, -1.0):
        robot.reset(0)
        start = robot.proprioception()["observation/joint_position"].copy()
        command = np.zeros(8)
        command[joint] = 0.5 * sign
        for _ in range(3):
            robot.apply(command)
        moved = robot.proprioception()["observation/joint_position"] - start
        # 0.5 of DROID's 0.2 rad per step, for 3 steps.
        assert moved[joint] * sign == pytest.approx(0.3, abs=0.03)
        others = np.delete(moved, joint)
        assert np.all(np.abs(others) < 0.02)


def test_a_joint_velocity_beyond_the_range_keeps_its_direction_within_the_velocity_limits(robot):
    """DROID scales a joint velocity beyond [-1, 1] down by its largest entry (direction kept) to at most 0.2 rad
    per step; the Franka's limits (2.175 rad/s on joint 1: 0.145 rad per step) then slow the whole step."""
    robot.configure(action_space="joint_velocity")
    robot.reset(0)
    start = robot.proprioception()["observation/joint_position"].copy()
    for _ in range(3):
        robot.apply(np.array([2.0, -1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0]))
    moved = robot.proprioception()["observation/joint_position"] - start
    assert moved[0] == pytest.approx(3 * DQ_MAX[0] / HZ, rel=0.08)
    assert moved[1] / moved[0] == pytest.approx(-0.5, abs=0.03)
    assert moved[4] / moved[0] == pytest.approx(0.25, abs=0.03)
    assert np.all(np.abs(moved[[2, 3, 5, 6]]) < 0.01)
    # A wrist joint at full scale: 0.2 rad per step asked, 2.61 rad/s (0.174 rad per step) given.
    robot.reset(0)
    start = robot.proprioception()["observation/joint_position"].copy()
    for _ in range(3):
        robot.apply(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
    moved = robot.proprioception()["observation/joint_position"] - start
    assert moved[6] == pytest.approx(3 * DQ_MAX[6] / HZ, rel=0.08)


def test_a_cartesian_velocity_beyond_the_range_keeps_its_direction(robot):
    """DROID scales the linear part down to unit norm as a whole (not entry by entry)."""
    robot.configure(action_space="cartesian_velocity")
    robot.reset(0)
    start = robot.proprioception()["observation/cartesian_position"].copy()
    for _ in range(3):
        robot.apply(np.array([1.6, -0.8, 0.0, 0.0, 0.0, 0.0, 0.0]))
    moved = robot.proprioception()["observation/cartesian_position"] - start
    assert moved[0] / moved[1] == pytest.approx(-2.0, abs=0.15)
    assert 0.05 < np.linalg.norm(moved[:3]) <= 3 * 0.075 + 0.006
    assert abs(moved[2]) < 0.015 and np.allclose(np.angle(np.exp(1j * moved[3:])), 0.0, atol=0.03)


@pytest.mark.parametrize("axis", range(3))
def test_cartesian_velocity_moves_the_tcp_in_the_commanded_direction(robot, axis):
    robot.configure(action_space="cartesian_velocity")
    for sign in (1.0, -1.0):
        robot.reset(0)
        start = robot.proprioception()["observation/cartesian_position"].copy()
        command = np.zeros(7)
        command[axis] = 0.25 * sign
        for _ in range(3):
            robot.apply(command)
        moved = robot.proprioception()["observation/cartesian_position"] - start
        assert moved[axis] * sign == pytest.approx(3 * 0.25 * 0.075, abs=0.006)
        assert np.linalg.norm(np.delete(moved[:3], axis)) < 0.006
        assert np.allclose(np.angle(np.exp(1j * moved[3:])), 0.0, atol=0.02)
    robot.reset(0)
    yaw = robot.proprioception()["observation/cartesian_position"][5]
    for _ in range(3):
        robot.apply(np.array([0, 0, 0, 0, 0, 0.5, 0.0]))
    assert robot.proprioception()["observation/cartesian_position"][5] - yaw == pytest.approx(0.225, abs=0.02)


def test_cartesian_position_reaches_a_target_in_the_base_frame(robot):
    robot.configure(action_space="cartesian_position")
    robot.reset(0)
    target = np.array([0.55, -0.15, 0.12, np.pi, 0.0, -0.4, 0.0])
    for _ in range(20):
        robot.apply(target)
    pose = robot.proprioception()["observation/cartesian_position"]
    assert np.allclose(pose[:3], target[:3], atol=0.005)
    assert pose[5] == pytest.approx(-0.4, abs=0.02)
    assert abs(abs(pose[3]) - np.pi) < 0.02 and abs(pose[4]) < 0.02


def test_the_gripper_closes_on_an_object_and_lifts_it_by_contact(robot):
    robot.configure(action_space="cartesian_position")
    robot.reset(0)
    # Nothing is welded: the only equality constraints would be welds, and there are none.
    assert robot.model.neq == 0
    block = robot.privileged_state()["object_pos"].copy()
    rest_z = block[2]
    plan = [([*block[:2], 0.15], 0.0, 25), ([*block[:2], rest_z], 0.0, 15), ([*block[:2], rest_z], 1.0, 8)]
    plan.append(([*block[:2], 0.18], 1.0, 20))
    for xyz, grip, steps in plan:
        for _ in range(steps):
            robot.apply(np.array([*xyz, np.pi, 0.0, 0.0, grip]))
    state = robot.privileged_state()
    assert bool(state["grasped"][0])
    assert state["object_pos"][2] > rest_z + 0.12
    gripper = robot.proprioception()["observation/gripper_position"][0]
    assert 0.2 < gripper < 0.8  # held open by the 5 cm block, not closed through it
    for _ in range(10):
        robot.apply(np.array([*block[:2], 0.18, np.pi, 0.0, 0.0, 0.0]))
    assert robot.privileged_state()["object_pos"][2] < rest_z + 0.01  # released, it falls back


def test_frames_are_16_by_9_at_the_native_resolution(robot):
    robot.configure(action_space="cartesian_velocity")
    obs = robot.observe()
    for key in ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left"):
        image = obs[f"observation/{key}"]
        assert image.dtype == np.uint8 and image.shape == (180, 320, 3)
    assert not any(key.endswith("_right") for key in obs)
    wide = Replica("push", seed=0, resolution=(448, 252))
    assert wide.observe()["observation/wrist_image_left"].shape == (252, 448, 3)
    wide.close()


def _red_centroid(image: np.ndarray) -> np.ndarray:
    mask = (image[..., 0] > 140) & (image[..., 1] < 70) & (image[..., 2] < 70)
    ys, xs = np.nonzero(mask)
    assert xs.size > 20
    return np.array([xs.mean(), ys.mean()])


def test_stereo_frames_differ_by_a_horizontal_disparity(robot):
    robot.configure(action_space="cartesian_velocity", stereo=True)
    robot.reset(0)
    obs = robot.observe()
    for prefix in ("exterior_image_1", "exterior_image_2", "wrist_image"):
        assert obs[f"observation/{prefix}_right"].shape == obs[f"observation/{prefix}_left"].shape
    left = _red_centroid(obs["observation/exterior_image_1_left"])
    right = _red_centroid(obs["observation/exterior_image_1_right"])
    # The right imager sits 12 cm to the camera's right: the block shifts left, on the same rows.
    assert right[0] < left[0] - 5 and abs(right[1] - left[1]) < 1.5
    robot.configure(action_space="cartesian_velocity", stereo=False)
    # A perturbed camera moves as one stereo rig: still a purely horizontal disparity.
    moved = Replica("pick_place", seed=4, perturb=["camera"], stereo=True)
    obs = moved.observe()
    left = _red_centroid(obs["observation/exterior_image_1_left"])
    right = _red_centroid(obs["observation/exterior_image_1_right"])
    assert right[0] < left[0] - 5 and abs(right[1] - left[1]) < 1.5
    moved.close()


def test_configure_sets_the_space_and_refuses_an_unknown_one(robot):
    assert isinstance(robot, Robot)
    robot.configure(action_space="joint_velocity")
    assert robot.action_space == "joint_velocity"
    with pytest.raises(ReplicaError, match=r"expects a \(8,\) joint_velocity"):
        robot.apply(np.zeros(7))
    with pytest.raises(ValueError, match="'joint_torque'"):
        robot.configure(action_space="joint_torque")
    assert robot.action_space == "joint_velocity"
    robot.configure(action_space="cartesian_velocity")
