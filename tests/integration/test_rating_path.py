"""The rating path's bookkeeping against real PostgreSQL: the refit queue's lag, the running totals and their backfill.

Ratings go through the API with the app's own refit worker running, as ``matchsvc serve`` runs it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from api.main import create_app
from matchsvc.db.migrate import alembic_config, upgrade
from matchsvc.jobs.refit import run_refits
from matchsvc.repositories import ledger as ledger_repo
from matchsvc.repositories import refits as refits_repo
from matchsvc.runtime import Runtime
from matchsvc.services import auth as auth_service
from matchsvc.services.keys import user_cipher
from matchsvc.services.preferences import load_model, refit_user
from tests.support.accounts import auth_headers
from tests.support.scenario import user_id

#: The lag stated in docs/privacy.md ("Exact refits and their lag").
LAG_SECONDS = 10.0


def _rate(client: TestClient, headers: dict[str, str], face_id: str, liked: bool) -> None:
    response = client.post(
        "/v1/ratings", json={"face_id": face_id, "liked": liked}, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )
    assert response.status_code in (200, 201), response.text


def _behind(db: Runtime, users: list[uuid.UUID]) -> list[uuid.UUID]:
    """Users whose stored model does not include every stored rating, or who have a refit queued."""
    with db.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT u.id FROM users u LEFT JOIN preference_states s ON s.user_id = u.id "
                "WHERE u.id = ANY(:ids) AND (EXISTS (SELECT 1 FROM refit_jobs j WHERE j.user_id = u.id) "
                "OR coalesce(s.n_ratings, 0) <> (SELECT count(*) FROM ratings r WHERE r.user_id = u.id))"
            ),
            {"ids": users},
        ).all()
    return [row[0] for row in rows]


def test_after_a_burst_every_users_model_includes_all_their_ratings_within_the_stated_lag(
    client: TestClient, db: Runtime
) -> None:
    accounts = [auth_headers(client) for _ in range(4)]
    ids = [user_id(client, headers) for headers in accounts]
    served = [
        [face["id"] for face in client.get("/v1/faces/next", params={"n": 35}, headers=h).json()["faces"]]
        for h in accounts
    ]

    def burst(index: int) -> None:
        headers, faces = accounts[index], served[index]
        for k, face in enumerate(faces):
            _rate(client, headers, face, k % 3 == 0)
        for face in faces[:3]:  # changed answers: only an exact refit can take them in
            _rate(client, headers, face, True)

    threads = [threading.Thread(target=burst, args=(i,)) for i in range(len(accounts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished = time.monotonic()
    while (behind := _behind(db, ids)) and time.monotonic() - finished < LAG_SECONDS:
        time.sleep(0.05)
    assert behind == [], f"{len(behind)} users still behind {LAG_SECONDS} s after the burst"
    with db.sessions() as session:
        for uid in ids:
            stored = load_model(session, cipher=user_cipher(session, keys=db.keys, user_id=uid))
            assert stored is not None and stored.n_ratings == 35 and stored.belief is not None


def test_a_refit_waits_until_it_was_asked_for_the_settling_time_ago(db: Runtime) -> None:
    """The workers' coalescing: a job is taken ``settle`` seconds after it was asked for; asked for
    again while it runs, it waits that long again (the refit running took in less than is rated now).

    No app here, so no worker of its own competes for the job."""
    with db.sessions() as session:
        uid = auth_service.register(
            session, keys=db.keys, username=f"settle{uuid.uuid4().hex[:8]}", password="a-long-password", birth_year=1990
        ).id
        session.commit()

    def claim(settle: float, lease: float = 60.0) -> refits_repo.ClaimedRefit | None:
        with db.sessions() as session:
            job = refits_repo.claim(session, lease_seconds=lease, settle_seconds=settle)
            session.commit()
            return job

    with db.sessions() as session:
        refits_repo.enqueue_write(user_id=uid).execute(session)
        session.commit()
    assert claim(settle=30.0) is None
    time.sleep(0.6)
    assert claim(settle=30.0) is None
    running = claim(settle=0.5)
    assert running is not None and running.user_id == uid
    with db.sessions() as session:  # a rating while the refit runs
        refits_repo.enqueue_write(user_id=uid).execute(session)
        refits_repo.complete(session, job=running)  # stays queued: asked for again
        session.commit()
    assert claim(settle=0.5) is None  # settles again from the new request
    time.sleep(0.6)
    again = claim(settle=0.5)
    assert again is not None and again.generation == running.generation + 1
    with db.sessions() as session:
        assert refits_repo.complete(session, job=again)
        session.commit()


def test_a_new_face_does_not_ask_again_for_a_queued_refit_and_a_changed_answer_does(db: Runtime) -> None:
    """Every rating past the due one used to bump the queued job (one more statement each, and the
    job's refit run twice); a changed answer still must, as a running refit read the old one."""
    settings = db.settings.model_copy(update={"refit_poll_seconds": 0.0})  # no worker takes the job
    runtime = dataclasses.replace(db, settings=settings, embedded=None, scratch=None)
    with TestClient(create_app(runtime)) as client:
        headers = auth_headers(client)
        uid = user_id(client, headers)
        faces = [face["id"] for face in client.get("/v1/faces/next", params={"n": 14}, headers=headers).json()["faces"]]

        def generation() -> int | None:
            with db.engine.connect() as connection:
                return connection.execute(
                    text("SELECT generation FROM refit_jobs WHERE user_id = :u"), {"u": uid}
                ).scalar()

        for face in faces[:11]:  # the first is fitted at once, ten online steps make a refit due
            _rate(client, headers, face, True)
        queued = generation()
        assert queued is not None
        for face in faces[11:]:
            _rate(client, headers, face, False)
        assert generation() == queued
        _rate(client, headers, faces[0], False)
        assert generation() == queued + 1


def test_running_totals_equal_the_ledger_and_the_refit_queue_drains(client: TestClient, db: Runtime) -> None:
    headers = auth_headers(client)
    uid = user_id(client, headers)
    faces = [face["id"] for face in client.get("/v1/faces/next", params={"n": 6}, headers=headers).json()["faces"]]
    for face in faces:
        _rate(client, headers, face, True)
    for face in faces[:2]:
        _rate(client, headers, face, False)
    assert run_refits(db.sessions, keys=db.keys, space=db.latent_space).pending == 0
    with db.engine.connect() as connection:
        ledger = dict(
            connection.execute(
                text("SELECT scope, sum(epsilon) FROM privacy_ledger WHERE user_id = :u GROUP BY scope"), {"u": uid}
            ).all()
        )
        totals = dict(
            connection.execute(text("SELECT scope, epsilon FROM privacy_scope_totals WHERE user_id = :u"), {"u": uid}).all()
        )
        user = connection.execute(
            text("SELECT worst_rating_epsilon, model_epsilon, spends FROM privacy_user_totals WHERE user_id = :u"),
            {"u": uid},
        ).one()
    assert totals.keys() == ledger.keys() and np.allclose([totals[k] for k in ledger], list(ledger.values()))
    assert user == (max(ledger.values()), 0.0, 8)
    report = client.get("/v1/me/privacy", headers=headers).json()
    assert report["epsilon_spent"] == max(ledger.values()) and report["spends"] == 8


def test_the_migration_backfills_the_running_totals_from_the_ledger(db: Runtime) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    user = uuid.uuid4()
    spends = [("rating:a", 2.0, 0.0), ("rating:a", 2.0, 0.0), ("rating:b", 1.0, 0.0), ("model", 0.5, 1e-6)]
    command.downgrade(alembic_config(url), "0006-1")
    try:
        with db.engine.begin() as connection:
            connection.execute(
                text("INSERT INTO users (id, username, password_hash, birth_year, scopes) "
                     "VALUES (:id, 'backfill', 'x', 1990, ARRAY['rate'])"),
                {"id": user},
            )
            for scope, epsilon, delta in spends:
                connection.execute(
                    text("INSERT INTO privacy_ledger (user_id, mechanism, epsilon, delta, neighbouring, scope) "
                         "VALUES (:u, 'randomized_response', :e, :d, 'label-change', :s)"),
                    {"u": user, "e": epsilon, "d": delta, "s": scope},
                )
    finally:
        upgrade(url)
    with db.sessions() as session:
        totals = ledger_repo.scope_totals(session, user_id=user, rating_scope="rating:a")
    assert (totals.model_epsilon, totals.model_delta) == (0.5, 1e-6)
    assert (totals.worst_rating_epsilon, totals.rating_scope_epsilon, totals.spends) == (4.0, 4.0, 4)


def test_exact_refits_space_out_with_the_history_so_their_cost_per_rating_stays_flat(
    client: TestClient, db: Runtime
) -> None:
    """Past 100 ratings a refit is due every 10 % of the history, not every ``refit_every`` (10)."""
    headers = auth_headers(client)
    uid = user_id(client, headers)
    faces = [
        face["id"]
        for _ in range(3)
        for face in client.get("/v1/faces/next", params={"n": 45}, headers=headers).json()["faces"]
    ]
    for face in faces[:120]:
        _rate(client, headers, face, True)
    assert run_refits(db.sessions, keys=db.keys, space=db.latent_space).pending == 0
    with db.sessions() as session:  # start from an exact refit: no online step pending
        refit_user(session, keys=db.keys, user_id=uid, space=db.latent_space)
        session.commit()

    def pending() -> tuple[int, int]:
        with db.engine.connect() as connection:
            return tuple(connection.execute(
                text("SELECT n_ratings, pending_updates FROM preference_states WHERE user_id = :u"), {"u": uid}
            ).one())

    assert pending() == (120, 0)
    for face in faces[120:131]:
        _rate(client, headers, face, False)
    assert pending() == (131, 11)  # 11 online steps and no refit: at n = 120 one is due after 12


def test_a_rating_costs_the_same_few_statements_whatever_the_history(
    client: TestClient, db: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statements a request sends on the database (the job threads' own work aside): the lock with
    the session check (D44), one read, one statement for all the writes (the spend, the rating, the
    state, the response record and, when a refit falls due, its enqueue; D42) and the commit; as
    many at the 40th rating as at the 5th (docs/benchmarks.md, D34). The rate-limit
    take is one statement in lease + 1 requests (D40; none here, with the tests' huge burst).
    Counted where psycopg sends them, so statements that bypass SQLAlchemy (D39) count too; the
    pool's pings (when in doubt, D40) are not counted."""
    headers = auth_headers(client)
    faces = [face["id"] for face in client.get("/v1/faces/next", params={"n": 40}, headers=headers).json()["faces"]]
    sent: list[str] = []

    def count(*_: object) -> None:
        if not threading.current_thread().name.startswith("job-"):
            sent.append(threading.current_thread().name)

    def statements_for(face: str) -> int:
        sent.clear()
        _rate(client, headers, face, True)
        return len(sent)

    execute = psycopg.Cursor.execute
    checked_out: set[int] = set()  # this engine's connections in use (not another engine's, as the events were)

    def counted(cursor: psycopg.Cursor, query: object, *args: object, **kwargs: object) -> psycopg.Cursor:
        ours = id(cursor.connection) in checked_out
        if ours and query != db.engine.dialect._dialect_specific_select_one:  # not the pool's pre-ping
            count()
        return execute(cursor, query, *args, **kwargs)

    def checkout(dbapi_connection: object, *_: object) -> None:
        checked_out.add(id(dbapi_connection))

    def checkin(dbapi_connection: object, *_: object) -> None:
        checked_out.discard(id(dbapi_connection))

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    event.listen(db.engine, "checkout", checkout)
    event.listen(db.engine, "checkin", checkin)
    event.listen(db.engine, "commit", count)
    try:
        for face in faces[:4]:
            _rate(client, headers, face, True)
        early = [statements_for(face) for face in faces[4:8]]
        for face in faces[8:36]:
            _rate(client, headers, face, True)
        late = [statements_for(face) for face in faces[36:40]]
    finally:
        event.remove(db.engine, "commit", count)
        event.remove(db.engine, "checkout", checkout)
        event.remove(db.engine, "checkin", checkin)
    assert early == late == [4] * 4, (early, late)
