"""Replica tasks: instruction templates, instruction parsing, staged progress and success checks.

Three task kinds:

- ``pick_place``: pick the object up and leave it inside the target region (a bowl or a flat pad).
- ``push``: push the object along the table into a flat target pad.
- ``stack``: pick the object up and leave it resting on top of another block.

Progress (0-100) is a continuous, staged function of the simulator state. For the grasping tasks:
reach 0-25 (TCP distance to the object), grasp 30, lift 30-45 (object height above rest, 5 cm full), transport
45-80 (horizontal distance to the target while lifted), over the target (held or released, not yet at rest)
85, success 100. For push:
reach 0-25 (TCP distance to the point behind the object), transport 25-90 (horizontal distance to the
target), success 100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from evaluator_client.replica.scene import Scene

TASK_KINDS = ("pick_place", "push", "stack")
LIFT_FULL_M = 0.05
REST_TOLERANCE_M = 0.012


class UnknownTaskError(ValueError):
    """An instruction or task name that the replica cannot map to one of its tasks."""


@dataclass(frozen=True)
class TaskSpec:
    """One concrete task: which object goes where. ``target`` is a region name or, for stack, an object name."""

    kind: str
    object: str
    target: str
    instruction: str


@dataclass(frozen=True)
class TaskState:
    """The simulator quantities progress and success depend on (world frame, metres).

    ``object_pos``/``target_pos``: (3,) centres; ``object_half``: (3,) object half extents; ``tcp_pos``: (3,);
    ``grasped``: both fingers touch the object; ``target_ok``: for stack, the base block still rests on the table.
    """

    object_pos: np.ndarray
    object_half: np.ndarray
    target_pos: np.ndarray
    tcp_pos: np.ndarray
    grasped: bool
    target_ok: bool


def task_default(scene: Scene, kind: str) -> TaskSpec:
    """The scene's default task of ``kind`` with its instruction rendered from the template."""
    if kind not in scene.spec["tasks"]:
        raise UnknownTaskError(
            f"unknown task {kind!r}; tasks in scene {scene.name!r}: {sorted(scene.spec['tasks'])}"
        )
    entry = scene.spec["tasks"][kind]
    return _task(scene, kind, entry["object"], entry["target"])


def _task(scene: Scene, kind: str, obj: str, target: str) -> TaskSpec:
    template = scene.spec["tasks"][kind]["template"]
    target_label = (
        scene.object_spec(target)["label"] if kind == "stack" else scene.region_spec(target)["label"]
    )
    instruction = template.format(object=scene.object_spec(obj)["label"], target=target_label)
    return TaskSpec(kind=kind, object=obj, target=target, instruction=instruction)


def task_from_instruction(scene: Scene, text: str) -> TaskSpec:
    """Map a task name (``"pick_place"``) or a typed instruction (``"put the red block in the bowl"``) to a task.

    The kind comes from the verb (stack / push, slide / put, place, pick, move), the object from the first
    object label or colour mentioned, the target from the remaining labels; what is not mentioned falls back
    to the scene's default task of that kind.
    """
    normalized = " ".join(re.findall(r"[a-z_]+", text.lower()))
    if normalized in TASK_KINDS:
        return task_default(scene, normalized)
    words = set(normalized.split())
    if words & {"stack", "stacking"} or "on top of" in normalized:
        kind = "stack"
    elif words & {"push", "slide", "shove", "nudge"}:
        kind = "push"
    elif words & {"put", "place", "pick", "move", "drop", "bring", "pickplace"}:
        kind = "pick_place"
    else:
        raise UnknownTaskError(
            f"cannot tell the task from {text!r}: use a task name {list(TASK_KINDS)} or an instruction such as "
            f"{task_default(scene, 'pick_place').instruction!r}"
        )
    default = task_default(scene, kind)
    mentioned = _mentioned_objects(scene, normalized)
    obj = mentioned[0] if mentioned else default.object
    if kind == "stack":
        others = [name for name in mentioned[1:] if name != obj]
        target = others[0] if others else (default.target if default.target != obj else default.object)
    else:
        regions = _mentioned_regions(scene, normalized)
        target = regions[0] if regions else default.target
    if kind == "push" and scene.region_spec(target)["kind"] != "pad":
        raise UnknownTaskError(f"cannot push into the {scene.region_spec(target)['label']}: it has walls")
    if obj == target:
        raise UnknownTaskError(f"the object and the target are the same in {text!r}")
    return _task(scene, kind, obj, target)


