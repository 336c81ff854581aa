"""Versioned key-encryption keys and their JSON form for the secret store."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.crypto._common import (
    KEY_SIZE,
    MAX_VERSION,
    DecryptionError,
    check_key,
    check_version,
)

__all__ = ["KeyRing"]

_VERSION_NAME = re.compile(r"[1-9][0-9]*")
_FIELDS = frozenset({"current", "keys", "retired"})


class KeyRing:
    """Versioned key-encryption keys: ``current`` wraps, every active version unwraps.

    ``rotate`` adds a version and makes it current; ``retire`` drops an old version's key so
    blobs still wrapped under it stop unwrapping. Version numbers are never reused.
    Not thread-safe: mutate it in one place (the rotation job) and reload it elsewhere.
    """

    __slots__ = ("_current", "_keys", "_retired")

    def __init__(
        self, keys: Mapping[int, bytes], *, current: int, retired: Iterable[int] = ()
    ) -> None:
        if not isinstance(keys, Mapping) or not keys:
            raise ValueError("keys must be a non-empty mapping of version -> 32-byte key")
        checked = {
            check_version(version, "key version"): check_key(key, f"key for version {version}")
            for version, key in keys.items()
        }
        retired_set = {check_version(version, "retired version") for version in retired}
        if overlap := sorted(retired_set & checked.keys()):
            raise ValueError(f"versions {overlap} are both active and retired")
        check_version(current, "current")
        if current not in checked:
            raise ValueError(f"current version {current} has no key")
        self._keys = dict(sorted(checked.items()))
        self._current = current
        self._retired = retired_set

    @classmethod
    def generate(cls) -> KeyRing:
        """Return a ring with one random KEK, version 1."""
        return cls({1: os.urandom(KEY_SIZE)}, current=1)

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        """Parse ``{"current": 2, "keys": {"1": "<base64>", ...}, "retired": [...]}``.

        ``retired`` may be omitted. Error messages never quote key material.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            doc = json.loads(text, object_pairs_hook=_unique_object)
        except ValueError as exc:
            # JSONDecodeError keeps the whole document (keys included) in .doc: report .msg only.
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise ValueError(f"key ring JSON is malformed: {reason}") from None
        if not isinstance(doc, dict) or not {"current", "keys"} <= doc.keys() <= _FIELDS:
            raise ValueError('key ring JSON must be an object with "current", "keys", "retired"')
        if not isinstance(doc["keys"], dict):
            raise ValueError('key ring "keys" must be an object of version -> base64 key')
        retired = doc.get("retired", [])
        if not isinstance(retired, list):
            raise ValueError('key ring "retired" must be a list of versions')
        keys: dict[int, bytes] = {}
        for name, encoded in doc["keys"].items():
            if not _VERSION_NAME.fullmatch(name):
                raise ValueError('key ring "keys" names must be decimal integers >= 1')
            keys[int(name)] = _decode_key(encoded, name)
        return cls(keys, current=doc["current"], retired=retired)

    def to_json(self) -> str:
        """Serialise for the secret store; the output contains every active key."""
        keys = {str(v): base64.b64encode(k).decode("ascii") for v, k in self._keys.items()}
        return json.dumps({"current": self._current, "keys": keys, "retired": list(self.retired)})

    @property
    def current(self) -> int:
        """The version that wrapping uses."""
        return self._current

    @property
    def versions(self) -> tuple[int, ...]:
        """Active versions (able to unwrap), ascending."""
        return tuple(self._keys)

    @property
    def retired(self) -> tuple[int, ...]:
        """Versions whose keys were dropped, ascending."""
        return tuple(sorted(self._retired))

    def rotate(self) -> int:
        """Add a random KEK under the next unused version, make it current, and return it."""
        version = max(self._keys.keys() | self._retired) + 1
        if version > MAX_VERSION:
            raise ValueError(f"key ring has no version left after {MAX_VERSION}")
        self._keys[version] = os.urandom(KEY_SIZE)
        self._current = version
        return version

    def retire(self, version: int) -> None:
        """Drop the KEK of a non-current ``version``; blobs still under it become unreadable."""
        check_version(version, "version")
        if version == self._current:
            raise ValueError(f"version {version} is current; rotate before retiring it")
        if version not in self._keys:
            raise ValueError(f"version {version} is not active; active versions: {self.versions}")
        del self._keys[version]
        self._retired.add(version)

    def _aead(self, version: int) -> AESGCM:
        key = self._keys.get(version)
        if key is None:
            raise DecryptionError
        return AESGCM(key)

    def __repr__(self) -> str:
        return f"KeyRing(current={self._current}, versions={self.versions}, retired={self.retired})"


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate names in an object")
    return dict(pairs)


def _decode_key(encoded: object, name: str) -> bytes:
    if not isinstance(encoded, str):
        raise ValueError(f"key for version {name} must be a base64 string")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError(f"key for version {name} is not valid base64") from None
    return check_key(key, f"key for version {name}")
