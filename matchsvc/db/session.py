"""Engine and session factory. One engine per process; sessions are per request or per job.

Every connection is bounded in time (D29), so a stopped or frozen PostgreSQL costs a request a
bounded wait and a 503, never a hung worker thread:

- connecting: libpq's ``connect_timeout``, and while connecting fails a single attempt at a time
  (the others fail at once); waiting for a pooled connection: the pool timeout;
- ``statement_timeout`` and ``lock_timeout``, enforced by the server while it is alive;
- a client-side deadline on every round trip (statement, commit, rollback, the pool's pre-ping),
  enforced by a watchdog thread that shuts the connection's socket down. A frozen server
  enforces nothing, and a thread blocked in ``recv`` cannot be interrupted any other way; the
  shutdown makes psycopg raise ``OperationalError`` and SQLAlchemy discard the connection.
"""

from __future__ import annotations

import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from matchsvc.settings import Settings

__all__ = [
    "DATABASE_ERRORS",
    "DatabaseLimits",
    "create_db_engine",
    "create_session_factory",
    "error_name",
    "is_database_unavailable",
]

log = structlog.get_logger(__name__)

#: Base classes of everything the database layer raises; ``is_database_unavailable`` sorts them.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sa_exc.DBAPIError, sa_exc.TimeoutError, psycopg.Error)


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot serve now (down, unreachable, stalled, timed out).

    Those are worth a retry (503); constraint violations and programming errors are bugs (500).
    Server-side ``statement_timeout`` (QueryCanceled) and ``lock_timeout`` (LockNotAvailable) are
    ``OperationalError`` in psycopg's SQLSTATE mapping, so they count as unavailability too.
    """
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    return isinstance(exc, (sa_exc.TimeoutError, psycopg.OperationalError, psycopg.InterfaceError))


def error_name(exc: BaseException) -> str:
    """The driver's error class, for logs; never the message, which may quote SQL parameters."""
    return type(getattr(exc, "orig", None) or exc).__name__


@dataclass(frozen=True)
class DatabaseLimits:
    """Time limits of every database connection, in seconds (see the module docstring)."""

    connect_timeout: int = 3
    statement_timeout: float = 5.0
    lock_timeout: float = 2.0
    pool_timeout: float = 5.0
    deadline: float = 8.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseLimits:
        return cls(
            connect_timeout=settings.db_connect_timeout_seconds,
            statement_timeout=settings.db_statement_timeout_seconds,
            lock_timeout=settings.db_lock_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            deadline=settings.db_deadline_seconds,
        )

    def server_options(self) -> str:
        """libpq ``options``: the server-side timeouts, set when each session starts."""
        statement, lock = round(self.statement_timeout * 1000), round(self.lock_timeout * 1000)
        return f"-c statement_timeout={statement} -c lock_timeout={lock}"


class _Watchdog:
    """Cuts the socket of any connection whose current round trip outlives ``deadline``.

    ``arm`` and ``disarm`` cost a dictionary update under a lock; one daemon thread, alive while
    round trips are in flight, checks them a few times per deadline. The cut happens under the
    lock that ``disarm`` takes, so a socket is only ever shut down while its round trip is still in
    progress (its descriptor cannot have been closed and reused).
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._tick = min(0.1, max(0.01, deadline / 20))
        self._armed: dict[int, tuple[float, int]] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def arm(self, fd: int) -> int:
        token = next(self._tokens)
        with self._lock:
            self._armed[token] = (time.monotonic() + self.deadline, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-deadline-watchdog", daemon=True)
                self._thread.start()
        return token

    def disarm(self, token: int) -> None:
        with self._lock:
            self._armed.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.monotonic()
            with self._lock:
                if not self._armed:  # idle: stop; the next ``arm`` starts a new thread
                    self._thread = None
                    return
                expired = [token for token, (due, _) in self._armed.items() if due <= now]
                for token in expired:
                    _, fd = self._armed.pop(token)
                    _shutdown(fd)
            if expired:
                log.warning("database_deadline_exceeded", connections=len(expired), deadline_s=self.deadline)


def _shutdown(fd: int) -> None:
    """Shut a socket down for both directions through a duplicate, leaving the owner's descriptor to it."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer: the round trip fails on its own


