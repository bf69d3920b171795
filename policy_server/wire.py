"""The openpi wire format (msgpack with numpy arrays and scalars as tagged maps), and its one safe decoder.

An array travels as ``{b"__ndarray__": True, b"data": <raw bytes, C order>, b"dtype": "<f4", b"shape": [..]}``
and a numpy scalar as ``{b"__npgeneric__": True, b"data": <python value>, b"dtype": "<i8"}``; the tag keys are
msgpack *bin* keys, as openpi's own packer writes them, so openpi peers decode our frames and we decode theirs
(str tag keys are accepted as well). Nothing is ever pickled and no structured record crosses the wire.

Every frame from a peer is hostile until decoded by :func:`unpackb`, which the policy server, the relay, the
client and the health checker all share. Before anything is allocated in proportion to what a frame *declares*,
it checks against :class:`Limits` and against the frame's actual length:

- the frame length; each msgpack string, bin, array and map length (msgpack's own ``max_*_len``, so a 5-byte
  header claiming 4 G entries never reaches ``PyList_New``); ext types are refused;
- the number of container entries in the whole frame (counted as each container completes, so a megabyte of
  empty maps stops after ``max_items``) and the nesting depth (computed bottom-up as containers complete);
- an array's dtype against an explicit allow-list (:data:`ARRAY_DTYPES`: bool, ints, floats, and bytes of
  1 to ``max_array_bytes`` characters; no object, void, structured, complex, unicode, datetime or zero-size
  dtype), its number of dims, each dim, and the element count, multiplied dim by dim with an early exit (a
  list of 40,000 huge dims never becomes a giant integer); then ``data`` must hold exactly
  ``elements * itemsize`` bytes, so no array is larger than the bytes that arrived.

Decoded arrays are read-only views of the received bytes (no copy): call ``.copy()`` before changing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

import msgpack
import numpy as np

from policy_server._compat import to_thread

MIB = 2**20
IMAGE_BYTES_4K = 4096 * 4096 * 3
"""One 4096 x 4096 RGB uint8 image (48 MiB): the largest ``image_resolution`` the health check accepts."""

OFF_LOOP_BYTES = 64 * 1024
"""Frames longer than this are decoded in a worker thread by :func:`unpackb_off_loop` (bytes)."""


@dataclass(frozen=True)
class Limits:
    """Bounds a decoded frame must respect (all positive ints).

    ``max_frame_bytes``: the whole frame; ``max_array_bytes``: one array's data (and any msgpack bin);
    ``max_ndim``: dims of one array; ``max_depth``: nesting of maps and lists (an observation with a nested
    ``replica/state`` map is 2 deep, a tagged array counts as a leaf); ``max_items``: maps and lists plus their
    entries in the whole frame (an observation holds about a hundred, an action chunk sent as nested lists of
    400 x 8 about 3,600; each costs up to a hundred bytes of Python objects); ``max_container_len``: entries of one map or list; ``max_str_bytes``: one string.
    """

    max_frame_bytes: int = 3 * IMAGE_BYTES_4K + MIB
    max_array_bytes: int = IMAGE_BYTES_4K
    max_ndim: int = 8
    max_depth: int = 16
    max_items: int = 20_000
    max_container_len: int = 65_536
    max_str_bytes: int = MIB

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{item.name} must be a positive int, got {value!r}")


DEFAULT_LIMITS = Limits()
"""Limits for observations (what a lab sends): three cameras of up to 4096 x 4096 RGB (the largest
``image_resolution`` the health check lets a policy declare) plus 1 MiB of state and prompt: 145 MiB. A stereo
rig at that resolution (six images) does not fit; at DROID's native ZED 2 frames (2208 x 1242) it does."""

REPLY_LIMITS = Limits(max_frame_bytes=16 * MIB, max_array_bytes=16 * MIB)
"""Limits for what a policy sends (metadata, replies): an action chunk is a few kilobytes; 16 MiB leaves room
for policies that attach debug arrays, which the relay drops anyway."""

_NUMERIC = ("i2", "i4", "i8", "u2", "u4", "u8", "f2", "f4", "f8")
ARRAY_DTYPES = frozenset({"|b1", "|i1", "|u1"} | {order + code for order in "<>" for code in _NUMERIC})
"""Array dtypes accepted, spelled as numpy's ``dtype.str`` (what openpi sends); plus ``|S<n>``, 1 <= n."""

