"""The wire format round-trips what openpi peers send, and refuses what it must."""

from __future__ import annotations

import ast
import tracemalloc
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from policy_server.wire import Limits, WireError, packb, unpackb

ARRAY_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="="),
    hnp.integer_dtypes(endianness=">"),
    hnp.unsigned_integer_dtypes(endianness="<"),
    hnp.floating_dtypes(endianness="="),
    hnp.floating_dtypes(endianness=">"),
    hnp.byte_string_dtypes(min_len=1, max_len=4),
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def assert_same_array(got: np.ndarray, want: np.ndarray) -> None:
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(dtype=ARRAY_DTYPES, shape=SHAPES))
def test_arrays_round_trip_bit_exact_and_read_only(array: np.ndarray) -> None:
    got = unpackb(packb({"x": array}))["x"]
    assert_same_array(got, array)
    assert not got.flags.writeable


@given(hnp.arrays(dtype=np.float32, shape=(3, 4)))
def test_non_contiguous_arrays_travel_in_c_order(array: np.ndarray) -> None:
    view = array.T
    assert_same_array(unpackb(packb(view)), np.ascontiguousarray(view))


SCALARS = st.one_of(
    st.booleans().map(np.bool_),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 255).map(np.uint8),
    st.integers(-(2**15), 2**15 - 1).map(np.int16),
    st.floats(width=32, allow_nan=False).map(np.float32),
    st.floats(allow_nan=False).map(np.float64),
    # numpy drops a str_'s trailing NULs in .item(), so such a value cannot round-trip through msgpack.
    st.text(max_size=5).filter(lambda text: not text.endswith("\x00")).map(np.str_),
)


@given(SCALARS)
def test_numpy_scalars_keep_type_and_value(scalar: np.generic) -> None:
    got = unpackb(packb([scalar]))[0]
    assert type(got) is type(scalar)
    assert got == scalar


NESTED = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@given(NESTED)
def test_plain_msgpack_values_round_trip(value: object) -> None:
    assert unpackb(packb(value)) == value


def test_droid_observation_round_trips() -> None:
    obs = {
        "observation/exterior_image_1_left": np.zeros((224, 224, 3), np.uint8),
        "observation/joint_position": np.arange(7, dtype=np.float64),
        "prompt": "pick up the block",
        "nested": {"t": (1, 2)},
    }
    got = unpackb(packb(obs))
    assert got["prompt"] == "pick up the block"
    assert got["nested"] == {"t": [1, 2]}
    assert_same_array(got["observation/joint_position"], obs["observation/joint_position"])


def test_tag_keys_are_msgpack_bin_like_openpi_writes_them() -> None:
    raw = msgpack.unpackb(packb(np.zeros(2, np.float32)))
    assert raw == {b"__ndarray__": True, b"data": bytes(8), b"dtype": "<f4", b"shape": [2]}
    scalar = msgpack.unpackb(packb(np.int32(5)))
    assert scalar == {b"__npgeneric__": True, b"data": 5, b"dtype": "<i4"}


def test_str_tag_keys_are_accepted_too() -> None:
    frame = msgpack.packb({"__ndarray__": True, "data": bytes(4), "dtype": "<i2", "shape": [2]})
    assert_same_array(unpackb(frame), np.zeros(2, np.int16))


@pytest.mark.parametrize(
    "value",
    [
        np.zeros(2, dtype=object),
        np.zeros(2, dtype=np.complex64),
        np.complex128(1j),
        np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),
        np.zeros(2, dtype="V4"),
        np.array(["ab", "c"]),
        np.zeros(2, dtype="datetime64[s]"),
    ],
    ids=["object", "complex-array", "complex-scalar", "structured", "void", "unicode", "datetime"],
)
def test_refused_dtypes_fail_to_encode(value: object) -> None:
    with pytest.raises(WireError, match="refused"):
        packb({"x": value})


@pytest.mark.parametrize(
    "dtype",
    ["|O", "<c8", "|V4", "[('a', '<i4')]", "|S0", "<U", "<U0", "<U4", "f4,f4", "(2,)f4", "<M8[s]", "=f4"],
)
def test_refused_dtypes_fail_to_decode(dtype: str) -> None:
    frame = msgpack.packb({b"__ndarray__": True, b"data": bytes(16), b"dtype": dtype, b"shape": [1]})
    with pytest.raises(WireError):
        unpackb(frame)


def test_unsupported_python_objects_fail_to_encode() -> None:
    with pytest.raises(WireError, match="set"):
        packb({"x": {1, 2}})


def test_inconsistent_array_size_is_refused() -> None:
    frame = msgpack.packb({b"__ndarray__": True, b"data": bytes(7), b"dtype": "<f4", b"shape": [2]})
    with pytest.raises(WireError, match="needs 8 bytes"):
        unpackb(frame)


def test_negative_shape_is_refused() -> None:
    frame = msgpack.packb({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]})
    with pytest.raises(WireError, match="shape"):
        unpackb(frame)


def test_oversize_frame_is_refused_with_sizes_in_the_message() -> None:
    frame = packb(np.zeros(1000, np.uint8))
    with pytest.raises(WireError, match=rf"frame of {len(frame)} bytes exceeds the limit of 100 bytes"):
        unpackb(frame, limits=Limits(max_frame_bytes=100))
    assert unpackb(frame).shape == (1000,)


@pytest.mark.parametrize("frame", [b"", b"\x92\x01", packb({"a": 1})[:-1], b"\xc1"])
def test_truncated_or_garbage_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(WireError):
        unpackb(frame)


