"""Prebuilt statements of the rating path, sent straight through the session's psycopg connection.

SQLAlchemy's execution layer (compiled-statement cache lookup, parameter processing, result
metadata) made a prebuilt statement cost about 0.32 ms of Python against psycopg's 0.09 ms
(docs/decisions.md D39), on a path whose target is the cost of a bare insert: a rating runs
four statements (D42, D44). A :class:`Statement` runs in the session's current transaction, on
the same pooled connection, under the same deadline watchdog (:mod:`matchsvc.db.session`), and
server-side prepared after a few uses, as psycopg does.

What a :class:`Statement` gives up is SQLAlchemy's typing: parameters go to psycopg as they are
(``uuid.UUID``, ``bytes``, ``float``, :class:`psycopg.types.json.Jsonb`), and rows come back as
named tuples of psycopg's own types. A ``binary`` statement asks for its rows in PostgreSQL's
binary format: the same values, parsed without text (a refit's ``float8[]`` latents were read
7x faster, docs/benchmarks.md).

:func:`execute_writes` sends several data-modifying statements as one: a statement costs about
0.26 ms of CPU between psycopg and the server whatever the round trips, so a rating's writes go
together (docs/decisions.md D42).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.orm import Session

__all__ = ["Statement", "Write", "execute_writes"]

#: ``:name`` parameters, not ``::type`` casts.
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


class Statement:
    """SQL written with ``:name`` parameters, as for :func:`sqlalchemy.text`; ``%`` is not allowed."""

    __slots__ = ("binary", "source", "sql")

    def __init__(self, sql: str, *, binary: bool = False) -> None:
        if "%" in sql:
            raise ValueError("a Statement's SQL may not contain '%'")
        self.source = sql
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


@dataclass(frozen=True)
class Write:
    """A data-modifying :class:`Statement` that ends in ``RETURNING``, and its parameters."""

    statement: Statement
    params: Mapping[str, Any]

    def execute(self, session: Session) -> psycopg.Cursor[Any]:
        """Run alone, as :meth:`Statement.execute`."""
        return self.statement.execute(session, self.params)


def execute_writes(session: Session, writes: Sequence[Write]) -> list[int]:
    """Run ``writes`` as one statement in the session's transaction; the rows each one returned.

    Each write is a ``WITH`` query of that statement. PostgreSQL runs every one exactly once and
    all against one snapshot: none sees another's rows, and no two may change the same row, so
    the writes given together must touch different rows and not read what another writes.
    """
    if not writes:
        return []
    statements = tuple(write.statement for write in writes)
    params = {f"{name}_{index}": value for index, write in enumerate(writes) for name, value in write.params.items()}
    row = _together(statements).execute(session, params).fetchone()
    return list(row)


@functools.lru_cache(maxsize=64)
def _together(statements: tuple[Statement, ...]) -> Statement:
    """One statement running ``statements``, their parameters suffixed with their index (cached:
    the rating path sends the same few combinations)."""
    parts = []
    for index, statement in enumerate(statements):
        if "RETURNING" not in statement.source.upper():
            raise ValueError("a write sent with others must end in RETURNING (its rows are counted)")
        suffixed = _PARAMETER.sub(lambda match, i=index: f":{match[1]}_{i}", statement.source)
        parts.append(f"w{index} AS ({suffixed})")
    counts = ", ".join(f"(SELECT count(*) FROM w{index}) AS w{index}" for index in range(len(statements)))
    return Statement(f"WITH {', '.join(parts)} SELECT {counts}")
