"""Scripted baseline policies for the MuJoCo replica, with graded and known skill.

They read the replica's privileged ``replica/state`` observation (object, target and decoy positions, task id,
grasp flag, table height) plus the proprioception (``observation/cartesian_position``, ``observation/
joint_position``, base frame) and plan a waypoint sequence (hover, descend, close, lift, carry, lower, release;
or for push: go behind the object and push it through the target), tracked by a saturated proportional
controller on a virtual TCP that assumes perfect tracking within the chunk. The per-step Cartesian command is
then expressed in the baseline's own DROID action space (:data:`ACTION_SPACES`):

- ``cartesian_velocity``: the normalized command itself, ``(H, 7)``;
- ``cartesian_position``: the virtual TCP pose after each step ``[x, y, z, roll, pitch, yaw, g]``, ``(H, 7)``;
- ``joint_velocity`` / ``joint_position``: the baseline's own differential IK on the Franka Panda's published
  DH kinematics (:class:`PandaKinematics`) turns the virtual TCP path into joint targets, sent as absolute
  angles or as deltas scaled by DROID's 0.2 rad per step, each step kept within the Franka's published velocity
  limits so the robot executes it as planned, ``(H, 8)``.

Real policies ignore ``replica/*`` keys; these baselines refuse observations without them.

Skill is degraded in known ways, so a ranking computed from their matches has a known true order
(:data:`TRUE_ORDER`): action noise (``noisy``), low gain and speed (``slow``), the wrong target in most
episodes (``confused``), uniform random actions (``random``). Every rung runs in a different action space, so
a ranking over them also exercises every space of the replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policy_server.base import BasePolicy
from policy_server.check import ACTION_DIMS

MAX_LIN_DELTA_M = 0.075
MAX_ROT_DELTA_RAD = 0.15
MAX_JOINT_DELTA_RAD = 0.2
CONTROL_HZ = 15.0
ACTION_HORIZON = 10
HOVER_Z = 0.12
ARRIVE_M = 0.004
CLOSE_STEPS = 3
MIN_STEP_M = 0.002
MIN_YAW_STEP_RAD = 0.01


class MissingReplicaStateError(KeyError):
    """A scripted baseline was given an observation without ``replica/state`` (it only runs on the replica)."""


@dataclass(frozen=True)
class Skill:
    """How a scripted controller is degraded.

    ``speed``: max linear speed as a fraction of the action range (1.0 = 0.075 m per step);
    ``gain``: proportional gain per step (fraction of the remaining distance covered, at least 2 mm);
    ``noise``: std of Gaussian noise added to the normalized linear and angular actions;
    ``wrong_target_prob``: chance per episode of taking the object to the wrong target (the decoy);
    ``random``: ignore the state and act uniformly at random (normalized Cartesian velocities);
    ``action_space``: the DROID action space the baseline answers in.
    """

    speed: float = 0.5
    gain: float = 0.6
    noise: float = 0.0
    wrong_target_prob: float = 0.0
    random: bool = False
    action_space: str = "cartesian_velocity"


SKILLS: dict[str, Skill] = {
    "expert": Skill(action_space="joint_velocity"),
    "noisy": Skill(noise=0.075, action_space="cartesian_velocity"),
    "slow": Skill(speed=0.025, gain=0.05, action_space="cartesian_position"),
    "confused": Skill(wrong_target_prob=0.9, action_space="joint_position"),
    "random": Skill(random=True, action_space="cartesian_velocity"),
}

BASELINES: dict[str, str] = {
    "expert": "rank 1: scripted controller with privileged state, no noise, full speed (joint_velocity)",
    "noisy": "rank 2: the expert with Gaussian action noise, std 0.075 of the action range (cartesian_velocity)",
    "slow": "rank 3: the expert at 5% of its speed (2.8 cm/s), low gain, often out of time (cartesian_position)",
    "confused": "rank 4: the expert taking the object to a wrong target in 90% of episodes (joint_position)",
    "random": "rank 5: uniform random cartesian velocities and gripper commands (cartesian_velocity)",
}

TRUE_ORDER: list[str] = ["expert", "noisy", "slow", "confused", "random"]


class ScriptedPolicy(BasePolicy):
    """A waypoint controller for the replica tasks (``pick_place``, ``push``, ``stack``) degraded by ``skill``."""

    def __init__(
        self, name: str, skill: Skill, *, seed: int = 0, action_horizon: int = ACTION_HORIZON
    ) -> None:
        self.name = name
        self.skill = skill
        self.seed = seed
        self.action_horizon = action_horizon
        self._rng = np.random.default_rng(seed)
        self._wrong_target = False
        self.reset()

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "image_resolution": [224, 224],
            "needs_wrist_camera": True,
            "n_external_cameras": 1,
            "needs_stereo_camera": False,
            "needs_session_id": False,
            "action_space": self.skill.action_space,
            "action_horizon": self.action_horizon,
            "action_dim": ACTION_DIMS[self.skill.action_space],
            "needs_replica_state": True,
            "baseline": self.name,
        }

    def reset(self, reset_info: dict[str, Any] | None = None) -> None:
        """Start a new episode: draw whether this episode goes to the wrong target."""
        self._wrong_target = bool(self._rng.random() < self.skill.wrong_target_prob)

    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Plan ``(action_horizon, action_dim)`` actions in the baseline's action space from ``replica/state``."""
        pose = np.asarray(obs["observation/cartesian_position"], float)
        if self.skill.random:
            commands = self._rng.uniform(-1.0, 1.0, size=(self.action_horizon, 7))
            commands[:, 6] = (commands[:, 6] > 0).astype(float)
            return {"actions": self._in_action_space(commands, obs)}
        if "replica/state" not in obs:
            raise MissingReplicaStateError(
                f"baseline {self.name!r} needs the replica's privileged 'replica/state' observation"
            )
        state = obs["replica/state"]
        gripper = float(np.asarray(obs["observation/gripper_position"]).reshape(-1)[0])
        if state["task"] == "push":
            waypoints = self._push_plan(state, pose)
        else:
            waypoints = self._pick_plan(state, pose, gripper)
        commands = self._follow(waypoints, pose)
        if self.skill.noise > 0:
            commands[:, :6] += self._rng.normal(0.0, self.skill.noise, size=(self.action_horizon, 6))
            commands[:, :6] = np.clip(commands[:, :6], -1.0, 1.0)
        return {"actions": self._in_action_space(commands, obs)}

    def _in_action_space(self, commands: np.ndarray, obs: dict[str, Any]) -> np.ndarray:
        """Normalized Cartesian velocity commands (H, 7) -> actions in ``skill.action_space`` (H, 7 or 8).

        The virtual TCP integrates the commands exactly as the robot does (DROID's per-step limits, the angular
        delta an xyz Euler rotation applied on the left); joint actions track that path with
        :class:`PandaKinematics`.
        """
        space = self.skill.action_space
        if space == "cartesian_velocity":
            return commands
        pose = np.asarray(obs["observation/cartesian_position"], float)
        pos, rot = pose[:3].copy(), _euler_to_mat(pose[3:6])
        joints = np.asarray(obs["observation/joint_position"], float).copy()
        actions = np.zeros((len(commands), ACTION_DIMS[space]))
        for step, command in enumerate(commands):
            lin = command[:3] / max(1.0, float(np.linalg.norm(command[:3])))
            ang = command[3:6] / max(1.0, float(np.linalg.norm(command[3:6])))
            pos = pos + lin * MAX_LIN_DELTA_M
            rot = _euler_to_mat(ang * MAX_ROT_DELTA_RAD) @ rot
            if space == "cartesian_position":
                actions[step, :6] = [*pos, *_mat_to_euler(rot)]
            else:
                target = PANDA.inverse_step(joints, pos, rot)
                delta = target - joints
                if space == "joint_velocity":
                    # A step the Franka can execute as asked: within DROID's 0.2 rad and the arm's velocity
                    # limits, scaled as a whole, so the joints the robot reaches are the ones planned from.
                    delta = delta / max(1.0, float(np.max(np.abs(delta) / PANDA.STEP_LIMIT)))
                    actions[step, :7] = delta / MAX_JOINT_DELTA_RAD
                    target = joints + delta
                else:
                    actions[step, :7] = target
                joints = target
            actions[step, -1] = command[6]
        return actions

    # ---------------------------------------------------------------------------------------- planning

    def _target(self, state: dict[str, Any]) -> np.ndarray:
        return np.asarray(state["decoy_target_pos" if self._wrong_target else "target_pos"], float)

    def _pick_plan(self, state: dict[str, Any], pose: np.ndarray, gripper: float) -> list[tuple]:
        """Waypoints ``(xyz, yaw or None, grip, dwell_steps)`` for pick_place and stack."""
        obj = np.asarray(state["object_pos"], float)
        half = np.asarray(state["object_half_size"], float)
        target = self._target(state)
        grasped = bool(np.asarray(state["grasped"]).reshape(-1)[0])
        tcp = pose[:3]
        yaw = _grasp_yaw(float(np.asarray(state["object_yaw"]).reshape(-1)[0]), pose[5])
        table_z = _table_z(state)
        hover_z = table_z + HOVER_Z
        if state["task"] == "stack":
            place_z = target[2] + 2 * half[2] + 0.006
        else:
            place_z = table_z + half[2] + 0.008
        if grasped:
            carry = np.array([target[0], target[1], hover_z])
            lowered = np.array([target[0], target[1], place_z])
            if np.hypot(*(obj[:2] - target[:2])) < 0.012 and tcp[2] < place_z + 0.012:
                return [(tcp, None, 0.0, CLOSE_STEPS), (np.array([*tcp[:2], hover_z]), None, 0.0, 0)]
            if np.hypot(*(tcp[:2] - target[:2])) < 0.008:
                return [(lowered, None, 1.0, 0), (lowered, None, 0.0, CLOSE_STEPS)]
            plan = [(carry, None, 1.0, 0), (lowered, None, 1.0, 0), (lowered, None, 0.0, CLOSE_STEPS)]
            if tcp[2] < hover_z - 0.02:
                plan.insert(0, (np.array([*tcp[:2], hover_z]), None, 1.0, 0))
            return plan
        at_goal = (
            np.hypot(*(obj[:2] - target[:2])) < float(np.asarray(state["target_radius"]).reshape(-1)[0]) * 0.7
        )
        if at_goal and obj[2] < table_z + 0.2:
            return [(np.array([*tcp[:2], hover_z]), None, 0.0, 0)]
        above = np.array([obj[0], obj[1], hover_z])
        grasp = np.array([obj[0], obj[1], obj[2]])
        plan: list[tuple] = []
        if gripper > 0.3:
            plan.append((tcp, None, 0.0, CLOSE_STEPS))
        if np.hypot(*(tcp[:2] - obj[:2])) > 0.006:
            if tcp[2] < hover_z - 0.03:
                plan.append((np.array([*tcp[:2], hover_z]), None, 0.0, 0))
            plan.append((above, yaw, 0.0, 0))
        plan += [(grasp, yaw, 0.0, 0), (grasp, yaw, 1.0, CLOSE_STEPS), (above, None, 1.0, 0)]
        return plan

    def _push_plan(self, state: dict[str, Any], pose: np.ndarray) -> list[tuple]:
        """Go behind the object (fingers closed, low), then push it through the target centre."""
        obj = np.asarray(state["object_pos"], float)
        half = np.asarray(state["object_half_size"], float)
        target = self._target(state)
        tcp = pose[:3]
        table_z = _table_z(state)
        hover_z = table_z + HOVER_Z
        direction = target[:2] - obj[:2]
        distance = float(np.linalg.norm(direction))
        if distance < float(np.asarray(state["target_radius"]).reshape(-1)[0]) * 0.5:
            return [(np.array([*tcp[:2], hover_z]), None, 1.0, 0)]
        direction /= distance
        push_z = table_z + half[2] * 0.8
        behind = np.array([*(obj[:2] - direction * (half[0] + 0.025)), push_z])
        finish = np.array([*(target[:2] - direction * (half[0] + 0.008)), push_z])
        yaw = _grasp_yaw(float(np.arctan2(direction[1], direction[0])) + np.pi / 2, pose[5])
        offset = tcp[:2] - behind[:2]
        along = float(np.dot(offset, direction))
        lateral = abs(float(offset[0] * direction[1] - offset[1] * direction[0]))
        if tcp[2] < push_z + 0.015 and lateral < 0.015 and -0.03 < along < 0.012:
            return [(finish, yaw, 1.0, 0), (np.array([*finish[:2], hover_z]), None, 1.0, 0)]
        plan: list[tuple] = []
        if np.hypot(*offset) > 0.015:
            if tcp[2] < hover_z - 0.03:
                plan.append((np.array([*tcp[:2], hover_z]), None, 1.0, 0))
            plan.append((np.array([*behind[:2], hover_z]), yaw, 1.0, 0))
        plan += [(behind, yaw, 1.0, 0), (finish, yaw, 1.0, 0)]
        return plan

    def _follow(self, waypoints: list[tuple], pose: np.ndarray) -> np.ndarray:
        """Track the waypoints with a saturated P controller on a virtual TCP for ``action_horizon`` steps;
        returns normalized Cartesian velocity commands ``(action_horizon, 7)``."""
        skill = self.skill
        actions = np.zeros((self.action_horizon, 7))
        pos = pose[:3].copy()
        yaw = float(pose[5])
        index, dwell = 0, 0
        grip = waypoints[0][2]
        for step in range(self.action_horizon):
            target, target_yaw, grip, hold = waypoints[index]
            error = np.asarray(target) - pos
            distance = float(np.linalg.norm(error))
            step_size = min(distance, max(distance * skill.gain, MIN_STEP_M), skill.speed * MAX_LIN_DELTA_M)
            delta = error * (step_size / max(distance, 1e-12))
            yaw_error = 0.0 if target_yaw is None else _wrap(target_yaw - yaw)
            yaw_size = min(
                abs(yaw_error), max(abs(yaw_error) * skill.gain, MIN_YAW_STEP_RAD), MAX_ROT_DELTA_RAD * 0.5
            )
            yaw_step = float(np.sign(yaw_error) * yaw_size)
            actions[step, :3] = delta / MAX_LIN_DELTA_M
            actions[step, 5] = yaw_step / MAX_ROT_DELTA_RAD
            actions[step, 6] = grip
            pos = pos + delta
            yaw = yaw + yaw_step
            arrived = np.linalg.norm(np.asarray(target) - pos) < ARRIVE_M and abs(yaw_error) < 0.05
            if arrived:
                dwell += 1
                if dwell > hold and index + 1 < len(waypoints):
                    index, dwell = index + 1, 0
        return actions


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _grasp_yaw(face_yaw: float, current_yaw: float) -> float:
    """The hand yaw closest to ``current_yaw`` that puts the fingers across the faces at ``face_yaw`` (mod 90 deg)."""
    offset = _wrap(face_yaw - current_yaw)
    offset = (offset + np.pi / 4) % (np.pi / 2) - np.pi / 4
    return current_yaw + offset


