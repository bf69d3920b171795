"""Writes for session videos: declare an upload, verify it, and sweep old objects.

A lab declares each recording (slot, camera, content type, size, SHA-256) while its session is open and gets
a short-lived URL to upload straight to storage. ``video_upload_finish`` then checks the stored object against
the declaration before the video counts as verified; a mismatch deletes the object and rejects the video.
"""

from __future__ import annotations

import logging
import re
import secrets
import tempfile
import uuid
from datetime import datetime, timedelta
from fractions import Fraction
from functools import partial
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from arena.errors import Conflict, InvalidInput, NotFound, StorageUnavailable
from arena.models import SLOTS, EvaluationSession, Lab, Trajectory, Video
from arena.services.sessions import _expire, session_for_lab_update, session_renew_lease
from arena.storage import (
    EXTENSIONS,
    POSTER_EXTENSION,
    POSTER_TYPE,
    VIDEO_EXTENSIONS,
    ObjectTooLarge,
    StorageError,
    UploadTarget,
    VideoStorage,
    get_storage,
    incoming_key,
)

log = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# What ``slugify`` leaves unchanged: lower-case ASCII letters, digits, '_' and single '-', not at either end.
CAMERA_RE = re.compile(r"(?!.*--)[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?")
MAX_REPORTED = 100
FINISH_LOCK = "arena:video:finish"
FINISH_LOCK_SECONDS = 600
POSTER_MAX_WIDTH = 640
POSTER_MAX_PIXELS = 8192 * 8192
"""Frames larger than this are not decoded into a poster (a hostile header could claim any size)."""


def object_key(*, session_id: uuid.UUID | str, slot: str, camera: str, content_type: str) -> str:
    """``sessions/<session id>/<slot>/<camera>-<128 random bits>.<ext>``: unguessable, names no policy."""
    return f"sessions/{session_id}/{slot}/{camera}-{secrets.token_hex(16)}{VIDEO_EXTENSIONS[content_type]}"


def _check_declaration(*, slot: str, camera: str, content_type: str, size: int, sha256: str) -> str:
    """Validate a declared upload; returns the SHA-256 in lower case."""
    if slot not in SLOTS:
        raise InvalidInput("invalid_choice", "slot must be A or B.", field="slot")
    if len(camera) > 40 or not CAMERA_RE.fullmatch(camera):
        raise InvalidInput(
            "invalid_camera", "camera must be 1-40 lower-case letters, digits, '-' or '_'.", field="camera"
        )
    if content_type not in VIDEO_EXTENSIONS:
        raise InvalidInput(
            "unsupported_content_type",
            f"content_type must be one of {', '.join(VIDEO_EXTENSIONS)}.",
            field="content_type",
        )
    if not 1 <= size <= settings.VIDEO_MAX_BYTES:
        raise InvalidInput("invalid_size", f"size must be 1-{settings.VIDEO_MAX_BYTES} bytes.", field="size")
    sha256 = sha256.lower()
    if not SHA256_HEX.fullmatch(sha256):
        raise InvalidInput("invalid_sha256", "sha256 must be 64 hexadecimal characters.", field="sha256")
    return sha256


