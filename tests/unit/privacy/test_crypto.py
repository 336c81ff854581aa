"""Encryption at rest: known answers, tampering, AAD binding, envelope rotation, key hygiene."""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from privacy.crypto import (
    Aad,
    DataKey,
    DecryptionError,
    KeyRing,
    rewrap_data_key,
    unwrap_data_key,
    wrap_data_key,
    wrapped_key_version,
)
from privacy.crypto._data import _encrypt_with_nonce
from privacy.crypto._envelope import _wrap_with_nonce

KEY = bytes(range(32))
KEK = bytes(range(32, 64))
NONCE = bytes(range(100, 112))
WRAP_NONCE = bytes(range(200, 212))
AAD = Aad(table="ratings", column="label", user_id="user-1", row="face-7")

DATA_VECTOR = bytes.fromhex(
    "1100000001"  # format 0x11, DEK version 1
    "6465666768696a6b6c6d6e6f"  # nonce
    "4eebca1b59f4eccc"  # ciphertext of b"matchsvc"
    "7341c901f1853441518be2a443d95e01"  # tag
)
WRAPPED_VECTOR = bytes.fromhex(
    "2100000001"  # format 0x21, KEK version 1
    "c8c9cacbcccdcecfd0d1d2d3"  # nonce
    "a548ace1b753a4c5569689e6ee750bdb81d5216dc5e76ee645ec3fe1d56e7ba7757615e0"  # DEK || u32 1
    "7bb1cc442e1641b9c4c80f4e0b6903df"  # tag
)
PRF_VECTOR = bytes.fromhex("6c405f4b44176158f60fb895e5bec5f39f139c4b2153b32d3a9816031dde48ee")

FIELDS = [field.name for field in dataclasses.fields(Aad)]
text = st.text(min_size=1, max_size=24)


