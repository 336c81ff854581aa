"""Requests/s of ``POST /v1/ratings`` against a bare FastAPI + psycopg insert, in the same run.

Both servers run as separate uvicorn processes on the same PostgreSQL; one client process drives
them with the same number of threads. The ratio is what to compare across machines.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np

from matchsvc.runtime import Runtime
from matchsvc.services import auth as auth_service
from matchsvc.services import faces as faces_service
from matchsvc.services import sessions as sessions_service
from matchsvc.settings import Settings
from privacy.crypto import KeyRing

__all__ = ["bench_runtime", "drive", "free_port", "rating_requests", "run_api_benchmark", "start_server", "wait_until_up"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(process: subprocess.Popen, base: str, *, name: str, timeout: float = 120.0) -> str:
    """Poll ``base``'s OpenAPI document until the server answers; ``base`` once it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/openapi.json", timeout=1)
            return base
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError(f"{name} failed to start: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{name} did not start within {timeout:g} s")


def start_server(target: str, *, factory: bool, env: dict[str, str], workers: int = 1) -> tuple[subprocess.Popen, str]:
    """``uvicorn target`` on a free loopback port with ``workers`` processes."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--log-level", "warning"]
    command += ["--workers", str(workers)] if workers > 1 else []
    if factory:
        command.append("--factory")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return process, wait_until_up(process, f"http://127.0.0.1:{port}", name=target)


def drive(
    base: str, requests: list[tuple[str, dict, dict]], *, threads: int, on_start: Callable[[], None] | None = None
) -> float:
    """Send all requests with ``threads`` keep-alive clients; returns requests per second.

    The time runs from when every client is set up; ``on_start`` is called then, before any
    request is sent (to start a meter at the same moment).
    """
    chunks = [requests[i::threads] for i in range(threads)]
    errors: list[str] = []
    started = 0.0

    def release() -> None:
        nonlocal started
        if on_start is not None:
            on_start()
        started = time.perf_counter()

    barrier = threading.Barrier(threads + 1, action=release)  # run by one thread before all go

    def worker(chunk: list[tuple[str, dict, dict]]) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            barrier.wait()
            for path, body, headers in chunk:
                response = client.post(path, json=body, headers=headers)
                if response.status_code not in (200, 201):
                    errors.append(f"{response.status_code} {response.text[:200]}")

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker, chunk) for chunk in chunks]
        barrier.wait()
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return len(requests) / elapsed


@contextmanager
def bench_runtime() -> Iterator[tuple[Runtime, dict[str, str]]]:
    """An ephemeral database, and the environment a server process needs to share it with us.

    The secret and the key ring are shared so the server can read the users we create here;
    the rate limit is lifted and the matching schedule and the face pool are off.
    """
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    keyring = KeyRing.generate().to_json()
    runtime = Runtime.start(Settings(secret_key=secret, keyring=keyring), ephemeral=True)
    try:
        yield runtime, {
            **os.environ,
            "DATABASE_URL": runtime.engine.url.render_as_string(hide_password=False),
            "MATCHSVC_SECRET_KEY": secret,
            "MATCHSVC_KEYRING": keyring,
            "MATCHSVC_SHARED_POOL_SIZE": "0",
            "MATCHSVC_MATCH_INTERVAL_SECONDS": "0",
            "MATCHSVC_RATE_LIMIT_PER_MINUTE": str(10**9),
            "MATCHSVC_RATE_LIMIT_BURST": str(10**9),
            "MATCHSVC_LOG_LEVEL": "WARNING",
        }
    finally:
        runtime.close()


def rating_requests(
    runtime: Runtime, *, users: int, per_user: int, prefix: str = "bench"
) -> tuple[list[tuple[str, dict, dict]], list[tuple[str, dict, dict]]]:
    """``users`` accounts each served ``per_user`` faces; the same ratings for our endpoint and the bare one.

    Interleaved user by user (the first rating of every user, then the second, ...), so that
    :func:`drive` with a thread count dividing ``users`` gives each client thread users of its own,
    as phones are: one user's ratings arrive one after another, never eight at once on their lock.
    """
    ours: list[tuple[str, dict, dict]] = []
    bare: list[tuple[str, dict, dict]] = []
    rng = np.random.default_rng(0)
    policy = sessions_service.TokenPolicy.from_settings(runtime.settings, secret=runtime.secrets.token_key)
    with runtime.sessions() as session:
        for index in range(users):
            user = auth_service.register(
                session, keys=runtime.keys, username=f"{prefix}{index}", password="benchmark-password", birth_year=1990
            )
            token = sessions_service.open_session(
                session, user=user, scopes=frozenset({"user"}), device_name="bench", policy=policy
            ).access_token
            session.commit()
            faces = []
            while len(faces) < per_user:
                faces += faces_service.next_faces(
                    session,
                    user_id=user.id,
                    keys=runtime.keys,
                    policy=runtime.policy,
                    space=runtime.latent_space,
                    n=min(50, per_user - len(faces)),
                    rng=rng,
                )
            for face in faces:
                body = {"face_id": str(face.id), "liked": bool(rng.random() < 0.5)}
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
                ours.append(("/v1/ratings", body, headers))
                bare.append(("/ratings", body, {}))
    order = [user * per_user + index for index in range(per_user) for user in range(users)]
    return [ours[i] for i in order], [bare[i] for i in order]


def run_api_benchmark(*, requests: int = 2000, threads: int = 8) -> dict[str, Any]:
    """Throughput of our rating endpoint (auth with the per-request session check, idempotency,
    served-face check, upsert) vs a bare insert."""
    users = 2 * threads  # each client thread rates for two users of its own (``rating_requests``)
    with bench_runtime() as (runtime, env):
        ours, bare = rating_requests(runtime, users=users, per_user=-(-requests // users))
        servers = [
            start_server("api.main:create_app_from_environment", factory=True, env=env),
            start_server("benchmarks.bare_app:create_app", factory=True, env=env),
        ]
        try:
            (_, ours_base), (_, bare_base) = servers
            drive(bare_base, bare[: requests // 10], threads=threads)  # warm both servers' pools
            drive(ours_base, ours[: requests // 10], threads=threads)
            bare_rps = drive(bare_base, bare[requests // 10 : requests], threads=threads)
            ours_rps = drive(ours_base, ours[requests // 10 : requests], threads=threads)
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=30)
    return {
        "requests": requests - requests // 10,
        "client_threads": threads,
        "server": "uvicorn, 1 worker each, same PostgreSQL",
        "ours_post_ratings_rps": round(ours_rps, 1),
        "bare_fastapi_psycopg_insert_rps": round(bare_rps, 1),
        "ratio_ours_to_bare": round(ours_rps / bare_rps, 3),
    }