def video_upload_start(
    *,
    lab: Lab,
    session_id: uuid.UUID | str,
    slot: str,
    camera: str,
    content_type: str,
    size: int,
    sha256: str,
) -> tuple[Video, UploadTarget]:
    """Declare one camera's recording of one slot and get where to upload it (``size`` in bytes).

    One video per (session, slot, camera): repeating the same declaration while the video is pending returns a
    fresh URL for the same object; a different declaration is a Conflict, and so is any declaration once the
    video is verified. A rejected video may be declared again (a new object key). Renews the session's lease.
    """
    sha256 = _check_declaration(slot=slot, camera=camera, content_type=content_type, size=size, sha256=sha256)
    storage = get_storage()
    _expire(EvaluationSession.objects.filter(pk=session_id, lab=lab), timezone.now())
    with transaction.atomic():
        session = session_for_lab_update(lab=lab, session_id=session_id)
        declared = {"content_type": content_type, "size": size, "sha256": sha256}
        video = Video.objects.filter(session=session, slot=slot, camera=camera).first()
        _check_session_limits(session=session, slot=slot, size=size, redeclared=video)
        if video is None:
            video = Video.objects.create(
                session=session,
                slot=slot,
                camera=camera,
                object_key=object_key(
                    session_id=session.id, slot=slot, camera=camera, content_type=content_type
                ),
                **declared,
            )
        elif video.state == Video.State.REJECTED:
            video.object_key = object_key(
                session_id=session.id, slot=slot, camera=camera, content_type=content_type
            )
            video.state = Video.State.PENDING
            for name, value in declared.items():
                setattr(video, name, value)
            video.save(update_fields=["object_key", "state", *declared])
        elif video.state != Video.State.PENDING:
            raise Conflict(
                f"video_{video.state}",
                f"Slot {slot}'s {camera} video is already {video.state}.",
                field="camera",
            )
        elif any(getattr(video, name) != value for name, value in declared.items()):
            raise Conflict(
                "video_declared_differently",
                f"Slot {slot}'s {camera} video was declared with another type, size or checksum.",
                field="camera",
            )
        session_renew_lease(session=session)
        target = storage.upload_target(
            key=incoming_key(video.object_key), content_type=content_type, size=size
        )
        return video, target


def _check_session_limits(
    *, session: EvaluationSession, slot: str, size: int, redeclared: Video | None
) -> None:
    """At most ``ARENA_VIDEOS_PER_CAMERA`` x (the robot's cameras) videos per slot, and at most
    ``ARENA_SESSION_VIDEO_MAX_BYTES`` declared over the session's live (pending or verified) videos, this
    declaration included (``redeclared``: the row it replaces, whose size no longer counts)."""
    robot = session.robot
    cameras = max(1, robot.n_external_cameras + robot.has_wrist_camera + robot.has_stereo_camera)
    per_slot = settings.ARENA_VIDEOS_PER_CAMERA * cameras
    if redeclared is None and session.videos.filter(slot=slot).count() >= per_slot:
        raise Conflict(
            "too_many_videos",
            f"Slot {slot} already has {per_slot} videos, the most a robot with {cameras} cameras may declare.",
            field="camera",
        )
    live = session.videos.filter(state__in=[Video.State.PENDING, Video.State.VERIFIED])
    if redeclared is not None:
        live = live.exclude(pk=redeclared.pk)
    declared = live.aggregate(total=Sum("size"))["total"] or 0
    budget = settings.ARENA_SESSION_VIDEO_MAX_BYTES
    if declared + size > budget:
        raise Conflict(
            "session_video_bytes_exceeded",
            f"The session's videos would total {declared + size} bytes; the limit is {budget} bytes.",
            field="size",
        )


def video_upload_finish(*, lab: Lab, video_id: uuid.UUID | str) -> Video:
    """Check the uploaded object against the declaration and mark the video verified or rejected.

    The object must have the declared size and content type; it is then moved out of reach of its upload URL
    and its SHA-256 computed from a stream (at most VIDEO_MAX_BYTES). Any mismatch deletes the object and
    rejects the video (returned, not raised: the rejection is stored). Finishing a verified or rejected video
    returns it unchanged. Raises NotFound for another lab's video, Conflict when nothing was uploaded yet or
    another finish of the same video is running, StorageUnavailable when storage cannot be reached (the video
    stays pending; finishing it again later completes it).
    """
    video = Video.objects.filter(pk=video_id, session__lab=lab).first()
    if video is None:
        raise NotFound("video_not_found", "Your lab has no such video.")
    storage = get_storage()
    if video.state != Video.State.PENDING:
        _discard_replayed_upload(storage, video)
        return video
    # One finish at a time per video, so no second finish can move a new upload over the object being hashed.
    lock = f"{FINISH_LOCK}:{video.pk}"
    if not cache.add(lock, 1, timeout=FINISH_LOCK_SECONDS):
        raise Conflict("video_finishing", "This video is being verified by another request; retry shortly.")
    try:
        return _verify(storage, video)
    except StorageError as exc:
        log.warning("video %s not verified: %s", video.pk, exc)
        raise StorageUnavailable(
            "storage_unavailable", "Video storage cannot be reached right now; finish the video again later."
        ) from exc
    finally:
        cache.delete(lock)


