"""Byte codec for numbers that are stored encrypted, so no float or bool is written in plaintext.

Format (version 1): ``0x01 | count (u32 little-endian) | count x float64 little-endian``.
The shape is not stored: the caller knows it (a model's ``w`` is ``(d,)``), and decoding returns
1-D. Non-finite values are rejected both ways; a stored NaN would only hide a bug upstream.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

__all__ = ["decode_floats", "encode_floats"]

_FORMAT = 0x01
_HEADER = struct.Struct("<BI")
_FLOAT = np.dtype("<f8")


def encode_floats(values: npt.ArrayLike) -> bytes:
    """Encode real numbers of any shape (bool, int or float), flattened in C order.

    Parameters
    ----------
    values : array_like, any shape
        Finite real values; bools become 0.0/1.0.

    Returns
    -------
    bytes
        ``5 + 8 * values.size`` bytes.
    """
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"values must be real numbers, got dtype {array.dtype}")
    flat = array.astype(_FLOAT).ravel()
    if not np.isfinite(flat).all():
        raise ValueError("values must be finite, got NaN or infinity")
    return _HEADER.pack(_FORMAT, flat.size) + flat.tobytes()


def decode_floats(data: bytes | bytearray | memoryview) -> npt.NDArray[np.float64]:
    """Decode what :func:`encode_floats` wrote.

    Returns
    -------
    numpy.ndarray of float64, shape (count,)
        A fresh, writable array.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if len(data) < _HEADER.size:
        raise ValueError(f"data must be at least {_HEADER.size} bytes, got {len(data)}")
    fmt, count = _HEADER.unpack_from(data)
    if fmt != _FORMAT:
        raise ValueError(f"data has unknown format byte {fmt:#04x}, expected {_FORMAT:#04x}")
    if len(data) != _HEADER.size + _FLOAT.itemsize * count:
        raise ValueError(
            f"data holds {len(data) - _HEADER.size} value bytes, its header says {count} values"
        )
    values = np.frombuffer(data, dtype=_FLOAT, offset=_HEADER.size).astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("data contains NaN or infinity")
    return values