def _mentioned_objects(scene: Scene, text: str) -> list[str]:
    """Task objects named in ``text`` (by label, else by colour), in order of mention."""
    hits: list[tuple[int, str]] = []
    for entry in scene.spec["objects"]:
        at = text.find(entry["label"])
        if at < 0:
            match = re.search(rf"\b{entry['colour']}\b", text)
            at = match.start() if match else -1
        if at >= 0:
            hits.append((at, entry["name"]))
    return [name for _, name in sorted(hits)]


def _mentioned_regions(scene: Scene, text: str) -> list[str]:
    hits: list[tuple[int, str]] = []
    for region in scene.spec["regions"]:
        words = [region["label"], *region["label"].split()]
        positions = [m.start() for w in words for m in re.finditer(rf"\b{w}\b", text)]
        if positions:
            hits.append((min(positions), region["name"]))
    return [name for _, name in sorted(hits)]


def in_region(
    scene: Scene, region_name: str, region_pos: np.ndarray, point: np.ndarray, margin: float
) -> bool:
    """Whether ``point`` (3,) lies horizontally inside the region, at least ``margin`` m from its edge."""
    region = scene.region_spec(region_name)
    delta = point[:2] - region_pos[:2]
    if region["kind"] == "bowl":
        return bool(np.hypot(*delta) <= region["radius"] - region["wall_thickness"] - margin)
    half = np.asarray(region["half_size"], float)
    return bool(np.all(np.abs(delta) <= half - margin + 1e-9))


def task_success(scene: Scene, task: TaskSpec, state: TaskState) -> bool:
    """Whether the task is achieved: the object resting at its goal (released, except for push)."""
    half = state.object_half
    if task.kind == "push":
        resting = state.object_pos[2] < half[2] + REST_TOLERANCE_M
        return resting and in_region(scene, task.target, state.target_pos, state.object_pos, 0.0)
    if state.grasped:
        return False
    if task.kind == "stack":
        return bool(state.target_ok and _over_target(scene, task, state) and _on_top(state))
    resting = state.object_pos[2] < half[2] + REST_TOLERANCE_M
    return resting and _over_target(scene, task, state)


def _over_target(scene: Scene, task: TaskSpec, state: TaskState) -> bool:
    if task.kind == "stack":
        return bool(np.hypot(*(state.object_pos[:2] - state.target_pos[:2])) < state.object_half[0])
    return in_region(scene, task.target, state.target_pos, state.object_pos, state.object_half[0] * 0.5)


def _on_top(state: TaskState) -> bool:
    return bool(
        abs(state.object_pos[2] - (state.target_pos[2] + 2 * state.object_half[2])) < REST_TOLERANCE_M
    )


def task_progress(scene: Scene, task: TaskSpec, state: TaskState, start: TaskState) -> float:
    """Staged progress in [0, 100] for the current ``state``; ``start`` is the state at reset (for scales)."""
    if task_success(scene, task, state):
        return 100.0
    if task.kind == "push":
        return _push_progress(state, start)
    rest_z = state.object_half[2] if task.kind != "stack" else start.object_pos[2]
    lifted_or_placed = state.grasped or state.object_pos[2] > rest_z + 0.01 or task.kind != "stack"
    if _over_target(scene, task, state) and lifted_or_placed:
        return 85.0
    reach0 = max(float(np.linalg.norm(start.tcp_pos - start.object_pos)), 0.05)
    reach = 25.0 * _unit(1.0 - np.linalg.norm(state.tcp_pos - state.object_pos) / reach0)
    if not state.grasped:
        return reach
    lift = _unit((state.object_pos[2] - rest_z) / LIFT_FULL_M)
    if lift < 1.0:
        return 30.0 + 15.0 * lift
    transport0 = max(float(np.hypot(*(start.object_pos[:2] - start.target_pos[:2]))), 0.05)
    remaining = np.hypot(*(state.object_pos[:2] - state.target_pos[:2]))
    return 45.0 + 35.0 * _unit(1.0 - remaining / transport0)


def _push_progress(state: TaskState, start: TaskState) -> float:
    def behind(s: TaskState) -> np.ndarray:
        direction = s.target_pos[:2] - s.object_pos[:2]
        direction /= max(np.linalg.norm(direction), 1e-6)
        point = s.object_pos.copy()
        point[:2] -= direction * (s.object_half[0] + 0.02)
        return point

    reach0 = max(float(np.linalg.norm(start.tcp_pos - behind(start))), 0.05)
    reach = 25.0 * _unit(1.0 - np.linalg.norm(state.tcp_pos - behind(state)) / reach0)
    transport0 = max(float(np.hypot(*(start.object_pos[:2] - start.target_pos[:2]))), 0.05)
    remaining = np.hypot(*(state.object_pos[:2] - state.target_pos[:2]))
    return reach + 65.0 * _unit(1.0 - remaining / transport0)


def _unit(x: float) -> float:
    return float(min(max(x, 0.0), 1.0))
