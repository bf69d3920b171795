"""Versioned public releases: one ranking snapshot's published data in the LeRobot dataset v3 layout.

A release holds the snapshot's comparisons exactly as fitted, and every published session (see
``arena.selectors.public``: revealed, both owners publish their episodes) with its two episodes: trajectories
as LeRobot frames, videos as one MP4 per episode and camera, progress, choice, the reason where the lab
publishes it. Layout (``<prefix>`` = ``releases/v<version>/``)::

    meta/info.json                                   LeRobot v3: codebase_version "v3.0", fps, features, paths
    meta/tasks.parquet                               task_index, task
    meta/episodes/chunk-000/file-000.parquet         one row per episode (LeRobot v3 columns + arena_*)
    data/chunk-000/file-000.parquet                  one row per control step of every episode
    videos/observation.images.<camera>/chunk-000/file-<n>.mp4   one file per episode (file index in episodes)
    arena/sessions.parquet                           one row per session: its A and B episode indices, choice...
    arena/comparisons.csv                            the snapshot's fitted rows; sha256 = the snapshot's data_hash
    README.md                                        this layout, the licence terms, how to verify
    manifest.json                                    every other file: path, size, sha256; and the data hash

``data_hash`` is the SHA-256 of the manifest's canonical file list (``json.dumps(files, sort_keys=True,
separators=(",", ":"))``), so equal data gives an equal hash. The archive ``<prefix>../v<version>.tar`` holds
every file. The build streams: sessions are read in batches, each trajectory and video is copied through a
temporary folder one at a time, and Parquet files are written a row group per episode.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from arena.errors import Conflict, NotFound
from arena.models import RankingSnapshot, Release, Trajectory, Video
from arena.selectors.leaderboard import fitted_rows_csv
from arena.selectors.public import published_session_summary, published_sessions, robot_type, scene_of
from arena.storage import CHUNK_BYTES, StorageError, get_storage

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
FPS = 15
CHUNKS_SIZE = 1000
DATA_FILE_MAX_BYTES = 100 * 1024 * 1024
ACTION_DIM = 8
BATCH = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"

FRAME_SCHEMA = pa.schema(
    [
        pa.field("observation.state", pa.list_(pa.float32(), 8)),
        pa.field("observation.cartesian_position", pa.list_(pa.float32(), 6)),
        pa.field("action", pa.list_(pa.float32(), ACTION_DIM)),
        pa.field("policy.chunk_index", pa.int64()),
        pa.field("policy.chunk_start", pa.bool_()),
        pa.field("policy.latency_ms", pa.float32()),
        pa.field("arena.elapsed_s", pa.float64()),
        pa.field("timestamp", pa.float32()),
        pa.field("frame_index", pa.int64()),
        pa.field("episode_index", pa.int64()),
        pa.field("index", pa.int64()),
        pa.field("task_index", pa.int64()),
    ]
)
FEATURES = {
    "observation.state": {
        "dtype": "float32",
        "shape": [8],
        "names": [*(f"joint_{i}" for i in range(1, 8)), "gripper"],
    },
    "observation.cartesian_position": {
        "dtype": "float32",
        "shape": [6],
        "names": ["x", "y", "z", "roll", "pitch", "yaw"],
    },
    "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": None},
    "policy.chunk_index": {"dtype": "int64", "shape": [1], "names": None},
    "policy.chunk_start": {"dtype": "bool", "shape": [1], "names": None},
    "policy.latency_ms": {"dtype": "float32", "shape": [1], "names": None},
    "arena.elapsed_s": {"dtype": "float64", "shape": [1], "names": None},
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


def release_prefix(version: int) -> str:
    return f"{settings.ARENA_RELEASE_PREFIX}v{version}/"


def archive_key(version: int) -> str:
    return f"{settings.ARENA_RELEASE_PREFIX}v{version}.tar"


def data_hash_of(files: list[dict[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of a manifest's file list."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _copy_object(storage, key: str, path: Path, limit: int) -> bool:
    """Copy one stored object to ``path`` in chunks; False when it is missing or larger than ``limit``."""
    written = 0
    try:
        with open(path, "wb") as out:
            for chunk in storage.open(key=key):
                written += len(chunk)
                if written > limit:
                    return False
                out.write(chunk)
    except StorageError:
        return False
    return True


def _video_seconds(path: Path) -> float:
    import av  # PyAV: needed by the release job only (probing the videos it copies)

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return float(container.duration or 0) / 1_000_000


def _frames(table: pa.Table, *, episode: int, first_index: int, task_index: int) -> pa.Table:
    """The trajectory's rows as LeRobot frames (see FRAME_SCHEMA); actions of 7 values padded with NaN."""
    n = table.num_rows
    joints = np.asarray(table.column("observation.joint_position").to_pylist(), dtype=np.float32).reshape(
        n, 7
    )
    gripper = table.column("observation.gripper_position").to_numpy().astype(np.float32).reshape(n, 1)
    actions = np.full((n, ACTION_DIM), np.nan, dtype=np.float32)
    raw = table.column("action").to_pylist()
    width = len(raw[0]) if n else ACTION_DIM
    actions[:, :width] = np.asarray(raw, dtype=np.float32).reshape(n, width)
    latency = table.column("latency_ms").to_numpy(zero_copy_only=False)
    state = np.concatenate([joints, gripper], axis=1)
    cartesian = np.asarray(table.column("observation.cartesian_position").to_pylist(), dtype=np.float32)

    def fixed(values: np.ndarray, size: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), size)

    return pa.table(
        {
            "observation.state": fixed(state, 8),
            "observation.cartesian_position": fixed(cartesian.reshape(n, 6), 6),
            "action": fixed(actions, ACTION_DIM),
            "policy.chunk_index": pa.array(table.column("chunk_index").to_numpy().astype(np.int64)),
            "policy.chunk_start": table.column("chunk_start"),
            "policy.latency_ms": pa.array(np.asarray(latency, dtype=np.float32)),
            "arena.elapsed_s": table.column("timestamp"),
            "timestamp": pa.array(np.arange(n, dtype=np.float32) / FPS),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, episode, dtype=np.int64)),
            "index": pa.array(np.arange(first_index, first_index + n, dtype=np.int64)),
            "task_index": pa.array(np.full(n, task_index, dtype=np.int64)),
        },
        schema=FRAME_SCHEMA,
    )


