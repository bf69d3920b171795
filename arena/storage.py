"""Video object storage: the only module that talks to boto3.

Two backends behind one interface, chosen from settings:

- ``S3Storage`` when ``S3_ENDPOINT_URL``, ``S3_BUCKET``, ``S3_ACCESS_KEY_ID`` and ``S3_SECRET_ACCESS_KEY``
  are all set (path-style addressing, signature v4, region ``S3_REGION``). Uploads are presigned POSTs whose
  policy binds the exact key, the ``Content-Type`` and ``content-length-range`` [1, declared size], so S3
  itself refuses a larger body, another type or another key.
- ``LocalStorage`` when none of them is set (the embedded mode): files under ``VIDEO_DIR``, uploaded with a
  PUT to a signed, expiring URL served by ``arena.files``, which enforces the same bounds.

Setting only some of the ``S3_*`` variables raises ``StorageNotConfigured`` naming the missing ones.

Labs upload to ``incoming_key(key)``; ``promote`` moves the object to ``key``, which no upload URL ever
covers, so a verified video cannot be overwritten by replaying its upload URL before the URL expires.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core import checks, signing
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django.utils import timezone

S3_REQUIRED = ("S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY")
INCOMING_PREFIX = "incoming/"
CHUNK_BYTES = 1024 * 1024
# The content types stored objects may have, with the extension their keys end with. Local storage has no
# metadata, so it reads an object's type from its key's extension (the upload view refuses any other type).
VIDEO_EXTENSIONS = {"video/mp4": ".mp4", "video/webm": ".webm"}
TRAJECTORY_TYPE = "application/vnd.apache.parquet"
EXTENSIONS = {**VIDEO_EXTENSIONS, TRAJECTORY_TYPE: ".parquet"}
POSTER_TYPE, POSTER_EXTENSION = "image/jpeg", ".jpg"
"""Poster frames the server makes of verified videos (never uploaded by labs)."""
UPLOAD_SALT = "arena.storage.upload"
DOWNLOAD_SALT = "arena.storage.download"


class StorageNotConfigured(ImproperlyConfigured):
    """Some ``S3_*`` variables are set and others are missing."""


class StorageError(Exception):
    """The storage backend refused or failed an operation."""


class ObjectTooLarge(StorageError):
    """An object holds more bytes than the caller allowed."""


@dataclass(frozen=True)
class UploadTarget:
    """How a lab uploads one object: send ``fields`` as multipart form fields before the file (POST) or the
    body with ``headers`` (PUT) to ``url`` before ``expires_at``."""

    method: str
    url: str
    expires_at: datetime
    headers: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str


def incoming_key(key: str) -> str:
    """Where the lab uploads the object that becomes ``key`` once promoted."""
    return INCOMING_PREFIX + key


class VideoStorage(ABC):
    """What the video services need. Keys are relative paths such as ``sessions/<id>/A/wrist-….mp4``."""

    @abstractmethod
    def ensure_bucket(self) -> None:
        """Create the bucket (or folder) if missing; for ``make serve`` and fixtures, not per request."""

    @abstractmethod
    def probe(self) -> None:
        """Check the storage answers (the bucket is reachable, or the folder writable); raises StorageError."""

    @abstractmethod
    def upload_target(self, *, key: str, content_type: str, size: int) -> UploadTarget:
        """A short-lived upload of at most ``size`` bytes of ``content_type`` to exactly ``key``."""

    @abstractmethod
    def head(self, *, key: str) -> ObjectInfo | None:
        """Size and content type of the object, or None when there is none."""

    @abstractmethod
    def open(self, *, key: str) -> Iterable[bytes]:
        """The object's bytes in chunks. Raises StorageError when there is no object."""

    @abstractmethod
    def put(self, *, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` (small: the server's own poster frames) at ``key``."""

    @abstractmethod
    def promote(self, *, source: str, destination: str) -> None:
        """Move ``source`` to ``destination`` (replacing it); the source no longer exists afterwards."""

    @abstractmethod
    def download_url(self, *, key: str) -> tuple[str, datetime]:
        """A short-lived GET URL for the object and when it expires."""

    @abstractmethod
    def put_file(self, *, key: str, path: Path, content_type: str) -> None:
        """Store the local file ``path`` at ``key`` (server-made objects such as releases), streamed."""

    @abstractmethod
    def delete(self, *, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""

    @abstractmethod
    def list_keys(self, *, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``."""

    def sha256(self, *, key: str, limit: int) -> str:
        """Hex SHA-256 of the object, read as a stream. Raises ObjectTooLarge past ``limit`` bytes."""
        digest = hashlib.sha256()
        total = 0
        for chunk in self.open(key=key):
            total += len(chunk)
            if total > limit:
                raise ObjectTooLarge(f"{key} holds more than {limit} bytes")
            digest.update(chunk)
        return digest.hexdigest()


def _deadline() -> datetime:
    return timezone.now() + timedelta(seconds=settings.VIDEO_URL_TTL_SECONDS)


class S3Storage(VideoStorage):
    def __init__(
        self, *, endpoint_url: str, bucket: str, access_key_id: str, secret_access_key: str, region: str
    ):
        self.bucket = bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            config=Config(
                signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 3}
            ),
        )

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) != 404:
                raise StorageError(f"cannot reach bucket {self.bucket!r}: {exc}") from exc
            self.client.create_bucket(Bucket=self.bucket)

    def probe(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"bucket not reachable: {type(exc).__name__}") from exc

    def upload_target(self, *, key: str, content_type: str, size: int) -> UploadTarget:
        expires_at = _deadline()
        post = self.client.generate_presigned_post(
            self.bucket,
            key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, size]],
            ExpiresIn=settings.VIDEO_URL_TTL_SECONDS,
        )
        return UploadTarget(
            method="POST", url=post["url"], fields=dict(post["fields"]), expires_at=expires_at
        )

    def head(self, *, key: str) -> ObjectInfo | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise StorageError(f"cannot read {key}: {exc}") from exc
        except BotoCoreError as exc:  # the endpoint cannot be reached
            raise StorageError(f"cannot read {key}: {exc}") from exc
        return ObjectInfo(size=int(response["ContentLength"]), content_type=response.get("ContentType", ""))

    def open(self, *, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot read {key}: {exc}") from exc
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        except BotoCoreError as exc:
            raise StorageError(f"cannot read {key}: {exc}") from exc
        finally:
            body.close()

    def put(self, *, key: str, data: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot write {key}: {exc}") from exc

    def promote(self, *, source: str, destination: str) -> None:
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=destination, CopySource={"Bucket": self.bucket, "Key": source}
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot copy {source} to {destination}: {exc}") from exc
        self.delete(key=source)

    def download_url(self, *, key: str) -> tuple[str, datetime]:
        expires_at = _deadline()
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=settings.VIDEO_URL_TTL_SECONDS
        )
        return url, expires_at

    def put_file(self, *, key: str, path: Path, content_type: str) -> None:
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs={"ContentType": content_type})
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot store {key}: {exc}") from exc

    def delete(self, *, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot delete {key}: {exc}") from exc

    def list_keys(self, *, prefix: str = "") -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]


class LocalStorage(VideoStorage):
    """Files under ``root``. Uploads and downloads go through ``arena.files`` with URLs signed by SECRET_KEY;
    an object's content type is the one its key's extension stands for (see ``EXTENSIONS``)."""

    TMP_DIR = ".tmp"

    def __init__(self, *, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file of ``key``. Raises StorageError for keys that would leave the root."""
        parts = Path(key).parts
        if not key or Path(key).is_absolute() or ".." in parts or parts[0] == self.TMP_DIR:
            raise StorageError(f"invalid key {key!r}")
        return self.root / key

    def ensure_bucket(self) -> None:
        (self.root / self.TMP_DIR).mkdir(parents=True, exist_ok=True)

    def probe(self) -> None:
        try:
            self.ensure_bucket()
            with tempfile.NamedTemporaryFile(dir=self.root / self.TMP_DIR, prefix="probe-"):
                pass
        except OSError as exc:
            raise StorageError(f"video folder not writable: {exc.strerror or type(exc).__name__}") from exc

    def upload_target(self, *, key: str, content_type: str, size: int) -> UploadTarget:
        self.path(key)
        if _type_of(key) != content_type:
            raise StorageError(
                f"local keys for {content_type} end with {EXTENSIONS.get(content_type)}: {key!r}"
            )
        expires_at = _deadline()
        token = signing.dumps(
            {"k": key, "t": content_type, "n": size, "e": int(expires_at.timestamp())}, salt=UPLOAD_SALT
        )
        return UploadTarget(
            method="PUT",
            url=_absolute(reverse("video-file-upload", kwargs={"token": token})),
            headers={"Content-Type": content_type},
            expires_at=expires_at,
        )

    def head(self, *, key: str) -> ObjectInfo | None:
        path = self.path(key)
        if not path.is_file():
            return None
        return ObjectInfo(size=path.stat().st_size, content_type=_type_of(key))

    def open(self, *, key: str) -> Iterator[bytes]:
        try:
            handle = self.path(key).open("rb")
        except FileNotFoundError as exc:
            raise StorageError(f"no object {key}") from exc
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    def write(self, *, key: str, stream: BinaryIO, length: int) -> None:
        """Store exactly ``length`` bytes from ``stream`` at ``key``: into a temporary file, then renamed."""
        path = self.path(key)
        tmp_dir = self.root / self.TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
        try:
            remaining = length
            with os.fdopen(fd, "wb") as out:
                while remaining > 0:
                    chunk = stream.read(min(CHUNK_BYTES, remaining))
                    if not chunk:
                        raise StorageError(f"the body ended {remaining} bytes before its Content-Length")
                    out.write(chunk)
                    remaining -= len(chunk)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put(self, *, key: str, data: bytes, content_type: str) -> None:
        if _type_of(key) != content_type:
            raise StorageError(f"local keys of type {content_type} need the matching extension: {key!r}")
        self.write(key=key, stream=io.BytesIO(data), length=len(data))

    def put_file(self, *, key: str, path: Path, content_type: str) -> None:
        with open(path, "rb") as handle:
            self.write(key=key, stream=handle, length=Path(path).stat().st_size)

    def promote(self, *, source: str, destination: str) -> None:
        src, dst = self.path(source), self.path(destination)
        if not src.is_file():
            raise StorageError(f"no object {source}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)

    def download_url(self, *, key: str) -> tuple[str, datetime]:
        self.path(key)
        expires_at = _deadline()
        token = signing.dumps({"k": key, "e": int(expires_at.timestamp())}, salt=DOWNLOAD_SALT)
        return _absolute(reverse("video-file-download", kwargs={"token": token})), expires_at

    def delete(self, *, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def list_keys(self, *, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(
                d for d in dirnames if not (Path(dirpath) == self.root and d == self.TMP_DIR)
            )
            for name in sorted(filenames):
                key = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key


def _type_of(key: str) -> str:
    if key.endswith(POSTER_EXTENSION):
        return POSTER_TYPE
    return next((t for t, ext in EXTENSIONS.items() if key.endswith(ext)), "")


def _absolute(path: str) -> str:
    return settings.ARENA_PUBLIC_URL.rstrip("/") + path


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


class SignedUrlError(Exception):
    """A local upload or download token is forged, altered or expired. ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def read_token(token: str, *, salt: str) -> dict[str, Any]:
    """The payload of a local-storage token made by ``LocalStorage``. Raises SignedUrlError."""
    try:
        payload = signing.loads(token, salt=salt)
    except signing.BadSignature as exc:
        raise SignedUrlError("bad_signature", "The URL's signature is invalid.") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("e"), int):
        raise SignedUrlError("bad_signature", "The URL's signature is invalid.")
    if payload["e"] < timezone.now().timestamp():
        raise SignedUrlError("url_expired", "The URL has expired; ask the API for a new one.")
    return payload


def s3_missing_settings() -> list[str]:
    """The required ``S3_*`` settings left empty while others are set ([] when fully set or fully unset)."""
    missing = [name for name in S3_REQUIRED if not getattr(settings, name)]
    return [] if len(missing) == len(S3_REQUIRED) else missing


def get_storage() -> VideoStorage:
    """The configured backend. Raises StorageNotConfigured when S3 is only partly configured."""
    missing = s3_missing_settings()
    if missing:
        raise StorageNotConfigured(
            f"S3 storage is partly configured: set {', '.join(missing)} as well, "
            f"or unset every one of {', '.join(S3_REQUIRED)} to keep videos on local disk."
        )
    if not settings.S3_BUCKET:
        return _local(str(settings.VIDEO_DIR))
    return _s3(
        settings.S3_ENDPOINT_URL,
        settings.S3_BUCKET,
        settings.S3_ACCESS_KEY_ID,
        settings.S3_SECRET_ACCESS_KEY,
        settings.S3_REGION,
    )


@functools.lru_cache(maxsize=8)
def _s3(endpoint_url: str, bucket: str, access_key_id: str, secret_access_key: str, region: str) -> S3Storage:
    return S3Storage(
        endpoint_url=endpoint_url,
        bucket=bucket,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        region=region,
    )


@functools.lru_cache(maxsize=8)
def _local(root: str) -> LocalStorage:
    return LocalStorage(root=Path(root))


def check_storage_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Django system check (register it in ``AppConfig.ready``): partial S3 configuration is an error."""
    missing = s3_missing_settings()
    if not missing:
        return []
    return [
        checks.Error(
            f"S3 storage is partly configured; missing {', '.join(missing)}.",
            hint=f"Set all of {', '.join(S3_REQUIRED)}, or none of them to keep videos on local disk.",
            id="arena.E001",
        )
    ]
