"""Helpers for video tests: declare a video through the API, upload it the way a lab would, download it."""

from __future__ import annotations

import hashlib
import io
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from django.test import Client

from arena.storage import LocalStorage, VideoStorage
from tests.api.actors import Actor, report_both

BODY = bytes(range(256)) * 40  # 10 KiB standing in for an mp4 file


def declaration(body: bytes = BODY, **overrides) -> dict:
    return {
        "slot": "A",
        "camera": "wrist",
        "content_type": "video/mp4",
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        **overrides,
    }


def declare(lab: Actor, session_id: str, body: bytes = BODY, **overrides):
    return lab.post(f"/api/v1/sessions/{session_id}/videos/", declaration(body, **overrides))


def upload(
    upload: dict,
    body: bytes,
    *,
    content_type: str | None = None,
    fields: dict | None = None,
    url: str | None = None,
) -> tuple[int, str]:
    """Send ``body`` as instructed by the API's ``upload`` object; returns (status code, response text).

    ``content_type``, ``fields`` and ``url`` replace what the API said, to play an attacker.
    """
    url = url or upload["url"]
    if upload["method"] == "POST":
        form = dict(fields if fields is not None else upload["fields"])
        if content_type is not None:
            form["Content-Type"] = content_type
        response = requests.post(url, data=form, files={"file": ("video.mp4", body)}, timeout=10)
        return response.status_code, response.text
    response = Client().generic(
        "PUT", urlparse(url).path, data=body, content_type=content_type or upload["headers"]["Content-Type"]
    )
    return response.status_code, response.content.decode()


def download(url: str) -> tuple[int, bytes]:
    if urlparse(url).path.startswith("/files/"):
        response = Client().get(urlparse(url).path)
        body = b"".join(response.streaming_content) if response.status_code == 200 else response.content
        return response.status_code, body
    response = requests.get(url, timeout=10)
    return response.status_code, response.content


def stored_keys(storage: VideoStorage) -> list[str]:
    """Every object in the test's bucket or folder, temporary upload files included."""
    keys = list(storage.list_keys())
    if isinstance(storage, LocalStorage):
        keys += [f".tmp/{p.name}" for p in (storage.root / LocalStorage.TMP_DIR).glob("*")]
    return sorted(keys)


def submit_preference(lab: Actor, session_id: str) -> None:
    report_both(lab, session_id)
    response = lab.post(
        f"/api/v1/sessions/{session_id}/preference/", {"choice": "A", "reason": "A grasped it"}
    )
    assert response.status_code == 201, response.json()


def mp4(frames: int = 6, width: int = 96, height: int = 64) -> bytes:
    """A small real H.264 (or MPEG-4) video whose first frame is dark with a red band."""
    av = pytest.importorskip("av")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            image = np.zeros((height, width, 3), dtype=np.uint8)
            image[:, : (k + 1) * 8] = (200, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
