"""Local-disk video uploads and downloads (the embedded mode, when S3 is not configured).

The URLs are made by ``arena.storage.LocalStorage``: each carries a token signed with SECRET_KEY that names
one key, an expiry and, for uploads, the exact content type and the largest size allowed. With S3 configured
these views answer 404: uploads and downloads go to S3 directly.
"""

from __future__ import annotations

import re

from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from arena.api.errors import json_error
from arena.storage import (
    CHUNK_BYTES,
    DOWNLOAD_SALT,
    UPLOAD_SALT,
    LocalStorage,
    SignedUrlError,
    StorageError,
    get_storage,
    read_token,
)

RANGE_RE = re.compile(r"bytes=(?P<first>\d{0,15})-(?P<last>\d{0,15})")


def _local_storage() -> LocalStorage | None:
    storage = get_storage()
    return storage if isinstance(storage, LocalStorage) else None


@csrf_exempt
def video_upload(request: HttpRequest, token: str) -> HttpResponse:
    """PUT the file's bytes with the signed Content-Type and a Content-Length of at most the declared size.

    Answers 204 once the file is stored; on refusal nothing is stored and the body is a JSON error.
    """
    storage = _local_storage()
    if storage is None:
        return json_error("not_found", "Local video storage is not in use.", 404)
    if request.method != "PUT":
        return json_error("method_not_allowed", "Upload with PUT.", 405)
    try:
        grant = read_token(token, salt=UPLOAD_SALT)
    except SignedUrlError as exc:
        return json_error(exc.code, exc.message, 403)
    if request.META.get("CONTENT_TYPE", "") != grant["t"]:
        return json_error(
            "content_type_mismatch", f"This URL accepts only Content-Type: {grant['t']}.", 415, "Content-Type"
        )
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return json_error("length_required", "Send a Content-Length header.", 411, "Content-Length")
    if length < 1:
        return json_error("empty_body", "The upload is empty.", 400)
    if length > grant["n"]:
        return json_error("too_large", f"This URL accepts at most {grant['n']} bytes.", 413, "Content-Length")
    try:
        storage.write(key=grant["k"], stream=request, length=length)
    except StorageError as exc:
        return json_error("incomplete_body", str(exc), 400)
    return HttpResponse(status=204)


def video_download(request: HttpRequest, token: str) -> HttpResponse:
    """GET a stored video through a signed, expiring URL."""
    storage = _local_storage()
    if storage is None:
        return json_error("not_found", "Local video storage is not in use.", 404)
    if request.method not in ("GET", "HEAD"):
        return json_error("method_not_allowed", "Download with GET.", 405)
    try:
        grant = read_token(token, salt=DOWNLOAD_SALT)
    except SignedUrlError as exc:
        return json_error(exc.code, exc.message, 403)
    info = storage.head(key=grant["k"])
    if info is None:
        return json_error("not_found", "The video is no longer stored.", 404)
    wanted = _byte_range(request.META.get("HTTP_RANGE", ""), info.size)
    if wanted is None:
        response = FileResponse(
            storage.path(grant["k"]).open("rb"), content_type=info.content_type or "application/octet-stream"
        )
        response["Accept-Ranges"] = "bytes"
        return response
    start, end = wanted
    if start >= info.size:
        response = json_error("range_not_satisfiable", "The range starts past the end of the file.", 416)
        response["Content-Range"] = f"bytes */{info.size}"
        return response
    # Browsers seek in a video with range requests (S3 answers them too); one range, read in bounded chunks.
    handle = storage.path(grant["k"]).open("rb")
    handle.seek(start)
    response = StreamingHttpResponse(
        _read(handle, end - start + 1),
        status=206,
        content_type=info.content_type or "application/octet-stream",
    )
    response["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    return response


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte of a single ``Range: bytes=a-b`` / ``a-`` / ``-n`` header (last clipped to the
    file); None for no header or any other form (answered with the whole file, as HTTP allows)."""
    match = RANGE_RE.fullmatch(header.strip())
    if not match or (not match["first"] and not match["last"]):
        return None
    if not match["first"]:
        suffix = int(match["last"])
        return (max(size - suffix, 0), size - 1) if suffix else None
    first = int(match["first"])
    last = min(int(match["last"]), size - 1) if match["last"] else size - 1
    return (first, last) if last >= first or first >= size else None


def _read(handle, length: int):
    with handle:
        while length > 0:
            chunk = handle.read(min(CHUNK_BYTES, length))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
