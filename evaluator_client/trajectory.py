"""Record one episode's trajectory to Parquet: per control step the proprioception, the action and the time, and
per policy call the chunk boundary and the round-trip latency; the scene notes and seed in the file's metadata.

One row per executed control step, columns (``FORMAT`` = ``arena-trajectory/1``):

==================================  =====================================  =========================================
column                              type                                   meaning
==================================  =====================================  =========================================
``step``                            int32                                  0-based control step
``timestamp``                       float64                                s since the episode started (the action's
                                                                           execution)
``observation.joint_position``      fixed_size_list<float64>[7]            rad, before the action
``observation.cartesian_position``  fixed_size_list<float64>[6]            TCP ``[x, y, z, roll, pitch, yaw]`` (m, rad)
``observation.gripper_position``    float64                                [0, 1], 0 open
``action``                          fixed_size_list<float64>[D]            the executed action (D = 7 or 8)
``chunk_index``                     int32                                  which policy call produced the action
``chunk_start``                     bool                                   first step of its chunk
``latency_ms``                      float64, null unless ``chunk_start``   the policy call's round trip
==================================  =====================================  =========================================

The schema's metadata holds ``arena`` = JSON ``{"format", "session_id", "slot", "action_space", "control_hz",
"scene"}`` (``scene``: the session's scene notes, with the perturbation seed). The file is written once, at the
end of the episode, from columns kept in memory (an episode is at most a few thousand steps).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluator_client.extras import missing_extra

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ModuleNotFoundError as exc:
    raise missing_extra(exc, extra="lab", needed_for="recording the episodes' trajectories") from exc

FORMAT = "arena-trajectory/1"
CONTENT_TYPE = "application/vnd.apache.parquet"
METADATA_KEY = b"arena"
JOINTS = 7
CARTESIAN = 6


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def schema(action_dim: int, metadata: dict[str, Any] | None = None) -> pa.Schema:
    """The Parquet schema of a trajectory whose actions have ``action_dim`` values."""
    fields = [
        pa.field("step", pa.int32(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("observation.joint_position", pa.list_(pa.float64(), JOINTS), nullable=False),
        pa.field("observation.cartesian_position", pa.list_(pa.float64(), CARTESIAN), nullable=False),
        pa.field("observation.gripper_position", pa.float64(), nullable=False),
        pa.field("action", pa.list_(pa.float64(), action_dim), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("chunk_start", pa.bool_(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=True),
    ]
    encoded = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()} if metadata is not None else None
    return pa.schema(fields, metadata=encoded)


@dataclass(frozen=True)
class TrajectoryFile:
    """A written trajectory: ``size_bytes`` and ``sha256`` of the finished file, ``steps`` rows."""

    path: Path
    steps: int
    size_bytes: int
    sha256: str
    content_type: str = CONTENT_TYPE


class TrajectoryRecorder:
    """Collect the rows of one episode (:meth:`add_step`, called by ``run_episode``), then :meth:`write`."""

    def __init__(self, *, action_dim: int) -> None:
        self.action_dim = action_dim
        self.columns: dict[str, list[Any]] = {name: [] for name in schema(action_dim).names}

    def __len__(self) -> int:
        return len(self.columns["step"])

    def add_step(
        self,
        *,
        step: int,
        time_s: float,
        proprio: Mapping[str, Any],
        action: np.ndarray,
        chunk_index: int,
        chunk_start: bool,
        latency_s: float | None,
    ) -> None:
        """One executed step: ``proprio`` has the DROID proprioception keys (the state the action was applied
        in); ``latency_s`` is the round trip of the policy call that produced the chunk (on its first step)."""
        joints = np.asarray(proprio["observation/joint_position"], dtype=np.float64).reshape(-1)
        cartesian = np.asarray(proprio["observation/cartesian_position"], dtype=np.float64).reshape(-1)
        gripper = np.asarray(proprio["observation/gripper_position"], dtype=np.float64).reshape(-1)
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if joints.shape != (JOINTS,) or cartesian.shape != (CARTESIAN,) or gripper.shape != (1,):
            raise ValueError("proprioception must be joints (7,), cartesian (6,) and gripper (1,)")
        if action.shape != (self.action_dim,):
            raise ValueError(f"expected a ({self.action_dim},) action, got {action.shape}")
        c = self.columns
        c["step"].append(int(step))
        c["timestamp"].append(float(time_s))
        c["observation.joint_position"].append(joints.tolist())
        c["observation.cartesian_position"].append(cartesian.tolist())
        c["observation.gripper_position"].append(float(gripper[0]))
        c["action"].append(action.tolist())
        c["chunk_index"].append(int(chunk_index))
        c["chunk_start"].append(bool(chunk_start))
        c["latency_ms"].append(None if latency_s is None else 1000.0 * float(latency_s))

    def table(self, metadata: dict[str, Any]) -> pa.Table:
        return pa.table(self.columns, schema=schema(self.action_dim, metadata))

    def write(self, path: Path, *, metadata: dict[str, Any]) -> TrajectoryFile:
        """Write the rows to ``path`` (zstd-compressed Parquet); ``metadata``: session id, slot, scene..."""
        meta = {"format": FORMAT, **metadata}
        pq.write_table(self.table(meta), str(path), compression="zstd")
        return TrajectoryFile(
            path=Path(path), steps=len(self), size_bytes=Path(path).stat().st_size, sha256=_sha256(path)
        )


def read_trajectory(path: Path) -> tuple:
    """``(table, metadata)`` of a trajectory file (for tests and readers of the spool)."""
    table = pq.read_table(str(path))
    raw = (table.schema.metadata or {}).get(METADATA_KEY, b"{}")
    return table, json.loads(raw)
