"""A real ``matchsvc serve`` process for end-to-end tests, used over HTTP only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

__all__ = ["free_port", "matchsvc_command", "serving"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def matchsvc_command(env: dict[str, str], *args: str) -> str:
    """Run one ``matchsvc`` CLI command with ``env`` over the same clean environment; returns its output."""
    clean = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("MATCHSVC_")}
    matchsvc = Path(sys.executable).with_name("matchsvc")
    done = subprocess.run([str(matchsvc), *args], env={**clean, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@contextmanager
def serving(
    env: dict[str, str],
    port: int,
    *,
    log: Path | None = None,
    startup_timeout: float = 120,
    args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run ``matchsvc serve`` with ``env`` over a clean environment (no inherited database or
    ``MATCHSVC_`` settings) until ``/readyz`` answers 200; yields the base URL, stops it on exit.

    Its output goes to ``log`` (a temporary file when None), not a pipe: a busy server must
    never block on a full pipe.
    """
    clean = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("MATCHSVC_")}
    matchsvc = Path(sys.executable).with_name("matchsvc")
    with open(log, "w+b") if log is not None else tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [str(matchsvc), "serve", "--port", str(port), *args],
            env={**clean, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )

        def fail(reason: str) -> None:
            output.seek(0)
            pytest.fail(f"{reason}:\n{output.read().decode(errors='replace')[-3000:]}")

        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                try:
                    if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    fail("matchsvc serve did not become ready")
                time.sleep(0.3)
            yield base
            if process.poll() is not None:
                fail("matchsvc serve exited during the test")
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