_BYTES_DTYPE = re.compile(r"\|S([1-9][0-9]{0,9})")
_SCALAR_STRING_DTYPE = re.compile(r"(\|S|[<>]U)[0-9]{0,10}")
_MAX_DTYPE_CHARS = 16
_ARRAY_TAG = b"__ndarray__"
_SCALAR_TAG = b"__npgeneric__"
_ARRAY_TEXT_TAG, _SCALAR_TEXT_TAG = _ARRAY_TAG.decode(), _SCALAR_TAG.decode()
_DATA, _DTYPE, _SHAPE = b"data", b"dtype", b"shape"


class WireError(ValueError):
    """A value cannot be encoded, or a frame cannot be decoded, in the openpi wire format.

    ``code`` says why, for machines: ``frame_too_large``, ``malformed``, ``too_deep``, ``too_many_items``,
    ``bad_dtype``, ``bad_shape``, ``too_large``, ``size_mismatch``, ``bad_scalar``, ``unencodable``.
    """

    def __init__(self, message: str, *, code: str = "malformed") -> None:
        super().__init__(message)
        self.code = code


def _array_dtype(dtype: np.dtype[Any]) -> bool:
    return dtype.str in ARRAY_DTYPES or (dtype.kind == "S" and dtype.itemsize >= 1 and dtype.fields is None)


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if not _array_dtype(obj.dtype):
            raise WireError(
                f"arrays of dtype {obj.dtype.str!r} are refused on the wire: only bool, int, float and "
                "non-empty bytes arrays travel",
                code="bad_dtype",
            )
        # A C-contiguous array is handed to msgpack as a buffer, so the relay's re-encoding copies it once.
        data = obj.data if obj.flags.c_contiguous else obj.tobytes()
        return {_ARRAY_TAG: True, _DATA: data, _DTYPE: obj.dtype.str, _SHAPE: list(obj.shape)}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biufSU":
            raise WireError(
                f"numpy scalars of dtype {obj.dtype.str!r} are refused on the wire (no msgpack form)",
                code="bad_dtype",
            )
        return {_SCALAR_TAG: True, _DATA: obj.item(), _DTYPE: obj.dtype.str}
    # Packing with strict types routes subclasses here (so np.float64, a float subclass, keeps its tag).
    if isinstance(obj, (list, tuple)):
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
    raise WireError(f"cannot encode object of type {type(obj).__name__} on the wire", code="unencodable")


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (dicts, lists, tuples, str, bytes, int, float, bool, None, numpy arrays and scalars).

    Tuples become lists on the other side. Raises :class:`WireError` for refused dtypes or unsupported types.
    """
    try:
        return msgpack.packb(obj, default=_encode, strict_types=True)
    except WireError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"cannot encode value: {exc}", code="unencodable") from exc


class _Decoder:
    """The msgpack hooks of one :func:`unpackb` call: counts entries, tracks depth, decodes tagged maps.

    msgpack calls a hook when a container is complete, children first; so a container's depth is one more
    than its deepest child container's, and both budgets are checked while decoding, not after. The hooks run
    once per container of a hostile frame (up to ``max_items`` times before it is refused), so an empty
    container takes a short path.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.items = 0
        self._max_items = limits.max_items
        self._depths: dict[int, int] = {}

    def _count(self, container: dict[Any, Any] | list[Any]) -> None:
        self.items += 1 + len(container)  # an empty container costs memory too
        if self.items > self._max_items:
            raise WireError(
                f"frame holds more than {self.limits.max_items} maps, lists and entries",
                code="too_many_items",
            )

    def _record_depth(self, container: dict[Any, Any] | list[Any], children: Any) -> None:
        depths = self._depths
        depth = 1 + max((depths[id(child)] for child in children if type(child) in (dict, list)), default=0)
        if depth > self.limits.max_depth:
            raise WireError(f"frame nests deeper than {self.limits.max_depth} levels", code="too_deep")
        depths[id(container)] = depth

    def list_hook(self, items: list[Any]) -> list[Any]:
        self._count(items)
        if items:
            self._record_depth(items, items)
        else:
            self._depths[id(items)] = 1
        return items

    def object_hook(self, obj: dict[Any, Any]) -> Any:
        self._count(obj)
        if not obj:
            self._depths[id(obj)] = 1
            return obj
        if _ARRAY_TAG in obj or _ARRAY_TEXT_TAG in obj:
            return self._array(obj)  # an array is a leaf, whatever the depth of its shape list
        if _SCALAR_TAG in obj or _SCALAR_TEXT_TAG in obj:
            return _scalar(obj)
        self._record_depth(obj, obj.values())
        return obj

    def _array(self, obj: dict[Any, Any]) -> np.ndarray:
        limits = self.limits
        dtype = _decoded_dtype(_field(obj, _DTYPE), scalar=False)
        shape, data = _field(obj, _SHAPE), _field(obj, _DATA)
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bytes, got {type(data).__name__}", code="bad_shape")
        if not isinstance(shape, list):
            raise WireError(f"array shape must be a list, got {type(shape).__name__}", code="bad_shape")
        if len(shape) > limits.max_ndim:
            raise WireError(
                f"array has {len(shape)} dims, at most {limits.max_ndim} allowed", code="bad_shape"
            )
        max_elements = limits.max_array_bytes // dtype.itemsize
        elements = 1
        for size in shape:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise WireError(f"array shape must list non-negative ints, got {size!r}", code="bad_shape")
            elements *= size
            if size > max_elements or elements > max_elements:
                raise WireError(
                    f"array of dtype {dtype.str!r} would exceed {limits.max_array_bytes} bytes",
                    code="too_large",
                )
        if elements * dtype.itemsize != len(data):
            raise WireError(
                f"array of shape {tuple(shape)} and dtype {dtype.str!r} needs {elements * dtype.itemsize} "
                f"bytes, frame holds {len(data)}",
                code="size_mismatch",
            )
        return np.ndarray(buffer=data, dtype=dtype, shape=tuple(shape))