# -- bombs: each is refused by what it declares, before anything is allocated in proportion to it -----------


def _tagged(dtype: str, shape: list[int], data: bytes = b"") -> dict[bytes, object]:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


BOMBS = {
    "huge-shape-list": (msgpack.packb({"x": _tagged("<f4", [2**63 - 1] * 40_000)}), "too_many_items"),
    "many-dims": (msgpack.packb({"x": _tagged("<f4", [2**63 - 1] * 9)}), "bad_shape"),
    "huge-dims-zero-first": (msgpack.packb({"x": _tagged("<f4", [0] + [2**62] * 7)}), "too_large"),
    "huge-dims": (msgpack.packb({"x": _tagged("|u1", [2**31, 2**31])}), "too_large"),
    "zero-size-S0": (msgpack.packb({"x": _tagged("|S0", [10**9, 10**9])}), "bad_dtype"),
    "zero-size-U": (msgpack.packb({"x": _tagged("<U", [10**9, 10**9])}), "bad_dtype"),
    "deep-lists": (b"\x91" * 1000 + b"\xc0", "too_deep"),
    "deep-maps": (b"\x81\xa1k" * 1000 + b"\xc0", "too_deep"),
    "empty-map-flood": (b"\xdc\x00\x10" + (b"\xdc\xff\xff" + b"\x80" * 65_535) * 16, "too_many_items"),
    "array-header-4G": (b"\xdd\xff\xff\xff\xff", "malformed"),
    "map-header-4G": (b"\xdf\xff\xff\xff\xff", "malformed"),
    "bin-header-4G": (b"\x81\xa1x\xc6\xff\xff\xff\xff" + bytes(8), "malformed"),
    "declared-size-mismatch": (
        msgpack.packb({"x": _tagged("<f8", [1000, 1000], bytes(16))}),
        "size_mismatch",
    ),
    "ext-type": (msgpack.packb({"x": msgpack.ExtType(5, bytes(1000))}), "malformed"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bombs_are_refused_before_any_large_allocation(name: str) -> None:
    frame, code = BOMBS[name]
    tracemalloc.start()
    try:
        with pytest.raises(WireError) as refused:
            unpackb(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == code, refused.value
    # Python-level allocations while decoding stay within a small multiple of the frame itself.
    # Python-level allocations while decoding stay within the frame's size plus a fixed budget (max_items
    # containers); the old decoder built a 2.5-megabit integer, a million dicts, or a 10**18-element array.
    assert peak < 2 * len(frame) + 16 * 2**20, peak


def test_limits_bound_depth_items_and_dims() -> None:
    nested = {"a": {"b": {"c": 1}}}
    assert unpackb(packb(nested), limits=Limits(max_depth=3)) == nested
    with pytest.raises(WireError, match="deeper than 2"):
        unpackb(packb(nested), limits=Limits(max_depth=2))
    with pytest.raises(WireError, match="more than 5"):
        unpackb(packb(list(range(5))), limits=Limits(max_items=5))
    with pytest.raises(WireError, match="3 dims"):
        unpackb(packb(np.zeros((1, 1, 1))), limits=Limits(max_ndim=2))
    with pytest.raises(WireError, match="exceed 100 bytes"):
        unpackb(msgpack.packb(_tagged("<f8", [13])), limits=Limits(max_array_bytes=100))
    # An array is a leaf: its shape list does not count towards the depth.
    assert unpackb(packb({"x": np.zeros((2, 2))}), limits=Limits(max_depth=1))["x"].shape == (2, 2)
    with pytest.raises(ValueError, match="positive int"):
        Limits(max_depth=0)


@pytest.mark.parametrize("empty", [{}, []], ids=["map", "list"])
def test_empty_containers_count_towards_depth_and_items(empty) -> None:
    # Empty containers take the decoder's short path; they still nest and still cost an item each.
    nested = {"a": [{"b": empty}]}
    assert unpackb(packb(nested), limits=Limits(max_depth=4)) == nested
    with pytest.raises(WireError, match="deeper than 3") as deep:
        unpackb(packb(nested), limits=Limits(max_depth=3))
    assert deep.value.code == "too_deep"
    with pytest.raises(WireError) as flood:
        unpackb(packb([empty] * 10), limits=Limits(max_items=20))  # 1 + 10 + 10
    assert flood.value.code == "too_many_items"
    assert unpackb(packb([empty] * 9), limits=Limits(max_items=20)) == [empty] * 9  # 19


def test_default_limits_fit_three_4k_cameras() -> None:
    image = np.zeros((4096, 4096, 3), np.uint8)
    frame = packb({f"observation/camera_{i}": image for i in range(3)} | {"prompt": "pick the cup"})
    assert len(unpackb(frame)) == 4
    with pytest.raises(WireError, match="exceeds the limit"):
        unpackb(packb({f"observation/camera_{i}": image for i in range(4)}))


def test_every_peer_frame_goes_through_the_one_decoder() -> None:
    """The policy server, the relay, the client and the health checker (and the arena) decode peers' frames
    only with :func:`policy_server.wire.unpackb`: no other module imports msgpack, whose unbounded defaults
    were the bombs' way in."""
    root = Path(__file__).resolve().parents[2]
    importers = []
    for package in ("policy_server", "evaluator_client", "arena"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(name.split(".")[0] in ("msgpack", "msgpack_numpy") for name in names):
                    importers.append(str(path.relative_to(root)))
    assert importers == ["policy_server/wire.py"]