def _lp(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(ikm)


def _flips(blob: bytes) -> list[bytes]:
    return [
        blob[:i] + bytes([blob[i] ^ mask]) + blob[i + 1 :]
        for i in range(len(blob))
        for mask in (0x01, 0x80, 0xFF)
    ]


def assert_opaque_failure(call: Callable[..., object], *args: object, **kwargs: object) -> None:
    """``call(*args, **kwargs)`` raises a DecryptionError with no message and no chained cause."""
    with pytest.raises(DecryptionError) as info:
        call(*args, **kwargs)
    error = info.value
    assert error.args == ()
    assert str(error) == ""
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.fixture
def key() -> DataKey:
    return DataKey(KEY, version=1)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({1: KEK}, current=1)


# Known answers -----------------------------------------------------------------------------


def test_data_known_answer(key: DataKey) -> None:
    assert _encrypt_with_nonce(key, b"matchsvc", aad=AAD, nonce=NONCE) == DATA_VECTOR
    assert key.decrypt(DATA_VECTOR, aad=AAD) == b"matchsvc"


def test_data_vector_follows_documented_format() -> None:
    header = b"\x11" + struct.pack(">I", 1)
    aad = header + _lp("ratings") + _lp("label") + _lp("user-1") + _lp("face-7")
    sealed = AESGCM(_hkdf(KEY, b"matchsvc/crypto/v1/aead")).encrypt(NONCE, b"matchsvc", aad)
    assert header + NONCE + sealed == DATA_VECTOR


def test_wrapped_known_answer(key: DataKey, ring: KeyRing) -> None:
    assert _wrap_with_nonce(ring, key, user_id="user-1", nonce=WRAP_NONCE) == WRAPPED_VECTOR
    assert unwrap_data_key(ring, WRAPPED_VECTOR, user_id="user-1") == key


def test_wrapped_vector_follows_documented_format() -> None:
    header = b"\x21" + struct.pack(">I", 1)
    sealed = AESGCM(KEK).encrypt(WRAP_NONCE, KEY + struct.pack(">I", 1), header + _lp("user-1"))
    assert header + WRAP_NONCE + sealed == WRAPPED_VECTOR
    assert len(WRAPPED_VECTOR) == 69


def test_prf_known_answer(key: DataKey) -> None:
    assert key.prf("rr", b"face-7") == PRF_VECTOR
    mac = hmac.HMAC(_hkdf(KEY, b"matchsvc/crypto/v1/prf" + _lp("rr")), hashes.SHA256())
    mac.update(b"face-7")
    assert mac.finalize() == PRF_VECTOR


# Data ciphertexts ---------------------------------------------------------------------------


@given(plaintext=st.binary(max_size=300), fields=st.tuples(text, text, text, text))
def test_round_trip(plaintext: bytes, fields: tuple[str, str, str, str]) -> None:
    key = DataKey(KEY, version=7)
    aad = Aad(*fields)
    blob = key.encrypt(plaintext, aad=aad)
    assert len(blob) == 33 + len(plaintext)
    assert blob[:5] == b"\x11\x00\x00\x00\x07"
    assert key.decrypt(blob, aad=aad) == plaintext
    assert key.decrypt(memoryview(blob), aad=aad) == plaintext


def test_fresh_nonce_per_encryption(key: DataKey) -> None:
    blobs = {key.encrypt(b"same", aad=AAD) for _ in range(50)}
    assert len({blob[5:17] for blob in blobs}) == 50


def test_every_byte_flip_fails(key: DataKey) -> None:
    blob = key.encrypt(b"a rating label", aad=AAD)
    for tampered in _flips(blob):
        assert_opaque_failure(key.decrypt, tampered, aad=AAD)


def test_every_truncation_and_extension_fails(key: DataKey) -> None:
    blob = key.encrypt(b"a rating label", aad=AAD)
    for end in range(len(blob)):
        assert_opaque_failure(key.decrypt, blob[:end], aad=AAD)
    assert_opaque_failure(key.decrypt, blob + b"\x00", aad=AAD)
    assert_opaque_failure(key.decrypt, blob[1:], aad=AAD)


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_aad_field_fails(key: DataKey, field: str) -> None:
    blob = key.encrypt(b"w", aad=AAD)
    other = dataclasses.replace(AAD, **{field: getattr(AAD, field) + "x"})
    assert_opaque_failure(key.decrypt, blob, aad=other)


@pytest.mark.parametrize("left", range(3))
def test_aad_fields_are_length_prefixed(key: DataKey, left: int) -> None:
    values = ["t", "c", "u", "r"]
    values[left], values[left + 1] = "ab", "c"
    blob = key.encrypt(b"w", aad=Aad(*values))
    values[left], values[left + 1] = "a", "bc"
    assert_opaque_failure(key.decrypt, blob, aad=Aad(*values))


def test_ciphertexts_swapped_between_users_and_rows_fail(key: DataKey) -> None:
    cells = [Aad("ratings", "label", user, row) for user in ("u1", "u2") for row in ("r1", "r2")]
    plain = {cell: f"{cell.user_id}/{cell.row}".encode() for cell in cells}
    blobs = {cell: key.encrypt(plain[cell], aad=cell) for cell in cells}
    for cell in cells:
        assert key.decrypt(blobs[cell], aad=cell) == plain[cell]
        for other in cells:
            if other != cell:
                assert_opaque_failure(key.decrypt, blobs[other], aad=cell)


@given(
    cells=st.lists(st.tuples(st.binary(max_size=40), text), max_size=8),
    fields=st.tuples(text, text, text),
)
def test_decrypt_column_is_decrypt_of_each_cell(cells: list[tuple[bytes, str]], fields: tuple[str, str, str]) -> None:
    """The batch open (a refit's labels) returns exactly what one decrypt per cell returns."""
    key = DataKey(KEY, version=3)
    table, column, user = fields
    blobs = [key.encrypt(plain, aad=Aad(table, column, user, row)) for plain, row in cells]
    rows = [row for _, row in cells]
    opened = key.decrypt_column(blobs, table=table, column=column, user_id=user, rows=rows)
    one_by_one = [key.decrypt(blob, aad=Aad(table, column, user, row)) for blob, row in zip(blobs, rows, strict=True)]
    assert opened == one_by_one
    assert opened == [plain for plain, _ in cells]


def test_decrypt_column_fails_as_decrypt_does(key: DataKey) -> None:
    rows = ["r1", "r2", "r3"]
    blobs = [key.encrypt(row.encode(), aad=Aad("ratings", "label", "u1", row)) for row in rows]
    fields = {"table": "ratings", "column": "label", "user_id": "u1"}
    assert key.decrypt_column(blobs, rows=rows, **fields) == [b"r1", b"r2", b"r3"]
    assert_opaque_failure(key.decrypt_column, blobs, rows=["r1", "r3", "r2"], **fields)  # swapped between rows
    assert_opaque_failure(key.decrypt_column, blobs, rows=rows, **{**fields, "user_id": "u2"})
    assert_opaque_failure(key.decrypt_column, blobs, rows=rows, **{**fields, "column": "choice"})
    assert_opaque_failure(key.decrypt_column, [*blobs[:2], _flips(blobs[2])[0]], rows=rows, **fields)
    assert_opaque_failure(key.decrypt_column, [*blobs[:2], blobs[2][:20]], rows=rows, **fields)
    assert_opaque_failure(DataKey(KEY, version=2).decrypt_column, blobs, rows=rows, **fields)
    assert key.decrypt_column([], rows=[], **fields) == []
    with pytest.raises(ValueError, match="rows"):
        key.decrypt_column(blobs, rows=rows[:2], **fields)
    with pytest.raises(ValueError, match="row"):
        key.decrypt_column(blobs, rows=["r1", "", "r3"], **fields)
    with pytest.raises(ValueError, match="user_id"):
        key.decrypt_column(blobs, rows=rows, **{**fields, "user_id": ""})
    with pytest.raises(TypeError, match="blob"):
        key.decrypt_column([None], rows=["r1"], **fields)  # type: ignore[list-item]


def test_other_dek_version_fails() -> None:
    old, new = DataKey(KEY, version=1), DataKey(KEY, version=2)
    blob = old.encrypt(b"w", aad=AAD)
    assert_opaque_failure(new.decrypt, blob, aad=AAD)
    relabelled = blob[:1] + struct.pack(">I", 2) + blob[5:]
    assert_opaque_failure(new.decrypt, relabelled, aad=AAD)


def test_other_key_fails(key: DataKey) -> None:
    blob = key.encrypt(b"w", aad=AAD)
    assert_opaque_failure(DataKey.generate().decrypt, blob, aad=AAD)


def test_formats_are_not_interchangeable(key: DataKey, ring: KeyRing) -> None:
    wrapped = wrap_data_key(ring, key, user_id="user-1")
    assert_opaque_failure(key.decrypt, wrapped, aad=AAD)
    data = key.encrypt(bytes(36), aad=AAD)
    assert len(data) == len(wrapped)
    assert_opaque_failure(unwrap_data_key, ring, data, user_id="user-1")


def test_encrypt_and_decrypt_reject_wrong_types(key: DataKey) -> None:
    with pytest.raises(TypeError, match="plaintext"):
        key.encrypt("text", aad=AAD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="aad"):
        key.encrypt(b"x", aad=("ratings", "label", "user-1", "face-7"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="blob"):
        key.decrypt(None, aad=AAD)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    ("value", "error"), [("", ValueError), (3, TypeError), ("\ud800", ValueError)]
)
def test_aad_validates_fields(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=field):
        dataclasses.replace(AAD, **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "version"),
    [
        (bytes(31), 1),
        (bytes(33), 1),
        ("k" * 32, 1),
        (KEY, 0),
        (KEY, True),
        (KEY, 2**32),
        (KEY, 1.0),
    ],
)
def test_data_key_validates(raw: object, version: object) -> None:
    with pytest.raises(ValueError):
        DataKey(raw, version=version)  # type: ignore[arg-type]


