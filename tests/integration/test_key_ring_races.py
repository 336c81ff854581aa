"""Issue 13 item 3: deleting a user never strands another user's data key.

Two "processes" share the database and the ring file but not their view of the ring: two
``KeyRingStore`` objects over one file, one registering accounts while the other deletes accounts
(each deletion rotates the ring and destroys the older KEKs). Afterwards every remaining user's
data key still unwraps, from a fresh reading of the file, and later rotations go through.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from sqlalchemy import text

from matchsvc.keys import KeyRingStore
from matchsvc.runtime import Runtime
from matchsvc.services import auth as auth_service
from matchsvc.services.data_subject import delete_user
from matchsvc.services.keys import retire_old_keks, rotate_keys, user_cipher
from tests.support.accounts import PASSWORD


def _register(db: Runtime, keys: KeyRingStore) -> uuid.UUID:
    with db.sessions() as session:
        user = auth_service.register(
            session, keys=keys, username=f"racer{uuid.uuid4().hex[:10]}", password=PASSWORD, birth_year=1990
        )
        return user.id


def test_registration_and_deletion_racing_in_two_processes_strand_no_key(db: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    registrar, deleter = KeyRingStore.open_or_create(path), KeyRingStore(path=path)
    doomed = [_register(db, registrar) for _ in range(3)]
    registered: list[uuid.UUID] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def registering() -> None:
        start.wait()
        try:
            registered.extend(_register(db, registrar) for _ in range(6))
        except BaseException as exc:  # reported below, with the assertion that names the cause
            failures.append(exc)

    def deleting() -> None:
        start.wait()
        try:
            for user_id in doomed:
                delete_user(db.sessions, user_id=user_id, keys=deleter, actor=None, pseudonym_key=b"k" * 32)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=registering), threading.Thread(target=deleting)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not failures, failures
    assert len(registered) == 6

    fresh = KeyRingStore(path=path)
    assert len(fresh.ring.versions) == 1  # the deletions destroyed every older KEK
    with db.sessions() as session:
        for user_id in registered:
            user_cipher(session, keys=fresh, user_id=user_id)  # raises if the key is stranded
    # The registrar's stale view of the ring keeps working, and later rotations succeed.
    registered.append(_register(db, registrar))
    report = rotate_keys(db.sessions, keys=fresh)
    assert report.rewrapped == len(registered)
    assert retire_old_keks(db.sessions, keys=registrar) == (report.kek_version - 1,)
    with db.engine.connect() as connection:
        versions = set(connection.execute(text("SELECT kek_version FROM user_keys")).scalars())
    assert versions == {report.kek_version}
    with db.sessions() as session:
        for user_id in registered:
            user_cipher(session, keys=KeyRingStore(path=path), user_id=user_id)


def test_two_processes_rotating_at_once_keep_every_version(db: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    first, second = KeyRingStore.open_or_create(path), KeyRingStore(path=path)
    users = [_register(db, first) for _ in range(3)]
    start = threading.Barrier(2)
    reports: list[int] = []

    def rotating(keys: KeyRingStore) -> None:
        start.wait()
        for _ in range(2):
            reports.append(rotate_keys(db.sessions, keys=keys, batch_size=1).kek_version)

    workers = [threading.Thread(target=rotating, args=(keys,)) for keys in (first, second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert sorted(reports) == list(range(2, 6))  # four distinct versions: none written over another
    fresh = KeyRingStore(path=path)
    assert fresh.ring.versions == tuple(range(1, 6))
    with db.sessions() as session:
        for user_id in users:
            user_cipher(session, keys=fresh, user_id=user_id)
