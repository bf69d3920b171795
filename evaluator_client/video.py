"""Record camera frames to browser-playable MP4 (H.264, yuv420p, faststart) with PyAV.

Frames arrive at the control rate (15 Hz) and are subsampled to the video rate (10 fps): a step is kept when
it starts a new output frame period, so the video runs in real time. Frames are encoded as they arrive (no
episode-long buffering): one file per camera, or one side-by-side tile of all cameras.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from evaluator_client.extras import missing_extra

try:
    import av
except ModuleNotFoundError as exc:
    raise missing_extra(exc, extra="lab", needed_for="recording the session videos") from exc

CONTENT_TYPE = "video/mp4"


@dataclass(frozen=True)
class VideoFile:
    """One encoded video. ``size_bytes`` and ``sha256`` are of the finished file."""

    path: Path
    camera: str
    size_bytes: int
    sha256: str
    frames: int
    fps: int
    width: int
    height: int
    content_type: str = CONTENT_TYPE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _even(image: np.ndarray) -> np.ndarray:
    """``image`` (uint8 (H, W, 3)) zero-padded to even sides, as yuv420p needs."""
    height, width = image.shape[0] + image.shape[0] % 2, image.shape[1] + image.shape[1] % 2
    if (height, width) == image.shape[:2]:
        return np.ascontiguousarray(image)
    padded = np.zeros((height, width, 3), dtype=np.uint8)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded


def jpeg_bytes(image: np.ndarray, *, quality: int = 4) -> bytes:
    """One uint8 (H, W, 3) RGB image as a baseline JPEG (``quality``: ffmpeg's qscale, 2 best .. 31 worst)."""
    image = _even(np.asarray(image, dtype=np.uint8))
    codec: Any = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = image.shape[1], image.shape[0]
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 10)
    codec.options = {"qscale": str(quality)}
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 (H, W, 3) RGB image as a PNG (lossless: the start scene the operator restores)."""
    image = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    height, width = image.shape[:2]
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


class _Encoder:
    """One H.264 stream in one MP4 file."""

    def __init__(self, path: Path, width: int, height: int, fps: int, crf: int) -> None:
        self.path = path
        self.width, self.height = width + width % 2, height + height % 2
        self.container: Any = av.open(str(path), mode="w", options={"movflags": "+faststart"})
        self.stream: Any = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, fps)
        self.stream.options = {"preset": "veryfast", "crf": str(crf), "tune": "zerolatency"}
        self.frames = 0

    def encode(self, image: np.ndarray) -> None:
        if image.shape[0] != self.height or image.shape[1] != self.width:
            padded = np.zeros((self.height, self.width, 3), dtype=np.uint8)
            padded[: image.shape[0], : image.shape[1]] = image[: self.height, : self.width]
            image = padded
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.frames
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class VideoRecorder:
    """Encode frames from ``cameras`` into ``directory/<stem>_<camera>.mp4`` (or ``<stem>_tile.mp4``).

    ``source_hz``: the rate ``add`` is offered frames at (the control rate); ``fps``: the video rate;
    ``tile``: one side-by-side video of all cameras instead of one per camera; ``crf``: x264 quality.
    Use :meth:`wants_frame` to skip rendering frames the video would drop; :meth:`close` returns the files.
    """

    def __init__(
        self,
        directory: str | Path,
        stem: str,
        cameras: Sequence[str],
        *,
        source_hz: float = 15.0,
        fps: int = 10,
        tile: bool = False,
        crf: int = 23,
    ) -> None:
        if fps > source_hz:
            raise ValueError("the video rate cannot exceed the source rate")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stem = stem
        self.cameras = list(cameras)
        self.source_hz = source_hz
        self.fps = fps
        self.tile = tile
        self.crf = crf
        self.encode_seconds = 0.0
        self._encoders: dict[str, _Encoder] = {}
        self._closed = False

    def wants_frame(self, step: int) -> bool:
        """Whether control step ``step`` (0-based) starts a new video frame period."""
        if step == 0:
            return True
        return int(step * self.fps // self.source_hz) != int((step - 1) * self.fps // self.source_hz)

    def add(self, frames: Mapping[str, np.ndarray]) -> None:
        """Encode one frame per camera (uint8 (H, W, 3) RGB)."""
        if self._closed:
            raise RuntimeError("the recorder is closed")
        start = time.perf_counter()
        if self.tile:
            images = [np.asarray(frames[name], dtype=np.uint8) for name in self.cameras]
            height = max(image.shape[0] for image in images)
            row = np.zeros((height, sum(image.shape[1] for image in images), 3), dtype=np.uint8)
            x = 0
            for image in images:
                row[: image.shape[0], x : x + image.shape[1]] = image
                x += image.shape[1]
            self._encoder("tile", row).encode(row)
        else:
            for name in self.cameras:
                image = np.asarray(frames[name], dtype=np.uint8)
                self._encoder(name, image).encode(image)
        self.encode_seconds += time.perf_counter() - start

    def _encoder(self, name: str, image: np.ndarray) -> _Encoder:
        if name not in self._encoders:
            path = self.directory / f"{self.stem}_{name}.mp4"
            self._encoders[name] = _Encoder(path, image.shape[1], image.shape[0], self.fps, self.crf)
        return self._encoders[name]

    def close(self) -> list[VideoFile]:
        """Flush and close every file; return their descriptions (no files if no frame was added)."""
        start = time.perf_counter()
        files = []
        for name, encoder in self._encoders.items():
            encoder.close()
            files.append(
                VideoFile(
                    path=encoder.path,
                    camera=name,
                    size_bytes=encoder.path.stat().st_size,
                    sha256=sha256_file(encoder.path),
                    frames=encoder.frames,
                    fps=self.fps,
                    width=encoder.width,
                    height=encoder.height,
                )
            )
        self._closed = True
        self.encode_seconds += time.perf_counter() - start
        return files
