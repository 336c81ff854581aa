"""Float codec: exact bytes, round trips for any shape, strict validation on decode."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privacy.codec import decode_floats, encode_floats

finite = st.floats(allow_nan=False, allow_infinity=False)


def test_known_answer() -> None:
    encoded = encode_floats(np.array([1.0, -2.5]))
    assert encoded == bytes.fromhex(
        "01"  # format
        "02000000"  # count, u32 little-endian
        "000000000000f03f"  # 1.0
        "00000000000004c0"  # -2.5
    )


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0)


@given(hnp.arrays(np.float64, shapes, elements=finite))
def test_round_trip_any_shape(values: np.ndarray) -> None:
    encoded = encode_floats(values)
    assert len(encoded) == 5 + 8 * values.size
    decoded = decode_floats(encoded)
    assert decoded.dtype == np.float64
    assert decoded.shape == (values.size,)
    np.testing.assert_array_equal(decoded, values.ravel())


def test_float32_big_endian_and_non_contiguous_inputs() -> None:
    values = np.arange(12, dtype=">f8").reshape(3, 4).T
    np.testing.assert_array_equal(decode_floats(encode_floats(values)), values.ravel())
    single = np.array([0.1, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(decode_floats(encode_floats(single)), single.astype(np.float64))


def test_bools_and_ints_are_encoded_as_floats() -> None:
    assert encode_floats(np.array([True, False])) == encode_floats(np.array([1.0, 0.0]))
    assert encode_floats([3, -1]) == encode_floats([3.0, -1.0])


def test_decoded_array_is_writable_and_owns_its_memory() -> None:
    data = bytearray(encode_floats([1.0, 2.0]))
    decoded = decode_floats(data)
    decoded[0] = 5.0
    data[5:13] = bytes(8)
    assert decoded.tolist() == [5.0, 2.0]
    assert decode_floats(memoryview(bytes(data))).tolist() == [0.0, 2.0]


@pytest.mark.parametrize("values", [np.array([1 + 2j]), np.array(["a"]), np.array([None])])
def test_encode_rejects_non_real_values(values: np.ndarray) -> None:
    with pytest.raises(TypeError, match="values"):
        encode_floats(values)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_encode_rejects_non_finite_values(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        encode_floats([1.0, bad])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "at least 5"),
        (b"\x01\x00\x00\x00", "at least 5"),
        (b"\x02\x00\x00\x00\x00", "format byte 0x02"),
        (b"\x01\x02\x00\x00\x00" + bytes(8), "header says 2"),
        (b"\x01\x01\x00\x00\x00" + bytes(9), "header says 1"),
        (b"\x01\x01\x00\x00\x00" + struct.pack("<d", float("nan")), "NaN"),
    ],
)
def test_decode_rejects_malformed(data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_floats(data)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="data"):
        decode_floats("01")  # type: ignore[arg-type]
