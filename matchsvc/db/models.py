"""ORM models. Schema changes go through Alembic (``alembic/versions``), never ``create_all``.

What is public and what is personal is decided here:

* ``faces`` hold *generated* latents. They are public content (shared across users) and never
  describe a user.
* Everything keyed by a user is personal data and is deleted with the user (``ON DELETE CASCADE``).
  Personal *content* (labels, preference models, appearances) lives only in ``*_ct`` columns:
  AES-256-GCM under the user's data key, with associated data binding table, column, user and row
  (see :mod:`matchsvc.keys`). Plain columns hold ids, timestamps and public policy numbers.
* ``user_sessions`` are sign-ins (one per device); ``refresh_tokens`` hold only SHA-256 digests of
  the opaque refresh tokens, each row belonging to a session and deleted with it (decision D20).
* ``population_releases`` hold the population model: a user-level differentially private release
  across all users, in plaintext by design (decision D14). No column refers to a user.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from matchsvc.db.base import Base, utcnow_column

__all__ = [
    "Appearance",
    "Block",
    "Candidate",
    "Decision",
    "Face",
    "FaceImage",
    "FaceImpression",
    "IdempotencyRecord",
    "LedgerEntry",
    "LoginThrottle",
    "Match",
    "MatchRun",
    "PopulationRelease",
    "PreferenceState",
    "Profile",
    "RateBucket",
    "Rating",
    "RefitJob",
    "RefreshToken",
    "ScopeTotal",
    "User",
    "UserKey",
    "UserSession",
    "UserTotal",
]


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    birth_year: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    created_at: Mapped[datetime] = utcnow_column()


class Face(Base):
    """A generated face: a public latent plus the backend that renders it."""

    __tablename__ = "faces"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    backend: Mapped[str] = mapped_column(String(32), nullable=False)
    latent: Mapped[list[float]] = mapped_column(ARRAY(Float), nullable=False)
    #: Shared faces form the cache pool that several users are shown (cheap, comparable ratings).
    shared: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = utcnow_column()


class FaceImage(Base):
    """Rendered PNG cache. Faces are immutable, so a face is rendered at most once."""

    __tablename__ = "face_images"

    face_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True
    )
    png: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    etag: Mapped[str] = mapped_column(String(80), nullable=False)
    created_at: Mapped[datetime] = utcnow_column()


class FaceImpression(Base):
    """Which faces were served to which user: a rating is only accepted for a served face."""

    __tablename__ = "face_impressions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    face_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True
    )
    served_at: Mapped[datetime] = utcnow_column()


class UserKey(Base):
    """The user's data key, wrapped by the key ring. Deleting this row crypto-shreds the user."""

    __tablename__ = "user_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    #: Key-ring version that wraps it, readable without unwrapping, so rotation finds stale keys.
    kek_version: Mapped[int] = mapped_column(Integer, nullable=False, index=True)
    created_at: Mapped[datetime] = utcnow_column()
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Rating(Base):
    """One rating per (user, face); a re-rating updates the row.

    ``label_ct`` holds the label as the privacy mechanism released it (randomized response: the
    possibly-flipped bit; release-time mechanisms: the answer itself), never in plaintext.
    ``label_epsilon`` is the randomized-response epsilon it was privatised with (None when the
    deployment privatises at model release instead): the learner needs each label's flip rate.
    """

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("user_id", "face_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    face_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("faces.id", ondelete="CASCADE"), nullable=False
    )
    label_ct: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    label_epsilon: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = utcnow_column()
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class PreferenceState(Base):
    """The user's released preference model (and the online-update state), encrypted."""

    __tablename__ = "preference_states"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    state_ct: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    n_ratings: Mapped[int] = mapped_column(Integer, nullable=False)
    #: Ratings absorbed by online updates since the last exact refit.
    pending_updates: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class LedgerEntry(Base):
    """One privacy spend. ``scope`` is ``rating:<face id>`` for a label release, ``model`` for a model release."""

    __tablename__ = "privacy_ledger"
    __table_args__ = (
        CheckConstraint("epsilon >= 0 AND delta >= 0 AND delta < 1", name="valid_spend"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    mechanism: Mapped[str] = mapped_column(String(64), nullable=False)
    epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    delta: Mapped[float] = mapped_column(Float, nullable=False)
    neighbouring: Mapped[str] = mapped_column(Text, nullable=False)
    scope: Mapped[str] = mapped_column(String(80), nullable=False)
    #: The randomized response ran on the client (the server stored what it was sent).
    randomized_on_device: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    created_at: Mapped[datetime] = utcnow_column()


class ScopeTotal(Base):
    """Running sum of one user's spends in one rating scope (``privacy_ledger`` is the record)."""

    __tablename__ = "privacy_scope_totals"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(80), primary_key=True)
    epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    delta: Mapped[float] = mapped_column(Float, nullable=False)


class UserTotal(Base):
    """Running totals of one user's ledger: the model scope, the worst rating scope, the count."""

    __tablename__ = "privacy_user_totals"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    model_epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    model_delta: Mapped[float] = mapped_column(Float, nullable=False)
    worst_rating_epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    worst_rating_delta: Mapped[float] = mapped_column(Float, nullable=False)
    spends: Mapped[int] = mapped_column(BigInteger, nullable=False)


class RateBucket(Base):
    """One client's token bucket of the shared rate limiter (UNLOGGED: a crash only refills buckets)."""

    __tablename__ = "rate_buckets"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float, nullable=False)
    #: Tokens the last take granted, its cost plus the lease (0: refused); what the atomic update reports back.
    granted: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class RefitJob(Base):
    """A user whose released model is behind their ratings; ``generation`` grows with each request."""

    __tablename__ = "refit_jobs"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False)
    requested_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False, index=True
    )
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class IdempotencyRecord(Base):
    """The first response to a (user, Idempotency-Key) pair, replayed on retries.

    ``request_mac`` is an HMAC of the request body under a server key, so a retry with a different
    body is detected without storing the body (it may carry a label) in plaintext.
    """

    __tablename__ = "idempotency_keys"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_mac: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    status_code: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    response_body: Mapped[dict] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = utcnow_column()


