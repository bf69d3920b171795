"""The wire format round-trips what openpi peers send, and refuses what it must."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from policy_server.wire import WireError, packb, unpackb

ARRAY_DTYPES = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="="),
    hnp.integer_dtypes(endianness=">"),
    hnp.unsigned_integer_dtypes(endianness="<"),
    hnp.floating_dtypes(endianness="="),
    hnp.floating_dtypes(endianness=">"),
    hnp.byte_string_dtypes(max_len=4),
    hnp.unicode_string_dtypes(max_len=4),
    hnp.datetime64_dtypes(),
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
    st.text(max_size=5).map(np.str_),
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
    ],
    ids=["object", "complex-array", "complex-scalar", "structured", "void"],
)
def test_refused_dtypes_fail_to_encode(value: object) -> None:
    with pytest.raises(WireError, match="refused"):
        packb({"x": value})


@pytest.mark.parametrize("dtype", ["|O", "<c8", "|V4", "[('a', '<i4')]"])
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
        unpackb(frame, max_size=100)
    assert unpackb(frame, max_size=None).shape == (1000,)


@pytest.mark.parametrize("frame", [b"", b"\x92\x01", packb({"a": 1})[:-1], b"\xc1"])
def test_truncated_or_garbage_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(WireError):
        unpackb(frame)
