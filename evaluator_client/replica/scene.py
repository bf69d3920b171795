"""Versioned scene files (a lab's station described as data) and their translation to MuJoCo MJCF.

A scene file (``evaluator_client/scenes/<name>.json``, or any path) describes one station: the table, the task
objects (primitives or the lab's own OBJ/STL meshes), target regions, a distractor pool, cameras in DROID's
calibration conventions, lights, an optional photo background, task definitions and perturbation ranges.

Frames and units: metres, radians, RGBA in [0, 1]. Every pose in the file is in the **robot base frame** (the
Franka's link 0: +x forward, +z up), as DROID's calibration reports them. ``table.height`` is the table
surface's z in that frame; object and region poses are ``(x, y, yaw)`` / ``(x, y)`` on the table surface;
``workspace.z`` is TCP height above the surface. Inside MuJoCo the world origin sits on the table surface
below the base (world = base frame shifted down by ``table.height``), so task scoring works in table heights.

Cameras (``cameras.<name>``): ``extrinsics`` ``[x, y, z, roll, pitch, yaw]``: the camera's pose in the base
frame, axes in OpenCV's convention (x right, y down, z forward), Euler extrinsic xyz: exactly the 6-vector
DROID's calibration stores. The wrist camera's extrinsics are in the TCP frame (``observation/
cartesian_position``'s frame) instead. ``intrinsics`` ``{fx, fy, cx, cy}`` in pixels at ``resolution``
``[width, height]`` (the ZED's native 1280 x 720 in DROID). ``stereo_baseline`` (m): the right imager's offset
along the camera's +x (ZED 2: 0.12, ZED Mini: 0.063). Exterior cameras are named ``exterior_*``.

``background`` (optional): ``{camera name: image path}``, PNG or JPEG relative to the scene file, a photo of
the station taken from that camera; it is composited behind the robot, table and objects wherever the
rendered pixel shows no geometry or the backdrop (segmentation-mask compositing).

Mesh objects (``shape: "mesh"``) name an OBJ or STL file (binary or ASCII) relative to the scene file. MuJoCo
decodes binary STL only, so the model is built from :func:`mesh_assets` (each mesh's bytes, an ASCII STL
converted to binary) rather than from the files' paths. :func:`check_scene_builds` compiles the whole model
once, so that a file MuJoCo refuses is reported as a :class:`SceneError` before a session starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from evaluator_client.replica.franka import TCP_FROM_FLANGE, franka_actuators_xml, franka_xml
from evaluator_client.replica.transforms import camera_mat_from_opencv, euler_to_mat, mat_to_quat

SCENES_DIR = Path(__file__).resolve().parent.parent / "scenes"
BOWL_SEGMENTS = 16
SHAPES = ("box", "cylinder", "sphere", "mesh")
MESH_SUFFIXES = (".obj", ".stl")
BACKDROP_GEOMS = ("floor",)
SENSOR_PIXEL_M = 2e-6
MAX_MESH_BYTES = 8_000_000


class SceneError(ValueError):
    """A scene file is missing or malformed."""


@dataclass(frozen=True)
class Scene:
    """A parsed scene file. ``spec`` is the JSON content (mesh objects gain a derived ``half_size``);
    ``sha256`` identifies the exact file version; ``root`` is the folder relative paths resolve against."""

    name: str
    version: int
    spec: dict[str, Any]
    sha256: str
    root: Path

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

    @property
    def table_height(self) -> float:
        """The table surface's z in the robot base frame (m)."""
        return float(self.spec["table"].get("height", 0.0))

    def resolve(self, relative: str) -> Path:
        """A path from the scene file, relative to the scene file's folder; refuses to leave that folder."""
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise SceneError(f"scene {self.name!r}: {relative!r} points outside the scene's folder")
        if not path.is_file():
            raise SceneError(f"scene {self.name!r}: file {relative!r} not found next to the scene file")
        return path


def load_scene(name_or_path: str | Path = "tabletop-v1") -> Scene:
    """Load a scene by name (a file in ``evaluator_client/scenes``) or by path, and validate it."""
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
    for key in (
        "name",
        "version",
        "robot",
        "table",
        "workspace",
        "objects",
        "regions",
        "cameras",
        "lights",
        "tasks",
        "perturbations",
    ):
        if key not in spec:
            raise SceneError(f"scene file {str(path)!r} lacks the key {key!r}")
    spec.setdefault("distractors", [])
    spec.setdefault("headlight", {"ambient": [0.3, 0.3, 0.3], "diffuse": [0.3, 0.3, 0.3]})
    spec.setdefault("control_hz", 15)
    spec.setdefault("physics_substeps", 20)
    scene = Scene(
        name=spec["name"],
        version=int(spec["version"]),
        spec=spec,
        sha256=hashlib.sha256(raw).hexdigest(),
        root=path.resolve().parent,
    )
    _validate(scene)
    return scene