def test_data_key_equality_is_by_value_and_unhashable(key: DataKey) -> None:
    assert key == DataKey(KEY, version=1)
    assert key != DataKey(KEY, version=2)
    assert key != DataKey.generate()
    with pytest.raises(TypeError):
        hash(key)


# PRF ------------------------------------------------------------------------------------------


@given(purpose=text, message=st.binary(max_size=64))
def test_prf_is_deterministic_and_separated(purpose: str, message: bytes) -> None:
    key, other = DataKey(KEY, version=1), DataKey(KEK, version=1)
    out = key.prf(purpose, message)
    assert len(out) == 32
    assert out == DataKey(KEY, version=3).prf(purpose, message)
    assert out != key.prf(purpose + "x", message)
    assert out != other.prf(purpose, message)
    assert out != key.prf(purpose, message + b"x")


def test_prf_purposes_do_not_collide_by_concatenation(key: DataKey) -> None:
    assert key.prf("ab", b"c") != key.prf("a", b"bc")


def test_prf_validates(key: DataKey) -> None:
    with pytest.raises(ValueError, match="purpose"):
        key.prf("", b"m")
    with pytest.raises(TypeError, match="message"):
        key.prf("rr", "m")  # type: ignore[arg-type]


# Envelope -------------------------------------------------------------------------------------


