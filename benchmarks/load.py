"""Load benchmark: simulated mobile clients against a real ``matchsvc serve --workers N``.

Three measurements in one run, on one embedded PostgreSQL:

1. **Ratio**: ``POST /v1/ratings`` (full privacy path) against the bare FastAPI + psycopg insert
   (:mod:`benchmarks.bare_app`, same number of workers), same requests, same client threads; with
   the CPU each request cost the server's processes, PostgreSQL's and the client's. On a machine
   where all three share the cores the ratio of throughputs is the ratio of those totals, which
   move far less with the machine's load than the throughputs do (docs/benchmarks.md, D39). The
   two are driven in alternating slices (bare, ours, ours, bare, ...), so that a change of the
   machine's speed during the run falls on both alike (D45).
2. **Load**: ``clients`` simulated phones for ``seconds``: each registers, logs in, and rates the
   faces of its feed one by one with an Idempotency-Key per rating, retrying an error (or a lost
   connection) with the same key until it is acknowledged. Afterwards, per user, the ratings the
   API lists are compared with the acknowledged ones (``lost``) and the ledger's spends with the
   stored ratings (``duplicated``: a retry charged or stored twice).
3. **History**: one user rates ``history`` faces in a row; p95 latency of the last quarter
   against the first 100 ratings (both from this run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import psycopg
from tqdm import tqdm

from benchmarks._report import write_report
from benchmarks.api import bench_runtime, drive, free_port, rating_requests, start_server, wait_until_up
from matchsvc.runtime import Runtime

__all__ = ["run_load_benchmark"]

_PASSWORD = "benchmark-password"
_FEED = 20


@dataclass
class _Phone:
    """One simulated client: what it sent, what was acknowledged, and every attempt's timing."""

    username: str
    headers: dict[str, str] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    #: (finished at, seconds, status (0: no response), ratings acknowledged before it)
    attempts: list[tuple[float, float, int, int]] = field(default_factory=list)


def _login(http: httpx.Client, phone: _Phone) -> None:
    http.post("/v1/auth/register", json={"username": phone.username, "password": _PASSWORD, "birth_year": 1990})
    token = http.post("/v1/auth/token", data={"username": phone.username, "password": _PASSWORD})
    token.raise_for_status()
    phone.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}


def _rate(http: httpx.Client, phone: _Phone, face_id: str, liked: bool) -> None:
    """POST one rating, retrying with the same key until it is acknowledged."""
    key = uuid.uuid4().hex
    for attempt in range(50):
        started = time.perf_counter()
        try:
            status = http.post(
                "/v1/ratings", json={"face_id": face_id, "liked": liked},
                headers={**phone.headers, "Idempotency-Key": key},
            ).status_code
        except httpx.TransportError:
            status = 0
        finished = time.perf_counter()
        phone.attempts.append((finished, finished - started, status, len(phone.acked)))
        if status in (200, 201):
            phone.acked.add(face_id)
            return
        time.sleep(min(0.05 * 2**attempt, 2.0))


def _feed(http: httpx.Client, phone: _Phone, n: int) -> list[str]:
    for attempt in range(50):
        try:
            response = http.get("/v1/faces/next", params={"n": n}, headers=phone.headers)
            if response.status_code == 200:
                return [face["id"] for face in response.json()["faces"]]
        except httpx.TransportError:
            pass
        time.sleep(min(0.05 * 2**attempt, 2.0))
    raise RuntimeError("the feed failed 50 times in a row")


def _swipe(
    http: httpx.Client, phone: _Phone, *, until: float, rng: np.random.Generator, limit: int | None = None
) -> None:
    """Rate the feed's faces one by one until ``until`` (or ``limit`` ratings)."""
    while time.perf_counter() < until and (limit is None or len(phone.acked) < limit):
        want = _FEED if limit is None else min(50, limit - len(phone.acked))
        for face_id in _feed(http, phone, want):
            if time.perf_counter() >= until:
                return
            _rate(http, phone, face_id, bool(rng.random() < 0.4))