def _validate(scene: Scene) -> None:
    spec = scene.spec
    if "wrist" not in spec["cameras"] or not scene.exterior_cameras:
        raise SceneError(f"scene {scene.name!r}: cameras need a 'wrist' and at least one 'exterior_*' camera")
    for name, cam in spec["cameras"].items():
        for key in ("extrinsics", "intrinsics", "resolution"):
            if key not in cam:
                raise SceneError(f"scene {scene.name!r}: camera {name!r} lacks {key!r}")
        if len(cam["extrinsics"]) != 6:
            raise SceneError(
                f"scene {scene.name!r}: camera {name!r} extrinsics must be [x, y, z, roll, pitch, yaw]"
            )
        missing = {"fx", "fy", "cx", "cy"} - set(cam["intrinsics"])
        if missing:
            raise SceneError(f"scene {scene.name!r}: camera {name!r} intrinsics lack {sorted(missing)}")
    for entry in spec["objects"] + spec["distractors"]:
        if entry.get("shape") not in SHAPES:
            raise SceneError(
                f"scene {scene.name!r}: object {entry.get('name')!r} has shape {entry.get('shape')!r}; "
                f"choose from {list(SHAPES)}"
            )
        if entry["shape"] == "mesh":
            entry["half_size"] = list(_mesh_half_size(scene, entry))
    for name in spec.get("background", {}):
        if name not in spec["cameras"]:
            raise SceneError(f"scene {scene.name!r}: background for unknown camera {name!r}")
        scene.resolve(spec["background"][name])


def _mesh_vertices(path: Path) -> np.ndarray:
    """Vertices (N, 3) of an OBJ (``v x y z`` lines) or STL (binary or ASCII) file."""
    if path.stat().st_size > MAX_MESH_BYTES:
        raise SceneError(f"mesh {path.name!r} is larger than {MAX_MESH_BYTES} bytes")
    data = path.read_bytes()
    if path.suffix.lower() == ".obj":
        rows = [
            line.split()[1:4]
            for line in data.decode("utf-8", "replace").splitlines()
            if line.startswith("v ")
        ]
        return np.asarray(rows, dtype=float)
    if _is_ascii_stl(data):
        rows = [
            line.split()[1:4] for line in data.decode("ascii", "replace").splitlines() if "vertex" in line
        ]
        return np.asarray(rows, dtype=float)
    count = int(np.frombuffer(data[80:84], dtype="<u4")[0])
    records = np.frombuffer(
        data[84 : 84 + 50 * count], dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    )
    return records["v"].reshape(-1, 3).astype(float)


def _is_ascii_stl(data: bytes) -> bool:
    return data[:5] == b"solid" and b"facet" in data[:512]