def _discard_replayed_upload(storage: VideoStorage, video: Video) -> None:
    """Delete what a replay of a finished video's still-valid upload URL wrote: nothing will promote it."""
    try:
        storage.delete(key=incoming_key(video.object_key))
    except StorageError as exc:
        log.warning("video %s: replayed upload not deleted yet: %s", video.pk, exc)


def _verify(storage: VideoStorage, video: Video) -> Video:
    upload_key = incoming_key(video.object_key)
    uploaded = storage.head(key=upload_key)
    if uploaded is None:
        if storage.head(key=video.object_key) is None:
            raise Conflict("video_not_uploaded", "Nothing was uploaded for this video yet; upload it first.")
    else:
        problem = _mismatch(video, size=uploaded.size, content_type=uploaded.content_type)
        if problem:
            storage.delete(key=upload_key)
            return _reject(video, problem)
        storage.promote(source=upload_key, destination=video.object_key)
    try:
        digest = storage.sha256(key=video.object_key, limit=min(video.size, settings.VIDEO_MAX_BYTES))
    except ObjectTooLarge:
        digest = None
    if digest != video.sha256:
        storage.delete(key=video.object_key)
        return _reject(
            video, "its SHA-256 differs from the declared one" if digest else "it is larger than declared"
        )
    with transaction.atomic():
        video = Video.objects.select_for_update().select_related("session").get(pk=video.pk)
        if video.state == Video.State.PENDING:
            video.state = Video.State.VERIFIED
            video.verified_at = timezone.now()
            video.save(update_fields=["state", "verified_at"])
            transaction.on_commit(partial(_enqueue_poster, str(video.pk)))
            session = video.session
            if session.is_open and session.lease_expires_at > timezone.now():
                session_renew_lease(session=session)
        return video


def _enqueue_poster(video_id: str) -> None:
    from arena.tasks import video_poster_make_task

    try:
        video_poster_make_task.delay(video_id)
    except Exception:  # the broker is down: the video is verified; the page shows it without a poster
        log.exception("could not enqueue the poster of video %s", video_id)


def poster_key(object_key: str) -> str:
    """Where a video's poster frame is stored: its key with the poster extension instead of the video's."""
    stem = object_key.rsplit(".", 1)[0] if "." in object_key.rsplit("/", 1)[-1] else object_key
    return stem + POSTER_EXTENSION


