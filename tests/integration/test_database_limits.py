"""Every round trip of a connection is bounded in time (issue 13, item 12; decision D29).

Against a PostgreSQL of the test's own: the server's own timeouts while it is alive, and the
client-side deadline on each path (statement, commit, rollback, the pool's pre-ping) while its
processes are frozen, where the server enforces nothing; and when the pool pings (D40).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import sessionmaker

from matchsvc.db.session import PING_AFTER_IDLE_SECONDS, DatabaseLimits, create_db_engine, is_database_unavailable
from matchsvc.db.statements import Statement
from tests.support.postgres import FaultyPostgres

pytestmark = pytest.mark.slow

LIMITS = DatabaseLimits(connect_timeout=2, statement_timeout=0.5, lock_timeout=0.3, pool_timeout=1.0, deadline=1.0)
SLACK = 1.0  # the watchdog's tick and a shared machine's scheduling
EARLY = 0.01  # the server's timer may fire a millisecond early by the client's clock (seen: 0.4992 s for 0.5 s)


@pytest.fixture(scope="module")
def postgres() -> Iterator[FaultyPostgres]:
    server = FaultyPostgres()
    yield server
    server.close()


@pytest.fixture
def engine(postgres: FaultyPostgres) -> Iterator[Engine]:
    engine = create_db_engine(postgres.url, limits=LIMITS, pool_size=2)
    yield engine
    engine.dispose()


def _fails_unavailable(action: Callable[[], object]) -> float:
    started = time.monotonic()
    with pytest.raises(Exception) as caught:
        action()
    assert is_database_unavailable(caught.value), repr(caught.value)
    return time.monotonic() - started


def test_statement_timeout_is_enforced_by_the_server_and_keeps_the_connection(engine: Engine) -> None:
    with engine.connect() as connection:
        elapsed = _fails_unavailable(lambda: connection.execute(text("SELECT pg_sleep(5)")))
        assert LIMITS.statement_timeout - EARLY <= elapsed < LIMITS.statement_timeout + SLACK
        connection.rollback()
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_lock_timeout_answers_as_unavailable(engine: Engine) -> None:
    with engine.connect() as holder, engine.connect() as waiter:
        holder.execute(text("CREATE TABLE IF NOT EXISTS locked (id int)"))
        holder.commit()
        holder.execute(text("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE"))
        elapsed = _fails_unavailable(lambda: waiter.execute(text("SELECT * FROM locked")))
        assert LIMITS.lock_timeout - EARLY <= elapsed < LIMITS.lock_timeout + SLACK


def _in_transaction(connection: Connection) -> None:
    connection.execute(text("CREATE TEMP TABLE scratch (id int)"))
    connection.execute(text("INSERT INTO scratch VALUES (1)"))


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(lambda c: c.execute(text("SELECT 1")), id="statement"),
        pytest.param(lambda c: c.commit(), id="commit"),
        pytest.param(lambda c: c.rollback(), id="rollback"),
    ],
)
def test_a_frozen_server_is_cut_off_at_the_deadline(
    postgres: FaultyPostgres, engine: Engine, path: Callable[[Connection], object]
) -> None:
    with engine.connect() as connection:
        _in_transaction(connection)
        with postgres.frozen(limit=10):
            elapsed = _fails_unavailable(lambda: path(connection))
        assert LIMITS.deadline <= elapsed < LIMITS.deadline + SLACK
    with engine.connect() as connection:  # the pool replaced the cut connection
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_the_pools_pre_ping_is_cut_off_and_reconnecting_times_out(postgres: FaultyPostgres, engine: Engine) -> None:
    with engine.connect() as connection:  # leaves an open connection in the pool, to be pinged
        connection.execute(text("SELECT 1"))
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.1)  # idle long enough to be in doubt (D40)
    with postgres.frozen(limit=10):
        elapsed = _fails_unavailable(lambda: engine.connect())
    # the ping's deadline, then one connection attempt's timeout
    assert LIMITS.deadline + LIMITS.connect_timeout <= elapsed < LIMITS.deadline + LIMITS.connect_timeout + SLACK
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_a_connection_returned_a_moment_ago_is_handed_out_unpinged_and_its_statement_still_bounded(
    postgres: FaultyPostgres, engine: Engine
) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    with postgres.frozen(limit=10):
        started = time.monotonic()
        connection = engine.connect()  # no ping: no round trip to wait for
        assert time.monotonic() - started < 0.5
        elapsed = _fails_unavailable(lambda: connection.execute(text("SELECT 1")))
        assert LIMITS.deadline <= elapsed < LIMITS.deadline + SLACK
        connection.close()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1


_SELECT_ONE = Statement("SELECT 1 AS one")


def test_once_one_connection_is_found_broken_every_other_one_is_pinged(postgres: FaultyPostgres, engine: Engine) -> None:
    """Both pooled connections cut by the server: the first use fails; the other is pinged and replaced.

    Through :class:`Statement` (the rating path's way), which invalidates only its own connection:
    without the doubt an invalidation casts on the others, the second would fail too.
    """
    first, second = engine.connect(), engine.connect()
    pids = [c.execute(text("SELECT pg_backend_pid()")).scalar() for c in (first, second)]
    first.close()
    second.close()
    admin = create_db_engine(postgres.url, limits=LIMITS, pool_size=1)  # a connection of its own
    with admin.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(:pids) AS pid"), {"pids": pids})
    admin.dispose()
    time.sleep(0.2)  # the backends exit; the pool's connections were returned well within the idle window
    session_factory = sessionmaker(engine)
    with session_factory() as session, pytest.raises(Exception) as caught:
        _SELECT_ONE.execute(session, {})
    assert is_database_unavailable(caught.value), repr(caught.value)
    with session_factory() as session:
        assert _SELECT_ONE.execute(session, {}).fetchone().one == 1


def test_while_connecting_fails_one_attempt_probes_and_the_others_fail_at_once(
    postgres: FaultyPostgres, engine: Engine
) -> None:
    with postgres.frozen(limit=20):
        first = _fails_unavailable(lambda: engine.connect())  # a fresh engine: its first attempt times out
        assert LIMITS.connect_timeout <= first < LIMITS.connect_timeout + SLACK
        probe = threading.Thread(target=lambda: _fails_unavailable(lambda: engine.connect()))
        probe.start()
        time.sleep(0.3)
        assert _fails_unavailable(lambda: engine.connect()) < 0.2  # no second attempt while the probe waits
        probe.join()
    with engine.connect() as connection:  # the next attempt, on a live server, probes and succeeds
        assert connection.execute(text("SELECT 1")).scalar() == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