class _ConnectGate:
    """While connecting fails, one attempt at a time probes the server; others fail at once.

    Without it, every request on a stalled server opens its own attempt, each waits out the connect
    timeout, and the server's listen queue fills with attempts whose clients are long gone: when it
    wakes, it forks a backend for each, runs out of connection slots and refuses the live clients for
    seconds. Requests meanwhile get their 503 without waiting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing = False
        self._probing = False

    def attempt(self, connect: Callable[[], psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
        with self._lock:
            if self._failing and self._probing:
                raise psycopg.OperationalError("database unavailable: another connection attempt is in progress")
            self._probing = self._failing
        succeeded = False
        try:
            connection = connect()
            succeeded = True
            return connection
        finally:
            with self._lock:
                self._failing = not succeeded
                self._probing = False


def _connection_class(watchdog: _Watchdog) -> type[psycopg.Connection[Any]]:
    """A psycopg connection whose every blocking round trip is watched.

    psycopg funnels all network waits of an open connection (execute, fetch, commit, rollback,
    and so the pool's pre-ping) through ``Connection.wait``; connecting has its own timeout.
    """

    class WatchedConnection(psycopg.Connection[Any]):
        def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                fd = self.pgconn.socket
            except psycopg.OperationalError:  # no socket: the wait fails at once, nothing to watch
                return super().wait(gen, *args, **kwargs)
            token = watchdog.arm(fd)
            try:
                return super().wait(gen, *args, **kwargs)
            finally:
                watchdog.disarm(token)

    return WatchedConnection


#: A pooled connection idle longer than this is pinged before it is handed out (:class:`_PingWhenInDoubt`).
PING_AFTER_IDLE_SECONDS = 1.0


class _PingWhenInDoubt:
    """The pool's pre-ping, for the connections there is a reason to doubt (D40).

    A connection is pinged at checkout when it sat idle longer than :data:`PING_AFTER_IDLE_SECONDS`,
    or when any connection of the engine was invalidated since it was returned (a restart or a
    cut connection makes every other one suspect too). A connection returned a moment ago by a
    request that succeeded is handed out unpinged: under load that is nearly every checkout, and
    the ping was one round trip of about ten per rating. A failed ping invalidates the connection
    and the pool opens a new one, as ``pool_pre_ping`` does.
    """

    def __init__(self, engine: Engine) -> None:
        self._dialect = engine.dialect
        self._last_invalidation = -math.inf
        event.listen(engine, "connect", self._returned)  # a new connection has just answered
        event.listen(engine, "checkin", self._returned)
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "invalidate", self._invalidated)
        event.listen(engine, "soft_invalidate", self._invalidated)

    @staticmethod
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()  # ``info`` goes with the DBAPI connection

    def _invalidated(self, dbapi_connection: Any, record: Any, exception: BaseException | None) -> None:
        self._last_invalidation = time.monotonic()

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get("returned_at", -math.inf)
        if returned > self._last_invalidation and time.monotonic() - returned <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = self._dialect.do_ping(dbapi_connection)
        except psycopg.Error as exc:
            raise sa_exc.DisconnectionError(f"pre-ping failed: {error_name(exc)}") from exc
        if not alive:
            raise sa_exc.DisconnectionError("pre-ping failed")


def create_db_engine(url: str, *, limits: DatabaseLimits | None = None, pool_size: int = 10) -> Engine:
    """Create the engine; the pool's ping when in doubt (:class:`_PingWhenInDoubt`) survives a
    database restart without a 500.

    Parameters
    ----------
    url : str
    limits : DatabaseLimits or None
        The time limits of every connection (defaults when None).
    pool_size : int
        Connections kept open; as many again may be opened under load.
    """
    limits = limits or DatabaseLimits()
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=limits.pool_timeout,
        connect_args={"connect_timeout": limits.connect_timeout, "options": limits.server_options()},
    )
    connection_class = _connection_class(_Watchdog(limits.deadline))
    gate = _ConnectGate()

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> psycopg.Connection[Any]:
        return gate.attempt(lambda: connection_class.connect(*cargs, **cparams))

    _PingWhenInDoubt(engine)
    return engine


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so services can build responses post-commit."""
    return sessionmaker(engine, expire_on_commit=False)
