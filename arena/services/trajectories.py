"""Writes for episode trajectories (Parquet): declare an upload, verify it. The same path as videos.

A lab declares one trajectory per slot (size, SHA-256) while its session is open and gets a short-lived URL to
upload straight to storage. ``trajectory_upload_finish`` then checks the stored object: the declared size, the
SHA-256 (read as a stream, at most TRAJECTORY_MAX_BYTES), the Parquet magic bytes at both ends, a footer of at
most TRAJECTORY_FOOTER_MAX_BYTES, and a schema with the columns of ``arena-trajectory/1`` (see
``evaluator_client.trajectory``) and at most TRAJECTORY_MAX_STEPS rows. Any mismatch deletes the object and
rejects the trajectory.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import struct
import tempfile
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from arena.errors import Conflict, InvalidInput, NotFound, StorageUnavailable
from arena.models import SLOTS, EvaluationSession, Lab, Trajectory
from arena.services.sessions import _expire, session_for_lab_update, session_renew_lease
from arena.services.videos import SHA256_HEX
from arena.storage import EXTENSIONS, TRAJECTORY_TYPE, StorageError, UploadTarget, get_storage, incoming_key

log = logging.getLogger(__name__)

MAGIC = b"PAR1"
FINISH_LOCK = "arena:trajectory:finish"
FINISH_LOCK_SECONDS = 600
# Required columns and their Arrow types; ``action`` is a fixed-size list of 7 or 8 float64.
REQUIRED_COLUMNS = {
    "step": pa.int32(),
    "timestamp": pa.float64(),
    "observation.joint_position": pa.list_(pa.float64(), 7),
    "observation.cartesian_position": pa.list_(pa.float64(), 6),
    "observation.gripper_position": pa.float64(),
    "chunk_index": pa.int32(),
    "chunk_start": pa.bool_(),
    "latency_ms": pa.float64(),
}
ACTION_TYPES = (pa.list_(pa.float64(), 7), pa.list_(pa.float64(), 8))


class NotATrajectory(ValueError):
    """The file is not a Parquet trajectory of the expected schema (the message says what is wrong)."""


def object_key(*, session_id: uuid.UUID | str, slot: str) -> str:
    """``sessions/<session id>/<slot>/trajectory-<128 random bits>.parquet``: unguessable, names no policy."""
    return f"sessions/{session_id}/{slot}/trajectory-{secrets.token_hex(16)}{EXTENSIONS[TRAJECTORY_TYPE]}"


def trajectory_upload_start(
    *, lab: Lab, session_id: uuid.UUID | str, slot: str, size: int, sha256: str
) -> tuple[Trajectory, UploadTarget]:
    """Declare one slot's trajectory (``size`` in bytes) and get where to upload it.

    One trajectory per (session, slot): repeating the same declaration while it is pending returns a fresh URL
    for the same object; a different one is a Conflict, and so is any declaration once it is verified. A
    rejected trajectory may be declared again (a new object key). Renews the session's lease.
    """
    if slot not in SLOTS:
        raise InvalidInput("invalid_choice", "slot must be A or B.", field="slot")
    if not 1 <= size <= settings.TRAJECTORY_MAX_BYTES:
        raise InvalidInput(
            "invalid_size", f"size must be 1-{settings.TRAJECTORY_MAX_BYTES} bytes.", field="size"
        )
    sha256 = sha256.lower()
    if not SHA256_HEX.fullmatch(sha256):
        raise InvalidInput("invalid_sha256", "sha256 must be 64 hexadecimal characters.", field="sha256")
    storage = get_storage()
    _expire(EvaluationSession.objects.filter(pk=session_id, lab=lab), timezone.now())
    with transaction.atomic():
        session = session_for_lab_update(lab=lab, session_id=session_id)
        trajectory = Trajectory.objects.filter(session=session, slot=slot).first()
        if trajectory is None:
            trajectory = Trajectory.objects.create(
                session=session,
                slot=slot,
                object_key=object_key(session_id=session.id, slot=slot),
                size=size,
                sha256=sha256,
            )
        elif trajectory.state == Trajectory.State.REJECTED:
            trajectory.object_key = object_key(session_id=session.id, slot=slot)
            trajectory.state = Trajectory.State.PENDING
            trajectory.size, trajectory.sha256 = size, sha256
            trajectory.save(update_fields=["object_key", "state", "size", "sha256"])
        elif trajectory.state != Trajectory.State.PENDING:
            raise Conflict(
                f"trajectory_{trajectory.state}",
                f"Slot {slot}'s trajectory is already {trajectory.state}.",
                field="slot",
            )
        elif (trajectory.size, trajectory.sha256) != (size, sha256):
            raise Conflict(
                "trajectory_declared_differently",
                f"Slot {slot}'s trajectory was declared with another size or checksum.",
                field="slot",
            )
        session_renew_lease(session=session)
        target = storage.upload_target(
            key=incoming_key(trajectory.object_key), content_type=TRAJECTORY_TYPE, size=size
        )
        return trajectory, target


def trajectory_upload_finish(*, lab: Lab, trajectory_id: uuid.UUID | str) -> Trajectory:
    """Check the uploaded object and mark the trajectory verified or rejected (returned, not raised).

    Finishing a verified or rejected trajectory returns it unchanged. Raises NotFound for another lab's
    trajectory, Conflict when nothing was uploaded yet or another finish is running, StorageUnavailable when
    storage cannot be reached (it stays pending; finish it again later).
    """
    trajectory = Trajectory.objects.filter(pk=trajectory_id, session__lab=lab).first()
    if trajectory is None:
        raise NotFound("trajectory_not_found", "Your lab has no such trajectory.")
    storage = get_storage()
    if trajectory.state != Trajectory.State.PENDING:
        try:
            storage.delete(key=incoming_key(trajectory.object_key))
        except StorageError as exc:
            log.warning("trajectory %s: replayed upload not deleted yet: %s", trajectory.pk, exc)
        return trajectory
    lock = f"{FINISH_LOCK}:{trajectory.pk}"
    if not cache.add(lock, 1, timeout=FINISH_LOCK_SECONDS):
        raise Conflict(
            "trajectory_finishing", "This trajectory is being verified by another request; retry shortly."
        )
    try:
        return _verify(storage, trajectory)
    except StorageError as exc:
        log.warning("trajectory %s not verified: %s", trajectory.pk, exc)
        raise StorageUnavailable(
            "storage_unavailable", "Storage cannot be reached right now; finish the trajectory again later."
        ) from exc
    finally:
        cache.delete(lock)


def _verify(storage, trajectory: Trajectory) -> Trajectory:
    upload_key = incoming_key(trajectory.object_key)
    uploaded = storage.head(key=upload_key)
    if uploaded is None:
        if storage.head(key=trajectory.object_key) is None:
            raise Conflict(
                "trajectory_not_uploaded", "Nothing was uploaded for this trajectory yet; upload it first."
            )
    else:
        if uploaded.size != trajectory.size or uploaded.content_type != TRAJECTORY_TYPE:
            storage.delete(key=upload_key)
            return _reject(trajectory, f"it holds {uploaded.size} bytes of {uploaded.content_type!r}")
        storage.promote(source=upload_key, destination=trajectory.object_key)
    limit = min(trajectory.size, settings.TRAJECTORY_MAX_BYTES)
    with tempfile.SpooledTemporaryFile(max_size=4 * 1024 * 1024) as copy:
        digest, total = hashlib.sha256(), 0
        for chunk in storage.open(key=trajectory.object_key):
            total += len(chunk)
            if total > limit:
                storage.delete(key=trajectory.object_key)
                return _reject(trajectory, "it is larger than declared")
            digest.update(chunk)
            copy.write(chunk)
        if digest.hexdigest() != trajectory.sha256:
            storage.delete(key=trajectory.object_key)
            return _reject(trajectory, "its SHA-256 differs from the declared one")
        try:
            n_steps = check_parquet(copy, size=total)
        except NotATrajectory as exc:
            storage.delete(key=trajectory.object_key)
            return _reject(trajectory, str(exc))
    with transaction.atomic():
        trajectory = Trajectory.objects.select_for_update().select_related("session").get(pk=trajectory.pk)
        if trajectory.state == Trajectory.State.PENDING:
            trajectory.state = Trajectory.State.VERIFIED
            trajectory.verified_at = timezone.now()
            trajectory.n_steps = n_steps
            trajectory.save(update_fields=["state", "verified_at", "n_steps"])
            session = trajectory.session
            if session.is_open and session.lease_expires_at > timezone.now():
                session_renew_lease(session=session)
        return trajectory


def check_parquet(handle, *, size: int) -> int:
    """Check that the seekable binary ``handle`` (``size`` bytes) is a Parquet trajectory; returns its rows.

    Bounds first, decoding second: the magic bytes at both ends and the footer's length are read as raw bytes,
    and only a footer of at most TRAJECTORY_FOOTER_MAX_BYTES is handed to the Parquet reader, which then reads
    just the footer (schema and row-group metadata), never the data pages. Raises NotATrajectory.
    """
    if size < 12:
        raise NotATrajectory("it is too small to be a Parquet file")
    handle.seek(0)
    head = handle.read(4)
    handle.seek(size - 8)
    tail = handle.read(8)
    if head != MAGIC or tail[4:] != MAGIC:
        raise NotATrajectory("it is not a Parquet file (magic bytes)")
    (footer,) = struct.unpack("<I", tail[:4])
    if footer > settings.TRAJECTORY_FOOTER_MAX_BYTES or footer > size - 12:
        raise NotATrajectory(f"its Parquet footer ({footer} bytes) is too large")
    handle.seek(0)
    try:
        metadata = pq.ParquetFile(handle).metadata
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise NotATrajectory(f"its Parquet footer cannot be read ({type(exc).__name__})") from None
    for name, kind in REQUIRED_COLUMNS.items():
        if schema.get_field_index(name) < 0 or not schema.field(name).type.equals(kind):
            raise NotATrajectory(f"column {name!r} is missing or not {kind}")
    action = schema.get_field_index("action")
    if action < 0 or not any(schema.field("action").type.equals(t) for t in ACTION_TYPES):
        raise NotATrajectory("column 'action' is missing or not a list of 7 or 8 float64")
    if metadata.num_rows > settings.TRAJECTORY_MAX_STEPS:
        raise NotATrajectory(f"it has {metadata.num_rows} rows; at most {settings.TRAJECTORY_MAX_STEPS}")
    return int(metadata.num_rows)


def _reject(trajectory: Trajectory, problem: str) -> Trajectory:
    log.warning("trajectory %s rejected: %s", trajectory.pk, problem)
    with transaction.atomic():
        trajectory = Trajectory.objects.select_for_update().get(pk=trajectory.pk)
        if trajectory.state == Trajectory.State.PENDING:
            trajectory.state = Trajectory.State.REJECTED
            trajectory.save(update_fields=["state"])
        return trajectory
