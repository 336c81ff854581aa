"""One settings object for the whole service, read from the environment.

Variables use the ``MATCHSVC_`` prefix (``MATCHSVC_SECRET_KEY``, ``MATCHSVC_RATE_LIMIT_PER_MINUTE``...),
except ``DATABASE_URL``, which follows the convention every PostgreSQL host and container platform uses.
When ``DATABASE_URL`` is unset the service starts an embedded PostgreSQL under ``data_dir``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Environment", "MIN_SECRET_BYTES", "Settings", "normalize_database_url"]

#: Shortest token secret accepted anywhere (HMAC-SHA256 wants a key of at least its output size).
MIN_SECRET_BYTES = 32


class Environment(str, Enum):
    development = "development"
    production = "production"


def normalize_database_url(url: str) -> str:
    """Force the psycopg 3 driver, whatever scheme the platform hands us (``postgres://`` included)."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got scheme {url.split(':', 1)[0]!r}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MATCHSVC_", extra="ignore", frozen=True, populate_by_name=True)

    environment: Environment = Environment.development
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "MATCHSVC_DATABASE_URL")
    )
    #: Where the embedded database, generated development secrets and the key ring live.
    data_dir: Path = Path(".matchsvc")

    #: Signs access tokens (at least ``MIN_SECRET_BYTES``). Development generates one into
    #: ``data_dir``; production must set it.
    secret_key: SecretStr | None = None
    access_token_minutes: int = Field(default=15, ge=1, le=24 * 60)
    #: A sign-in (session) ends this long after the password login, however often it is refreshed.
    session_days: int = Field(default=30, ge=1, le=365)
    #: A refresh token unused for this long expires, and with it the session (an idle device).
    refresh_idle_days: int = Field(default=14, ge=1, le=365)

    #: Key ring (JSON, see ``privacy.crypto.KeyRing``) from the environment, or a file that
    #: ``matchsvc keys rotate`` can update. Development generates ``data_dir/keyring.json``.
    keyring: SecretStr | None = None
    keyring_file: Path | None = None

    #: ``randomized_response``: on each label at ingestion (epsilon per rating; refits are free).
    #: ``objective_perturbation`` / ``dpsgd``: labels kept (encrypted) and each model release spends epsilon.
    privacy_mechanism: Literal["randomized_response", "objective_perturbation", "dpsgd"] = "randomized_response"
    privacy_epsilon: float = Field(default=2.0, gt=0, le=20)
    privacy_delta: float = Field(default=1e-5, ge=0, lt=1e-2)
    #: Lifetime cap on the privacy loss of any single rating (all spends touching it, composed).
    privacy_cap: float = Field(default=8.0, gt=0, le=100)
    #: Exact refit after this many online updates (randomized_response: at least, or 10 % of the user's ratings when more)
    #: or new ratings (release mechanisms).
    refit_every: int = Field(default=10, ge=1, le=1000)
    #: The refit worker of each serving process polls its queue this often when it is empty (0: no worker).
    refit_poll_seconds: float = Field(default=0.5, ge=0)
    #: A due refit waits until it was asked for this long ago, so that one refit takes in a burst of
    #: ratings (the online step has them meanwhile); a request during a refit starts the wait again.
    refit_settle_seconds: float = Field(default=3.0, ge=0, le=60)
    #: Epsilons a client may randomize a rating with on the device (``randomized_like``).
    local_epsilon_min: float = Field(default=0.5, gt=0, le=20)
    local_epsilon_max: float = Field(default=8.0, gt=0, le=20)
    #: Shared faces kept in the cache pool the feed prefers for new users.
    shared_pool_size: int = Field(default=2000, ge=0, le=100_000)

    #: The population model (``matchsvc population fit``): user-level DP-SGD, one release per fit.
    #: Epsilon and delta of one release, under adding or removing one user's whole history.
    population_epsilon: float = Field(default=1.0, gt=0, le=20)
    population_delta: float = Field(default=1e-6, gt=0, lt=1e-3)
    #: Lifetime cap on all releases composed (Renyi DP, read at ``population_delta``).
    population_epsilon_cap: float = Field(default=4.0, gt=0, le=100)
    population_personas: int = Field(default=4, ge=1, le=16)
    population_rank: int = Field(default=4, ge=1, le=64)
    #: Fewer users with ratings than this and a fit is refused. Not a privacy rule (DP holds for
    #: any number of users): the noise DP-SGD adds to the sum of the users' clipped gradients has a
    #: fixed scale while the sum grows with the number of users, so a release from a handful of
    #: users would be mostly noise that spends budget and misleads every new user's prior.
    population_min_users: int = Field(default=20, ge=2)

    #: The in-process matching schedule of ``serve`` (0 disables it; ``matchsvc match run`` works either way).
    match_interval_seconds: float = Field(default=600.0, ge=0)
    match_k: int = Field(default=20, ge=1, le=200)
    match_min_ratings: int = Field(default=10, ge=1)
    #: Every Nth run of the job recomputes every list; the runs between refresh only the users
    #: changed since the last run (the staleness bound of decision D27). 1: every run is full.
    match_full_every: int = Field(default=6, ge=1)

    #: Database fault limits (see docs/decisions.md, D29): a stopped or stalled PostgreSQL makes a
    #: request fail with 503 within these bounds instead of hanging it (and the server) without limit.
    #: Connecting (libpq counts whole seconds, 2 at least).
    db_connect_timeout_seconds: int = Field(default=3, ge=2, le=60)
    #: Server-side ``statement_timeout`` and ``lock_timeout`` of every session.
    db_statement_timeout_seconds: float = Field(default=5.0, gt=0, le=3600)
    db_lock_timeout_seconds: float = Field(default=2.0, gt=0, le=3600)
    #: Waiting for a free pooled connection.
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0, le=600)
    #: Client-side deadline of each statement, commit, rollback or ping: a frozen server never
    #: enforces its own ``statement_timeout``, so past this the connection is cut from our side.
    db_deadline_seconds: float = Field(default=8.0, gt=0, le=3600)
    #: How long ``/readyz`` waits for the database before answering 503.
    ready_timeout_seconds: float = Field(default=2.0, gt=0, le=60)

    #: HTTP limits of ``matchsvc serve`` (D30): a request head must be complete within the header
    #: timeout of the connection's start or of the previous response, and a body within the body
    #: timeout of its head (else 408); idle keep-alive connections close after the keep-alive timeout.
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    http_keepalive_seconds: int = Field(default=5, ge=1, le=600)
    #: Open connections per server process; more are closed on arrival.
    http_max_connections: int = Field(default=1000, ge=1)
    #: Requests in progress per server process; more are answered 503 with Retry-After.
    http_max_concurrent_requests: int = Field(default=100, ge=1)

    latent_backend: str = "procedural"
    diffusion_path: Path | None = None

    rate_limit_per_minute: int = Field(default=240, ge=1)
    rate_limit_burst: int = Field(default=60, ge=1)
    #: Buckets in PostgreSQL, shared by every worker process (False: per process, in memory).
    rate_limit_shared: bool = True
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    faces_per_request_max: int = Field(default=50, ge=1, le=200)
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _normalize_url(cls, value: str | None) -> str | None:
        return None if not value else normalize_database_url(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.environment is Environment.production:
            if self.database_url is None:
                raise ValueError("production requires DATABASE_URL (the embedded database is for development)")
            if self.secret_key is None:
                raise ValueError(f"production requires MATCHSVC_SECRET_KEY of at least {MIN_SECRET_BYTES} bytes")
            if self.keyring is None and self.keyring_file is None:
                raise ValueError("production requires MATCHSVC_KEYRING or MATCHSVC_KEYRING_FILE")
        if self.secret_key is not None and len(self.secret_key.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"MATCHSVC_SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes (in every environment)")
        if self.keyring is not None and self.keyring_file is not None:
            raise ValueError("set MATCHSVC_KEYRING or MATCHSVC_KEYRING_FILE, not both")
        if self.privacy_epsilon > self.privacy_cap:
            raise ValueError("MATCHSVC_PRIVACY_EPSILON must not exceed MATCHSVC_PRIVACY_CAP")
        if self.local_epsilon_min > self.local_epsilon_max:
            raise ValueError("MATCHSVC_LOCAL_EPSILON_MIN must not exceed MATCHSVC_LOCAL_EPSILON_MAX")
        if self.population_epsilon > self.population_epsilon_cap:
            raise ValueError("MATCHSVC_POPULATION_EPSILON must not exceed MATCHSVC_POPULATION_EPSILON_CAP")
        if self.privacy_mechanism == "dpsgd" and self.privacy_delta <= 0:
            raise ValueError("MATCHSVC_PRIVACY_MECHANISM=dpsgd requires MATCHSVC_PRIVACY_DELTA > 0")
        if self.db_deadline_seconds <= self.db_statement_timeout_seconds:
            # The server's own timeout should win whenever the server is alive: it keeps the connection.
            raise ValueError("MATCHSVC_DB_DEADLINE_SECONDS must exceed MATCHSVC_DB_STATEMENT_TIMEOUT_SECONDS")
        if self.latent_backend == "diffusion" and self.diffusion_path is None:
            raise ValueError("MATCHSVC_LATENT_BACKEND=diffusion requires MATCHSVC_DIFFUSION_PATH")
        return self
