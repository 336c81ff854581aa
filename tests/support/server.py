"""A real ``matchsvc serve`` subprocess on a fresh data directory, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

__all__ = ["free_port", "matchsvc_command", "serving"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(data_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "MATCHSVC_DATABASE_URL"}}
    return {**env, "MATCHSVC_DATA_DIR": str(data_dir), **extra}


def matchsvc_command(data_dir: Path, *args: str, env: Mapping[str, str] = {}) -> str:  # noqa: B006
    """Run one ``matchsvc`` CLI command against ``data_dir``'s database; returns its output."""
    matchsvc = Path(sys.executable).with_name("matchsvc")
    done = subprocess.run(
        [str(matchsvc), *args], env=_environment(data_dir, env), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextmanager
def serving(
    data_dir: Path, port: int, *, env: Mapping[str, str] = {}, args: tuple[str, ...] = ()  # noqa: B006
) -> Iterator[str]:
    """Start ``matchsvc serve [args]`` and yield its base URL once ``/readyz`` answers; stop it on exit."""
    matchsvc = Path(sys.executable).with_name("matchsvc")
    data_dir.mkdir(parents=True, exist_ok=True)
    # The log goes to a file: a pipe nobody reads fills up and then blocks the server mid-request.
    log = data_dir / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(matchsvc), "serve", "--port", str(port), *args],
            env=_environment(data_dir, env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"matchsvc serve did not become ready:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
