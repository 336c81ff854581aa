"""Nothing personal is readable at rest: a full scenario, then a scan of every column of every table
(labels, preference models, appearances, filters, passwords).

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

from engine.latent import AGE_INDEX
from matchsvc.runtime import Runtime
from matchsvc.services.keys import rotate_keys, user_cipher
from matchsvc.services.preferences import load_model
from matchsvc.services.sealed import open_label
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


def _needles(runtime: Runtime, user_ids: list[uuid.UUID]) -> list[bytes]:
    """Binary (float64) and decimal forms of every user's model parameters, and the password."""
    needles = [PASSWORD.encode()]
    with runtime.sessions() as session:
        for user_id in user_ids:
            stored = load_model(session, cipher=user_cipher(session, keys=runtime.keys, user_id=user_id))
            assert stored is not None
            for value in [*stored.model.coef, stored.model.intercept]:
                needles += [struct.pack("<d", value), struct.pack(">d", value)]
                needles.append(repr(float(value))[:10].encode())  # json.dumps writes repr
    return [needle for needle in needles if len(needle) >= 6]


#: Plain booleans that say nothing about an answer: how a spend was randomized (the client's
#: choice, not its answer).
_NOT_ANSWERS = {("privacy_ledger", "randomized_on_device")}


def test_database_holds_no_plaintext_labels_models_or_passwords(client: TestClient, db: Runtime) -> None:
    rng = np.random.default_rng(3)
    users = [auth_headers(client) for _ in range(3)]
    looks = []
    for headers in users:
        _rate_some(client, headers, 25, rng)
        look = rng.uniform(-2, 2, db.latent_space.dim)
        look[AGE_INDEX] = 1.0  # an adult
        looks.append(look)
        assert client.put("/v1/me/appearance", json={"latent": look.tolist()}, headers=headers).status_code == 204
        profile = {"gender": "nonbinary", "seeks": ["woman"], "age_min": 31, "age_max": 47}
        assert client.put("/v1/me/profile", json=profile, headers=headers).status_code == 200
    user_ids = [uuid.UUID(client.get("/v1/me", headers=h).json()["id"]) for h in users]
    needles = _needles(db, user_ids) + [b"nonbinary"]
    for look in looks:
        needles += [struct.pack("<d", v) for v in look] + [repr(float(v))[:10].encode() for v in look]
    needles = [needle for needle in needles if len(needle) >= 6]  # short ones match by chance

    dump = _dump(db)
    assert {("ratings", "label_ct"), ("preference_states", "state_ct"), ("appearances", "latent_ct")} <= set(dump)
    for (table, column), values in dump.items():
        for value in values:
            raw = bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
            found = [needle for needle in needles if needle in raw]
            assert not found, (table, column, found)
            assert not isinstance(value, bool) or table in {"faces"} or (table, column) in _NOT_ANSWERS, (
                f"plaintext boolean in {table}.{column}"
            )
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
