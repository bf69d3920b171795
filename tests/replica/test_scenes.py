"""Scene files describe a lab's own station: DROID calibration conventions, meshes, backgrounds, validation."""

import json
import shutil

import numpy as np
import pytest

from evaluator_client.episode import run_episode
from evaluator_client.replica import Replica, SceneError, load_scene
from evaluator_client.replica.scene import SCENES_DIR, check_scene_builds
from evaluator_client.replica.transforms import euler_to_mat
from policy_server.baselines import make_baseline


def _segment_centroid(robot: Replica, camera: str, geom: int) -> np.ndarray:
    ys, xs = np.nonzero(_segment(robot, camera, geom))
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


@pytest.mark.parametrize("name", ["tabletop-v1", "workbench-v1"])
def test_cameras_follow_droid_extrinsics_and_intrinsics(name):
    """An object's centre projects where OpenCV's pinhole model puts it with the file's calibration."""
    scene = load_scene(name)
    camera = scene.spec["cameras"]["exterior_1"]
    # An off-centre principal point and unequal focal lengths, so a sign or axis mix-up shows.
    camera["intrinsics"] = {"fx": 610.0, "fy": 570.0, "cx": 700.0, "cy": 320.0}
    robot = Replica("pick_place", seed=0, perturb="none", scene=scene, resolution=(640, 360))
    scale = 640 / camera["resolution"][0]
    extrinsics = np.asarray(camera["extrinsics"], float)
    to_camera = euler_to_mat(extrinsics[3:]).T
    k = camera["intrinsics"]
    for entry in scene.spec["objects"]:
        centre = robot.data.xpos[robot._obj_body[entry["name"]]] + [0.0, 0.0, scene.table_height]
        x, y, z = to_camera @ (centre - extrinsics[:3])
        expected = np.array([k["fx"] * x / z + k["cx"], k["fy"] * y / z + k["cy"]]) * scale
        rendered = _segment_centroid(robot, "exterior_1", robot._obj_geom[entry["name"]])
        assert np.allclose(rendered, expected, atol=1.5), entry["name"]
    robot.close()


def _segment(robot: Replica, camera: str, geom: int) -> np.ndarray:
    renderer = robot._renderer
    renderer.update_scene(robot.data, camera=camera)
    renderer.enable_segmentation_rendering()
    segments = renderer.render()
    renderer.disable_segmentation_rendering()
    return segments[..., 0] == geom


def _project(k: dict, point_in_camera: np.ndarray, scale: float) -> np.ndarray:
    x, y, z = point_in_camera
    return np.array([k["fx"] * x / z + k["cx"], k["fy"] * y / z + k["cy"]]) * scale


@pytest.mark.parametrize("name", ["tabletop-v1", "workbench-v1"])
def test_the_wrist_camera_sits_where_its_extrinsics_in_the_tcp_frame_put_it(name):
    """Wrist extrinsics are relative to the TCP (``observation/cartesian_position``'s frame), as DROID stores
    the hand camera's: composed with the TCP pose, OpenCV's pinhole model puts each object where it is seen."""
    scene = load_scene(name)
    camera = scene.spec["cameras"]["wrist"]
    camera["intrinsics"] = {"fx": 610.0, "fy": 570.0, "cx": 700.0, "cy": 320.0}
    robot = Replica("pick_place", seed=0, perturb="none", scene=scene, resolution=(640, 360))
    tcp = robot.observe()["observation/cartesian_position"]
    extrinsics = np.asarray(camera["extrinsics"], float)
    to_base = euler_to_mat(tcp[3:]) @ euler_to_mat(extrinsics[3:])
    position = tcp[:3] + euler_to_mat(tcp[3:]) @ extrinsics[:3]
    seen = 0
    for entry in scene.spec["objects"]:
        mask = _segment(robot, "wrist", robot._obj_geom[entry["name"]])
        if not mask.any() or mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
            continue  # out of view or cut by the frame's edge: its centroid is not its centre's image
        centre = robot.data.xpos[robot._obj_body[entry["name"]]] + [0.0, 0.0, scene.table_height]
        expected = _project(
            camera["intrinsics"], to_base.T @ (centre - position), 640 / camera["resolution"][0]
        )
        ys, xs = np.nonzero(mask)
        # a 5 cm block 30 cm away shows mostly its top face: its centroid lies within 3 px of its centre's image
        assert np.allclose([xs.mean() + 0.5, ys.mean() + 0.5], expected, atol=3.0), entry["name"]
        seen += 1
    assert seen >= 1
    robot.close()


