"""Local-disk video uploads and downloads (the embedded mode, when S3 is not configured).

The URLs are made by ``arena.storage.LocalStorage``: each carries a token signed with SECRET_KEY that names
one key, an expiry and, for uploads, the exact content type and the largest size allowed. With S3 configured
these views answer 404: uploads and downloads go to S3 directly.
"""

from __future__ import annotations

from django.http import FileResponse, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from arena.api.errors import json_error
from arena.storage import (
    DOWNLOAD_SALT,
    UPLOAD_SALT,
    LocalStorage,
    SignedUrlError,
    StorageError,
    get_storage,
    read_token,
)


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
    return FileResponse(storage.path(grant["k"]).open("rb"), content_type=info.content_type)
