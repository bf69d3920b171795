"""Versioned scene files and their translation to MuJoCo MJCF.

A scene file (``evaluator_client/scenes/<name>.json``) describes the table, the task objects, the target
regions, the distractor pool, cameras, lights, task definitions and perturbation ranges. World frame: the
robot base at the origin, +x away from the robot, +z up, the table surface at z = 0. Units: metres, radians.

The gripper is a free-floating parallel-jaw hand welded to a mocap body (no arm): much faster than an
articulated arm and exact in Cartesian space. Its frame is the tool centre point (TCP) with +z along the
approach direction, as on a Franka hand, so the nominal top-down pose is Euler xyz ``(pi, 0, 0)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCENES_DIR = Path(__file__).resolve().parent.parent / "scenes"

FINGER_HALF_THICKNESS = 0.006
FINGER_HALF_WIDTH = 0.011
FINGER_HALF_LENGTH = 0.0325
FINGER_CENTRE_Z = -0.0275
PALM_CENTRE_Z = -0.075
BOWL_SEGMENTS = 16


class SceneError(ValueError):
    """A scene file is missing or malformed."""


@dataclass(frozen=True)
class Scene:
    """A parsed scene file. ``spec`` is the JSON content; ``sha256`` identifies the exact file version."""

    name: str
    version: int
    spec: dict[str, Any]
    sha256: str

    def object_spec(self, name: str) -> dict[str, Any]:
        for entry in self.spec["objects"] + self.spec["distractors"]:
            if entry["name"] == name:
                return entry
        raise SceneError(f"scene {self.name!r} has no object {name!r}")

    def region_spec(self, name: str) -> dict[str, Any]:
        for entry in self.spec["regions"]:
            if entry["name"] == name:
                return entry
        raise SceneError(f"scene {self.name!r} has no region {name!r}")

    @property
    def control_hz(self) -> float:
        return float(self.spec["control_hz"])

    @property
    def exterior_cameras(self) -> list[str]:
        return sorted(name for name in self.spec["cameras"] if name.startswith("exterior_"))


def load_scene(name_or_path: str | Path = "tabletop-v1") -> Scene:
    """Load a scene by name (a file in ``evaluator_client/scenes``) or by path."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = SCENES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        available = sorted(p.stem for p in SCENES_DIR.glob("*.json"))
        raise SceneError(f"scene file {str(path)!r} not found; available scenes: {available}")
    raw = path.read_bytes()
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SceneError(f"scene file {str(path)!r} is not valid JSON: {exc}") from exc
    for key in ("name", "version", "table", "objects", "regions", "cameras", "tasks", "perturbations"):
        if key not in spec:
            raise SceneError(f"scene file {str(path)!r} lacks the key {key!r}")
    return Scene(
        name=spec["name"], version=int(spec["version"]), spec=spec, sha256=hashlib.sha256(raw).hexdigest()
    )