def test_the_right_imager_is_offset_by_the_stereo_baseline():
    """``exterior_1_right`` is the left imager moved ``stereo_baseline`` m along its own +x (image right)."""
    scene = load_scene("tabletop-v1")
    camera = scene.spec["cameras"]["exterior_1"]
    robot = Replica("pick_place", seed=0, perturb="none", scene=scene, resolution=(640, 360))
    extrinsics = np.asarray(camera["extrinsics"], float)
    baseline = camera["stereo_baseline"]
    for entry in scene.spec["objects"]:
        centre = robot.data.xpos[robot._obj_body[entry["name"]]] + [0.0, 0.0, scene.table_height]
        in_left = euler_to_mat(extrinsics[3:]).T @ (centre - extrinsics[:3])
        expected = _project(
            camera["intrinsics"], in_left - [baseline, 0.0, 0.0], 640 / camera["resolution"][0]
        )
        ys, xs = np.nonzero(_segment(robot, "exterior_1_right", robot._obj_geom[entry["name"]]))
        assert np.allclose([xs.mean() + 0.5, ys.mean() + 0.5], expected, atol=1.5), entry["name"]
    robot.close()


def test_the_second_scene_loads_with_its_mesh_and_table_height():
    scene = load_scene("workbench-v1")
    assert scene.table_height == pytest.approx(-0.02)
    hex_block = scene.object_spec("hex_block")
    assert hex_block["shape"] == "mesh"
    assert hex_block["half_size"] == pytest.approx([0.027, 0.02338, 0.025])
    robot = Replica("pick_place", seed=0, perturb="none", scene=scene)
    assert robot.task.instruction == "put the green hex block on the blue tray"
    start = robot.privileged_state()["object_pos"].copy()
    # The mesh rests on the table, whose surface is 2 cm below the robot base (base-frame z = -0.02 + 0.025).
    assert start[2] == pytest.approx(-0.02 + 0.025, abs=1e-6)
    for _ in range(15):
        robot.apply(np.zeros(7))
    assert np.allclose(robot.privileged_state()["object_pos"], start, atol=0.002)
    robot.close()


def test_the_expert_picks_the_mesh_object_in_the_second_scene():
    policy = make_baseline("expert")
    robot = Replica("pick_place", seed=1, scene="workbench-v1", action_space=policy.metadata["action_space"])
    result = run_episode(
        robot,
        policy,
        prompt=robot.task.instruction,
        requirements=policy.metadata,
        max_steps=250,
        stop_on_success_steps=5,
    )
    assert result.success and result.progress == 100
    robot.close()


def test_the_background_photo_is_composited_behind_the_station_only():
    with_photo = Replica("push", seed=0, perturb="none", scene="workbench-v1")
    scene = load_scene("workbench-v1")
    del scene.spec["background"]
    plain = Replica("push", seed=0, perturb="none", scene=scene)
    composited = with_photo.render("exterior_1")
    rendered = plain.render("exterior_1")
    photo = with_photo._backgrounds["exterior_1"]
    changed = np.any(composited != rendered, axis=-1)
    assert 0.2 < changed.mean() < 0.9
    # Every changed pixel is the photo's; the robot, table and objects are untouched.
    assert np.array_equal(composited[changed], photo[changed])
    # The wrist camera has no photo in this scene and is rendered as is.
    assert np.array_equal(with_photo.render("wrist"), plain.render("wrist"))
    with_photo.close()
    plain.close()


