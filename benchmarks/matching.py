"""``matchsvc bench matching``: the matching job end to end on synthetic users sealed in PostgreSQL.

Users are generated with realistic filters (mostly seeking another gender, age ranges a few years
around their own), sealed with their own data keys exactly as the service seals them, and
bulk-loaded with COPY into an embedded PostgreSQL (never through the API: loading is not what is
measured). Each job then runs in a fresh process so its peak memory is its own: the local backend
(the C kernel over everyone in one process) and, optionally, the Ray backend on a local two-worker
runtime, whose job process is only the driver (the tasks read and decrypt in the workers). Reported
per size: read+decrypt, score and write seconds (for Ray: summed over its tasks), pairs scored, the
share of pairs in partitions that cannot meet, the job process's peak resident memory, and whether
the Ray lists equal the local ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from engine.partitioned import plan_partitions
from engine.preference import PreferenceModel
from matchsvc.db.base import Base
from matchsvc.keys import UserCipher
from matchsvc.runtime import Runtime
from matchsvc.services.filters import Filters, Gender
from matchsvc.services.profiles import group_code, seeks_mask
from matchsvc.services.sealed import seal_filters, seal_latent, seal_state
from matchsvc.settings import Settings
from privacy.crypto import DataKey, KeyRing, wrap_data_key

__all__ = ["Loaded", "load_synthetic_users", "run_matching_benchmark"]

#: A batch job's single statements (COPYing 100k users, reading a range, COPYing its lists) outgrow
#: the request limits (D29); the loader and every job process run under these.
_BATCH_LIMITS = {"MATCHSVC_DB_STATEMENT_TIMEOUT_SECONDS": 1800.0, "MATCHSVC_DB_DEADLINE_SECONDS": 1900.0}
_GENDERS = (Gender.woman, Gender.man, Gender.nonbinary, Gender.other)
_OTHER = {Gender.woman: Gender.man, Gender.man: Gender.woman}


def _filters(rng: np.random.Generator, age: int) -> Filters:
    gender = _GENDERS[rng.choice(4, p=[0.47, 0.47, 0.04, 0.02])]
    roll = rng.random()
    if gender in _OTHER:
        seeks = {_OTHER[gender]} if roll < 0.85 else {gender} if roll < 0.93 else {Gender.woman, Gender.man}
    else:
        seeks = {_GENDERS[i] for i in rng.choice(4, size=int(rng.integers(1, 4)), replace=False)}
    low = max(18, age - int(rng.integers(2, 11)))
    high = min(120, max(low, age + int(rng.integers(2, 11))))
    return Filters(gender=gender, seeks=frozenset(seeks), age_min=low, age_max=high)


@dataclass(frozen=True)
class Loaded:
    seconds: float
    #: Share of ordered pairs whose partitions (gender x age bucket) cannot meet, from the
    #: generator's own plaintext (the job never reports what its masks reject).
    incompatible_pairs_fraction: float


def load_synthetic_users(runtime: Runtime, *, n: int, seed: int) -> Loaded:
    """Seal ``n`` matchable users and COPY them in."""
    started = time.perf_counter()
    groups, seeks = [], []
    rng = np.random.default_rng(seed)
    dim = runtime.latent_space.dim
    year = datetime.now(UTC).year
    ring = runtime.keys.ring
    tables: dict[str, list[tuple[Any, ...]]] = {
        "users": [], "user_keys": [], "appearances": [], "profiles": [], "preference_states": []
    }
    for index in range(n):
        user_id = uuid.uuid4()
        key = DataKey.generate()
        cipher = UserCipher(key=key, user_id=user_id)
        age = int(rng.integers(18, 71))
        look = rng.uniform(-2.0, 2.0, dim)
        model = PreferenceModel(coef=rng.normal(size=dim), intercept=float(rng.normal()))
        tables["users"].append((user_id, f"bench{seed}_{index}", "synthetic", year - age, ["user"]))
        tables["user_keys"].append((user_id, wrap_data_key(ring, key, user_id=str(user_id)), ring.current))
        tables["appearances"].append((user_id, seal_latent(cipher, look)))
        filters = _filters(rng, age)
        groups.append(group_code(filters.gender, age))
        seeks.append(seeks_mask(filters))
        tables["profiles"].append((user_id, seal_filters(cipher, filters)))
        state = {"kind": "released", "model": model.to_vector().tolist()}
        tables["preference_states"].append((user_id, seal_state(cipher, state), 20, 0))
    columns = {
        "users": "id, username, password_hash, birth_year, scopes",
        "user_keys": "user_id, wrapped_key, kek_version",
        "appearances": "user_id, latent_ct",
        "profiles": "user_id, filters_ct",
        "preference_states": "user_id, state_ct, n_ratings, pending_updates",
    }
    with runtime.engine.begin() as connection:
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor:
            for table, rows in tables.items():
                with cursor.copy(f"COPY {table} ({columns[table]}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
    plan = plan_partitions(np.array(groups, dtype=np.int64), np.array(seeks, dtype=np.int64))
    return Loaded(seconds=time.perf_counter() - started, incompatible_pairs_fraction=plan.skipped_fraction)


def _job(backend: str, k: int, workers: int) -> dict[str, Any]:
    """One run of the job in this (fresh) process; the settings come from the environment."""
    from benchmarks.scoring import _peak_rss_bytes
    from matchsvc.jobs.matching import run_matching

    runtime = Runtime.start(Settings())
    try:
        if backend == "ray":
            import ray

            # The workers inherit this process's environment: the database and the key ring.
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        base = _peak_rss_bytes()
        report = run_matching(runtime.sessions, keys=runtime.keys, k=k, min_ratings=1, backend=backend)
        peak = _peak_rss_bytes()
        with runtime.engine.connect() as connection:
            digest = connection.execute(
                text("SELECT md5(string_agg(user_id::text || candidate_id::text || rank, ',' ORDER BY user_id, rank)) FROM candidates")
            ).scalar_one()
    finally:
        runtime.close()
    return {
        "seconds": report.seconds,
        "read_decrypt_seconds": report.read_seconds,
        "score_seconds": report.score_seconds,
        "write_seconds": report.write_seconds,
        "pairs_scored": report.pairs_scored,
        "pairs_skipped_fraction": report.pairs_skipped_fraction,
        "peak_rss_bytes": peak,
        "rss_before_job_bytes": base,
        "lists_digest": digest,
    }


def _in_fresh_process(runtime: Runtime, secrets: dict[str, str], backend: str, k: int, workers: int) -> dict[str, Any]:
    assert runtime.scratch is not None
    env = {
        **os.environ,
        **secrets,
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        "DATABASE_URL": runtime.engine.url.render_as_string(hide_password=False),
        "MATCHSVC_DATA_DIR": str(runtime.scratch),
        "MATCHSVC_LOG_LEVEL": "ERROR",
        **{key: str(value) for key, value in _BATCH_LIMITS.items()},
    }
    code = f"import json; from benchmarks.matching import _job; print(json.dumps(_job({backend!r}, {k}, {workers})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {backend} job failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _empty(runtime: Runtime) -> None:
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with runtime.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def run_matching_benchmark(*, sizes: tuple[int, ...], k: int, ray: bool, workers: int = 2, seed: int = 0) -> dict[str, Any]:
    """Per size: load, then the local job (and the Ray job) in fresh processes; see the module doc."""
    cases = []
    # Generated here and handed to the job processes, so nothing is written to stdout about them.
    secrets = {"MATCHSVC_SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex, "MATCHSVC_KEYRING": KeyRing.generate().to_json()}
    settings = Settings(
        match_interval_seconds=0,
        secret_key=secrets["MATCHSVC_SECRET_KEY"],
        keyring=secrets["MATCHSVC_KEYRING"],
        db_statement_timeout_seconds=_BATCH_LIMITS["MATCHSVC_DB_STATEMENT_TIMEOUT_SECONDS"],
        db_deadline_seconds=_BATCH_LIMITS["MATCHSVC_DB_DEADLINE_SECONDS"],
    )
    runtime = Runtime.start(settings, ephemeral=True)
    try:
        for n in sizes:
            _empty(runtime)
            loaded = load_synthetic_users(runtime, n=n, seed=seed)
            case: dict[str, Any] = {
                "users": n,
                "load_seconds": loaded.seconds,
                "incompatible_pairs_fraction": loaded.incompatible_pairs_fraction,
                "load_average": os.getloadavg(),
            }
            case["local"] = _in_fresh_process(runtime, secrets, "local", k, workers)
            local = case["local"]
            case["job_over_scoring"] = local["seconds"] / local["score_seconds"] if local["score_seconds"] else None
            case["score_seconds_per_pair"] = local["score_seconds"] / max(1, local["pairs_scored"])
            case["read_decrypt_seconds_per_user"] = local["read_decrypt_seconds"] / n
            case["write_seconds_per_user"] = local["write_seconds"] / n
            if ray:
                with runtime.engine.begin() as connection:
                    connection.execute(text("TRUNCATE candidates"))  # every list the digest sees is Ray's
                case["ray"] = _in_fresh_process(runtime, secrets, "ray", k, workers)
                case["ray_lists_equal_local"] = case["ray"]["lists_digest"] == local["lists_digest"]
            cases.append(case)
    finally:
        runtime.close()
    for backend in ("local", "ray"):
        measured = [case for case in cases if backend in case]
        for case in measured:
            case[backend]["peak_rss_over_smallest"] = case[backend]["peak_rss_bytes"] / measured[0][backend]["peak_rss_bytes"]
    return {"k": k, "workers": workers, "cases": cases, "cpu_count": os.cpu_count(), "script": Path(__file__).name}
