"""Scripted baseline policies for the MuJoCo replica, with graded and known skill.

They read the replica's privileged ``replica/state`` observation (object, target and decoy positions, task id,
grasp flag, a decoy target) plus ``observation/cartesian_position`` and plan a chunk of ``cartesian_velocity`` actions
``(action_horizon, 7)``: a waypoint plan (hover, descend, close, lift, carry, lower, release; or for push:
go behind the object and push it through the target) followed by a proportional controller on a virtual TCP
that assumes perfect tracking within the chunk. Real policies ignore ``replica/*`` keys; these baselines
refuse observations without them.

Skill is degraded in known ways, so a ranking computed from their matches has a known true order
(:data:`TRUE_ORDER`): action noise (``noisy``), low gain and speed (``slow``), the wrong target in most
episodes (``confused``), uniform random actions (``random``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from policy_server.base import BasePolicy

MAX_LIN_DELTA_M = 0.075
MAX_ROT_DELTA_RAD = 0.15
ACTION_DIM = 7
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
    ``random``: ignore the state and act uniformly at random.
    """

    speed: float = 0.5
    gain: float = 0.6
    noise: float = 0.0
    wrong_target_prob: float = 0.0
    random: bool = False


SKILLS: dict[str, Skill] = {
    "expert": Skill(),
    "noisy": Skill(noise=0.12),
    "slow": Skill(speed=0.022, gain=0.05),
    "confused": Skill(wrong_target_prob=0.9),
    "random": Skill(random=True),
}

