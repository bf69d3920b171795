"""The MuJoCo tabletop replica: a :class:`~evaluator_client.robot.Robot` for sim sanity checks.

Robot: a free-floating parallel-jaw gripper welded to a mocap body (no arm; much faster than an articulated
arm and exact in Cartesian space), fingers driven by force-limited position servos, so grasps are real
contact grasps.

Action spaces (``(7,)`` float per step, DROID conventions):

- ``cartesian_velocity``: ``[vx, vy, vz, wx, wy, wz, g]``. The linear and angular parts are each clipped to
  unit norm and scaled to 0.075 m and 0.15 rad per control step (DROID's ``RobotIKSolver`` limits); the
  rotation is applied in the world frame on the left, as DROID's ``add_poses``. Both are added to the last
  commanded pose while the hand tracks it within 2 cm / 0.1 rad, else to the measured pose (no wind-up when
  contact holds the hand back).
- ``cartesian_position``: ``[x, y, z, roll, pitch, yaw, g]``: an absolute TCP target (extrinsic xyz Euler),
  approached at most by the same per-step limits.

``g`` is the gripper closure target in [0, 1] (0 open, 1 closed), as with DROID's
``gripper_action_space="position"``. Targets are clamped to the scene's workspace box.

Observations follow DROID's keys. ``observation/cartesian_position`` is the TCP pose ``[x, y, z, roll,
pitch, yaw]``; ``observation/gripper_position`` is ``1 - opening / max_opening``. Having no arm,
``observation/joint_position`` reports the 7 coordinates of the virtual gantry that carries the hand:
``[x, y, z, roll, pitch, yaw, opening]`` (m, rad, m) so joint-conditioned policies see a consistent signal;
joint action spaces are not offered. ``replica/state`` holds privileged simulator state for scripted
baselines (see :meth:`Replica.privileged_state`); evaluation code forwards it only to policies that ask.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
import mujoco  # noqa: E402

from evaluator_client.replica.perturb import normalize_axes, sample_perturbation  # noqa: E402
from evaluator_client.replica.scene import Scene, build_mjcf, load_scene, look_at_quat  # noqa: E402
from evaluator_client.replica.tasks import (  # noqa: E402
    TaskSpec,
    TaskState,
    task_from_instruction,
    task_progress,
    task_success,
)

ACTION_SPACES = ("cartesian_velocity", "cartesian_position")
MAX_LIN_DELTA_M = 0.075
MAX_ROT_DELTA_RAD = 0.15
IMAGE_SIZE = 224
PARK_XY = (3.0, 3.0)
TRACKING_TOLERANCE_M = 0.02
TRACKING_TOLERANCE_RAD = 0.1


class ReplicaError(RuntimeError):
    """The simulation became invalid (NaN state, bad action shape)."""


def euler_to_mat(euler: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler (roll, pitch, yaw) rad -> rotation matrix (3, 3) = Rz @ Ry @ Rx."""
    cr, sr = np.cos(euler[0]), np.sin(euler[0])
    cp, sp = np.cos(euler[1]), np.sin(euler[1])
    cy, sy = np.cos(euler[2]), np.sin(euler[2])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def mat_to_euler(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> extrinsic xyz Euler (roll, pitch, yaw) rad, as scipy's ``as_euler("xyz")``."""
    pitch = -np.arcsin(np.clip(mat[2, 0], -1.0, 1.0))
    if abs(mat[2, 0]) < 1.0 - 1e-9:
        roll = np.arctan2(mat[2, 1], mat[2, 2])
        yaw = np.arctan2(mat[1, 0], mat[0, 0])
    else:
        roll = np.arctan2(-mat[1, 2], mat[1, 1])
        yaw = 0.0
    return np.array([roll, pitch, yaw])


def _axis_angle_mat(rotvec: np.ndarray) -> np.ndarray:
    angle = float(np.linalg.norm(rotvec))
    if angle < 1e-12:
        return np.eye(3)
    k = rotvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def _rotvec_from_mat(mat: np.ndarray) -> np.ndarray:
    angle = np.arccos(np.clip((np.trace(mat) - 1) / 2, -1.0, 1.0))
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-6:
        diag = np.sqrt(np.clip((np.diag(mat) + 1) / 2, 0, None))
        axis = diag * np.sign(np.array([1.0, mat[0, 1] + 1e-12, mat[0, 2] + 1e-12]))
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([mat[2, 1] - mat[1, 2], mat[0, 2] - mat[2, 0], mat[1, 0] - mat[0, 1]]) / (
        2 * np.sin(angle)
    )
    return axis * angle


class Replica:
    """A seeded, perturbable MuJoCo tabletop implementing the Robot protocol.

    ``task``: a task name (``"pick_place"``, ``"push"``, ``"stack"``) or a typed instruction.
    ``seed``: the start scene (object positions and every enabled perturbation) is a pure function of it.
    ``perturb``: perturbation axes (see :mod:`evaluator_client.replica.perturb`), ``"all"`` or ``"none"``;
    default: positions only. ``n_exterior_cameras``: 1 or 2.
    """

    control_hz: float

    def __init__(
        self,
        task: str = "pick_place",
        *,
        seed: int = 0,
        perturb: Iterable[str] | str | None = None,
        scene: str | Scene = "tabletop-v1",
        n_exterior_cameras: int = 1,
        action_space: str = "cartesian_velocity",
        image_size: int = IMAGE_SIZE,
    ) -> None:
        self.scene = scene if isinstance(scene, Scene) else load_scene(scene)
        if action_space not in ACTION_SPACES:
            raise ValueError(
                f"unsupported action space {action_space!r}; the replica offers {list(ACTION_SPACES)}"
            )
        exterior = self.scene.exterior_cameras
        if not 1 <= n_exterior_cameras <= len(exterior):
            raise ValueError(f"n_exterior_cameras must be in 1..{len(exterior)}")
        self.task: TaskSpec = task_from_instruction(self.scene, task)
        self.axes = normalize_axes(perturb)
        self.action_space = action_space
        self.action_spaces = list(ACTION_SPACES)
        self.control_hz = self.scene.control_hz
        self.platform = f"replica:{self.scene.name}"
        self.exterior_cameras = exterior[:n_exterior_cameras]
        self.cameras = [*self.exterior_cameras, "wrist"]
        self.image_size = image_size
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.scene))
        self.data = mujoco.MjData(self.model)
        self._substeps = int(self.scene.spec["physics_substeps"])
        self._nominal = {
            "geom_rgba": self.model.geom_rgba.copy(),
            "mat_rgba": self.model.mat_rgba.copy(),
            "mat_texrepeat": self.model.mat_texrepeat.copy(),
            "light_dir": self.model.light_dir.copy(),
            "light_diffuse": self.model.light_diffuse.copy(),
            "cam_pos": self.model.cam_pos.copy(),
            "cam_quat": self.model.cam_quat.copy(),
            "cam_fovy": self.model.cam_fovy.copy(),
            "body_pos": self.model.body_pos.copy(),
            "headlight_ambient": self.model.vis.headlight.ambient.copy(),
        }
        self._ids()
        self._renderer = mujoco.Renderer(self.model, image_size, image_size)
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            self._renderer.scene.flags[flag] = False
        self.seed = int(seed)
        self.perturbation: dict[str, Any] = {}
        self._start_state: TaskState | None = None
        self._start_image: np.ndarray | None = None
        self.reset(self.seed)

    def _ids(self) -> None:
        m = self.model
        name2id = mujoco.mj_name2id
        self._hand = name2id(m, mujoco.mjtObj.mjOBJ_BODY, "hand")
        self._mocap = int(m.body_mocapid[name2id(m, mujoco.mjtObj.mjOBJ_BODY, "mocap")])
        self._fingers_q = [
            int(m.jnt_qposadr[name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)])
            for n in ("finger_left", "finger_right")
        ]
        self._finger_geoms = {
            name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("finger_left", "finger_right")
        }
        self._objects = [e["name"] for e in self.scene.spec["objects"] + self.scene.spec["distractors"]]
        self._obj_body = {n: name2id(m, mujoco.mjtObj.mjOBJ_BODY, n) for n in self._objects}
        self._obj_geom = {n: name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in self._objects}
        self._obj_qadr = {
            n: int(m.jnt_qposadr[name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]) for n in self._objects
        }
        self._region_body = {
            r["name"]: name2id(m, mujoco.mjtObj.mjOBJ_BODY, r["name"]) for r in self.scene.spec["regions"]
        }
        self._cam_id = {n: name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, n) for n in self.scene.spec["cameras"]}
        self._table_mat = name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, "table_mat")
        self._max_opening = float(self.scene.spec["gripper"]["max_opening"])
        ws = self.scene.spec["workspace"]
        self._ws_low = np.array([ws["x"][0] - 0.06, ws["y"][0] - 0.06, ws["z"][0]])
        self._ws_high = np.array([ws["x"][1] + 0.06, ws["y"][1] + 0.06, ws["z"][1]])

    # ----------------------------------------------------------------------------------------------- reset

    def reset(self, seed: int | None = None) -> None:
        """Put the scene in the deterministic start state for ``seed`` (default: the constructor's seed)."""
        if seed is not None:
            self.seed = int(seed)
        m, d = self.model, self.data
        for key, value in self._nominal.items():
            if key == "headlight_ambient":
                m.vis.headlight.ambient[:] = value
            else:
                getattr(m, key)[:] = value
        mujoco.mj_resetData(m, d)
        self.perturbation = sample_perturbation(self.scene, self.task, self.seed, self.axes)
        self._apply_perturbation()
        grip = self.scene.spec["gripper"]
        home_quat = np.zeros(4)
        mujoco.mju_mat2Quat(home_quat, euler_to_mat(np.asarray(grip["home_euler"], float)).ravel())
        d.mocap_pos[self._mocap] = grip["home"]
        d.mocap_quat[self._mocap] = home_quat
        d.ctrl[:] = self._max_opening / 2
        d.qpos[self._fingers_q] = self._max_opening / 2
        mujoco.mj_forward(m, d)
        self._gripper_target = 0.0
        self._start_state = self._task_state()
        self._start_image = self.render(self.exterior_cameras[0])

    def _apply_perturbation(self) -> None:
        m, d = self.model, self.data
        spec = self.scene.spec
        positions = self.perturbation.get("positions")
        for entry in spec["objects"]:
            x, y, yaw = positions[entry["name"]] if positions else entry["pose"]
            self._place(entry["name"], x, y, yaw)
        for entry in spec["distractors"]:
            pose = self.perturbation.get("distractors", {}).get(entry["name"])
            x, y, yaw = pose if pose else (*PARK_XY, 0.0)
            self._place(
                entry["name"], x + (0 if pose else self._objects.index(entry["name"])), y, yaw, park=not pose
            )
        for region in spec["regions"]:
            x, y = positions[region["name"]] if positions else region["pos"]
            m.body_pos[self._region_body[region["name"]], :2] = (x, y)
        colours = self.perturbation.get("colours")
        if colours:
            for name, shade in colours["object_shade"].items():
                geom = self._obj_geom[name]
                m.geom_rgba[geom, :3] = np.clip(self._nominal["geom_rgba"][geom, :3] * shade, 0, 1)
            m.mat_rgba[self._table_mat, :3] = np.clip(
                self._nominal["mat_rgba"][self._table_mat, :3] * np.asarray(colours["table_tint"]), 0, 1
            )
            m.mat_texrepeat[self._table_mat] = colours["texture_repeat"]
        lighting = self.perturbation.get("lighting")
        if lighting:
            for i, light in enumerate(lighting["lights"]):
                m.light_dir[i] = light["dir"]
                m.light_diffuse[i] = light["diffuse"]
            m.vis.headlight.ambient[:] = lighting["ambient"]
        camera = self.perturbation.get("camera")
        if camera:
            for name, values in camera.items():
                cam = self._cam_id[name]
                m.cam_pos[cam] = values["pos"]
                m.cam_quat[cam] = look_at_quat(np.asarray(values["pos"]), np.asarray(values["lookat"]))
                m.cam_fovy[cam] = values["fovy"]
        d.qvel[:] = 0.0

    def _place(self, name: str, x: float, y: float, yaw: float, park: bool = False) -> None:
        adr = self._obj_qadr[name]
        half_z = self.scene.object_spec(name)["half_size"][2]
        self.data.qpos[adr : adr + 3] = (x, y, half_z - (0.75 if park else 0.0))
        self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))

    # ------------------------------------------------------------------------------------------- stepping

    def apply(self, action: np.ndarray) -> None:
        """Execute one control step (1 / control_hz s of physics) of a ``(7,)`` action in ``self.action_space``."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (7,):
            raise ReplicaError(
                f"the replica expects a (7,) {self.action_space} action, got shape {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ReplicaError("action contains NaN or inf")
        pos, rot = self._command_base()
        if self.action_space == "cartesian_velocity":
            lin = np.clip(action[:3], -1, 1)
            ang = np.clip(action[3:6], -1, 1)
            lin = lin / max(1.0, float(np.linalg.norm(lin)))
            ang = ang / max(1.0, float(np.linalg.norm(ang)))
            target_pos = pos + lin * MAX_LIN_DELTA_M
            target_rot = _axis_angle_mat(ang * MAX_ROT_DELTA_RAD) @ rot
        else:
            delta = action[:3] - pos
            delta *= min(1.0, MAX_LIN_DELTA_M / max(float(np.linalg.norm(delta)), 1e-12))
            target_pos = pos + delta
            rotvec = _rotvec_from_mat(euler_to_mat(action[3:6]) @ rot.T)
            rotvec *= min(1.0, MAX_ROT_DELTA_RAD / max(float(np.linalg.norm(rotvec)), 1e-12))
            target_rot = _axis_angle_mat(rotvec) @ rot
        target_pos = np.clip(target_pos, self._ws_low, self._ws_high)
        self._gripper_target = float(np.clip(action[6], 0.0, 1.0))
        self.data.ctrl[:] = (1.0 - self._gripper_target) * self._max_opening / 2
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, target_rot.ravel())
        self._step_towards(target_pos, quat)

    def _command_base(self) -> tuple[np.ndarray, np.ndarray]:
        """The pose a relative command starts from: the last commanded pose while the hand tracks it (so
        velocities are exact), the measured pose when contact holds the hand back (so commands cannot wind up)."""
        pos, rot = self._tcp_pose()
        commanded = self.data.mocap_pos[self._mocap].copy()
        commanded_rot = np.zeros(9)
        mujoco.mju_quat2Mat(commanded_rot, self.data.mocap_quat[self._mocap])
        commanded_rot = commanded_rot.reshape(3, 3)
        lag = float(np.linalg.norm(commanded - pos))
        twist = float(np.linalg.norm(_rotvec_from_mat(commanded_rot @ rot.T)))
        if lag < TRACKING_TOLERANCE_M and twist < TRACKING_TOLERANCE_RAD:
            return commanded, commanded_rot
        return pos, rot

    def _step_towards(self, target_pos: np.ndarray, target_quat: np.ndarray) -> None:
        """Move the mocap body to the target in a few interpolated stages, then integrate the physics."""
        m, d = self.model, self.data
        start_pos = d.mocap_pos[self._mocap].copy()
        start_quat = d.mocap_quat[self._mocap].copy()
        if np.dot(start_quat, target_quat) < 0:
            target_quat = -target_quat
        stages = 4
        per_stage = self._substeps // stages
        for k in range(1, stages + 1):
            frac = k / stages
            d.mocap_pos[self._mocap] = start_pos + frac * (target_pos - start_pos)
            quat = start_quat + frac * (target_quat - start_quat)
            d.mocap_quat[self._mocap] = quat / np.linalg.norm(quat)
            mujoco.mj_step(m, d, nstep=per_stage if k < stages else self._substeps - per_stage * (stages - 1))
        if not np.all(np.isfinite(d.qpos)):
            raise ReplicaError("simulation diverged (non-finite state)")

    # ------------------------------------------------------------------------------------------- observing

    def render(self, camera: str) -> np.ndarray:
        """An RGB image (image_size, image_size, 3) uint8 from ``camera``."""
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()

    def _tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.xpos[self._hand].copy(), self.data.xmat[self._hand].reshape(3, 3).copy()

    def _opening(self) -> float:
        return float(self.data.qpos[self._fingers_q].sum())

    def observe(self) -> dict[str, Any]:
        """DROID-keyed observation plus ``replica/state`` (privileged, for scripted baselines only)."""
        obs = self.proprioception()
        for i, name in enumerate(self.exterior_cameras, start=1):
            obs[f"observation/exterior_image_{i}_left"] = self.render(name)
        obs["observation/wrist_image_left"] = self.render("wrist")
        obs["replica/state"] = self.privileged_state()
        return obs

    def proprioception(self) -> dict[str, np.ndarray]:
        """The non-image DROID observation keys (float64 arrays)."""
        pos, rot = self._tcp_pose()
        cartesian = np.concatenate([pos, mat_to_euler(rot)])
        opening = self._opening()
        return {
            "observation/joint_position": np.concatenate([cartesian, [opening]]),
            "observation/cartesian_position": cartesian,
            "observation/gripper_position": np.array([min(max(1.0 - opening / self._max_opening, 0.0), 1.0)]),
        }

    def camera_frames(self) -> dict[str, np.ndarray]:
        """One frame per camera name (``self.cameras``), for recording."""
        return {name: self.render(name) for name in self.cameras}

    def start_image(self) -> np.ndarray:
        """The first exterior camera's image at the last reset (for the operator to restore the scene)."""
        assert self._start_image is not None
        return self._start_image.copy()

    def _object_pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self._obj_body[name]].copy()

    def _object_yaw(self, name: str) -> float:
        mat = self.data.xmat[self._obj_body[name]].reshape(3, 3)
        return float(np.arctan2(mat[1, 0], mat[0, 0]))

    def _target_pos(self) -> np.ndarray:
        if self.task.kind == "stack":
            return self._object_pos(self.task.target)
        return self.data.xpos[self._region_body[self.task.target]].copy()

    def _touching_fingers(self, name: str) -> int:
        d = self.data
        if d.ncon == 0:
            return 0
        geom = self._obj_geom[name]
        pairs = d.contact.geom[: d.ncon]
        hits = set()
        for g1, g2 in pairs:
            if g1 == geom and g2 in self._finger_geoms:
                hits.add(int(g2))
            elif g2 == geom and g1 in self._finger_geoms:
                hits.add(int(g1))
        return len(hits)

    def _task_state(self) -> TaskState:
        target_ok = True
        if self.task.kind == "stack":
            base_half = self.scene.object_spec(self.task.target)["half_size"][2]
            target_ok = bool(self._object_pos(self.task.target)[2] < base_half + 0.01)
        return TaskState(
            object_pos=self._object_pos(self.task.object),
            object_half=np.asarray(self.scene.object_spec(self.task.object)["half_size"], float),
            target_pos=self._target_pos(),
            tcp_pos=self._tcp_pose()[0],
            grasped=self._touching_fingers(self.task.object) == 2,
            target_ok=target_ok,
        )

    def privileged_state(self) -> dict[str, Any]:
        """Simulator truth for scripted baselines (never for learned policies).

        ``task`` (str: pick_place | push | stack), ``object_pos`` (3,) m, ``object_yaw`` (1,) rad,
        ``object_half_size`` (3,) m, ``target_pos`` (3,) m (region centre on the table, or the base block centre),
        ``target_kind`` (str: bowl | pad | block), ``target_radius`` (1,) m (inner usable radius or half size),
        ``decoy_target_pos`` (3,) m (a plausible wrong target: another region, or the third block for stack; for
        the ``confused`` baseline), ``grasped`` (1,) bool.
        """
        state = self._task_state()
        if self.task.kind == "stack":
            kind, radius = "block", float(self.scene.object_spec(self.task.target)["half_size"][0])
        else:
            region = self.scene.region_spec(self.task.target)
            kind = region["kind"]
            radius = float(region["radius"] if kind == "bowl" else min(region["half_size"]))
        return {
            "task": self.task.kind,
            "object_pos": state.object_pos,
            "object_yaw": np.array([self._object_yaw(self.task.object)]),
            "object_half_size": state.object_half,
            "target_pos": state.target_pos,
            "target_kind": kind,
            "target_radius": np.array([radius]),
            "decoy_target_pos": self._decoy_target_pos(),
            "grasped": np.array([state.grasped]),
        }

    def _decoy_target_pos(self) -> np.ndarray:
        """A plausible wrong target: the third block for stack, else another region."""
        if self.task.kind == "stack":
            names = [e["name"] for e in self.scene.spec["objects"]]
            return self._object_pos(next(n for n in names if n not in (self.task.object, self.task.target)))
        regions = [r["name"] for r in self.scene.spec["regions"] if r["name"] != self.task.target]
        return self.data.xpos[self._region_body[regions[0]]].copy()

    # ------------------------------------------------------------------------------------------- scoring

    def progress(self) -> float:
        """Staged task progress in [0, 100] for the current state (see :mod:`evaluator_client.replica.tasks`)."""
        assert self._start_state is not None
        return task_progress(self.scene, self.task, self._task_state(), self._start_state)

    def success(self) -> bool:
        """Whether the task is achieved in the current state."""
        return task_success(self.scene, self.task, self._task_state())

    def scene_notes(self) -> dict[str, Any]:
        """Everything needed to rebuild this start scene: platform, scene version, task, seed, perturbations."""
        return {
            "platform": self.platform,
            "scene": self.scene.name,
            "scene_version": self.scene.version,
            "scene_sha256": self.scene.sha256,
            "task": self.task.kind,
            "object": self.task.object,
            "target": self.task.target,
            "instruction": self.task.instruction,
            "seed": self.seed,
            "perturb_axes": list(self.axes),
            "perturbation": self.perturbation,
            "action_space": self.action_space,
            "control_hz": self.control_hz,
            "cameras": list(self.cameras),
        }

    def close(self) -> None:
        """Release the rendering context."""
        self._renderer.close()
