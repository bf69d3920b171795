"""Seeded scene perturbations.

Each axis draws from its own generator seeded by ``(seed, axis index)``, so switching one axis on or off never
changes the values drawn for another. Every value is returned as plain JSON data so the client can store it in
the session's scene notes and a lab can rebuild the exact start scene.

Axes:

- ``positions``: task object and target region positions (uniform in the workspace, a minimum separation
  between all items) and object yaw.
- ``colours``: object shade (brightness within its named colour, so instructions stay true), table tint and
  texture repeat.
- ``lighting``: light directions, intensities and the ambient level.
- ``camera``: exterior camera extrinsics (position and orientation, DROID's ``[x, y, z, roll, pitch, yaw]``)
  and focal length (a scale on fx, fy), the stereo pair moving as one rig.
- ``distractors``: 0..max extra objects from the scene's distractor pool at free positions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from evaluator_client.replica.scene import Scene
from evaluator_client.replica.tasks import TaskSpec

AXES = ("positions", "colours", "lighting", "camera", "distractors")
DEFAULT_AXES = ("positions",)


class PerturbationError(ValueError):
    """An unknown perturbation axis."""


def normalize_axes(perturb: Iterable[str] | str | None) -> tuple[str, ...]:
    """``None`` -> the default axes, ``"all"`` -> every axis, ``"none"`` -> nominal scene; else validate names."""
    if perturb is None:
        return DEFAULT_AXES
    if isinstance(perturb, str):
        if perturb == "all":
            return AXES
        if perturb == "none":
            return ()
        perturb = [p.strip() for p in perturb.split(",") if p.strip()]
    axes = tuple(dict.fromkeys(perturb))
    unknown = [a for a in axes if a not in AXES]
    if unknown:
        raise PerturbationError(f"unknown perturbation axes {unknown}; known axes: {list(AXES)}")
    return axes


def sample_perturbation(scene: Scene, task: TaskSpec, seed: int, axes: tuple[str, ...]) -> dict[str, Any]:
    """Values for every axis in ``axes`` drawn from ``seed``; axes left out keep the scene's nominal values."""
    spec = scene.spec
    ranges = spec["perturbations"]
    values: dict[str, Any] = {}

    def rng(axis: str) -> np.random.Generator:
        return np.random.default_rng([int(seed), AXES.index(axis)])

    placed = _nominal_positions(scene)
    if "positions" in axes:
        placed = _sample_positions(scene, task, rng("positions"), ranges["positions"])
        values["positions"] = placed
    if "distractors" in axes:
        gen = rng("distractors")
        count = int(gen.integers(0, ranges["distractors"]["max_count"] + 1))
        pool = [entry["name"] for entry in spec["distractors"]]
        chosen = [pool[i] for i in sorted(gen.choice(len(pool), size=count, replace=False))]
        occupied = [np.array(p[:2]) for p in placed.values()]
        distractors: dict[str, list[float]] = {}
        for name in chosen:
            xy = _free_spot(scene, gen, occupied, ranges["positions"]["min_separation"])
            occupied.append(xy)
            distractors[name] = [
                round(float(xy[0]), 5),
                round(float(xy[1]), 5),
                round(float(gen.uniform(-np.pi, np.pi)), 5),
            ]
        values["distractors"] = distractors
    if "colours" in axes:
        gen = rng("colours")
        col = ranges["colours"]
        shades = {
            entry["name"]: round(float(gen.uniform(1 - col["object_shade"], 1 + col["object_shade"])), 4)
            for entry in spec["objects"]
        }
        tint = np.clip(1.0 + gen.uniform(-col["table_tint"], col["table_tint"], size=3), 0.3, 1.5)
        repeat = int(gen.integers(col["texture_repeat"][0], col["texture_repeat"][1] + 1))
        values["colours"] = {"object_shade": shades, "table_tint": _round(tint), "texture_repeat": repeat}
    if "lighting" in axes:
        gen = rng("lighting")
        light = ranges["lighting"]
        lights = []
        for entry in spec["lights"]:
            direction = np.asarray(entry["dir"], float) + gen.uniform(
                -light["direction"], light["direction"], 3
            )
            direction[2] = -abs(direction[2]) - 0.2
            direction /= np.linalg.norm(direction)
            scale = gen.uniform(*light["intensity"])
            lights.append({"dir": _round(direction), "diffuse": _round(np.asarray(entry["diffuse"]) * scale)})
        values["lighting"] = {"lights": lights, "ambient": round(float(gen.uniform(*light["ambient"])), 4)}
    if "camera" in axes:
        gen = rng("camera")
        cam = ranges["camera"]
        cameras = {}
        for name in scene.exterior_cameras:
            nominal = np.asarray(spec["cameras"][name]["extrinsics"], float)
            shift = np.concatenate(
                [
                    gen.uniform(-cam["position"], cam["position"], 3),
                    gen.uniform(-cam["rotation"], cam["rotation"], 3),
                ]
            )
            cameras[name] = {
                "extrinsics": _round(nominal + shift),
                "focal_scale": round(float(1.0 + gen.uniform(-cam["focal"], cam["focal"])), 4),
            }
        values["camera"] = cameras
    return values


def _round(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in np.ravel(values)]


def _nominal_positions(scene: Scene) -> dict[str, list[float]]:
    placed = {entry["name"]: list(entry["pose"]) for entry in scene.spec["objects"]}
    placed.update({region["name"]: list(region["pos"]) for region in scene.spec["regions"]})
    return placed


def _sample_positions(
    scene: Scene, task: TaskSpec, gen: np.random.Generator, ranges: dict[str, Any]
) -> dict[str, list[float]]:
    """Regions first (they are larger), then objects; (x, y) for regions, (x, y, yaw) for objects."""
    occupied: list[np.ndarray] = []
    placed: dict[str, list[float]] = {}
    for region in scene.spec["regions"]:
        radius = region.get("radius", max(region.get("half_size", [0.0, 0.0])))
        xy = _free_spot(scene, gen, occupied, ranges["min_separation"] + radius, shrink=radius)
        occupied.append(xy)
        placed[region["name"]] = [round(float(xy[0]), 5), round(float(xy[1]), 5)]
    for entry in scene.spec["objects"]:
        xy = _free_spot(scene, gen, occupied, ranges["min_separation"])
        occupied.append(xy)
        yaw = gen.uniform(-ranges["yaw_range"], ranges["yaw_range"])
        placed[entry["name"]] = [round(float(xy[0]), 5), round(float(xy[1]), 5), round(float(yaw), 5)]
    return placed


def _free_spot(
    scene: Scene,
    gen: np.random.Generator,
    occupied: list[np.ndarray],
    separation: float,
    shrink: float = 0.0,
) -> np.ndarray:
    """A uniform (x, y) in the workspace at least ``separation`` m from every occupied spot.

    Rejection sampling with a fixed number of draws keeps the result a pure function of the generator; when the
    workspace is too crowded the farthest candidate is taken.
    """
    ws = scene.spec["workspace"]
    low = np.array([ws["x"][0] + shrink, ws["y"][0] + shrink])
    high = np.array([ws["x"][1] - shrink, ws["y"][1] - shrink])
    candidates = gen.uniform(low, high, size=(64, 2))
    if not occupied:
        return candidates[0]
    dists = np.min(np.linalg.norm(candidates[:, None, :] - np.asarray(occupied)[None, :, :], axis=-1), axis=1)
    ok = np.flatnonzero(dists >= separation)
    return candidates[ok[0]] if ok.size else candidates[int(np.argmax(dists))]
