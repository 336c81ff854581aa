"""Application factory. The caller owns the ``Runtime`` (database, latent space, secrets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from api.errors import install_error_handlers
from api.middleware import (
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    HttpMetrics,
    RateLimitMiddleware,
    RequestContextMiddleware,
    TokenBucket,
)
from api.routers import audit, auth, faces, health, matching, me, metrics, profile, ratings, sessions, subjects
from api.schemas.problem import Problem, problem_responses
from api.static import mount_web_clients
from matchsvc.jobs.matching import run_matching
from matchsvc.jobs.refit import refit_worker
from matchsvc.jobs.scheduler import PeriodicJob, exclusive
from matchsvc.logging import configure_logging
from matchsvc.runtime import Runtime
from matchsvc.security import InvalidToken, TokenClaims, decode_access_token
from matchsvc.services.faces import ensure_shared_pool
from matchsvc.services.rate_limits import SharedTokenBucket
from matchsvc.settings import Settings

__all__ = ["API_VERSION", "create_app", "create_app_from_environment"]

API_VERSION = "0.1.0"
DESCRIPTION = """\
Privacy-first preference matching over generated faces. Users never upload photos: they rate
generated faces, and their preference is learned with differential privacy and stored encrypted.
Errors are RFC 9457 `application/problem+json`.
"""


def _openapi_with_problem(app: FastAPI) -> dict[str, Any]:
    """FastAPI only lists models used as bodies; the shared Problem schema is added explicitly."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(runtime: Runtime, *, owns_runtime: bool = False) -> FastAPI:
    """Build the app around ``runtime``; with ``owns_runtime`` it is closed when the app shuts down."""
    settings = runtime.settings

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        job = None
        if settings.match_interval_seconds > 0:
            job = PeriodicJob(
                name="matching",
                interval=settings.match_interval_seconds,
                func=exclusive(
                    runtime.engine,
                    "matching",
                    lambda: run_matching(
                        runtime.sessions,
                        keys=runtime.keys,
                        k=settings.match_k,
                        min_ratings=settings.match_min_ratings,
                        full_every=settings.match_full_every,
                    ).summary(),
                ),
            )
            job.start()
        refits = None
        if settings.refit_poll_seconds > 0:
            refits = refit_worker(
                runtime.sessions,
                keys=runtime.keys,
                space=runtime.latent_space,
                poll=settings.refit_poll_seconds,
                settle=settings.refit_settle_seconds,
            )
            refits.start()
        try:
            yield
        finally:
            if refits is not None:
                refits.stop()
            if job is not None:
                job.stop()
            if owns_runtime:
                runtime.close()

    app = FastAPI(title="matchsvc", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.metrics = HttpMetrics()

    common = problem_responses(400, 413, 422, 429)
    routers = (auth, me, sessions, profile, faces, ratings, matching, subjects, audit, metrics)
    for module in routers:
        app.include_router(module.router, responses=common)
    app.include_router(health.router)
    mount_web_clients(app)
    install_error_handlers(app)
    app.openapi = lambda: _openapi_with_problem(app)  # type: ignore[method-assign]

    def identify(token: str) -> TokenClaims | None:
        try:
            return decode_access_token(token, secret=runtime.secrets.token_key, max_minutes=settings.access_token_minutes)
        except InvalidToken:
            return None

    # Added innermost first: the request context wraps everything so even 413/429 carry a request id.
    limits = {"per_minute": settings.rate_limit_per_minute, "burst": settings.rate_limit_burst}
    bucket = SharedTokenBucket(runtime.engine, **limits) if settings.rate_limit_shared else TokenBucket(**limits)
    app.add_middleware(RateLimitMiddleware, bucket=bucket, identify=identify)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, read_timeout=settings.http_body_timeout_seconds
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["ETag", "Retry-After", "X-Request-ID", "Idempotent-Replayed"],
        )
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings.http_max_concurrent_requests)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app


def create_app_from_environment() -> FastAPI:
    """ASGI factory for servers (``uvicorn --factory api.main:create_app_from_environment``)."""
    settings = Settings()
    configure_logging(settings.log_level)
    runtime = Runtime.start(settings)
    with runtime.sessions() as session:
        ensure_shared_pool(
            session, space=runtime.latent_space, size=settings.shared_pool_size, rng=np.random.default_rng()
        )
    return create_app(runtime, owns_runtime=True)
