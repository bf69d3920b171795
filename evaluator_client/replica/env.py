"""The MuJoCo replica of a DROID station: a :class:`~evaluator_client.robot.Robot` for sim evaluation.

Robot: DROID's Franka Panda with a Robotiq 2F-85 style gripper (:mod:`evaluator_client.replica.franka`), in a
scene described by a scene file (:mod:`evaluator_client.replica.scene`). Joint position servos with velocity
feedforward track each control step's joint target; the fingers are force-limited servos, so grasps are real
contact grasps (nothing is welded).

Action spaces (one step at 15 Hz, DROID's ``RobotIKSolver`` semantics; ``g`` the gripper position target in
[0, 1], 0 open, approached at most 0.25 per step):

- ``joint_velocity`` ``(8,)``: 7 values in [-1, 1] (a vector beyond that range is scaled down as a whole by its
  largest entry, as DROID's ``joint_velocity_to_delta`` does) times 0.2 rad per step, + g.
- ``joint_position`` ``(8,)``: 7 absolute joint targets (rad), clipped to the joint limits, + g.
- ``cartesian_velocity`` ``(7,)``: ``[vx, vy, vz, wx, wy, wz, g]``; the linear and angular parts are each
  scaled down to unit norm when longer and times 0.075 m and 0.15 rad per step, the angular delta an extrinsic
  xyz Euler rotation applied in the base frame on the left (DROID's ``cartesian_velocity_to_delta`` and
  ``add_poses``).
- ``cartesian_position`` ``(7,)``: ``[x, y, z, roll, pitch, yaw, g]``, an absolute TCP target in the base
  frame (extrinsic xyz Euler), turned into a delta (DROID's ``pose_diff``) and approached at most by the same
  per-step limits.

Every step's joint motion is then held inside the Franka's velocity limits (2.175 / 2.61 rad/s, i.e. 0.145 /
0.174 rad per step at 15 Hz) by slowing the whole step, so its direction in joint space is kept: DROID's
0.2 rad per step (3 rad/s) exceeds every joint's limit, which the Franka's own controller enforces.

The Cartesian spaces go through differential IK (:mod:`evaluator_client.replica.ik`) and their targets are
clamped to the scene's workspace box. Relative commands start from the last command while the arm tracks it
(so velocities are exact) and from the measured state when contact holds the arm back (no wind-up).

Observations (DROID keys): ``observation/joint_position`` (7,) rad, ``observation/cartesian_position`` (6,)
TCP ``[x, y, z, roll, pitch, yaw]`` in the robot base frame, ``observation/gripper_position`` (1,) in [0, 1];
``observation/exterior_image_{i}_left`` and ``observation/wrist_image_left`` uint8 (H, W, 3) at the native
16:9 resolution (default 320 x 180: DROID's ZED frames are 1280 x 720, a quarter of that keeps three cameras
fast while staying wider than the 224-pixel inputs DROID policies resize to), and the ``_right`` images when
configured stereo. ``replica/state`` holds privileged simulator state for scripted baselines (see
:meth:`Replica.privileged_state`); evaluation code forwards it only to policies that ask.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from evaluator_client.extras import missing_extra

os.environ.setdefault("MUJOCO_GL", "egl")
try:
    import av
    import mujoco
except ModuleNotFoundError as exc:
    raise missing_extra(exc, extra="sim", needed_for="the replica", python="3.11") from exc

from evaluator_client.replica.franka import (  # noqa: E402
    GRIPPER_STROKE_M,
    HOME_JOINTS,
    JOINT_LOWER,
    JOINT_NAMES,
    JOINT_UPPER,
    JOINT_VELOCITY_LIMIT,
    SERVO_KP,
    SERVO_KV,
)
from evaluator_client.replica.ik import DifferentialIK  # noqa: E402
from evaluator_client.replica.perturb import normalize_axes, sample_perturbation  # noqa: E402
from evaluator_client.replica.scene import (  # noqa: E402
    BACKDROP_GEOMS,
    Scene,
    build_mjcf,
    camera_pose_world,
    load_scene,
    mesh_assets,
    right_camera_pos,
)
from evaluator_client.replica.tasks import (  # noqa: E402
    TaskSpec,
    TaskState,
    task_from_instruction,
    task_progress,
    task_success,
)
from evaluator_client.replica.transforms import (  # noqa: E402
    euler_to_mat,
    mat_to_euler,
    rotvec_from_mat,
)
from policy_server.check import ACTION_DIMS, ACTION_SPACES  # noqa: E402  (the DROID spaces, one table)

MAX_JOINT_DELTA_RAD = 0.2
MAX_LIN_DELTA_M = 0.075
MAX_ROT_DELTA_RAD = 0.15
MAX_GRIPPER_DELTA = 0.25
NATIVE_RESOLUTION = (320, 180)
PARK_XY = (3.0, 3.0)
TRACKING_TOLERANCE_M = 0.02
TRACKING_TOLERANCE_RAD = 0.1
JOINT_TRACKING_TOLERANCE_RAD = 0.08
CONTROL_STAGES = 5


class ReplicaError(RuntimeError):
    """The simulation became invalid (NaN state, bad action shape)."""


class Replica:
    """A seeded, perturbable MuJoCo replica of a DROID station implementing the Robot protocol.

    ``task``: a task name (``"pick_place"``, ``"push"``, ``"stack"``) or a typed instruction.
    ``seed``: the start scene (object positions and every enabled perturbation) is a pure function of it.
    ``perturb``: perturbation axes (see :mod:`evaluator_client.replica.perturb`), ``"all"`` or ``"none"``;
    default: positions only. ``scene``: a scene name, path or :class:`Scene`. ``n_exterior_cameras``: 1 or 2.
    ``resolution``: native (width, height) of every camera, 16:9 by default. ``action_space``/``stereo``:
    the initial configuration (see :meth:`configure`).
    """

    control_hz: float
    timings: dict[str, float]
    """Seconds spent since construction in differential IK, physics stepping and rendering (for profiling)."""

    def __init__(
        self,
        task: str = "pick_place",
        *,
        seed: int = 0,
        perturb: Iterable[str] | str | None = None,
        scene: str | Scene = "tabletop-v1",
        n_exterior_cameras: int = 1,
        action_space: str = "cartesian_velocity",
        stereo: bool = False,
        resolution: tuple[int, int] = NATIVE_RESOLUTION,
    ) -> None:
        self.scene = scene if isinstance(scene, Scene) else load_scene(scene)
        exterior = self.scene.exterior_cameras
        if not 1 <= n_exterior_cameras <= len(exterior):
            raise ValueError(f"n_exterior_cameras must be in 1..{len(exterior)}")
        self.task: TaskSpec = task_from_instruction(self.scene, task)
        self.axes = normalize_axes(perturb)
        self.action_spaces = list(ACTION_SPACES)
        self.configure(action_space=action_space, stereo=stereo)
        self.control_hz = self.scene.control_hz
        self.platform = f"replica:{self.scene.name}"
        self.exterior_cameras = exterior[:n_exterior_cameras]
        self.cameras = [*self.exterior_cameras, "wrist"]
        self.resolution = (int(resolution[0]), int(resolution[1]))
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.scene), assets=mesh_assets(self.scene))
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
            "cam_intrinsic": self.model.cam_intrinsic.copy(),
            "body_pos": self.model.body_pos.copy(),
            "headlight_ambient": self.model.vis.headlight.ambient.copy(),
        }
        self._ids()
        self._ik = DifferentialIK(
            self.model, self._tcp_site, self._arm_q, self._arm_dof, JOINT_LOWER, JOINT_UPPER, self._home
        )
        width, height = self.resolution
        self._renderer = mujoco.Renderer(self.model, height, width)
        for flag in (
            mujoco.mjtRndFlag.mjRND_SHADOW,
            mujoco.mjtRndFlag.mjRND_REFLECTION,
            mujoco.mjtRndFlag.mjRND_SKYBOX,
        ):
            self._renderer.scene.flags[flag] = False
        self._backgrounds = self._load_backgrounds()
        self.timings = {"ik": 0.0, "physics": 0.0, "rendering": 0.0}
        self.seed = int(seed)
        self.perturbation: dict[str, Any] = {}
        self._start_state: TaskState | None = None
        self._start_image: np.ndarray | None = None
        self.reset(self.seed)

    def configure(self, *, action_space: str, stereo: bool = False) -> None:
        """Set the action space ``apply`` interprets and whether ``observe`` adds ``_right`` stereo images.

        Raises ValueError naming the space when the replica cannot run it.
        """
        if action_space not in ACTION_SPACES:
            raise ValueError(
                f"unsupported action space {action_space!r}; the replica offers {list(ACTION_SPACES)}"
            )
        self.action_space = action_space
        self.stereo = bool(stereo)

    def _ids(self) -> None:
        m = self.model
        name2id = mujoco.mj_name2id
        joints = [name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in JOINT_NAMES]
        self._arm_q = np.array([m.jnt_qposadr[j] for j in joints])
        self._arm_dof = np.array([m.jnt_dofadr[j] for j in joints])
        self._arm_ctrl = np.array([name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in JOINT_NAMES])
        self._finger_ctrl = np.array(
            [name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, n) for n in ("finger_left", "finger_right")]
        )
        self._fingers_q = [
            int(m.jnt_qposadr[name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)])
            for n in ("finger_left", "finger_right")
        ]
        self._finger_geoms = {
            name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("finger_left", "finger_right")
        }
        self._tcp_site = name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._objects = [e["name"] for e in self.scene.spec["objects"] + self.scene.spec["distractors"]]
        self._obj_body = {n: name2id(m, mujoco.mjtObj.mjOBJ_BODY, n) for n in self._objects}
        self._obj_geom = {n: name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in self._objects}
        self._obj_qadr = {
            n: int(m.jnt_qposadr[name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]) for n in self._objects
        }
        self._region_body = {
            r["name"]: name2id(m, mujoco.mjtObj.mjOBJ_BODY, r["name"]) for r in self.scene.spec["regions"]
        }
        self._cam_id = {
            n: name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, n)
            for base in self.scene.spec["cameras"]
            for n in (base, f"{base}_right")
        }
        self._backdrop = np.array([name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in BACKDROP_GEOMS])
        self._table_mat = name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, "table_mat")
        self._base_offset = np.array([0.0, 0.0, self.scene.table_height])
        self._home = np.asarray(self.scene.spec["robot"].get("home_joints", HOME_JOINTS), float)
        self._step_limit = np.minimum(MAX_JOINT_DELTA_RAD, JOINT_VELOCITY_LIMIT / self.scene.control_hz)
        self._feedforward = np.asarray(SERVO_KV) / np.asarray(SERVO_KP)
        ws = self.scene.spec["workspace"]
        self._ws_low = np.array([ws["x"][0] - 0.06, ws["y"][0] - 0.06, ws["z"][0]])
        self._ws_high = np.array([ws["x"][1] + 0.06, ws["y"][1] + 0.06, ws["z"][1]])

    def _load_backgrounds(self) -> dict[str, np.ndarray]:
        """Background photos per camera, resized to the native resolution (uint8 (H, W, 3))."""
        from evaluator_client.episode import resize_with_pad

        width, height = self.resolution
        photos = {}
        for name, relative in self.scene.spec.get("background", {}).items():
            with av.open(str(self.scene.resolve(relative))) as container:
                frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
            photos[name] = resize_with_pad(frame, height, width)
        return photos

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
        d.qpos[self._arm_q] = self._home
        d.ctrl[self._arm_ctrl] = self._home
        d.qpos[self._fingers_q] = GRIPPER_STROKE_M / 2
        d.ctrl[self._finger_ctrl] = GRIPPER_STROKE_M / 2
        mujoco.mj_forward(m, d)
        self._commanded_q = self._home.copy()
        self._commanded_pose = self._tcp_pose_world()
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
                pos, quat = camera_pose_world(self.scene, values["extrinsics"])
                baseline = float(self.scene.spec["cameras"][name].get("stereo_baseline", 0.12))
                for cam_name, cam_pos in (
                    (name, pos),
                    (f"{name}_right", right_camera_pos(pos, quat, baseline)),
                ):
                    cam = self._cam_id[cam_name]
                    m.cam_pos[cam] = cam_pos
                    m.cam_quat[cam] = quat
                    m.cam_intrinsic[cam, :2] = self._nominal["cam_intrinsic"][cam, :2] * values["focal_scale"]
        d.qvel[:] = 0.0

    def _place(self, name: str, x: float, y: float, yaw: float, park: bool = False) -> None:
        adr = self._obj_qadr[name]
        half_z = self.scene.object_spec(name)["half_size"][2]
        self.data.qpos[adr : adr + 3] = (x, y, half_z - (0.75 if park else 0.0))
        self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))

    # ------------------------------------------------------------------------------------------- stepping

    def apply(self, action: np.ndarray) -> None:
        """Execute one control step (1 / control_hz s of physics) of ``action`` in ``self.action_space``."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        expected = ACTION_DIMS[self.action_space]
        if action.shape != (expected,):
            raise ReplicaError(
                f"the replica expects a ({expected},) {self.action_space} action, got shape {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ReplicaError("action contains NaN or inf")
        q_base = self._joint_command_base()
        if self.action_space == "joint_velocity":
            # DROID's joint_velocity_to_delta: a vector beyond [-1, 1] is scaled down as a whole by its largest
            # entry (its direction kept), then times 0.2 rad.
            velocity = action[:7] / max(1.0, float(np.max(np.abs(action[:7]))))
            q_target = q_base + velocity * MAX_JOINT_DELTA_RAD
        elif self.action_space == "joint_position":
            q_target = action[:7]
        else:
            q_target = self._cartesian_target(action[:6], q_base)
        q_target = np.clip(q_target, JOINT_LOWER, JOINT_UPPER)
        # The Franka's velocity limits, kept as the controller does by slowing the whole motion: every joint is
        # scaled by the same factor, so the step keeps its direction in joint space.
        delta = q_target - q_base
        q_target = q_base + delta / max(1.0, float(np.max(np.abs(delta) / self._step_limit)))
        self._gripper_target += float(
            np.clip(
                np.clip(action[-1], 0.0, 1.0) - self._gripper_target, -MAX_GRIPPER_DELTA, MAX_GRIPPER_DELTA
            )
        )
        self._step_towards(q_target)

    def _joint_command_base(self) -> np.ndarray:
        """The joint angles a command starts from: the last command while the arm tracks it, else the
        measured angles (contact holds the arm back, so commands must not wind up)."""
        measured = self.data.qpos[self._arm_q]
        if np.max(np.abs(self._commanded_q - measured)) < JOINT_TRACKING_TOLERANCE_RAD:
            return self._commanded_q.copy()
        return measured.copy()

    def _cartesian_target(self, command: np.ndarray, q_base: np.ndarray) -> np.ndarray:
        """Joint angles (7,) for a Cartesian velocity or position command (6,) (base frame), via IK."""
        pos, rot = self._cartesian_command_base()
        # DROID's cartesian_velocity_to_delta and add_poses: the linear and the angular part are each scaled
        # down to unit norm when longer (their direction kept), times 0.075 m / 0.15 rad; the angular delta is
        # an extrinsic xyz Euler rotation applied on the left. A position target is first turned into that
        # delta (DROID's pose_diff), so it is approached at the same per-step limits.
        if self.action_space == "cartesian_velocity":
            lin, ang = command[:3], command[3:6]
        else:
            lin = ((command[:3] - self._base_offset) - pos) / MAX_LIN_DELTA_M
            ang = mat_to_euler(euler_to_mat(command[3:6]) @ rot.T) / MAX_ROT_DELTA_RAD
        lin = lin / max(1.0, float(np.linalg.norm(lin)))
        ang = ang / max(1.0, float(np.linalg.norm(ang)))
        target_pos = pos + lin * MAX_LIN_DELTA_M
        target_rot = euler_to_mat(ang * MAX_ROT_DELTA_RAD) @ rot
        target_pos = np.clip(target_pos, self._ws_low, self._ws_high)
        self._commanded_pose = (target_pos, target_rot)
        started = time.perf_counter()
        solution = self._ik.solve(q_base, target_pos, target_rot)
        self.timings["ik"] += time.perf_counter() - started
        return solution

    def _cartesian_command_base(self) -> tuple[np.ndarray, np.ndarray]:
        """The TCP pose (world) a Cartesian command starts from: the last commanded pose while the TCP tracks
        it, the measured pose otherwise."""
        pos, rot = self._tcp_pose_world()
        commanded, commanded_rot = self._commanded_pose
        lag = float(np.linalg.norm(commanded - pos))
        twist = float(np.linalg.norm(rotvec_from_mat(commanded_rot @ rot.T)))
        if lag < TRACKING_TOLERANCE_M and twist < TRACKING_TOLERANCE_RAD:
            return commanded.copy(), commanded_rot.copy()
        return pos, rot

    def _step_towards(self, q_target: np.ndarray) -> None:
        """Ramp the joint servos to ``q_target`` over the control period (velocity feedforward), then settle."""
        started = time.perf_counter()
        m, d = self.model, self.data
        start = self._commanded_q
        velocity = (q_target - start) * self.control_hz
        finger = (1.0 - self._gripper_target) * GRIPPER_STROKE_M / 2
        d.ctrl[self._finger_ctrl] = finger
        # Velocity feedforward cancels the servo's damping while moving: force = kp (q_des - q) + kv (v - qdot).
        lead = self._feedforward * velocity
        per_stage = self._substeps // CONTROL_STAGES
        for k in range(1, CONTROL_STAGES + 1):
            waypoint = start + (k / CONTROL_STAGES) * (q_target - start)
            d.ctrl[self._arm_ctrl] = np.clip(waypoint + lead, JOINT_LOWER, JOINT_UPPER)
            steps = per_stage if k < CONTROL_STAGES else self._substeps - per_stage * (CONTROL_STAGES - 1)
            mujoco.mj_step(m, d, nstep=steps)
        self._commanded_q = q_target.copy()
        if self.action_space.startswith("joint"):
            self._commanded_pose = self._ik.site_pose(q_target)
        self.timings["physics"] += time.perf_counter() - started
        if not np.all(np.isfinite(d.qpos)):
            raise ReplicaError("simulation diverged (non-finite state)")

    # ------------------------------------------------------------------------------------------- observing

    def render(self, camera: str) -> np.ndarray:
        """An RGB image (height, width, 3) uint8 from ``camera`` (a scene camera or ``<camera>_right``),
        with the scene's background photo composited behind the station when it has one for ``camera``."""
        started = time.perf_counter()
        try:
            return self._render(camera)
        finally:
            self.timings["rendering"] += time.perf_counter() - started

    def _render(self, camera: str) -> np.ndarray:
        self._renderer.update_scene(self.data, camera=camera)
        image = self._renderer.render()
        photo = self._backgrounds.get(camera[: -len("_right")] if camera.endswith("_right") else camera)
        if photo is None:
            return image
        self._renderer.enable_segmentation_rendering()
        try:
            segments = self._renderer.render()
        finally:
            self._renderer.disable_segmentation_rendering()
        geom = segments[..., 0]
        backdrop = (geom < 0) | np.isin(geom, self._backdrop)
        image[backdrop] = photo[backdrop]
        return image

    def _tcp_pose_world(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.data.site_xpos[self._tcp_site].copy(),
            self.data.site_xmat[self._tcp_site].reshape(3, 3).copy(),
        )

    def _opening(self) -> float:
        return float(self.data.qpos[self._fingers_q].sum())

    def observe(self) -> dict[str, Any]:
        """DROID-keyed observation plus ``replica/state`` (privileged, for scripted baselines only)."""
        obs: dict[str, Any] = self.proprioception()
        for i, name in enumerate(self.exterior_cameras, start=1):
            obs[f"observation/exterior_image_{i}_left"] = self.render(name)
            if self.stereo:
                obs[f"observation/exterior_image_{i}_right"] = self.render(f"{name}_right")
        obs["observation/wrist_image_left"] = self.render("wrist")
        if self.stereo:
            obs["observation/wrist_image_right"] = self.render("wrist_right")
        obs["replica/state"] = self.privileged_state()
        return obs

    def proprioception(self) -> dict[str, np.ndarray]:
        """The non-image DROID observation keys (float64 arrays), poses in the robot base frame."""
        pos, rot = self._tcp_pose_world()
        cartesian = np.concatenate([pos + self._base_offset, mat_to_euler(rot)])
        opening = self._opening()
        return {
            "observation/joint_position": self.data.qpos[self._arm_q].copy(),
            "observation/cartesian_position": cartesian,
            "observation/gripper_position": np.array([min(max(1.0 - opening / GRIPPER_STROKE_M, 0.0), 1.0)]),
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
            tcp_pos=self._tcp_pose_world()[0],
            grasped=self._touching_fingers(self.task.object) == 2,
            target_ok=target_ok,
        )

    def privileged_state(self) -> dict[str, Any]:
        """Simulator truth for scripted baselines (never for learned policies).

        Positions in the robot base frame (as ``observation/cartesian_position``). ``table_z`` (1,) m: the table
        surface height; ``task`` (str: pick_place | push | stack), ``object_pos`` (3,) m, ``object_yaw`` (1,) rad,
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
            "table_z": np.array([self.scene.table_height]),
            "object_pos": state.object_pos + self._base_offset,
            "object_yaw": np.array([self._object_yaw(self.task.object)]),
            "object_half_size": state.object_half,
            "target_pos": state.target_pos + self._base_offset,
            "target_kind": kind,
            "target_radius": np.array([radius]),
            "decoy_target_pos": self._decoy_target_pos() + self._base_offset,
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
            "stereo": self.stereo,
            "resolution": list(self.resolution),
            "control_hz": self.control_hz,
            "cameras": list(self.cameras),
        }

    def close(self) -> None:
        """Release the rendering context."""
        self._renderer.close()