def _scene_copy(tmp_path, edit) -> str:
    folder = tmp_path / "station"
    shutil.copytree(SCENES_DIR, folder)
    spec = json.loads((folder / "workbench-v1.json").read_text())
    edit(spec, folder)
    path = folder / "my-station.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_a_lab_scene_file_is_loaded_by_path(tmp_path):
    def edit(spec, folder):
        spec["name"] = "my-station"
        spec["objects"][0]["scale"] = [1.2, 1.2, 1.0]

    scene = load_scene(_scene_copy(tmp_path, edit))
    assert scene.name == "my-station"
    assert scene.object_spec("hex_block")["half_size"] == pytest.approx([0.0324, 0.02806, 0.025], abs=1e-5)
    Replica("pick_place", scene=scene).close()


def test_the_lab_s_table_and_lights_are_the_model_s(tmp_path):
    """Table size, centre and height, and each light, from the file (MuJoCo world = base frame less the height)."""

    def edit(spec, folder):
        spec["table"].update(center=[0.6, 0.05], half_size=[0.4, 0.5], height=-0.1)
        spec["lights"] = [{"pos": [0.3, -0.4, 1.6], "dir": [0.0, 0.3, -1.0], "diffuse": [0.9, 0.6, 0.3]}]

    robot = Replica("push", seed=0, perturb="none", scene=load_scene(_scene_copy(tmp_path, edit)))
    table = robot.model.geom("table")
    assert table.size[:2] == pytest.approx([0.4, 0.5])
    assert robot.model.geom_pos[table.id][:2] == pytest.approx([0.6, 0.05])
    assert robot.model.geom_pos[table.id][2] + table.size[2] == pytest.approx(0.0)  # the surface is world z 0
    assert robot.data.xpos[robot.model.body("link0").id][2] == pytest.approx(0.1)  # the base, 10 cm above it
    assert robot.model.nlight == 1
    assert robot.model.light_pos[0] == pytest.approx([0.3, -0.4, 1.7])
    assert robot.model.light_diffuse[0] == pytest.approx([0.9, 0.6, 0.3])
    robot.close()


def _box_triangles(half: list[float]) -> np.ndarray:
    """The 12 triangles (12, 3, 3) of a box centred on the origin."""
    corners = np.array(
        [[x, y, z] for x in (-half[0], half[0]) for y in (-half[1], half[1]) for z in (-half[2], half[2])]
    )
    faces = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1)]
    faces += [(2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)]
    return corners[np.array(faces)]


