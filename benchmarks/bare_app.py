"""Baseline for the API benchmark: the least a FastAPI + psycopg endpoint can do to store a rating.

No auth, no validation beyond the body model, no idempotency: one INSERT per request on a pooled
connection. Our ``POST /v1/ratings`` is measured against it in the same run. Importing this module
does nothing; uvicorn calls :func:`create_app` (``--factory``) in each worker.
"""

from __future__ import annotations

import os
import queue
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from fastapi import FastAPI
from pydantic import BaseModel

__all__ = ["create_app"]

_POOL_SIZE = 8


class Body(BaseModel):
    face_id: uuid.UUID
    liked: bool


def create_app() -> FastAPI:
    """Connect to ``DATABASE_URL``, create the baseline's table if missing, and return the app."""
    url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    pool: queue.Queue[psycopg.Connection] = queue.Queue()
    for _ in range(_POOL_SIZE):
        pool.put(psycopg.connect(url, autocommit=True))
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute(
            "CREATE TABLE IF NOT EXISTS bench_bare_ratings (id bigserial primary key, face_id uuid, liked bool)"
        )

    @contextmanager
    def connection() -> Iterator[psycopg.Connection]:
        conn = pool.get()
        try:
            yield conn
        finally:
            pool.put(conn)

    app = FastAPI()

    @app.post("/ratings", status_code=201)
    def rate(body: Body) -> dict[str, str]:
        with connection() as conn:
            conn.execute("INSERT INTO bench_bare_ratings (face_id, liked) VALUES (%s, %s)", (body.face_id, body.liked))
        return {"face_id": str(body.face_id)}

    return app
