"""ASGI middleware: request ids, access log and metrics, requests in flight, body size and read time,
per-client rate limit.

Written as plain ASGI (no ``BaseHTTPMiddleware``) so they add microseconds, not a task per request.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import database_unavailable_response
from api.schemas.problem import PROBLEM_MEDIA_TYPE
from matchsvc.db.session import DATABASE_ERRORS, is_database_unavailable
from matchsvc.security import TokenClaims
from matchsvc.server import MULTIPROCESS_DIR

__all__ = [
    "BodyLimitMiddleware",
    "ConcurrencyLimitMiddleware",
    "HttpMetrics",
    "RateLimitMiddleware",
    "RequestContextMiddleware",
    "TokenBucket",
]

log = structlog.get_logger("matchsvc.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


async def _send_problem(
    send: Send, status: int, title: str, detail: str, *, headers: list[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HttpMetrics:
    """Prometheus metrics of one app (own registry, so several apps can live in one process).

    Under ``matchsvc serve --workers N`` (N > 1) the server sets ``PROMETHEUS_MULTIPROC_DIR``:
    every worker then writes its values to files there, and ``registry`` collects the sum over
    all workers, so a scrape that reaches any one worker sees the whole server (D25).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        shared = bool(os.environ.get(MULTIPROCESS_DIR))
        if shared:
            MultiProcessCollector(self.registry)
        owner = None if shared else self.registry  # shared: values live in the files, not the registry
        self.requests = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"], registry=owner)
        self.latency = Histogram(
            "http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=owner
        )


class RequestContextMiddleware:
    """Assigns a request id (or accepts a well-formed ``X-Request-ID``), logs and measures every request."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        started = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            status = status_holder["status"]
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template).observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                route=template,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413 before the app parses them (declared or streamed),
    and bodies not complete within ``read_timeout`` seconds of the head with 408 (a slow client
    holds no worker: the app runs only once the whole body is here)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, read_timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_problem(send, 413, "Content Too Large", f"request bodies are limited to {self.max_bytes} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        with anyio.move_on_after(self.read_timeout):
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await _send_problem(
                        send, 413, "Content Too Large", f"request bodies are limited to {self.max_bytes} bytes"
                    )
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
        if more:
            await _send_problem(
                send, 408, "Request Timeout", f"the request body did not arrive within {self.read_timeout:g} s",
                headers=[(b"connection", b"close")],
            )
            return
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class ConcurrencyLimitMiddleware:
    """At most ``limit`` requests in progress; more get 503 with Retry-After at once instead of queueing
    for worker threads (and database connections) that a stalled dependency may hold for seconds.

    Health checks are exempt: liveness must answer however busy the process is.
    """

    EXEMPT = ("/healthz", "/readyz")

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0  # the event loop is single-threaded: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await _send_problem(
                send, 503, "Service Unavailable", "too many requests in progress", headers=[(b"retry-after", b"1")]
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class TokenBucket:
    """Thread-safe token buckets keyed by client; ``take`` returns seconds to wait (0 when allowed)."""

    def __init__(self, *, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; a cost above the burst is allowed from a full bucket and leaves it in debt.

        So a batch of ratings counts as its number of items (the long-run rate holds) and is still
        possible when it is larger than the burst: the client then waits the debt off.
        """
        now = self.clock()
        need = min(cost, self.burst)
        with self._lock:
            tokens, updated = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - updated) * self.rate)
            if tokens >= need:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > 100_000:  # bound memory under a flood of distinct clients
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60.0}
            return (need - tokens) / self.rate


def _item_count(body: bytes) -> int:
    """``len(items)`` of a JSON body, at least 1 (a malformed body is refused later, as one request)."""
    try:
        items = json.loads(body).get("items")
    except (ValueError, AttributeError):
        return 1
    return max(1, len(items)) if isinstance(items, list) else 1


def _replaying(first: Message, receive: Receive) -> Receive:
    """``receive`` that hands out ``first`` again before reading on."""
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class RateLimitMiddleware:
    """Per-user limit (by the verified token subject), per-IP for anonymous requests; 429 + Retry-After.

    ``bucket`` is a :class:`TokenBucket` (process memory: with several processes each would allow
    the full rate) or the shared one in PostgreSQL that ``serve`` uses (``blocking``: spent from
    this process's lease on the event loop when it can, else in a thread).
    """

    EXEMPT = ("/healthz", "/readyz")
    #: Requests that count as their number of ``items`` (the body is already buffered by BodyLimitMiddleware).
    WEIGHED = ("/v1/ratings/batch",)

    def __init__(
        self, app: ASGIApp, *, bucket: TokenBucket, identify: Callable[[str], TokenClaims | None]
    ) -> None:
        self.app = app
        self.bucket = bucket
        self.identify = identify

    def _client_key(self, scope: Scope) -> str:
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            claims = self.identify(token)
            if claims is not None:
                return "user:" + str(claims.user_id)
        client: Any = scope.get("client")
        return "ip:" + (client[0] if client else "unknown")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        cost = 1
        if scope["method"] == "POST" and scope["path"] in self.WEIGHED:
            message = await receive()
            cost = _item_count(message.get("body", b""))
            receive = _replaying(message, receive)
        key = self._client_key(scope)
        try:
            if getattr(self.bucket, "blocking", False):  # the shared bucket: a held lease spares the thread and the statement
                held = self.bucket.take_held(key, cost)
                wait = 0.0 if held else await anyio.to_thread.run_sync(self.bucket.take, key, cost)
            else:
                wait = self.bucket.take(key, cost)
        except DATABASE_ERRORS as exc:  # the shared bucket lives in PostgreSQL: outside the app's handlers
            if not is_database_unavailable(exc):
                raise
            log.warning("database_unavailable", path=scope["path"], error=type(exc).__name__)
            await database_unavailable_response(None)(scope, receive, send)
            return
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait))).encode()
            await _send_problem(
                send, 429, "Too Many Requests", "rate limit exceeded", headers=[(b"retry-after", retry_after)]
            )
            return
        await self.app(scope, receive, send)