class Appearance(Base):
    """The user's own look as a latent made on the device (never a photo), sealed."""

    __tablename__ = "appearances"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    latent_ct: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Profile(Base):
    """What two-way filters need (gender, genders sought, age range), sealed."""

    __tablename__ = "profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    filters_ct: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


class Candidate(Base):
    """One of a user's current reciprocal top-k, by rank only (no score is stored)."""

    __tablename__ = "candidates"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    candidate_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    created_at: Mapped[datetime] = utcnow_column()


class Decision(Base):
    """A like or pass on a candidate. The choice is sealed; the row's existence excludes the pair."""

    __tablename__ = "decisions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    target_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    choice_ct: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = utcnow_column()


class Match(Base):
    """A mutual like; ``user_low < user_high`` so each pair has one row."""

    __tablename__ = "matches"
    __table_args__ = (
        UniqueConstraint("user_low", "user_high"),
        CheckConstraint("user_low < user_high", name="ordered_pair"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_low: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_high: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = utcnow_column()


class Block(Base):
    """``blocker`` never sees ``blocked`` again, and vice versa."""

    __tablename__ = "blocks"

    blocker_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = utcnow_column()


class PopulationRelease(Base):
    """One release of the population model, and the ledger entry for it (decision D14).

    Releases are only ever inserted. ``epsilon``/``delta`` are what this release alone claims under
    adding or removing one user's whole history; the accounting columns (the sampled-Gaussian
    steps DP-SGD took) are what lets every later fit re-compose all releases in Renyi DP.
    """

    __tablename__ = "population_releases"
    __table_args__ = (
        CheckConstraint("version >= 1", name="positive_version"),
        CheckConstraint("epsilon > 0 AND delta > 0 AND delta < 1", name="valid_guarantee"),
        CheckConstraint(
            "noise_multiplier > 0 AND sample_rate > 0 AND sample_rate <= 1 AND steps >= 1 AND max_grad_norm > 0",
            name="valid_accounting",
        ),
        CheckConstraint("n_users >= 1 AND n_personas >= 1 AND rank >= 1", name="valid_shape"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False, unique=True)
    created_at: Mapped[datetime] = utcnow_column()
    mechanism: Mapped[str] = mapped_column(String(32), nullable=False)
    neighbouring: Mapped[str] = mapped_column(String(32), nullable=False)
    epsilon: Mapped[float] = mapped_column(Float, nullable=False)
    delta: Mapped[float] = mapped_column(Float, nullable=False)
    noise_multiplier: Mapped[float] = mapped_column(Float, nullable=False)
    sample_rate: Mapped[float] = mapped_column(Float, nullable=False)
    steps: Mapped[int] = mapped_column(Integer, nullable=False)
    max_grad_norm: Mapped[float] = mapped_column(Float, nullable=False)
    n_users: Mapped[int] = mapped_column(Integer, nullable=False)
    n_personas: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    rank: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    #: ``engine.population.PopulationModel.to_state()``.
    state: Mapped[dict] = mapped_column(JSONB, nullable=False)


class LoginThrottle(Base):
    """Recent failed logins of one attempted username (issue 13; docs/threat-model.md).

    ``account_key`` is ``HMAC-SHA256(server key, normalised username)``: the table names no user
    and has no foreign key, so unknown usernames are counted exactly like existing ones.
    """

    __tablename__ = "login_throttle"
    __table_args__ = (
        CheckConstraint("octet_length(account_key) = 32", name="account_key_is_hmac"),
        CheckConstraint("failures >= 0", name="failures_not_negative"),
    )

    account_key: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    last_attempt: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UserSession(Base):
    """One sign-in (a device): the family of refresh tokens rotated from one password login.

    Access tokens name it (``sid``) and are refused once it is revoked or past ``expires_at``
    (absolute lifetime) or ``idle_expires_at`` (the current refresh token's idle lifetime).
    ``scopes`` are what the login granted; a refresh never grants more (nor more than the account
    holds then). ``last_used_at`` is the last login or refresh, not the last request.
    """

    __tablename__ = "user_sessions"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    device_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    created_at: Mapped[datetime] = utcnow_column()
    last_used_at: Mapped[datetime] = utcnow_column()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    idle_expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: ``logout``, ``revoked`` (from the session list), ``password-change`` or ``refresh-token-reuse``.
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class RefreshToken(Base):
    """Every refresh token a session was issued, by SHA-256 digest; ``used_at`` marks it spent.

    Spent tokens are kept with their session so that presenting one again is recognised as reuse
    (a copy in someone else's hands) and revokes the session, rather than being just "unknown".
    """

    __tablename__ = "refresh_tokens"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    session_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("user_sessions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    created_at: Mapped[datetime] = utcnow_column()
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MatchRun(Base):
    """One finished run of the matching job: when its snapshot was read and what it recomputed.

    The next incremental run refreshes the users changed since ``started_at`` (issue 15). No user
    column: a run is an operational record, not anyone's data.
    """

    __tablename__ = "match_runs"
    __table_args__ = (
        CheckConstraint("mode IN ('full', 'incremental')", name="known_mode"),
        CheckConstraint("users >= 0 AND refreshed >= 0 AND pairs_scored >= 0", name="valid_counts"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    #: The database clock when the run began reading; changes after it belong to the next run.
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    finished_at: Mapped[datetime] = utcnow_column()
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    users: Mapped[int] = mapped_column(Integer, nullable=False)
    refreshed: Mapped[int] = mapped_column(Integer, nullable=False)
    pairs_scored: Mapped[int] = mapped_column(BigInteger, nullable=False)
    pairs_skipped_fraction: Mapped[float] = mapped_column(Float, nullable=False)