def _field(obj: dict[Any, Any], key: bytes) -> Any:
    if key in obj:
        return obj[key]
    text_key = key.decode()
    if text_key in obj:
        return obj[text_key]
    raise WireError(f"tagged numpy map lacks its {text_key!r} field", code="bad_shape")


def _decoded_dtype(raw: Any, *, scalar: bool) -> np.dtype[Any]:
    """The dtype a peer names, if allowed; parsed by numpy only after an exact allow-list match."""
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", errors="replace")
    if not isinstance(raw, str) or len(raw) > _MAX_DTYPE_CHARS:
        raise WireError(
            f"dtype must be a short string, got {str(raw)[:_MAX_DTYPE_CHARS]!r}", code="bad_dtype"
        )
    if raw in ARRAY_DTYPES or _BYTES_DTYPE.fullmatch(raw):
        return np.dtype(raw)
    if scalar and _SCALAR_STRING_DTYPE.fullmatch(raw):
        return np.dtype(raw[:2])  # a string scalar's size is that of its value, carried in ``data``
    raise WireError(
        f"dtype {raw!r} is refused on the wire: only bool, int, float and non-empty bytes arrays travel",
        code="bad_dtype",
    )


def _scalar(obj: dict[Any, Any]) -> np.generic:
    dtype = _decoded_dtype(_field(obj, _DTYPE), scalar=True)
    value = _field(obj, _DATA)
    expected = {"b": bool, "i": int, "u": int, "f": (float, int), "S": bytes, "U": str}[dtype.kind]
    if isinstance(value, bool) != (dtype.kind == "b") or not isinstance(value, expected):
        raise WireError(
            f"numpy scalar of dtype {dtype.str!r} holds a {type(value).__name__}", code="bad_scalar"
        )
    try:
        return dtype.type(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"bad numpy scalar of dtype {dtype.str!r}: {exc}", code="bad_scalar") from exc


def unpackb(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one frame within ``limits`` (see the module docstring for every check).

    Arrays come back read-only. Raises :class:`WireError` (with a ``code``) for an oversize, malformed,
    truncated, too deep or too wide frame, a refused dtype, or an array whose size does not match its data.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"a frame is bytes, got {type(data).__name__}")
    length = len(data)
    if length > limits.max_frame_bytes:
        raise WireError(
            f"frame of {length} bytes exceeds the limit of {limits.max_frame_bytes} bytes",
            code="frame_too_large",
        )
    decoder = _Decoder(limits)
    try:
        return msgpack.unpackb(
            data,
            object_hook=decoder.object_hook,
            list_hook=decoder.list_hook,
            max_str_len=min(limits.max_str_bytes, length),
            max_bin_len=min(limits.max_array_bytes, length),
            max_array_len=min(limits.max_container_len, length),
            max_map_len=min(limits.max_container_len, length // 2),
            max_ext_len=0,
        )
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireError(f"malformed frame: {exc}") from exc


async def unpackb_off_loop(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Any:
    """:func:`unpackb` in a worker thread for frames over :data:`OFF_LOOP_BYTES`, so that decoding one
    peer's large frame never stalls the event loop that serves everyone else; small frames decode inline."""
    if len(data) > OFF_LOOP_BYTES:
        return await to_thread(unpackb, data, limits=limits)
    return unpackb(data, limits=limits)
