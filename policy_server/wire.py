"""The openpi wire format: msgpack with numpy arrays and scalars as tagged maps.

An array travels as ``{b"__ndarray__": True, b"data": <raw bytes, C order>, b"dtype": "<f4", b"shape": [..]}``
and a numpy scalar as ``{b"__npgeneric__": True, b"data": <python value>, b"dtype": "<i8"}``; the tag keys are
msgpack *bin* keys, as openpi's own packer writes them, so openpi peers decode our frames and we decode theirs
(str tag keys are accepted as well). Object, void and complex dtypes are refused in both directions:
nothing is ever pickled and no structured record crosses the wire.

Decoded arrays are read-only views of the received frame (no copy): call ``.copy()`` before changing one.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

DEFAULT_MAX_SIZE = 64 * 2**20
"""Largest frame, in bytes, that :func:`unpackb` accepts unless told otherwise (64 MiB)."""

REFUSED_KINDS = frozenset("OVc")
"""numpy dtype kinds that never cross the wire: object, void (structured/raw) and complex."""

_SCALAR_KINDS = frozenset("biufSU")
_ARRAY_TAG = b"__ndarray__"
_SCALAR_TAG = b"__npgeneric__"
_DATA, _DTYPE, _SHAPE = b"data", b"dtype", b"shape"


class WireError(ValueError):
    """A value cannot be encoded, or a frame cannot be decoded, in the openpi wire format."""


def _check_dtype(dtype: np.dtype[Any]) -> None:
    if dtype.kind in REFUSED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(
            f"dtype {dtype.str!r} (kind {dtype.kind!r}) is refused on the wire: "
            "object, void/structured and complex arrays are not supported"
        )


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {_ARRAY_TAG: True, _DATA: obj.tobytes(), _DTYPE: obj.dtype.str, _SHAPE: list(obj.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        if obj.dtype.kind not in _SCALAR_KINDS:
            raise WireError(
                f"numpy scalar of dtype {obj.dtype.str!r} has no msgpack form; send it as a 0-d array instead"
            )
        return {_SCALAR_TAG: True, _DATA: obj.item(), _DTYPE: obj.dtype.str}
    # Packing with strict types routes subclasses here (so np.float64, a float subclass, keeps its tag).
    if isinstance(obj, list | tuple):
        return list(obj)
    if isinstance(obj, dict):
        return dict(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    raise WireError(f"cannot encode object of type {type(obj).__name__} on the wire")


def _field(obj: dict[Any, Any], key: bytes) -> Any:
    if key in obj:
        return obj[key]
    text_key = key.decode()
    if text_key in obj:
        return obj[text_key]
    raise WireError(f"tagged numpy map lacks its {text_key!r} field")


def _tagged(obj: dict[Any, Any], tag: bytes) -> bool:
    return tag in obj or tag.decode() in obj


def _decode_dtype(raw: Any) -> np.dtype[Any]:
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    if not isinstance(raw, str):
        raise WireError(f"dtype must be a string, got {type(raw).__name__}")
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError) as exc:
        raise WireError(f"unknown dtype {raw!r}") from exc
    _check_dtype(dtype)
    return dtype


def _decode(obj: dict[Any, Any]) -> Any:
    if _tagged(obj, _ARRAY_TAG):
        dtype = _decode_dtype(_field(obj, _DTYPE))
        data, shape = _field(obj, _DATA), _field(obj, _SHAPE)
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bytes, got {type(data).__name__}")
        if not isinstance(shape, list | tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise WireError(f"array shape must be a list of non-negative ints, got {shape!r}")
        expected = math.prod(shape) * dtype.itemsize
        if expected != len(data):
            raise WireError(
                f"array of shape {tuple(shape)} and dtype {dtype.str!r} needs {expected} bytes, "
                f"frame holds {len(data)}"
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))
    if _tagged(obj, _SCALAR_TAG):
        dtype = _decode_dtype(_field(obj, _DTYPE))
        if dtype.kind not in _SCALAR_KINDS:
            raise WireError(f"numpy scalar of dtype {dtype.str!r} is not accepted")
        try:
            return dtype.type(_field(obj, _DATA))
        except (TypeError, ValueError, OverflowError) as exc:
            raise WireError(f"bad numpy scalar of dtype {dtype.str!r}: {exc}") from exc
    return obj


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (dicts, lists, tuples, str, bytes, int, float, bool, None, numpy arrays and scalars).

    Tuples become lists on the other side. Raises :class:`WireError` for refused dtypes or unsupported types.
    """
    try:
        return msgpack.packb(obj, default=_encode, strict_types=True)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode value: {exc}") from exc


def unpackb(data: bytes, *, max_size: int | None = DEFAULT_MAX_SIZE) -> Any:
    """Decode one frame. ``max_size`` (bytes, ``None`` for no limit) bounds the frame length.

    Arrays come back read-only and share memory with ``data``. Raises :class:`WireError` for an oversize,
    malformed or truncated frame, or a refused dtype.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError(f"a frame is bytes, got {type(data).__name__}")
    if max_size is not None and len(data) > max_size:
        raise WireError(f"frame of {len(data)} bytes exceeds the limit of {max_size} bytes")
    try:
        return msgpack.unpackb(bytes(data), object_hook=_decode)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"malformed frame: {exc}") from exc