class _Builder:
    """Writes one release into ``root`` (a temporary folder), streaming."""

    def __init__(self, root: Path, snapshot: RankingSnapshot) -> None:
        self.root = root
        self.snapshot = snapshot
        self.storage = get_storage()
        self.tasks: dict[str, int] = {}
        self.cameras: dict[str, dict[str, Any]] = {}
        self.episode_rows: list[dict[str, Any]] = []
        self.session_rows: list[dict[str, Any]] = []
        self.total_frames = 0
        self.episode = 0
        self.data_file = 0
        self.data_writer: pq.ParquetWriter | None = None
        self.video_files: dict[str, int] = {}
        self.scratch = root.parent / "scratch"
        self.scratch.mkdir(exist_ok=True)

    def path(self, relative: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _data(self) -> pq.ParquetWriter:
        if self.data_writer is not None and self.path(self._data_rel()).stat().st_size > DATA_FILE_MAX_BYTES:
            self.data_writer.close()
            self.data_writer = None
            self.data_file += 1
        if self.data_writer is None:
            self.data_writer = pq.ParquetWriter(
                str(self.path(self._data_rel())), FRAME_SCHEMA, compression="zstd"
            )
        return self.data_writer

    def _data_rel(self) -> str:
        return DATA_PATH.format(
            chunk_index=self.data_file // CHUNKS_SIZE, file_index=self.data_file % CHUNKS_SIZE
        )

    def add_episode(self, session, slot: str, trajectory: Trajectory, videos: list[Video]) -> int | None:
        """Append one episode; returns its index, or None when its trajectory cannot be read."""
        local = self.scratch / "trajectory.parquet"
        if not _copy_object(self.storage, trajectory.object_key, local, settings.TRAJECTORY_MAX_BYTES):
            log.warning("release: trajectory %s unreadable, episode left out", trajectory.pk)
            return None
        table = pq.read_table(str(local))
        task_index = self.tasks.setdefault(session.task, len(self.tasks))
        index = self.episode
        writer = self._data()
        writer.write_table(
            _frames(table, episode=index, first_index=self.total_frames, task_index=task_index)
        )
        policy = session.policy_in(slot)
        row: dict[str, Any] = {
            "episode_index": index,
            "tasks": [session.task],
            "length": table.num_rows,
            "data/chunk_index": self.data_file // CHUNKS_SIZE,
            "data/file_index": self.data_file % CHUNKS_SIZE,
            "dataset_from_index": self.total_frames,
            "dataset_to_index": self.total_frames + table.num_rows,
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
            "arena_session_id": str(session.id),
            "arena_slot": slot,
            "arena_policy": policy.slug,
            "arena_action_space": json.loads(table.schema.metadata.get(b"arena", b"{}")).get(
                "action_space", ""
            ),
            "arena_action_dim": len(table.column("action")[0]) if table.num_rows else 0,
        }
        for video in videos:
            key = f"observation.images.{video.camera}"
            file_index = self.video_files.get(key, 0)
            relative = VIDEO_PATH.format(
                video_key=key, chunk_index=file_index // CHUNKS_SIZE, file_index=file_index % CHUNKS_SIZE
            )
            target = self.path(relative)
            if not _copy_object(self.storage, video.object_key, target, settings.VIDEO_MAX_BYTES):
                target.unlink(missing_ok=True)
                continue
            import av

            try:  # a lab's file matched its checksum, not necessarily the MP4 format: probe it
                info, seconds = _video_info(target), _video_seconds(target)
            except (av.error.FFmpegError, IndexError, ValueError) as exc:
                log.warning("release: video %s is not a readable MP4 (%s), left out", video.pk, exc)
                target.unlink(missing_ok=True)
                continue
            self.video_files[key] = file_index + 1
            self.cameras.setdefault(key, info)
            row[f"videos/{key}/chunk_index"] = file_index // CHUNKS_SIZE
            row[f"videos/{key}/file_index"] = file_index % CHUNKS_SIZE
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = seconds
        self.episode_rows.append(row)
        self.total_frames += table.num_rows
        self.episode += 1
        return index

    def add_session(self, session) -> None:
        trajectories = {t.slot: t for t in session.trajectories.all() if t.state == Trajectory.State.VERIFIED}
        videos: dict[str, list[Video]] = {"A": [], "B": []}
        for video in session.videos.all():
            if video.state == Video.State.VERIFIED:
                videos[video.slot].append(video)
        indices = {}
        for slot in "AB":
            trajectory = trajectories.get(slot)
            indices[slot] = (
                self.add_episode(session, slot, trajectory, sorted(videos[slot], key=lambda v: v.camera))
                if trajectory
                else None
            )
        summary = published_session_summary(session)
        self.session_rows.append(
            {
                "session_id": summary["id"],
                "ended_at": summary["ended_at"].isoformat() if summary["ended_at"] else None,
                "task": summary["task"],
                "task_category": summary["task_category"],
                "robot_type": robot_type(session.robot.platform),
                "platform": session.robot.platform,
                "lab": summary["lab"],
                "policy_a": session.policy_a.slug,
                "policy_b": session.policy_b.slug,
                "episode_index_a": indices["A"],
                "episode_index_b": indices["B"],
                "progress_a": summary["progress"]["A"],
                "progress_b": summary["progress"]["B"],
                "choice": summary["choice"],
                "reason": summary["reason"],
                "scene": json.dumps(scene_of(session), sort_keys=True),
            }
        )

    def finish(self) -> None:
        if self.data_writer is not None:
            self.data_writer.close()
        self._episodes_file()
        pq.write_table(
            pa.table({"task_index": list(self.tasks.values()), "task": list(self.tasks)}),
            str(self.path("meta/tasks.parquet")),
        )
        sessions = pa.Table.from_pylist(self.session_rows, schema=SESSION_SCHEMA)
        pq.write_table(sessions, str(self.path("arena/sessions.parquet")))
        self.path("arena/comparisons.csv").write_text(fitted_rows_csv(self.snapshot.fitted_rows))
        features = dict(FEATURES)
        for key, info in sorted(self.cameras.items()):
            features[key] = info
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": "franka",
            "total_episodes": self.episode,
            "total_frames": self.total_frames,
            "total_tasks": len(self.tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MAX_BYTES // (1024 * 1024),
            "video_files_size_in_mb": 500,
            "fps": FPS,
            "splits": {"train": f"0:{self.episode}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.cameras else None,
            "features": features,
            "arena": {
                "snapshot_version": self.snapshot.version,
                "snapshot_data_hash": self.snapshot.data_hash,
                "n_sessions": len(self.session_rows),
            },
        }
        self.path("meta/info.json").write_text(json.dumps(info, indent=2, sort_keys=True))
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _episodes_file(self) -> None:
        columns = sorted({k for row in self.episode_rows for k in row})
        first = [
            "episode_index",
            "tasks",
            "length",
            "data/chunk_index",
            "data/file_index",
            "dataset_from_index",
            "dataset_to_index",
        ]
        ordered = first + [c for c in columns if c not in first]
        table = pa.Table.from_pylist(
            [{c: row.get(c) for c in ordered} for row in self.episode_rows],
            schema=_episodes_schema(ordered),
        )
        pq.write_table(table, str(self.path(EPISODES_PATH.format(chunk_index=0, file_index=0))))


SESSION_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("ended_at", pa.string()),
        ("task", pa.string()),
        ("task_category", pa.string()),
        ("robot_type", pa.string()),
        ("platform", pa.string()),
        ("lab", pa.string()),
        ("policy_a", pa.string()),
        ("policy_b", pa.string()),
        ("episode_index_a", pa.int64()),
        ("episode_index_b", pa.int64()),
        ("progress_a", pa.int64()),
        ("progress_b", pa.int64()),
        ("choice", pa.string()),
        ("reason", pa.string()),
        ("scene", pa.string()),
    ]
)