def test_wrap_round_trip_keeps_key_and_version(ring: KeyRing) -> None:
    key = DataKey.generate(version=5)
    blob = wrap_data_key(ring, key, user_id="user-1")
    assert len(blob) == 69
    assert wrapped_key_version(blob) == 1
    unwrapped = unwrap_data_key(ring, blob, user_id="user-1")
    assert unwrapped == key
    assert unwrapped.version == 5


def test_wrapped_key_every_byte_flip_and_truncation_fails(key: DataKey, ring: KeyRing) -> None:
    blob = wrap_data_key(ring, key, user_id="user-1")
    for tampered in [*_flips(blob), *(blob[:end] for end in range(len(blob))), blob + b"\x00"]:
        assert_opaque_failure(unwrap_data_key, ring, tampered, user_id="user-1")


def test_wrapped_key_for_another_user_fails(key: DataKey, ring: KeyRing) -> None:
    blob = wrap_data_key(ring, key, user_id="user-1")
    for user_id in ("user-2", "user-10", "user-", "User-1"):
        assert_opaque_failure(unwrap_data_key, ring, blob, user_id=user_id)


def test_wrapped_key_under_another_ring_fails(key: DataKey, ring: KeyRing) -> None:
    blob = wrap_data_key(ring, key, user_id="user-1")
    assert_opaque_failure(unwrap_data_key, KeyRing.generate(), blob, user_id="user-1")


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        WRAPPED_VECTOR[:-1],
        WRAPPED_VECTOR + b"\x00",
        b"\x11" + WRAPPED_VECTOR[1:],
        WRAPPED_VECTOR[:1] + bytes(4) + WRAPPED_VECTOR[5:],
    ],
    ids=["empty", "short", "long", "format", "version-0"],
)
def test_wrapped_key_version_rejects_malformed(blob: bytes) -> None:
    assert_opaque_failure(wrapped_key_version, blob)


def test_envelope_rejects_wrong_types(key: DataKey, ring: KeyRing) -> None:
    with pytest.raises(TypeError, match="ring"):
        wrap_data_key(ring.to_json(), key, user_id="u")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        wrap_data_key(ring, KEY, user_id="u")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user_id"):
        wrap_data_key(ring, key, user_id="")
    with pytest.raises(TypeError, match="blob"):
        unwrap_data_key(ring, "blob", user_id="u")  # type: ignore[arg-type]


def test_rotation_rewraps_keys_and_never_touches_data(ring: KeyRing) -> None:
    key = DataKey.generate()
    data = key.encrypt(b"w and b", aad=AAD)
    old_blob = wrap_data_key(ring, key, user_id="user-1")

    assert ring.rotate() == 2
    assert ring.current == 2
    assert list(ring.versions) == [1, 2]
    assert unwrap_data_key(ring, old_blob, user_id="user-1") == key

    new_blob = rewrap_data_key(ring, old_blob, user_id="user-1")
    assert (wrapped_key_version(old_blob), wrapped_key_version(new_blob)) == (1, 2)
    assert wrapped_key_version(wrap_data_key(ring, key, user_id="user-1")) == 2
    assert unwrap_data_key(ring, new_blob, user_id="user-1").decrypt(data, aad=AAD) == b"w and b"

    ring.retire(1)
    assert list(ring.versions) == [2]
    assert ring.retired == (1,)
    assert wrapped_key_version(old_blob) == 1
    assert_opaque_failure(unwrap_data_key, ring, old_blob, user_id="user-1")
    assert_opaque_failure(rewrap_data_key, ring, old_blob, user_id="user-1")
    assert unwrap_data_key(ring, new_blob, user_id="user-1") == key


def test_rewrap_of_other_user_fails(key: DataKey, ring: KeyRing) -> None:
    blob = wrap_data_key(ring, key, user_id="user-1")
    ring.rotate()
    assert_opaque_failure(rewrap_data_key, ring, blob, user_id="user-2")


# Key ring -------------------------------------------------------------------------------------


def test_retire_rules(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="current"):
        ring.retire(1)
    ring.rotate()
    with pytest.raises(ValueError, match="not active"):
        ring.retire(3)
    ring.retire(1)
    with pytest.raises(ValueError, match="not active"):
        ring.retire(1)
    assert ring.rotate() == 3
    ring.retire(2)
    assert ring.rotate() == 4  # versions are never reused, even after every old one is retired
    assert ring.retired == (1, 2)