def first_frame_jpeg(path: str, *, max_width: int = POSTER_MAX_WIDTH) -> bytes | None:
    """The first video frame of the file at ``path`` as JPEG bytes, at most ``max_width`` pixels wide; None
    when PyAV is not installed or the file has no decodable video frame."""
    try:
        import av
    except ImportError:
        log.info("PyAV is not installed: videos get no poster frame")
        return None
    try:
        with av.open(path, mode="r", metadata_errors="ignore") as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if frame.width * frame.height > POSTER_MAX_PIXELS or frame.width < 2 or frame.height < 2:
                    return None
                width = min(max_width, frame.width) // 2 * 2
                height = max(2, round(frame.height * width / frame.width) // 2 * 2)
                scaled = frame.reformat(width=width, height=height, format="yuvj420p")
                encoder = av.CodecContext.create("mjpeg", "w")
                encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
                encoder.time_base = Fraction(1, 25)
                packets = encoder.encode(scaled) + encoder.encode(None)
                return b"".join(bytes(p) for p in packets) or None
    except (av.FFmpegError, ValueError, OSError) as exc:
        log.info("no poster frame: %s", exc)
    return None


def video_poster_make(*, video_id: uuid.UUID | str) -> Video | None:
    """Store the first frame of a verified video as its JPEG poster (``Video.poster_key``).

    The video is copied to a temporary file (at most its verified size) and decoded there; a video PyAV
    cannot decode, or a server without PyAV, leaves the video without a poster. Returns the video, or None
    when it is not (or no longer) verified.
    """
    video = Video.objects.filter(pk=video_id, state=Video.State.VERIFIED).first()
    if video is None:
        return None
    if video.poster_key:
        return video
    storage = get_storage()
    with tempfile.NamedTemporaryFile(suffix=EXTENSIONS.get(video.content_type, "")) as copy:
        written = 0
        try:
            for chunk in storage.open(key=video.object_key):
                written += len(chunk)
                if written > video.size:
                    return video
                copy.write(chunk)
        except StorageError as exc:
            log.warning("video %s: no poster, cannot read the video: %s", video.pk, exc)
            return video
        copy.flush()
        jpeg = first_frame_jpeg(copy.name)
    if jpeg is None:
        return video
    key = poster_key(video.object_key)
    try:
        storage.put(key=key, data=jpeg, content_type=POSTER_TYPE)
    except StorageError as exc:
        log.warning("video %s: poster not stored: %s", video.pk, exc)
        return video
    updated = Video.objects.filter(pk=video.pk, state=Video.State.VERIFIED).update(poster_key=key)
    if not updated:  # deleted meanwhile
        storage.delete(key=key)
    video.poster_key = key if updated else ""
    return video


def _mismatch(video: Video, *, size: int, content_type: str) -> str:
    if size != video.size:
        return f"it holds {size} bytes, not the declared {video.size}"
    if content_type != video.content_type:
        return f"its content type is {content_type!r}, not the declared {video.content_type!r}"
    return ""


def _reject(video: Video, problem: str) -> Video:
    log.warning("video %s rejected: %s", video.pk, problem)
    with transaction.atomic():
        video = Video.objects.select_for_update().get(pk=video.pk)
        if video.state == Video.State.PENDING:
            video.state = Video.State.REJECTED
            video.save(update_fields=["state"])
        return video


def _unpublished(objects, *, now: datetime):
    """Those of ``objects`` (videos or trajectories) whose submitted session ended more than
    ARENA_UNPUBLISHED_RETENTION_DAYS ago and may not be published (a policy's owner did not opt in)."""
    return objects.filter(
        session__state=EvaluationSession.State.SUBMITTED,
        session__ended_at__lt=now - timedelta(days=settings.ARENA_UNPUBLISHED_RETENTION_DAYS),
    ).exclude(session__policy_a__videos_public=True, session__policy_b__videos_public=True)


def _delete_stale_trajectories(storage: VideoStorage, *, cutoff: datetime, now: datetime) -> int:
    """Delete the trajectories of aborted or expired sessions that ended before ``cutoff`` and, when
    ARENA_UNPUBLISHED_RETENTION_DAYS is set, those of submitted sessions whose episodes may not be published
    (a policy did not opt in) that ended that long ago. Returns how many."""
    closed = [EvaluationSession.State.ABORTED, EvaluationSession.State.EXPIRED]
    stale = Trajectory.objects.filter(session__state__in=closed, session__ended_at__lt=cutoff)
    if settings.ARENA_UNPUBLISHED_RETENTION_DAYS > 0:
        stale = stale | _unpublished(Trajectory.objects.all(), now=now)
    deleted = 0
    for trajectory in stale.exclude(state=Trajectory.State.DELETED).iterator():
        storage.delete(key=incoming_key(trajectory.object_key))
        storage.delete(key=trajectory.object_key)
        deleted += (
            Trajectory.objects.filter(pk=trajectory.pk)
            .exclude(state=Trajectory.State.DELETED)
            .update(state=Trajectory.State.DELETED)
        )
    return deleted


def video_retention_sweep(*, now: datetime | None = None) -> dict[str, Any]:
    """Delete the objects of aborted or expired sessions that ended more than VIDEO_RETENTION_DAYS ago, and
    (when ARENA_UNPUBLISHED_RETENTION_DAYS is set) those of submitted sessions that may not be published and ended
    that long ago (their Video and Trajectory rows become ``deleted``), then compare the bucket with the
    database (release files are not compared).

    Uploads replayed after their video was finished (an incoming object of a verified or rejected video) are
    deleted too. Returns ``{"deleted", "replays_deleted", "orphan_count", "orphans", "missing_count",
    "missing"}``: how many videos were deleted; how many replayed uploads; objects no row expects (keys);
    verified videos without their object (ids). At most 100 each.
    """
    now = now or timezone.now()
    storage = get_storage()
    cutoff = now - timedelta(days=settings.VIDEO_RETENTION_DAYS)
    stale = Video.objects.filter(
        session__state__in=[EvaluationSession.State.ABORTED, EvaluationSession.State.EXPIRED],
        session__ended_at__lt=cutoff,
    )
    if settings.ARENA_UNPUBLISHED_RETENTION_DAYS > 0:
        stale = stale | _unpublished(Video.objects.all(), now=now)
    stale = stale.exclude(state=Video.State.DELETED)
    deleted = 0
    for video in stale.iterator():
        storage.delete(key=incoming_key(video.object_key))
        storage.delete(key=video.object_key)
        if video.poster_key:
            storage.delete(key=video.poster_key)
        deleted += (
            Video.objects.filter(pk=video.pk)
            .exclude(state=Video.State.DELETED)
            .update(state=Video.State.DELETED)
        )
    deleted += _delete_stale_trajectories(storage, cutoff=cutoff, now=now)
    # Keys first, rows second: a row always exists before its object, so a fresh upload is never an orphan.
    listed_at = timezone.now()
    keys = set(storage.list_keys())
    expected: set[str] = set()
    missing: list[str] = []
    replays: list[str] = []
    rows = Video.objects.filter(state__in=[Video.State.PENDING, Video.State.VERIFIED, Video.State.REJECTED])
    for video_id, key, state, verified_at, poster in rows.values_list(
        "id", "object_key", "state", "verified_at", "poster_key"
    ):
        if poster:
            expected.add(poster)
        if state == Video.State.REJECTED:
            if incoming_key(key) in keys:
                replays.append(incoming_key(key))
            continue
        expected.add(key)
        if state == Video.State.PENDING:
            expected.add(incoming_key(key))
        else:
            if incoming_key(key) in keys:
                replays.append(incoming_key(key))
            if key not in keys and verified_at is not None and verified_at < listed_at:
                missing.append(str(video_id))
    trajectories = Trajectory.objects.filter(
        state__in=[Trajectory.State.PENDING, Trajectory.State.VERIFIED]
    ).values_list("object_key", "state")
    for key, state in trajectories:
        expected.add(key)
        if state == Trajectory.State.PENDING:
            expected.add(incoming_key(key))
    for key in replays:
        storage.delete(key=key)
    releases = settings.ARENA_RELEASE_PREFIX
    orphans = sorted(k for k in keys - expected - set(replays) if not (releases and k.startswith(releases)))
    report = {
        "deleted": deleted,
        "replays_deleted": len(replays),
        "orphan_count": len(orphans),
        "orphans": orphans[:MAX_REPORTED],
        "missing_count": len(missing),
        "missing": sorted(missing)[:MAX_REPORTED],
    }
    level = logging.WARNING if orphans or missing else logging.INFO
    log.log(
        level,
        "video retention sweep: deleted %d, %d objects without a row, %d verified videos without an object",
        deleted,
        len(orphans),
        len(missing),
    )
    return report
