"""Trajectory uploads take the videos' path: declared, uploaded to a presigned URL, then verified: size,
SHA-256, the Parquet magic bytes, a bounded footer and the arena-trajectory/1 schema. A mismatch deletes the
object and rejects the trajectory. Private while blind, then visible by the videos' rule. Both backends."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from arena.models import Trajectory
from evaluator_client.trajectory import TrajectoryRecorder
from tests.api.actors import open_session
from tests.videos.videohelpers import download, stored_keys, submit_preference, upload

PROPRIO = {
    "observation/joint_position": np.linspace(-1, 1, 7),
    "observation/cartesian_position": np.arange(6) / 10,
    "observation/gripper_position": np.array([0.5]),
}


def parquet_bytes(steps: int = 20, action_dim: int = 8) -> bytes:
    recorder = TrajectoryRecorder(action_dim=action_dim)
    for step in range(steps):
        recorder.add_step(
            step=step,
            time_s=step / 15,
            proprio=PROPRIO,
            action=np.full(action_dim, step / 100),
            chunk_index=step // 8,
            chunk_start=step % 8 == 0,
            latency_s=0.02 if step % 8 == 0 else None,
        )
    sink = io.BytesIO()
    pq.write_table(recorder.table({"format": "arena-trajectory/1"}), sink)
    return sink.getvalue()


def declare(lab, session_id: str, body: bytes, **overrides):
    return lab.post(
        f"/api/v1/sessions/{session_id}/trajectories/",
        {"slot": "A", "size": len(body), "sha256": hashlib.sha256(body).hexdigest(), **overrides},
    )


def send(lab, session_id: str, body: bytes):
    started = declare(lab, session_id, body)
    assert started.status_code == 201, started.json()
    status, text = upload(started.json()["upload"], body)
    assert status in (200, 201, 204), text
    return started.json()["id"], lab.post(f"/api/v1/trajectories/{started.json()['id']}/finish/")


def test_a_parquet_trajectory_is_verified_and_private_while_blind(
    storage, pool, lab1, owner, anonymous, robot1
):
    session = open_session(lab1)
    body = parquet_bytes()
    trajectory_id, finished = send(lab1, session["id"], body)
    assert finished.status_code == 200, finished.json()
    assert finished.json()["state"] == "verified" and finished.json()["n_steps"] == 20
    assert finished.json()["url"] is None  # blind: not even the lab gets it back
    # What the lab is told names no policy: the upload's facts only.
    assert set(finished.json()) == {"id", "slot", "state", "size", "sha256", "n_steps", "url", "expires_at"}
    for viewer in (lab1, owner, anonymous):
        assert viewer.get(f"/api/v1/trajectories/{trajectory_id}/").status_code == 404
    submit_preference(lab1, session["id"])
    shown = lab1.get(f"/api/v1/trajectories/{trajectory_id}/").json()
    assert download(shown["url"]) == (200, body)
    assert anonymous.get(f"/api/v1/trajectories/{trajectory_id}/").status_code == 404  # no opt-in


def test_bytes_that_are_not_parquet_are_rejected_and_deleted(storage, pool, lab1, robot1):
    session = open_session(lab1)
    fake = b"PAR1" + bytes(1000)  # magic at the start only
    trajectory_id, finished = send(lab1, session["id"], fake)
    assert finished.status_code == 422 and finished.json()["error"]["code"] == "trajectory_rejected"
    assert Trajectory.objects.get(pk=trajectory_id).state == "rejected"
    assert stored_keys(storage) == []


def test_a_huge_footer_is_refused_before_parsing(storage, pool, lab1, robot1, settings):
    session = open_session(lab1)
    body = bytearray(parquet_bytes())
    body[-8:-4] = struct.pack("<I", settings.TRAJECTORY_FOOTER_MAX_BYTES + 1)
    _, finished = send(lab1, session["id"], bytes(body))
    assert finished.status_code == 422
    assert stored_keys(storage) == []


def test_parquet_of_another_schema_is_rejected(storage, pool, lab1, robot1):
    session = open_session(lab1)
    sink = io.BytesIO()
    pq.write_table(pa.table({"step": pa.array([1, 2], pa.int64())}), sink)
    _, finished = send(lab1, session["id"], sink.getvalue())
    assert finished.status_code == 422
    assert stored_keys(storage) == []


def test_declarations_are_bounded(local_storage, pool, lab1, robot1, settings):
    session = open_session(lab1)
    body = parquet_bytes()
    too_big = declare(lab1, session["id"], body, size=settings.TRAJECTORY_MAX_BYTES + 1)
    assert too_big.status_code == 400
    started = declare(lab1, session["id"], body).json()
    # The upload URL takes only Parquet's content type and at most the declared size.
    assert upload(started["upload"], body, content_type="video/mp4")[0] == 415
    assert upload(started["upload"], body + b"x")[0] == 413
    assert declare(lab1, session["id"], body + b"x").status_code == 409  # declared differently