def _binary_stl(vertices: np.ndarray) -> bytes:
    """A binary STL of the triangles ``vertices`` (3 N, 3) (zero normals: MuJoCo computes its own)."""
    triangles = np.asarray(vertices, dtype="<f4").reshape(-1, 3, 3)
    records = np.zeros(len(triangles), dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")]))
    records["v"] = triangles
    return (
        b"binary STL converted from ASCII".ljust(80, b" ")
        + np.uint32(len(triangles)).tobytes()
        + records.tobytes()
    )


def _mesh_asset_name(entry: dict[str, Any]) -> str:
    return f"{entry['name']}{Path(entry['mesh']).suffix.lower()}"


def mesh_assets(scene: Scene) -> dict[str, bytes]:
    """The mesh files of the scene's mesh objects by the names :func:`build_mjcf` gives them
    (``<object name>.obj`` / ``.stl``), for ``mujoco.MjModel.from_xml_string(xml, assets=...)``; an ASCII STL
    is converted to binary (MuJoCo reads binary STL only)."""
    assets = {}
    for entry in scene.spec["objects"] + scene.spec["distractors"]:
        if entry["shape"] != "mesh":
            continue
        path = scene.resolve(entry["mesh"])
        data = path.read_bytes()
        if path.suffix.lower() == ".stl" and _is_ascii_stl(data):
            data = _binary_stl(_mesh_vertices(path))
        assets[_mesh_asset_name(entry)] = data
    return assets


def check_scene_builds(scene: Scene) -> None:
    """Compile the scene's MuJoCo model once; raise :class:`SceneError` with MuJoCo's first line when it cannot
    (a mesh it cannot decode, a degenerate mesh, ...)."""
    import mujoco

    try:
        mujoco.MjModel.from_xml_string(build_mjcf(scene), assets=mesh_assets(scene))
    except ValueError as exc:
        reason = next(iter(str(exc).splitlines()), "") or type(exc).__name__
        for entry in scene.spec["objects"] + scene.spec["distractors"]:
            if entry["shape"] == "mesh":  # MuJoCo names its asset or mesh element: name the lab's file
                for name in (_mesh_asset_name(entry), f"{entry['name']}_mesh"):
                    reason = reason.replace(f"'{name}'", repr(entry["mesh"]))
        raise SceneError(f"scene {scene.name!r}: MuJoCo cannot build it: {reason}") from exc


def _mesh_half_size(scene: Scene, entry: dict[str, Any]) -> np.ndarray:
    """Half extents (3,) m of a mesh object's bounding box after ``scale``; the mesh must be centred on its
    bounding box (so the body origin is the object's centre, as for primitives)."""
    path = scene.resolve(entry["mesh"])
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise SceneError(f"scene {scene.name!r}: mesh {entry['mesh']!r} must be one of {list(MESH_SUFFIXES)}")
    vertices = _mesh_vertices(path) * np.asarray(entry.get("scale", [1.0, 1.0, 1.0]), float)
    if vertices.size == 0:
        raise SceneError(f"scene {scene.name!r}: mesh {entry['mesh']!r} has no vertices")
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    if np.any(np.abs(low + high) / 2 > 0.002):
        raise SceneError(
            f"scene {scene.name!r}: mesh {entry['mesh']!r} must be centred on its bounding box "
            f"(its centre is at {np.round((low + high) / 2, 4).tolist()} m)"
        )
    return np.round((high - low) / 2, 5)


def _fmt(values: Any) -> str:
    return " ".join(f"{float(v):.6g}" for v in np.ravel(values))


def camera_pose_world(scene: Scene, extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An exterior camera's DROID extrinsics (base frame, OpenCV axes) -> MuJoCo world position (3,) and
    camera orientation quaternion (w, x, y, z) (MuJoCo camera axes)."""
    extrinsics = np.asarray(extrinsics, float)
    pos = extrinsics[:3] - np.array([0.0, 0.0, scene.table_height])
    return pos, mat_to_quat(camera_mat_from_opencv(euler_to_mat(extrinsics[3:])))


def right_camera_pos(pos: np.ndarray, quat: np.ndarray, baseline: float) -> np.ndarray:
    """The right imager's position: ``baseline`` m along the left camera's +x (image right)."""
    w, x, y, z = quat
    right_axis = np.array([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)])
    return np.asarray(pos, float) + baseline * right_axis


def camera_intrinsics_xml(cam: dict[str, Any]) -> str:
    """MJCF attributes for a pinhole camera with DROID/OpenCV intrinsics at ``cam['resolution']``.

    MuJoCo takes the principal point as an offset from the sensor centre, with the opposite sign to OpenCV's
    ``(cx - width / 2, cy - height / 2)`` on both axes (checked by projecting known points in the tests).
    """
    width, height = (int(v) for v in cam["resolution"])
    k = cam["intrinsics"]
    offset_x = width / 2 - float(k["cx"])
    offset_y = height / 2 - float(k["cy"])
    return (
        f'resolution="{width} {height}" sensorsize="{width * SENSOR_PIXEL_M:.6g} {height * SENSOR_PIXEL_M:.6g}" '
        f'focalpixel="{float(k["fx"]):.6g} {float(k["fy"]):.6g}" principalpixel="{offset_x:.6g} {offset_y:.6g}"'
    )


def _object_geom(entry: dict[str, Any], name: str) -> str:
    half = np.asarray(entry["half_size"], float)
    shape = entry["shape"]
    physics = 'friction="1.2 0.01 0.001" condim="4" solref="0.005 1"'
    if shape == "mesh":
        return (
            f'<geom name="{name}" type="mesh" mesh="{name}_mesh" rgba="{_fmt(entry["rgba"])}" '
            f'mass="{entry["mass"]}" {physics}/>'
        )
    if shape == "box":
        size = _fmt(half)
    elif shape == "cylinder":
        size = _fmt([half[0], half[2]])
    else:
        size = _fmt([half[0]])
    return (
        f'<geom name="{name}" type="{shape}" size="{size}" rgba="{_fmt(entry["rgba"])}" mass="{entry["mass"]}" '
        f"{physics}/>"
    )


def build_mjcf(scene: Scene) -> str:
    """The MJCF model of ``scene`` at its nominal (unperturbed) configuration; its meshes are the assets
    :func:`mesh_assets` returns."""
    spec = scene.spec
    table = spec["table"]
    robot = spec["robot"]
    substeps = int(spec["physics_substeps"])
    timestep = 1.0 / (scene.control_hz * substeps)
    cx, cy = table["center"]
    hx, hy = table["half_size"]
    thickness = table["thickness"]
    tex = table["texture"]
    base_world = np.array([0.0, 0.0, -scene.table_height])

    meshes: list[str] = []
    bodies: list[str] = []
    for entry in spec["objects"] + spec["distractors"]:
        x, y, yaw = entry.get("pose", [5.0, 5.0, 0.0])
        z = entry["half_size"][2]
        if entry["shape"] == "mesh":
            meshes.append(
                f'<mesh name="{entry["name"]}_mesh" file={quoteattr(_mesh_asset_name(entry))} '
                f'scale="{_fmt(entry.get("scale", [1, 1, 1]))}"/>'
            )
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
        pos, quat = camera_pose_world(scene, cam["extrinsics"])
        intrinsics = camera_intrinsics_xml(cam)
        cameras.append(f'<camera name="{name}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" {intrinsics}/>')
        right = right_camera_pos(pos, quat, float(cam.get("stereo_baseline", 0.12)))
        cameras.append(f'<camera name="{name}_right" pos="{_fmt(right)}" quat="{_fmt(quat)}" {intrinsics}/>')
    wrist_xml = _wrist_cameras(spec["cameras"]["wrist"])

    lights = "".join(
        f'<light name="light_{i}" pos="{_fmt(np.asarray(light["pos"]) - [0, 0, scene.table_height])}" '
        f'dir="{_fmt(light["dir"])}" diffuse="{_fmt(light["diffuse"])}" castshadow="false"/>'
        for i, light in enumerate(spec["lights"])
    )
    force = float(robot.get("finger_force", 40.0))
    headlight = spec["headlight"]
    floor_z = -scene.table_height - 0.8
    return f"""<mujoco model="{scene.name}">
  <compiler angle="radian" autolimits="true"/>
  <statistic extent="2" center="0.4 0 0.2"/>
  <option timestep="{timestep:.8g}" cone="elliptic" impratio="10" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0" numslices="14" numstacks="7" numquads="1"/>
    <global offwidth="1280" offheight="720"/>
    <map znear="0.005" zfar="40"/>
    <headlight ambient="{_fmt(headlight["ambient"])}" diffuse="{_fmt(headlight["diffuse"])}" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="table_tex" type="2d" builtin="checker" width="64" height="64"
             rgb1="{_fmt(tex["rgb1"])}" rgb2="{_fmt(tex["rgb2"])}"/>
    <material name="table_mat" texture="table_tex" texrepeat="{_fmt(tex["repeat"])}" rgba="{_fmt(table["rgba"])}"
              reflectance="0"/>
    {"".join(meshes)}
  </asset>
  <worldbody>
    <geom name="floor" type="box" size="6 6 0.05" pos="0 0 {floor_z - 0.05:.6g}" rgba="0.35 0.35 0.38 1"/>
    <geom name="table" type="box" size="{_fmt([hx, hy, thickness / 2])}" pos="{_fmt([cx, cy, -thickness / 2])}"
          material="table_mat" friction="0.6 0.01 0.001"/>
    <geom name="table_leg" type="box" size="{_fmt([hx * 0.9, hy * 0.9, (0.8 - thickness) / 2])}"
          pos="{_fmt([cx, cy, -thickness - (0.8 - thickness) / 2])}" rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"/>
    {lights}
    {"".join(cameras)}
    {"".join(bodies)}
    {franka_xml(base_pos=base_world, wrist_camera=wrist_xml)}
  </worldbody>
  <contact>
    <exclude body1="hand" body2="finger_left"/>
    <exclude body1="hand" body2="finger_right"/>
  </contact>
  <actuator>
    {franka_actuators_xml(force)}
  </actuator>
</mujoco>
"""


def _wrist_cameras(cam: dict[str, Any]) -> str:
    """The wrist camera (left and right imagers) in the hand frame, from extrinsics in the TCP frame."""
    extrinsics = np.asarray(cam["extrinsics"], float)
    pos = extrinsics[:3] + np.array([0.0, 0.0, TCP_FROM_FLANGE])
    quat = mat_to_quat(camera_mat_from_opencv(euler_to_mat(extrinsics[3:])))
    intrinsics = camera_intrinsics_xml(cam)
    right = right_camera_pos(pos, quat, float(cam.get("stereo_baseline", 0.063)))
    return (
        f'<camera name="wrist" pos="{_fmt(pos)}" quat="{_fmt(quat)}" {intrinsics}/>'
        f'<camera name="wrist_right" pos="{_fmt(right)}" quat="{_fmt(quat)}" {intrinsics}/>'
    )


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
