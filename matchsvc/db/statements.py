"""Prebuilt statements of the rating path, sent straight through the session's psycopg connection.

SQLAlchemy's execution layer (compiled-statement cache lookup, parameter processing, result
metadata) made a prebuilt statement cost about 0.32 ms of Python against psycopg's 0.09 ms;
a rating runs seven statements on a path whose target is the cost of a bare insert
(docs/decisions.md D39). A :class:`Statement` runs in the session's current transaction, on
the same pooled connection, under the same deadline watchdog (:mod:`matchsvc.db.session`), and
server-side prepared after a few uses, as psycopg does.

What a :class:`Statement` gives up is SQLAlchemy's typing: parameters go to psycopg as they are
(``uuid.UUID``, ``bytes``, ``float``, :class:`psycopg.types.json.Jsonb`), and rows come back as
named tuples of psycopg's own types. A ``binary`` statement asks for its rows in PostgreSQL's
binary format: the same values, parsed without text (a refit's ``float8[]`` latents were read
7x faster, docs/benchmarks.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.orm import Session

__all__ = ["Statement"]

#: ``:name`` parameters, not ``::type`` casts.
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


class Statement:
    """SQL written with ``:name`` parameters, as for :func:`sqlalchemy.text`; ``%`` is not allowed."""

    __slots__ = ("binary", "sql")

    def __init__(self, sql: str, *, binary: bool = False) -> None:
        if "%" in sql:
            raise ValueError("a Statement's SQL may not contain '%'")
        self.sql = _PARAMETER.sub(r"%(\1)s", sql)
        self.binary = binary

    def execute(self, session: Session, params: Mapping[str, Any]) -> psycopg.Cursor[Any]:
        """Run in the session's transaction (begun if needed); the cursor yields named tuples.

        A connection broken meanwhile (the watchdog shut it, the server went away) is discarded
        from the pool at once, as SQLAlchemy does for the statements it runs itself.
        """
        connection = session.connection()
        driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
        cursor = driver.cursor(row_factory=namedtuple_row)
        try:
            return cursor.execute(self.sql, params, binary=self.binary)
        except psycopg.Error:
            if driver.broken or driver.closed:
                connection.invalidate()
            raise
