"""Issue 13 item 2: no short token secret anywhere, and secret files are created and replaced whole."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

import pytest
from pydantic import ValidationError

from matchsvc.keys import KeyRingStore
from matchsvc.runtime import _load_or_create_secret
from matchsvc.settings import Settings

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql://db/matchsvc",
    "keyring_file": "/run/secrets/keyring.json",
}


@pytest.mark.parametrize("environment", [{}, PRODUCTION])
@pytest.mark.parametrize("secret", ["", "x" * 31, "é" * 15])
def test_a_short_secret_key_is_refused_in_every_environment(environment: dict, secret: str) -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(secret_key=secret, **environment)


def test_a_32_byte_secret_key_is_accepted() -> None:
    assert Settings(secret_key="x" * 32, **PRODUCTION).secret_key is not None


@pytest.mark.parametrize("content", [b"", b"short"])
def test_an_empty_or_short_secret_file_is_a_startup_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(content)
    with pytest.raises(RuntimeError, match=f"secret.key holds {len(content)} bytes.*at least 32"):
        _load_or_create_secret(path)


def test_a_generated_secret_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    first = _load_or_create_secret(path)
    assert len(first) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert _load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary file left behind


def _secret(path: Path, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    barrier.wait()
    out.put(_load_or_create_secret(path).hex())


def _ring(path: Path, barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    barrier.wait()
    out.put(KeyRingStore.open_or_create(path).ring.to_json())


@pytest.mark.parametrize("load", [_secret, _ring], ids=["secret.key", "keyring.json"])
def test_processes_creating_a_secret_file_at_once_all_read_one_value(tmp_path: Path, load) -> None:
    context = multiprocessing.get_context("fork")
    processes = 6
    for attempt in range(8):
        path = tmp_path / str(attempt) / "secret"
        barrier, out = context.Barrier(processes), context.Queue()
        workers = [context.Process(target=load, args=(path, barrier, out)) for _ in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [worker.exitcode for worker in workers] == [0] * processes
        values = {out.get(timeout=5) for _ in range(processes)}
        assert len(values) == 1, f"attempt {attempt}: processes read {len(values)} different values"
