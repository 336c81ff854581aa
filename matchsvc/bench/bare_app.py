"""Baseline for the API benchmark: the least a FastAPI + psycopg endpoint can do to store a rating.

No auth, no validation beyond the body model, no idempotency: one INSERT per request on a pooled
connection. Our ``POST /v1/ratings`` is measured against it in the same run.
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

__all__ = ["app"]

_URL = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
_pool: queue.Queue[psycopg.Connection] = queue.Queue()
for _ in range(8):
    _pool.put(psycopg.connect(_URL, autocommit=True))
with psycopg.connect(_URL, autocommit=True) as _setup:
    _setup.execute(
        "CREATE TABLE IF NOT EXISTS bench_bare_ratings (id bigserial primary key, face_id uuid, liked bool)"
    )


@contextmanager
def _connection() -> Iterator[psycopg.Connection]:
    conn = _pool.get()
    try:
        yield conn
    finally:
        _pool.put(conn)


class Body(BaseModel):
    face_id: uuid.UUID
    liked: bool


app = FastAPI()


@app.post("/ratings", status_code=201)
def rate(body: Body) -> dict[str, str]:
    with _connection() as conn:
        conn.execute("INSERT INTO bench_bare_ratings (face_id, liked) VALUES (%s, %s)", (body.face_id, body.liked))
    return {"face_id": str(body.face_id)}