def _episodes_schema(columns: list[str]) -> pa.Schema:
    def kind(name: str) -> pa.DataType:
        if name == "tasks":
            return pa.list_(pa.string())
        if name.endswith("timestamp"):
            return pa.float64()
        if name.startswith("arena_") and name != "arena_action_dim":
            return pa.string()
        return pa.int64()

    return pa.schema([(name, kind(name)) for name in columns])


def _video_info(path: Path) -> dict[str, Any]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        return {
            "dtype": "video",
            "shape": [stream.codec_context.height, stream.codec_context.width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": stream.codec_context.height,
                "video.width": stream.codec_context.width,
                "video.codec": stream.codec_context.name,
                "video.pix_fmt": stream.codec_context.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": float(rate) if rate else None,
                "video.channels": 3,
                "has_audio": False,
            },
        }


README = """# policy-arena release v{version}

Published A/B evaluation sessions of robot policies, from ranking snapshot {snapshot} (its fitted comparisons:
`arena/comparisons.csv`, sha256 {snapshot_hash}). LeRobot dataset v3 layout: `meta/info.json`,
`meta/episodes/`, `meta/tasks.parquet`, `data/` (one row per control step at {fps} Hz), `videos/` (one MP4 per
episode and camera; `videos/<key>/from_timestamp` and `to_timestamp` in the episodes table). The arena's own
tables: `arena/sessions.parquet` links the A and B episodes of each comparison (`episode_index_a`,
`episode_index_b`) with progress, choice and the reason where the lab publishes it; labs appear under a stable
pseudonym unless they chose to be named.

`observation.state` = 7 joint positions (rad) + gripper (0 open, 1 closed); `action` holds 8 values, the
episode's action space in `arena_action_space` (7-value spaces are padded with NaN); `policy.latency_ms` is the
round trip of the policy call that produced the step's chunk (on its first step, NaN elsewhere);
`arena.elapsed_s` is when the lab's client executed the step (s since the episode started), while `timestamp`
is LeRobot's nominal `frame_index / fps`.

Verify: every file but this one's manifest is listed in `manifest.json` with its size and sha256; the data hash
is the sha256 of `json.dumps(manifest["files"], sort_keys=True, separators=(",", ":"))`.
"""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _published_batches() -> Iterator[list]:
    """Published sessions, oldest first, in batches of BATCH (so memory stays flat however many there are)."""
    base = published_sessions().order_by("ended_at", "id")
    last = None
    while True:
        query = (
            base
            if last is None
            else base.filter(ended_at__gte=last[0]).exclude(ended_at=last[0], id__lte=last[1])
        )
        batch = list(query.prefetch_related("videos", "trajectories")[:BATCH])
        if not batch:
            return
        yield batch
        last = (batch[-1].ended_at, batch[-1].id)