def _stored(http: httpx.Client, phone: _Phone) -> tuple[set[str], int, int]:
    """(faces the API lists as rated, number of rows listed, ledger spends)."""
    faces: list[str] = []
    cursor = None
    while True:
        params = {"limit": 100} | ({} if cursor is None else {"cursor": cursor})
        page = http.get("/v1/me/ratings", params=params, headers=phone.headers).json()
        faces += [item["face_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    spends = http.get("/v1/me/privacy", headers=phone.headers).json()["spends"]
    return set(faces), len(faces), spends


def _percentiles(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.array(seconds) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2)}


def _cpu_seconds(roots: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each process under ``roots`` (the roots included), by pid."""
    seconds: dict[int, float] = {}
    for root in roots:
        try:
            tree = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
        except psutil.Error:
            continue
        for process in tree:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seconds[process.pid] = times.user + times.system
    return seconds


def _drive_measured(
    base: str, requests: list[tuple[str, dict, dict]], *, threads: int, server: int, postgres: int | None
) -> tuple[float, dict[str, float | None]]:
    """:func:`drive`, and the CPU milliseconds per request of the server, PostgreSQL and this client
    while the requests run (setting up the clients is not counted: short slices, :func:`_alternated`,
    would pay it more often).

    Processes that exit during the run are not counted (the pools keep theirs open).
    """
    roots = {"server": server, "postgres": postgres}
    before: dict[str, dict[int, float]] = {}
    client_before = 0.0

    def start() -> None:
        nonlocal client_before
        before.update({name: _cpu_seconds([pid]) for name, pid in roots.items() if pid is not None})
        client_before = sum(os.times()[:2])

    rps = drive(base, requests, threads=threads, on_start=start)
    cpu: dict[str, float | None] = {"client": round(1000 * (sum(os.times()[:2]) - client_before) / len(requests), 2)}
    for name, pid in roots.items():
        if pid is None:
            cpu[name] = None
            continue
        after = _cpu_seconds([pid])
        cpu[name] = round(1000 * sum(t - before[name].get(p, 0.0) for p, t in after.items()) / len(requests), 2)
    return rps, cpu


#: Slices per side of the ratio's measurement (:func:`_alternated`).
_RATIO_SLICES = 6

_Side = tuple[str, int, list[tuple[str, dict, dict]]]
_CPU_PARTS = ("client", "server", "postgres")


def _alternated(
    first: _Side, second: _Side, *, threads: int, postgres: int | None, users: int, slices: int
) -> tuple[tuple[float, dict[str, float | None]], tuple[float, dict[str, float | None]], list[tuple[float, float]]]:
    """:func:`_drive_measured` of two servers (each: base URL, pid, requests) in ``slices``
    alternating slices each, in the order ABBA ABBA...: requests per second and CPU ms per request
    of each over all its slices, and each pair's requests per second.

    A slice holds whole rounds of ``users`` requests, so that each client thread keeps the users
    :func:`benchmarks.api.rating_requests` gave it.
    """
    slices = max(1, min(slices, len(first[2]) // users))
    size = len(first[2]) // users // slices * users
    sides = (first, second)
    count, seconds, cpu_ms = [0, 0], [0.0, 0.0], [Counter(), Counter()]  # CPU ms summed over requests
    pairs = []
    for index in range(slices):
        chunk = slice(index * size, None if index == slices - 1 else (index + 1) * size)
        rates = [0.0, 0.0]
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            base, pid, requests = sides[side]
            part = requests[chunk]
            rates[side], cpu = _drive_measured(base, part, threads=threads, server=pid, postgres=postgres)
            count[side] += len(part)
            seconds[side] += len(part) / rates[side]
            cpu_ms[side].update({name: ms * len(part) for name, ms in cpu.items() if ms is not None})
        pairs.append((rates[0], rates[1]))

    def overall(side: int) -> tuple[float, dict[str, float | None]]:
        spent = cpu_ms[side]
        cpu = {name: round(spent[name] / count[side], 2) if name in spent else None for name in _CPU_PARTS}
        return count[side] / seconds[side], cpu

    return overall(0), overall(1), pairs


def _postmaster(runtime: Runtime) -> int | None:
    """The embedded PostgreSQL's postmaster pid (None with an external server)."""
    if runtime.embedded is None:
        return None
    return int((Path(runtime.embedded.pgdata) / "postmaster.pid").read_text().split()[0])


def _load(base: str, *, clients: int, seconds: float, progress: bool) -> dict[str, Any]:
    """The clients log in first (argon2 is slow on purpose), then all start swiping at once."""
    phones = [_Phone(f"load{uuid.uuid4().hex[:10]}") for _ in range(clients)]
    https = [httpx.Client(base_url=base, timeout=30) for _ in phones]
    for http, phone in zip(https, phones, strict=True):
        _login(http, phone)
    started = time.perf_counter()
    until = started + seconds
    threads = [
        threading.Thread(target=_swipe, args=(http, phone), kwargs={"until": until, "rng": np.random.default_rng(i)})
        for i, (http, phone) in enumerate(zip(https, phones, strict=True))
    ]
    for thread in threads:
        thread.start()
    with tqdm(total=int(seconds), desc="load", unit="s", disable=not progress) as bar:
        while any(thread.is_alive() for thread in threads):
            time.sleep(1.0)
            bar.set_postfix(acked=sum(len(p.acked) for p in phones))
            bar.update(min(1, int(seconds) - bar.n))
    for thread in threads:
        thread.join()
    for http in https:
        http.close()
    lost = duplicated = unacknowledged = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        for phone in phones:
            faces, rows, spends = _stored(http, phone)
            lost += len(phone.acked - faces)
            unacknowledged += len(faces - phone.acked)  # stored, but the phone gave up before an answer
            duplicated += (rows - len(faces)) + max(spends - rows, 0)
    attempts = [(t - started, dt, status, n) for phone in phones for t, dt, status, n in phone.attempts]
    ok = [(t, dt, n) for t, dt, status, n in attempts if status in (200, 201)]
    statuses = Counter(status for _, _, status, _ in attempts if status not in (200, 201))
    elapsed = max((t for t, _, _ in ok), default=seconds)

    def rate_between(low: float, high: float) -> float:
        return sum(low <= t < high for t, _, _ in ok) / (high - low)

    first, last = rate_between(0.0, min(10.0, elapsed)), rate_between(max(elapsed - 10.0, 0.0), elapsed)
    return {
        "clients": clients,
        "seconds": seconds,
        "acknowledged": len(ok),
        "throughput_rps": round(len(ok) / elapsed, 1),
        "throughput_first_10s_rps": round(first, 1),
        "throughput_last_10s_rps": round(last, 1),
        "last_to_first": round(last / first, 3) if first else None,
        **_percentiles([dt for _, dt, _ in ok]),
        "errors_by_status": {("no response" if s == 0 else str(s)): c for s, c in sorted(statuses.items())},
        "server_errors": sum(c for s, c in statuses.items() if s >= 500),
        "lost": lost,
        "duplicated": duplicated,
        "stored_unacknowledged": unacknowledged,
        "max_history": max((n for _, _, n in ok), default=0),
        "series": {"t": [round(t, 3) for t, _, _ in ok], "ms": [round(dt * 1000, 2) for _, dt, _ in ok],
                   "history": [n for _, _, n in ok]},
    }


def _history(base: str, *, ratings: int, progress: bool) -> dict[str, Any]:
    phone = _Phone(f"history{uuid.uuid4().hex[:8]}")
    done = threading.Event()

    def run() -> None:
        try:
            with httpx.Client(base_url=base, timeout=30) as http:
                _login(http, phone)
                _swipe(http, phone, until=float("inf"), rng=np.random.default_rng(1), limit=ratings)
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    with tqdm(total=ratings, desc="history", unit="rating", disable=not progress) as bar:
        while not done.wait(0.5):
            bar.update(len(phone.acked) - bar.n)
        bar.update(len(phone.acked) - bar.n)
    worker.join()
    ok = [(dt, n) for _, dt, status, n in phone.attempts if status in (200, 201)]
    early = [dt for dt, n in ok if n < 100]
    late = [dt for dt, n in ok if n >= ratings * 3 // 4]
    early_p95, late_p95 = (float(np.percentile(x, 95)) if x else float("nan") for x in (early, late))
    return {
        "ratings": len(ok),
        "p95_first_100_ms": round(early_p95 * 1000, 2),
        f"p95_from_{ratings * 3 // 4}_ms": round(late_p95 * 1000, 2),
        "late_to_early_p95": round(late_p95 / early_p95, 3),
        "series": {"history": [n for _, n in ok], "ms": [round(dt * 1000, 2) for dt, _ in ok]},
    }


def _serve(env: dict[str, str], *, workers: int, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("matchsvc")), "serve", "--port", str(port), "--workers", str(workers)],
        env={**env, "MATCHSVC_DATA_DIR": str(data_dir)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    return process, wait_until_up(process, f"http://127.0.0.1:{port}", name="matchsvc serve")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load, history = result["load"]["series"], result["history"]["series"]
    figure, (rate_ax, latency_ax, history_ax) = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained")
    t = np.array(load["t"])
    if t.size:
        edges = np.arange(0.0, np.ceil(t.max()) + 1.0)
        counts, _ = np.histogram(t, bins=edges)
        rate_ax.plot(edges[:-1], counts, drawstyle="steps-post")
        seconds = np.floor(t).astype(int)
        ms = np.array(load["ms"])
        for q in (50, 95):
            series = [np.percentile(ms[seconds == s], q) if (seconds == s).any() else np.nan for s in edges[:-1].astype(int)]
            latency_ax.plot(edges[:-1], series, label=f"p{q}")
    rate_ax.set(title="Load: acknowledged ratings per second", xlabel="s", ylabel="ratings/s")
    latency_ax.set(title="Load: POST /v1/ratings latency", xlabel="s", ylabel="ms", yscale="log")
    latency_ax.legend()
    history_ax.scatter(load["history"], load["ms"], s=2, alpha=0.3, label="load clients")
    history_ax.scatter(history["history"], history["ms"], s=2, alpha=0.5, label="one user in a row")
    history_ax.set(title="Latency against the user's history", xlabel="ratings before", ylabel="ms", yscale="log")
    history_ax.legend()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def run_load_benchmark(
    *,
    clients: int = 8,
    seconds: float = 60.0,
    workers: int = 2,
    history: int = 2000,
    ratio_requests: int = 2000,
    out_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The three measurements of the module docstring; ``series`` holds the raw points the plots use."""
    started = time.perf_counter()
    with bench_runtime() as (runtime, env):
        ours, bare = rating_requests(runtime, users=clients * 2, per_user=-(-ratio_requests // (clients * 2)))
        url = env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as connection:  # before the workers race to create it
            connection.execute(
                "CREATE TABLE IF NOT EXISTS bench_bare_ratings (id bigserial primary key, face_id uuid, liked bool)"
            )
        data_dir = Path(runtime.scratch or ".") / "serve"
        servers = [
            _serve(env, workers=workers, data_dir=data_dir),
            start_server("benchmarks.bare_app:create_app", factory=True, env=env, workers=workers),
        ]
        try:
            (ours_process, ours_base), (bare_process, bare_base) = servers
            postgres = _postmaster(runtime)
            warm = len(ours) // 10
            drive(bare_base, bare[:warm], threads=clients)
            drive(ours_base, ours[:warm], threads=clients)
            (bare_rps, bare_cpu), (ours_rps, ours_cpu), pairs = _alternated(
                (bare_base, bare_process.pid, bare[warm:]), (ours_base, ours_process.pid, ours[warm:]),
                threads=clients, postgres=postgres, users=clients * 2, slices=_RATIO_SLICES,
            )
            load = _load(ours_base, clients=clients, seconds=seconds, progress=progress)
            long_run = _history(ours_base, ratings=history, progress=progress)
        finally:
            for process, _ in servers:
                process.terminate()
                process.wait(timeout=60)
    result = {
        "server": f"matchsvc serve --workers {workers}; bare: uvicorn --workers {workers}; one embedded PostgreSQL",
        "cpus": len(os.sched_getaffinity(0)),
        "ratio": {
            "requests": len(ours) - warm,
            "client_threads": clients,
            "ours_post_ratings_rps": round(ours_rps, 1),
            "bare_fastapi_psycopg_insert_rps": round(bare_rps, 1),
            "ratio_ours_to_bare": round(ours_rps / bare_rps, 3),
            "cpu_ms_per_request": {"ours": ours_cpu, "bare": bare_cpu},
            "slice_ratios": [round(ours / bare, 3) for bare, ours in pairs],
        },
        "load": load,
        "history": long_run,
        "timing": {},
    }
    return write_report(result, out_dir=out_dir, name="load_benchmark", plot=_plot, started=started)