def _stl(triangles: np.ndarray, kind: str) -> bytes:
    """STL as CAD tools export it: binary (80-byte header, count, 50-byte records) or ASCII."""
    if kind == "binary":
        records = np.zeros(len(triangles), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
        records["v"] = triangles
        return b"exported by a CAD tool".ljust(80) + np.uint32(len(triangles)).tobytes() + records.tobytes()
    lines = ["solid lab_part"]
    for triangle in triangles:
        lines += ["  facet normal 0 0 0", "    outer loop"]
        lines += [f"      vertex {x:.6f} {y:.6f} {z:.6f}" for x, y, z in triangle]
        lines += ["    endloop", "  endfacet"]
    return ("\n".join([*lines, "endsolid lab_part"]) + "\n").encode()


@pytest.mark.parametrize("kind", ["binary", "ascii"])
def test_a_lab_stl_mesh_is_built_and_rests_on_the_table(tmp_path, kind):
    """MuJoCo decodes binary STL only; an ASCII export works the same (converted when the model is built)."""

    def edit(spec, folder):
        (folder / "meshes" / "part.stl").write_bytes(_stl(_box_triangles([0.03, 0.02, 0.025]), kind))
        spec["objects"][0]["mesh"] = "meshes/part.stl"

    scene = load_scene(_scene_copy(tmp_path, edit))
    assert scene.object_spec("hex_block")["half_size"] == pytest.approx([0.03, 0.02, 0.025])
    check_scene_builds(scene)
    robot = Replica("pick_place", seed=0, perturb="none", scene=scene)
    geom = robot._obj_geom["hex_block"]
    assert robot.model.geom_type[geom] == 7  # mjGEOM_MESH
    assert robot.model.mesh_vertnum[robot.model.geom_dataid[geom]] == 8  # the box's corners
    start = robot.privileged_state()["object_pos"].copy()
    assert start[2] == pytest.approx(scene.table_height + 0.025, abs=1e-6)
    for _ in range(15):
        robot.apply(np.zeros(7))
    assert np.allclose(robot.privileged_state()["object_pos"], start, atol=0.002)
    robot.close()


@pytest.mark.parametrize(
    ("mesh", "data", "message"),
    [
        (
            "flat.obj",
            b"v -0.01 -0.01 0\nv 0.01 0.01 0\nv 0.01 -0.01 0\nv -0.01 0.01 0\nf 1 2 3\nf 1 4 2\n",
            "coplanar",
        ),
        (
            "cut.stl",
            _stl(_box_triangles([0.03, 0.02, 0.025]), "binary")[:-50],
            "'meshes/cut.stl' has wrong size",
        ),
    ],
)
def test_a_mesh_mujoco_cannot_use_is_a_scene_error_naming_the_file(tmp_path, mesh, data, message):
    def edit(spec, folder):
        (folder / "meshes" / mesh).write_bytes(data)
        spec["objects"][0]["mesh"] = f"meshes/{mesh}"

    scene = load_scene(_scene_copy(tmp_path, edit))  # its bounding box is fine: only MuJoCo can tell
    with pytest.raises(SceneError, match=f"MuJoCo cannot build it: .*{message}"):
        check_scene_builds(scene)


def _offset_mesh(spec, folder):
    (folder / "meshes" / "offset.obj").write_text("v 0 0 0\nv 0.1 0.1 0.1\nv 0.1 0 0\nf 1 2 3\n")
    spec["objects"][0]["mesh"] = "meshes/offset.obj"


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda spec, folder: spec["objects"][0].update(mesh="../../etc/passwd.obj"),
            "outside the scene's folder",
        ),
        (lambda spec, folder: spec["objects"][0].update(mesh="meshes/missing.obj"), "not found"),
        (lambda spec, folder: spec["objects"][0].update(shape="cone"), "shape 'cone'"),
        (lambda spec, folder: spec["cameras"]["exterior_1"].pop("intrinsics"), "lacks 'intrinsics'"),
        (lambda spec, folder: spec["cameras"]["exterior_1"]["intrinsics"].pop("cy"), "lack \\['cy'\\]"),
        (lambda spec, folder: spec["background"].update(exterior_9="backgrounds/x.png"), "unknown camera"),
        (_offset_mesh, "centred on its bounding box"),
    ],
)
def test_malformed_scene_files_are_refused_with_the_field_named(tmp_path, edit, message):
    with pytest.raises(SceneError, match=message):
        load_scene(_scene_copy(tmp_path, edit))


@pytest.mark.parametrize("axis", ["positions", "colours", "lighting", "camera", "distractors"])
def test_every_perturbation_axis_works_on_the_second_scene(axis):
    nominal = Replica("pick_place", seed=21, perturb="none", scene="workbench-v1")
    perturbed = Replica("pick_place", seed=21, perturb=[axis], scene="workbench-v1")
    seed = 21
    while axis == "distractors" and not perturbed.perturbation["distractors"]:
        seed += 1
        perturbed.reset(seed)
    assert perturbed.perturbation[axis]
    json.dumps(perturbed.scene_notes())
    if axis == "positions":
        assert perturbed.progress() < 5 and not perturbed.success()
    differs = [
        not np.array_equal(nominal.render(cam), perturbed.render(cam)) for cam in ("exterior_1", "wrist")
    ]
    assert any(differs)
    nominal.close()
    perturbed.close()