def test_json_round_trip_and_format(ring: KeyRing) -> None:
    ring.rotate()
    ring.rotate()
    ring.retire(1)
    doc = json.loads(ring.to_json())
    assert doc["current"] == 3
    assert doc["retired"] == [1]
    assert list(doc["keys"]) == ["2", "3"]
    assert all(len(base64.b64decode(value, validate=True)) == 32 for value in doc["keys"].values())
    again = KeyRing.from_json(ring.to_json())
    assert again.to_json() == ring.to_json()
    blob = wrap_data_key(ring, DataKey(KEY, version=1), user_id="u")
    assert unwrap_data_key(again, blob, user_id="u") == DataKey(KEY, version=1)


def test_from_json_reads_the_documented_example() -> None:
    example = {"current": 1, "keys": {"1": base64.b64encode(KEK).decode()}}
    ring = KeyRing.from_json(json.dumps(example))
    assert ring.retired == ()
    assert unwrap_data_key(ring, WRAPPED_VECTOR, user_id="user-1") == DataKey(KEY, version=1)


@pytest.mark.parametrize(
    "template",
    [
        "not json",
        "[]",
        '{"keys": {"1": "KEY"}}',
        '{"current": 1}',
        '{"current": 1, "keys": {"1": "KEY"}, "extra": 0}',
        '{"current": 2, "keys": {"1": "KEY"}}',
        '{"current": "1", "keys": {"1": "KEY"}}',
        '{"current": true, "keys": {"1": "KEY"}}',
        '{"current": 1, "keys": {}}',
        '{"current": 1, "keys": ["KEY"]}',
        '{"current": 1, "keys": {"1": "SHORT"}}',
        '{"current": 1, "keys": {"1": "KEY!"}}',
        '{"current": 1, "keys": {"1": 7}}',
        '{"current": 1, "keys": {"0": "KEY"}}',
        '{"current": 1, "keys": {"01": "KEY"}}',
        '{"current": 1, "keys": {"-1": "KEY"}}',
        '{"current": 1, "keys": {"4294967296": "KEY"}}',
        '{"current": 1, "keys": {"1": "KEY", "1": "KEY"}}',
        '{"current": 1, "keys": {"1": "KEY"}, "retired": [1]}',
        '{"current": 1, "keys": {"1": "KEY"}, "retired": 2}',
        '{"current": 1, "keys": {"1": "KEY"}, "retired": [0]}',
    ],
)
def test_from_json_rejects_bad_config_without_leaking_keys(template: str) -> None:
    good, short = base64.b64encode(KEK).decode(), base64.b64encode(KEK[:31]).decode()
    with pytest.raises(ValueError) as info:
        KeyRing.from_json(template.replace("SHORT", short).replace("KEY", good))
    message = str(info.value)
    assert message
    assert good[:16] not in message and short[:16] not in message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


@pytest.mark.parametrize(
    ("keys", "current", "retired"),
    [
        ({}, 1, ()),
        ({1: KEK[:31]}, 1, ()),
        ({0: KEK}, 0, ()),
        ({True: KEK}, 1, ()),
        ({1: KEK}, 2, ()),
        ({1: KEK}, 1, (1,)),
        ({1: KEK}, 1, (0,)),
    ],
)
def test_key_ring_constructor_validates(
    keys: dict[int, bytes], current: int, retired: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        KeyRing(keys, current=current, retired=retired)


def test_rotation_generates_distinct_keys() -> None:
    ring = KeyRing.generate()
    ring.rotate()
    keys = json.loads(ring.to_json())["keys"]
    assert keys["1"] != keys["2"]


# Key hygiene ----------------------------------------------------------------------------------


def _renderings(secret: bytes) -> list[str]:
    return [secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]]


def test_repr_and_str_never_show_key_material(key: DataKey, ring: KeyRing) -> None:
    ring.rotate()
    stored = json.loads(ring.to_json())["keys"].values()
    secrets = [KEY, KEK, *(base64.b64decode(value) for value in stored)]
    shown = [repr(key), str(key), repr(ring), str(ring), repr(AAD)]
    assert repr(key) == "DataKey(version=1)"
    assert repr(ring) == "KeyRing(current=2, versions=(1, 2), retired=())"
    for secret in secrets:
        for rendering in _renderings(secret):
            assert all(rendering not in text for text in shown)
