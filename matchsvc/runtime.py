"""Everything a process needs to serve requests or run jobs, built once from ``Settings``.

The API, the CLI and the tests all start the service the same way: ``Runtime.start(settings)``
connects to ``DATABASE_URL`` (or starts an embedded PostgreSQL), applies migrations, loads the
latent space and the service secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from engine.latent import LatentSpace, create_latent_space
from matchsvc.db.embedded import EmbeddedPostgres
from matchsvc.db.migrate import upgrade
from matchsvc.db.session import DatabaseLimits, create_db_engine, create_session_factory
from matchsvc.keys import KeyRingStore
from matchsvc.secret_files import create_once
from matchsvc.services.privacy import PrivacyPolicy
from matchsvc.settings import MIN_SECRET_BYTES, Settings

__all__ = ["Runtime", "ServiceSecrets", "configured_keyring"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, repr=False)
class ServiceSecrets:
    """Keys derived from the one service secret, one per purpose (never reused across purposes)."""

    token_key: str
    idempotency_key: bytes
    #: HMAC key that turns user ids into the audit log's subject pseudonyms.
    audit_pseudonym_key: bytes

    @classmethod
    def derive(cls, master: bytes) -> ServiceSecrets:
        def sub(purpose: bytes) -> bytes:
            return hmac.new(master, b"matchsvc/" + purpose, hashlib.sha256).digest()

        return cls(
            token_key=sub(b"access-token").hex(),
            idempotency_key=sub(b"idempotency-mac"),
            audit_pseudonym_key=sub(b"audit-pseudonym"),
        )

    def __repr__(self) -> str:
        return "ServiceSecrets(<redacted>)"


def _load_or_create_secret(path: Path) -> bytes:
    """Development only: a random secret persisted next to the embedded database.

    An empty or short file (a failed write, a hand edit) is a startup error: tokens signed with
    it could be forged.
    """
    value, created = create_once(path, lambda: secrets.token_bytes(MIN_SECRET_BYTES))
    if created:
        log.warning("generated_development_secret", path=str(path), hint="set MATCHSVC_SECRET_KEY in production")
    if len(value) < MIN_SECRET_BYTES:
        raise RuntimeError(
            f"{path} holds {len(value)} bytes; the token secret needs at least {MIN_SECRET_BYTES}. "
            "Delete the file to generate a new one (existing tokens stop working) or set MATCHSVC_SECRET_KEY."
        )
    return value


def configured_keyring(settings: Settings) -> KeyRingStore | None:
    """The ring the settings name (``MATCHSVC_KEYRING`` or ``MATCHSVC_KEYRING_FILE``), or None."""
    if settings.keyring is not None:
        return KeyRingStore(json_text=settings.keyring.get_secret_value())
    if settings.keyring_file is not None:
        return KeyRingStore(path=settings.keyring_file)
    return None


def _keyring(settings: Settings, scratch: Path | None) -> KeyRingStore:
    """Configured ring, else a generated file (in the data dir, or scratch space for ephemeral runs)."""
    configured = configured_keyring(settings)
    if configured is not None:
        return configured
    return KeyRingStore.open_or_create((scratch or settings.data_dir) / "keyring.json")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    latent_space: LatentSpace
    secrets: ServiceSecrets
    keys: KeyRingStore
    policy: PrivacyPolicy
    embedded: EmbeddedPostgres | None = None
    scratch: Path | None = None

    @classmethod
    def start(cls, settings: Settings, *, ephemeral: bool = False) -> Runtime:
        """Connect, migrate and load.

        Parameters
        ----------
        settings : Settings
        ephemeral : bool
            Without ``DATABASE_URL``, put the embedded database in a temporary directory that is
            deleted on ``close`` (tests) instead of under ``settings.data_dir`` (``serve``).
        """
        embedded = None
        scratch = Path(tempfile.mkdtemp(prefix="matchsvc-")) if ephemeral else None
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(None if ephemeral else settings.data_dir)
            url = embedded.url
        try:
            upgrade(url)
            if settings.secret_key is not None:
                master = settings.secret_key.get_secret_value().encode()
            elif ephemeral:
                master = secrets.token_bytes(32)
            else:
                master = _load_or_create_secret(settings.data_dir / "secret.key")
            keys = _keyring(settings, scratch)
            options = {"path": settings.diffusion_path} if settings.latent_backend == "diffusion" else {}
            space = create_latent_space(settings.latent_backend, **options)
            engine = create_db_engine(url, limits=DatabaseLimits.from_settings(settings))
        except BaseException:
            if embedded is not None:
                embedded.stop()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            latent_space=space,
            secrets=ServiceSecrets.derive(master),
            keys=keys,
            policy=PrivacyPolicy.from_settings(settings),
            embedded=embedded,
            scratch=scratch,
        )

    def close(self) -> None:
        self.engine.dispose()
        if self.embedded is not None:
            self.embedded.stop()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
