"""The HTTP server of ``matchsvc serve``: uvicorn, with the limits that keep slow clients from holding it.

uvicorn closes idle keep-alive connections but has no deadline for reading a request head: a
client that connects and sends nothing, or sends its headers a byte at a time, holds a
connection (and a file descriptor) for ever. ``GuardedH11Protocol`` adds that deadline and a cap
on open connections; the API bounds body reads and requests in flight itself (``api.middleware``).
See docs/decisions.md, D30.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from matchsvc.settings import Settings

__all__ = ["MULTIPROCESS_DIR", "GuardedH11Protocol", "ServerConfig", "server_config", "shared_metrics"]

#: The ASGI app, loaded by import path in the server process: the service layer never imports ``api``.
APP_FACTORY = "api.main:create_app_from_environment"

#: prometheus_client's multiprocess switch, read when a process first imports it.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics(workers: int) -> Iterator[None]:
    """With several workers, a fresh directory where each writes its metric values (removed on exit).

    Set in the parent before the workers start, so each imports prometheus_client in multiprocess
    mode and a scrape reaching any worker reports the sum over all of them. Fresh per serve: files
    left by an earlier server would otherwise be added to this one's counts. One worker keeps
    plain in-process metrics.
    """
    if workers == 1:
        yield
        return
    path = tempfile.mkdtemp(prefix="matchsvc-metrics-")
    os.environ[MULTIPROCESS_DIR] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_DIR, None)
        shutil.rmtree(path, ignore_errors=True)


class ServerConfig(uvicorn.Config):
    """uvicorn's configuration plus the limits ``GuardedH11Protocol`` reads (picklable, for worker processes)."""

    def __init__(self, *args: Any, timeout_request_head: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_request_head = timeout_request_head
        self.max_connections = max_connections


class GuardedH11Protocol(H11Protocol):
    """HTTP/1.1 (h11) that closes a connection whose request head is not complete in time.

    The deadline runs from the connection's start and from the end of each response, and stops
    once a request head has been parsed; the app's own work is not limited by it. Connections
    beyond ``max_connections`` are closed on arrival, before any byte is read.
    """

    def __init__(self, config: ServerConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.timeout_request_head = config.timeout_request_head
        self.max_connections = config.max_connections
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.close()
            return
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request head was parsed and its cycle started
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        self._arm_head_deadline()  # first: a pipelined request, handled by the call below, disarms it
        super().on_response_complete()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.timeout_request_head, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(settings: Settings, *, host: str, port: int, **options: Any) -> ServerConfig:
    """The one place ``serve`` builds its server; ``options`` pass through to uvicorn (e.g. ``workers``)."""
    return ServerConfig(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        log_config=None,
        proxy_headers=False,
        http=GuardedH11Protocol,
        ws="none",
        timeout_keep_alive=settings.http_keepalive_seconds,
        # A worker answers its supervisor's health check only once torch and the generators are
        # imported; uvicorn's 5 s default kills and restarts workers in a loop on a loaded host.
        timeout_worker_healthcheck=60,
        timeout_request_head=settings.http_header_timeout_seconds,
        max_connections=settings.http_max_connections,
        **options,
    )