def look_at_quat(pos: np.ndarray, lookat: np.ndarray) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera at ``pos`` looking at ``lookat`` with world +z up.

    MuJoCo cameras look along their local -z with +y up in the image.
    """
    forward = np.asarray(lookat, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 0.0, 1.0]) if abs(forward[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    return _mat_to_quat(np.column_stack([right, true_up, -forward]))


def _mat_to_quat(mat: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (w, x, y, z)."""
    trace = np.trace(mat)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        quat = [
            0.25 * s,
            (mat[2, 1] - mat[1, 2]) / s,
            (mat[0, 2] - mat[2, 0]) / s,
            (mat[1, 0] - mat[0, 1]) / s,
        ]
    else:
        i = int(np.argmax(np.diag(mat)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + mat[i, i] - mat[j, j] - mat[k, k])
        quat = [0.0, 0.0, 0.0, 0.0]
        quat[0] = (mat[k, j] - mat[j, k]) / s
        quat[1 + i] = 0.25 * s
        quat[1 + j] = (mat[j, i] + mat[i, j]) / s
        quat[1 + k] = (mat[k, i] + mat[i, k]) / s
    q = np.asarray(quat, float)
    return q / np.linalg.norm(q)


def _fmt(values: Any) -> str:
    return " ".join(f"{float(v):.6g}" for v in np.ravel(values))


def _object_geom(entry: dict[str, Any], name: str) -> str:
    half = np.asarray(entry["half_size"], float)
    shape = entry["shape"]
    if shape == "box":
        size = _fmt(half)
    elif shape == "cylinder":
        size = _fmt([half[0], half[2]])
    elif shape == "sphere":
        size = _fmt([half[0]])
    else:
        raise SceneError(f"object {entry['name']!r} has unsupported shape {shape!r}")
    return (
        f'<geom name="{name}" type="{shape}" size="{size}" rgba="{_fmt(entry["rgba"])}" mass="{entry["mass"]}"'
        ' friction="1.2 0.01 0.001" condim="4" solref="0.005 1"/>'
    )


def build_mjcf(scene: Scene) -> str:
    """The MJCF model of ``scene`` at its nominal (unperturbed) configuration."""
    spec = scene.spec
    table = spec["table"]
    grip = spec["gripper"]
    substeps = int(spec["physics_substeps"])
    timestep = 1.0 / (scene.control_hz * substeps)
    cx, cy = table["center"]
    hx, hy = table["half_size"]
    thickness = table["thickness"]
    tex = table["texture"]

    bodies: list[str] = []
    for entry in spec["objects"] + spec["distractors"]:
        x, y, yaw = entry.get("pose", [5.0, 5.0, 0.0])
        z = entry["half_size"][2]
        bodies.append(
            f'<body name="{entry["name"]}" pos="{_fmt([x, y, z])}" euler="0 0 {yaw:.6g}">'
            f'<freejoint name="{entry["name"]}"/>{_object_geom(entry, entry["name"])}</body>'
        )
    for region in spec["regions"]:
        x, y = region["pos"]
        if region["kind"] == "pad":
            geoms = (
                f'<geom name="{region["name"]}" type="box" size="{_fmt([*region["half_size"], 0.001])}" '
                f'pos="0 0 0.001" rgba="{_fmt(region["rgba"])}" contype="0" conaffinity="0"/>'
            )
        elif region["kind"] == "bowl":
            geoms = _bowl_geoms(region)
        else:
            raise SceneError(f"region {region['name']!r} has unsupported kind {region['kind']!r}")
        bodies.append(f'<body name="{region["name"]}" pos="{_fmt([x, y, 0.0])}">{geoms}</body>')

    cameras: list[str] = []
    for name in scene.exterior_cameras:
        cam = spec["cameras"][name]
        quat = look_at_quat(np.asarray(cam["pos"]), np.asarray(cam["lookat"]))
        cameras.append(
            f'<camera name="{name}" pos="{_fmt(cam["pos"])}" quat="{_fmt(quat)}" fovy="{cam["fovy"]}"/>'
        )
    wrist = spec["cameras"]["wrist"]
    wrist_quat = _wrist_quat(
        np.asarray(wrist["pos_in_hand"], float), np.asarray(wrist["lookat_in_hand"], float)
    )

    lights = "".join(
        f'<light name="light_{i}" pos="{_fmt(light["pos"])}" dir="{_fmt(light["dir"])}" '
        f'diffuse="{_fmt(light["diffuse"])}" castshadow="false"/>'
        for i, light in enumerate(spec["lights"])
    )
    home_quat = _euler_xyz_to_quat(np.asarray(grip["home_euler"], float))
    home = _fmt(grip["home"])
    max_half_open = grip["max_opening"] / 2.0
    force = grip["finger_force"]
    finger_common = (
        f'type="box" size="{_fmt([FINGER_HALF_WIDTH, FINGER_HALF_THICKNESS, FINGER_HALF_LENGTH])}" '
        f'rgba="0.25 0.25 0.27 1" friction="1.5 0.02 0.002" condim="4" mass="0.03"'
    )
    headlight = spec["headlight"]
    return f"""<mujoco model="{scene.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep:.8g}" cone="elliptic" impratio="10" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="640" offheight="480"/>
    <headlight ambient="{_fmt(headlight["ambient"])}" diffuse="{_fmt(headlight["diffuse"])}" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="table_tex" type="2d" builtin="checker" width="64" height="64"
             rgb1="{_fmt(tex["rgb1"])}" rgb2="{_fmt(tex["rgb2"])}"/>
    <material name="table_mat" texture="table_tex" texrepeat="{_fmt(tex["repeat"])}" rgba="{_fmt(table["rgba"])}"
              reflectance="0"/>
  </asset>
  <worldbody>
    <geom name="floor" type="box" size="6 6 0.05" pos="0 0 -0.8" rgba="0.35 0.35 0.38 1"/>
    <geom name="table" type="box" size="{_fmt([hx, hy, thickness / 2])}" pos="{_fmt([cx, cy, -thickness / 2])}"
          material="table_mat" friction="0.6 0.01 0.001"/>
    <geom name="table_leg" type="box" size="{_fmt([hx * 0.9, hy * 0.9, 0.35])}" pos="{_fmt([cx, cy, -0.4])}"
          rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"/>
    {lights}
    {"".join(cameras)}
    {"".join(bodies)}
    <body name="mocap" mocap="true" pos="{home}" quat="{_fmt(home_quat)}"/>
    <body name="hand" pos="{home}" quat="{_fmt(home_quat)}" gravcomp="1">
      <freejoint name="hand"/>
      <geom name="palm" type="box" size="0.028 0.06 0.015" pos="0 0 {PALM_CENTRE_Z}" rgba="{_fmt(grip["rgba"])}"
            mass="0.4"/>
      <geom name="flange" type="cylinder" size="0.035 0.02" pos="0 0 -0.11" rgba="0.2 0.2 0.22 1" mass="0.2"/>
      <camera name="wrist" pos="{_fmt(wrist["pos_in_hand"])}" quat="{_fmt(wrist_quat)}" fovy="{wrist["fovy"]}"/>
      <body name="finger_left" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {max_half_open:.6g}" damping="5" armature="0.01"/>
        <geom name="finger_left" pos="0 {FINGER_HALF_THICKNESS} {FINGER_CENTRE_Z}" {finger_common}/>
      </body>
      <body name="finger_right" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {max_half_open:.6g}" damping="5"
               armature="0.01"/>
        <geom name="finger_right" pos="0 {-FINGER_HALF_THICKNESS} {FINGER_CENTRE_Z}" {finger_common}/>
      </body>
    </body>
  </worldbody>
  <equality>
    <weld body1="mocap" body2="hand" solref="0.01 1"/>
  </equality>
  <contact>
    <exclude body1="hand" body2="finger_left"/>
    <exclude body1="hand" body2="finger_right"/>
  </contact>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="400" ctrlrange="0 {max_half_open:.6g}"
              forcerange="{-force} {force}"/>
    <position name="finger_right" joint="finger_right" kp="400" ctrlrange="0 {max_half_open:.6g}"
              forcerange="{-force} {force}"/>
  </actuator>
</mujoco>
"""


def _bowl_geoms(region: dict[str, Any]) -> str:
    """A shallow open bowl: a thin base disc and a ring of wall segments."""
    radius = region["radius"]
    height = region["wall_height"]
    half_thick = region["wall_thickness"] / 2
    rgba = _fmt(region["rgba"])
    half_len = radius * np.tan(np.pi / BOWL_SEGMENTS) + half_thick
    parts = [
        f'<geom name="{region["name"]}" type="cylinder" size="{radius:.6g} 0.002" pos="0 0 0.002" rgba="{rgba}"/>'
    ]
    for k in range(BOWL_SEGMENTS):
        angle = 2 * np.pi * k / BOWL_SEGMENTS
        pos = [radius * np.cos(angle), radius * np.sin(angle), height / 2]
        parts.append(
            f'<geom name="{region["name"]}_wall_{k}" type="box" size="{half_thick:.6g} {half_len:.6g} {height / 2:.6g}" '
            f'pos="{_fmt(pos)}" euler="0 0 {angle:.6g}" rgba="{rgba}"/>'
        )
    return "".join(parts)


def _euler_xyz_to_quat(euler: np.ndarray) -> np.ndarray:
    """Extrinsic xyz Euler angles (rad), as DROID reports them, -> quaternion (w, x, y, z)."""
    roll, pitch, yaw = euler
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    return np.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )


def _wrist_quat(pos: np.ndarray, lookat: np.ndarray) -> np.ndarray:
    """Wrist camera orientation in the hand frame: looking at ``lookat`` with image-up along hand +x."""
    forward = lookat - pos
    forward /= np.linalg.norm(forward)
    up_hint = np.array([1.0, 0.0, 0.0])
    right = np.cross(forward, up_hint)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    return _mat_to_quat(np.column_stack([right, true_up, -forward]))
