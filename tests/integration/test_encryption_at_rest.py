"""Nothing personal is readable at rest: a full scenario, then a scan of every column of every table.

Also: ciphertexts moved between rows or users fail, and key rotation under traffic loses nothing.
"""

from __future__ import annotations

import struct
import threading
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from matchsvc.runtime import Runtime
from matchsvc.services.keys import rotate_keys, user_cipher
from matchsvc.services.preferences import load_model, open_label
from privacy.crypto import DecryptionError
from tests.support.accounts import PASSWORD, auth_headers


def _rate_some(client: TestClient, headers: dict[str, str], n: int, rng: np.random.Generator) -> None:
    for face in client.get("/v1/faces/next", params={"n": n}, headers=headers).json()["faces"]:
        response = client.post(
            "/v1/ratings",
            json={"face_id": face["id"], "liked": bool(rng.random() < 0.5), "dwell_ms": 1234},
            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text


def _dump(runtime: Runtime) -> dict[tuple[str, str], list[object]]:
    """Every value of every column of every table, read back from PostgreSQL."""
    values: dict[tuple[str, str], list[object]] = {}
    with runtime.engine.connect() as connection:
        inspector = inspect(connection)
        for table in inspector.get_table_names():
            for column in inspector.get_columns(table):
                rows = connection.execute(text(f'SELECT "{column["name"]}" FROM "{table}"')).scalars().all()
                values[(table, column["name"])] = rows
    return values


def _needles(runtime: Runtime, user_ids: list[uuid.UUID]) -> tuple[list[bytes], list[str]]:
    """Byte and text forms of every user's model parameters: none may appear at rest."""
    byte_needles: list[bytes] = []
    text_needles = [PASSWORD]
    with runtime.sessions() as session:
        for user_id in user_ids:
            stored = load_model(session, cipher=user_cipher(session, keys=runtime.keys, user_id=user_id))
            assert stored is not None
            for value in [*stored.model.coef, stored.model.intercept]:
                byte_needles += [struct.pack("<d", value), struct.pack(">d", value), struct.pack("<f", value)]
                text_needles += [repr(float(value))[:10], f"{value:.6g}"]
    return byte_needles, [needle for needle in text_needles if len(needle) >= 6]


def test_database_holds_no_plaintext_labels_models_or_passwords(client: TestClient, db: Runtime) -> None:
    rng = np.random.default_rng(3)
    users = [auth_headers(client) for _ in range(3)]
    for headers in users:
        _rate_some(client, headers, 25, rng)
    user_ids = [uuid.UUID(client.get("/v1/me", headers=h).json()["id"]) for h in users]
    byte_needles, text_needles = _needles(db, user_ids)

    dump = _dump(db)
    assert ("ratings", "label_ct") in dump and ("preference_states", "state_ct") in dump
    for (table, column), values in dump.items():
        for value in values:
            if isinstance(value, (bytes, memoryview)):
                blob = bytes(value)
                assert not any(needle in blob for needle in byte_needles), (table, column)
            rendered = str(value)
            assert not any(needle in rendered for needle in text_needles), (table, column, rendered[:80])
            assert not isinstance(value, bool) or table in {"faces"}, f"plaintext boolean in {table}.{column}"
    # No column may be named like a plaintext label or preference.
    assert not {(t, c) for t, c in dump if c in {"liked", "label", "coef", "w", "b", "dwell_ms"}}


def test_ciphertexts_do_not_survive_being_moved(client: TestClient, db: Runtime) -> None:
    rng = np.random.default_rng(4)
    alice, bob = auth_headers(client), auth_headers(client)
    _rate_some(client, alice, 2, rng)
    _rate_some(client, bob, 1, rng)
    alice_id = uuid.UUID(client.get("/v1/me", headers=alice).json()["id"])
    with db.engine.connect() as connection:
        rows = connection.execute(text("SELECT user_id, face_id, label_ct FROM ratings ORDER BY id")).all()
    (a_user, a_face1, a_ct1), (_, a_face2, a_ct2), (_, _, b_ct) = rows
    with db.sessions() as session:
        cipher = user_cipher(session, keys=db.keys, user_id=alice_id)
        assert open_label(cipher, face_id=a_face1, blob=a_ct1) in (True, False)
        with pytest.raises(DecryptionError):  # another row of the same user
            open_label(cipher, face_id=a_face1, blob=a_ct2)
        with pytest.raises(DecryptionError):  # another user's row
            open_label(cipher, face_id=a_face1, blob=b_ct)


def test_rotation_under_traffic_loses_nothing(client: TestClient, db: Runtime) -> None:
    rng = np.random.default_rng(5)
    users = [auth_headers(client) for _ in range(4)]
    for headers in users:
        _rate_some(client, headers, 3, rng)
    errors: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            for headers in users:
                face = client.get("/v1/faces/next", params={"n": 1}, headers=headers).json()["faces"][0]
                response = client.post(
                    "/v1/ratings",
                    json={"face_id": face["id"], "liked": True},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                )
                if response.status_code != 201:
                    errors.append(response.text)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        first = rotate_keys(db.sessions, keys=db.keys, batch_size=1)
        second = rotate_keys(db.sessions, keys=db.keys, batch_size=2)
    finally:
        stop.set()
        worker.join()
    assert not errors
    assert second.kek_version == first.kek_version + 1 and second.rewrapped >= 4
    with db.engine.connect() as connection:
        versions = set(connection.execute(text("SELECT kek_version FROM user_keys")).scalars())
    assert versions == {second.kek_version}
    # Old versions can now be retired: everything still decrypts with the current one alone.
    for version in db.keys.ring.versions:
        if version != db.keys.ring.current:
            db.keys.ring.retire(version)
    for headers in users:
        listed = client.get("/v1/me/ratings", params={"limit": 100}, headers=headers)
        assert listed.status_code == 200 and len(listed.json()["items"]) >= 3
        assert client.get("/v1/faces/next", params={"n": 2}, headers=headers).status_code == 200