BASELINES: dict[str, str] = {
    "expert": "rank 1: scripted controller with privileged state, no noise, full speed",
    "noisy": "rank 2: the expert with Gaussian action noise (std 0.12 of the action range per step)",
    "slow": "rank 3: the expert at 4% of its speed (2.5 cm/s) with low gain, often out of time at 400 steps",
    "confused": "rank 4: the expert that takes the object to a wrong target in 90% of episodes",
    "random": "rank 5: uniform random cartesian velocities and gripper commands",
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
            "action_space": "cartesian_velocity",
            "action_horizon": self.action_horizon,
            "action_dim": ACTION_DIM,
            "needs_replica_state": True,
            "baseline": self.name,
        }

    def reset(self, reset_info: dict[str, Any] | None = None) -> None:
        """Start a new episode: draw whether this episode goes to the wrong target."""
        self._wrong_target = bool(self._rng.random() < self.skill.wrong_target_prob)

    def infer(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Plan ``(action_horizon, 7)`` cartesian velocity actions from ``replica/state``."""
        if self.skill.random:
            actions = self._rng.uniform(-1.0, 1.0, size=(self.action_horizon, ACTION_DIM))
            actions[:, 6] = (actions[:, 6] > 0).astype(float)
            return {"actions": actions}
        if "replica/state" not in obs:
            raise MissingReplicaStateError(
                f"baseline {self.name!r} needs the replica's privileged 'replica/state' observation"
            )
        state = obs["replica/state"]
        pose = np.asarray(obs["observation/cartesian_position"], float)
        gripper = float(np.asarray(obs["observation/gripper_position"]).reshape(-1)[0])
        if state["task"] == "push":
            waypoints = self._push_plan(state, pose)
        else:
            waypoints = self._pick_plan(state, pose, gripper)
        actions = self._follow(waypoints, pose)
        if self.skill.noise > 0:
            actions[:, :6] += self._rng.normal(0.0, self.skill.noise, size=(self.action_horizon, 6))
            actions[:, :6] = np.clip(actions[:, :6], -1.0, 1.0)
        return {"actions": actions}

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
        if state["task"] == "stack":
            place_z = target[2] + 2 * half[2] + 0.006
        else:
            place_z = half[2] + 0.008
        if grasped:
            carry = np.array([target[0], target[1], HOVER_Z])
            lowered = np.array([target[0], target[1], place_z])
            if np.hypot(*(obj[:2] - target[:2])) < 0.012 and tcp[2] < place_z + 0.012:
                return [(tcp, None, 0.0, CLOSE_STEPS), (np.array([*tcp[:2], HOVER_Z]), None, 0.0, 0)]
            if np.hypot(*(tcp[:2] - target[:2])) < 0.008:
                return [(lowered, None, 1.0, 0), (lowered, None, 0.0, CLOSE_STEPS)]
            plan = [(carry, None, 1.0, 0), (lowered, None, 1.0, 0), (lowered, None, 0.0, CLOSE_STEPS)]
            if tcp[2] < HOVER_Z - 0.02:
                plan.insert(0, (np.array([*tcp[:2], HOVER_Z]), None, 1.0, 0))
            return plan
        at_goal = (
            np.hypot(*(obj[:2] - target[:2])) < float(np.asarray(state["target_radius"]).reshape(-1)[0]) * 0.7
        )
        if at_goal and obj[2] < 0.2:
            return [(np.array([*tcp[:2], HOVER_Z]), None, 0.0, 0)]
        above = np.array([obj[0], obj[1], HOVER_Z])
        grasp = np.array([obj[0], obj[1], obj[2]])
        plan: list[tuple] = []
        if gripper > 0.3:
            plan.append((tcp, None, 0.0, CLOSE_STEPS))
        if np.hypot(*(tcp[:2] - obj[:2])) > 0.006:
            if tcp[2] < HOVER_Z - 0.03:
                plan.append((np.array([*tcp[:2], HOVER_Z]), None, 0.0, 0))
            plan.append((above, yaw, 0.0, 0))
        plan += [(grasp, yaw, 0.0, 0), (grasp, yaw, 1.0, CLOSE_STEPS), (above, None, 1.0, 0)]
        return plan

    def _push_plan(self, state: dict[str, Any], pose: np.ndarray) -> list[tuple]:
        """Go behind the object (fingers closed, low), then push it through the target centre."""
        obj = np.asarray(state["object_pos"], float)
        half = np.asarray(state["object_half_size"], float)
        target = self._target(state)
        tcp = pose[:3]
        direction = target[:2] - obj[:2]
        distance = float(np.linalg.norm(direction))
        if distance < float(np.asarray(state["target_radius"]).reshape(-1)[0]) * 0.5:
            return [(np.array([*tcp[:2], HOVER_Z]), None, 1.0, 0)]
        direction /= distance
        push_z = half[2] * 0.8
        behind = np.array([*(obj[:2] - direction * (half[0] + 0.025)), push_z])
        finish = np.array([*(target[:2] - direction * (half[0] + 0.008)), push_z])
        yaw = _grasp_yaw(float(np.arctan2(direction[1], direction[0])) + np.pi / 2, pose[5])
        offset = tcp[:2] - behind[:2]
        along = float(np.dot(offset, direction))
        lateral = abs(float(offset[0] * direction[1] - offset[1] * direction[0]))
        if tcp[2] < push_z + 0.015 and lateral < 0.015 and -0.03 < along < 0.012:
            return [(finish, yaw, 1.0, 0), (np.array([*finish[:2], HOVER_Z]), None, 1.0, 0)]
        plan: list[tuple] = []
        if np.hypot(*offset) > 0.015:
            if tcp[2] < HOVER_Z - 0.03:
                plan.append((np.array([*tcp[:2], HOVER_Z]), None, 1.0, 0))
            plan.append((np.array([*behind[:2], HOVER_Z]), yaw, 1.0, 0))
        plan += [(behind, yaw, 1.0, 0), (finish, yaw, 1.0, 0)]
        return plan

    def _follow(self, waypoints: list[tuple], pose: np.ndarray) -> np.ndarray:
        """Track the waypoints with a saturated P controller on a virtual TCP for ``action_horizon`` steps."""
        skill = self.skill
        actions = np.zeros((self.action_horizon, ACTION_DIM))
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


def make_baseline(name: str, *, seed: int = 0) -> BasePolicy:
    """A fresh baseline policy by name (see :data:`BASELINES`); ``seed`` drives its noise and choices."""
    if name not in SKILLS:
        raise KeyError(f"unknown baseline {name!r}; baselines: {list(BASELINES)}")
    return ScriptedPolicy(name, SKILLS[name], seed=seed)