def release_build(*, snapshot: RankingSnapshot | None = None) -> Release:
    """Build, store and return a new release of ``snapshot`` (default: the newest). Immutable once ready.

    Raises NotFound when there is no snapshot. A failure marks the release ``failed`` and re-raises.
    """
    snapshot = snapshot or RankingSnapshot.objects.order_by("-version").first()
    if snapshot is None:
        raise NotFound("snapshot_not_found", "There is no ranking snapshot to release yet.")
    with transaction.atomic():
        version = (Release.objects.aggregate(v=Max("version"))["v"] or 0) + 1
        try:
            release = Release.objects.create(
                version=version, snapshot=snapshot, prefix=release_prefix(version)
            )
        except IntegrityError as exc:
            raise Conflict("release_building", "Another release is being created; retry.") from exc
    started = time.perf_counter()
    storage = get_storage()
    try:
        with tempfile.TemporaryDirectory(prefix="arena-release-") as tmp:
            root = Path(tmp) / f"v{version}"
            builder = _Builder(root, snapshot)
            for batch in _published_batches():
                for session in batch:
                    builder.add_session(session)
            builder.finish()
            (root / "README.md").write_text(
                README.format(
                    version=version, snapshot=snapshot.version, snapshot_hash=snapshot.data_hash, fps=FPS
                )
            )
            files = [
                {"path": p.relative_to(root).as_posix(), "size": p.stat().st_size, "sha256": _sha256(p)}
                for p in sorted(root.rglob("*"))
                if p.is_file()
            ]
            data_hash = data_hash_of(files)
            manifest = {
                "release": version,
                "snapshot_version": snapshot.version,
                "snapshot_data_hash": snapshot.data_hash,
                "created_at": release.created_at.isoformat(),
                "n_sessions": len(builder.session_rows),
                "n_episodes": builder.episode,
                "files": files,
                "data_hash": data_hash,
            }
            (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            archive = Path(tmp) / f"v{version}.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(root, arcname=f"v{version}")
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    relative = path.relative_to(root).as_posix()
                    storage.put_file(key=release.prefix + relative, path=path, content_type=_type(relative))
            storage.put_file(key=archive_key(version), path=archive, content_type="application/x-tar")
            size = sum(f["size"] for f in files) + (root / "manifest.json").stat().st_size
            manifest["archive"] = {"size": archive.stat().st_size, "sha256": _sha256(archive)}
    except Exception as exc:
        Release.objects.filter(pk=release.pk).update(state=Release.State.FAILED, error=str(exc)[:500])
        raise
    Release.objects.filter(pk=release.pk).update(
        state=Release.State.READY,
        manifest=manifest,
        data_hash=data_hash,
        n_sessions=manifest["n_sessions"],
        size_bytes=size,
        build_seconds=time.perf_counter() - started,
    )
    release.refresh_from_db()
    log.info("release v%d built: %d sessions, %d bytes", version, release.n_sessions, release.size_bytes)
    return release


def release_build_due(*, now=None) -> Release | None:
    """The scheduled build: a new release when the newest snapshot has none yet and the last release is at
    least ARENA_RELEASE_EVERY_HOURS old (0: never on a schedule). Returns it, or None when none was due."""
    hours = settings.ARENA_RELEASE_EVERY_HOURS
    snapshot = RankingSnapshot.objects.order_by("-version").first()
    if hours <= 0 or snapshot is None or Release.objects.filter(snapshot=snapshot).exists():
        return None
    last = Release.objects.filter(state=Release.State.READY).order_by("-version").first()
    now = now or timezone.now()
    if last is not None and (now - last.created_at).total_seconds() < hours * 3600:
        return None
    return release_build(snapshot=snapshot)


def _type(relative: str) -> str:
    suffix = Path(relative).suffix
    return {
        ".parquet": "application/vnd.apache.parquet",
        ".mp4": "video/mp4",
        ".json": "application/json",
        ".csv": "text/csv",
        ".md": "text/markdown",
    }.get(suffix, "application/octet-stream")


def release_files(release: Release) -> list[dict[str, Any]]:
    """The release's files (manifest order) with their storage keys, for the download page."""
    return [{**f, "key": release.prefix + f["path"]} for f in release.manifest.get("files", [])]