def _table_z(state: dict[str, Any]) -> float:
    return float(np.asarray(state.get("table_z", [0.0])).reshape(-1)[0])


def _euler_to_mat(euler: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler (roll, pitch, yaw) rad -> rotation matrix (3, 3), DROID's convention."""
    cr, sr = np.cos(euler[0]), np.sin(euler[0])
    cp, sp = np.cos(euler[1]), np.sin(euler[1])
    cy, sy = np.cos(euler[2]), np.sin(euler[2])
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def _mat_to_euler(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> extrinsic xyz Euler (roll, pitch, yaw) rad."""
    pitch = -np.arcsin(np.clip(mat[2, 0], -1.0, 1.0))
    if abs(mat[2, 0]) < 1.0 - 1e-9:
        return np.array([np.arctan2(mat[2, 1], mat[2, 2]), pitch, np.arctan2(mat[1, 0], mat[0, 0])])
    return np.array([np.arctan2(-mat[1, 2], mat[1, 1]), pitch, 0.0])


def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) rad taking ``current`` to ``target`` in the base frame (small-angle accurate)."""
    delta = target @ current.T
    angle = np.arccos(np.clip((np.trace(delta) - 1) / 2, -1.0, 1.0))
    axis = np.array([delta[2, 1] - delta[1, 2], delta[0, 2] - delta[2, 0], delta[1, 0] - delta[0, 1]])
    if angle < 1e-9:
        return axis / 2
    return axis * (angle / (2 * np.sin(angle))) if np.pi - angle > 1e-6 else axis


class PandaKinematics:
    """The Franka Panda's kinematics from its published modified DH table, with the replica's Robotiq 2F-85
    TCP ``tcp_offset`` m beyond the flange; a damped-least-squares IK step on the geometric Jacobian.

    This is the policy's own model of the robot (a policy server does not see the simulator), written from
    the same public figures the replica uses.
    """

    A = (0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088, 0.0)
    D = (0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0, 0.107)
    ALPHA = (0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2, 0.0)
    LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
    UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
    POSTURE = np.array([0.0, -np.pi / 5, 0.0, -4 * np.pi / 5, 0.0, 3 * np.pi / 5, 0.0])
    VELOCITY_LIMIT = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
    STEP_LIMIT = np.minimum(MAX_JOINT_DELTA_RAD, VELOCITY_LIMIT / CONTROL_HZ)
    """Largest joint motion per control step (rad): DROID's 0.2 rad, or the Franka's velocity limit (rad/s)."""

    def __init__(self, tcp_offset: float = 0.150, damping: float = 0.02, posture_gain: float = 0.05) -> None:
        self.tcp_offset = tcp_offset
        self.damping = damping
        self.posture_gain = posture_gain

    def frames(self, joints: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Joint frames (4, 4) of joints 1..7 in the base frame, and the TCP pose (4, 4)."""
        pose = np.eye(4)
        frames = []
        for i in range(8):
            theta = joints[i] if i < 7 else 0.0
            ca, sa = np.cos(self.ALPHA[i]), np.sin(self.ALPHA[i])
            ct, st = np.cos(theta), np.sin(theta)
            pose = pose @ np.array(
                [
                    [ct, -st, 0, self.A[i]],
                    [st * ca, ct * ca, -sa, -self.D[i] * sa],
                    [st * sa, ct * sa, ca, self.D[i] * ca],
                    [0, 0, 0, 1],
                ]
            )
            if i < 7:
                frames.append(pose)
        tcp = pose.copy()
        tcp[:3, 3] += tcp[:3, 2] * self.tcp_offset
        return frames, tcp

    def inverse_step(
        self, joints: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray, iterations: int = 2
    ) -> np.ndarray:
        """Joint angles (7,) moving the TCP from ``joints`` to the base-frame target pose (DLS, joint limits,
        nullspace pull towards DROID's reset posture)."""
        q = np.asarray(joints, float).copy()
        for _ in range(iterations):
            frames, tcp = self.frames(q)
            error = np.concatenate([target_pos - tcp[:3, 3], _rotation_error(target_rot, tcp[:3, :3])])
            jac = np.zeros((6, 7))
            for i, frame in enumerate(frames):
                axis = frame[:3, 2]
                jac[:3, i] = np.cross(axis, tcp[:3, 3] - frame[:3, 3])
                jac[3:, i] = axis
            inverse = jac.T @ np.linalg.inv(jac @ jac.T + self.damping**2 * np.eye(6))
            step = inverse @ error + (np.eye(7) - inverse @ jac) @ (self.posture_gain * (self.POSTURE - q))
            q = np.clip(q + step, self.LOWER, self.UPPER)
        return q


PANDA = PandaKinematics()


def make_baseline(name: str, *, seed: int = 0) -> BasePolicy:
    """A fresh baseline policy by name (see :data:`BASELINES`); ``seed`` drives its noise and choices."""
    if name not in SKILLS:
        raise KeyError(f"unknown baseline {name!r}; baselines: {list(BASELINES)}")
    return ScriptedPolicy(name, SKILLS[name], seed=seed)
