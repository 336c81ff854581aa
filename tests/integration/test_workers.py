"""Several worker processes behave as one: one matching run at a time, one rate limit shared (leases included)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fastapi.testclient import TestClient
from sqlalchemy import text

from api.main import create_app
from matchsvc.runtime import Runtime
from matchsvc.services.rate_limits import SharedTokenBucket
from tests.support.accounts import auth_headers

_WORKER = """
import json, os, sys, time
from matchsvc.db.session import create_db_engine
from matchsvc.jobs.scheduler import PeriodicJob, exclusive

engine = create_db_engine(sys.argv[1])
out = open(sys.argv[2], "a")

def work():
    start = time.time()
    time.sleep(0.15)
    out.write(json.dumps([os.getpid(), start, time.time()]) + "\\n")
    out.flush()

job = PeriodicJob(name="probe", interval=0.01, func=exclusive(engine, "probe", work))
job.start()
time.sleep(2.5)
job.stop()
"""


def test_the_schedule_runs_in_one_process_at_a_time(db: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    url = db.engine.url.render_as_string(hide_password=False)
    processes = [subprocess.Popen([sys.executable, "-c", _WORKER, url, str(log)]) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=120) == 0
    runs = sorted(json.loads(line) for line in log.read_text().splitlines())
    runs.sort(key=lambda run: run[1])
    assert len(runs) >= 6
    assert all(later[1] >= earlier[2] for earlier, later in zip(runs, runs[1:]))  # no two runs overlap


def test_the_rate_limit_is_shared_by_every_process(db: Runtime) -> None:
    """Two apps on one database stand for two workers: together they allow the burst, not twice it."""
    settings = db.settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 6})
    runtime = dataclasses.replace(db, settings=settings, embedded=None, scratch=None)
    with TestClient(create_app(runtime)) as first, TestClient(create_app(runtime)) as second:
        headers = auth_headers(first)  # register and token: the address's bucket, not the user's
        statuses = [(first if i % 2 else second).get("/v1/me", headers=headers).status_code for i in range(8)]
    assert statuses == [200] * 6 + [429] * 2


def _bucket_row(db: Runtime, key: str) -> tuple[float, float]:
    with db.engine.connect() as connection:
        row = connection.execute(text("SELECT tokens, granted FROM rate_buckets WHERE key = :key"), {"key": key}).one()
    return float(row.tokens), float(row.granted)


def test_a_lease_is_spent_without_a_statement(db: Runtime) -> None:
    bucket = SharedTokenBucket(db.engine, per_minute=1, burst=60)  # lease: 6 tokens
    key = f"user:{uuid.uuid4()}"
    assert bucket.take(key) == 0.0
    assert _bucket_row(db, key) == (pytest.approx(53.0, abs=0.01), 7.0)  # the request's token and a lease of 6
    for _ in range(6):
        assert bucket.take_held(key)
    assert not bucket.take_held(key)
    assert _bucket_row(db, key)[0] == pytest.approx(53.0, abs=0.01)  # six requests, not one statement
    assert bucket.take(key) == 0.0
    assert _bucket_row(db, key) == (pytest.approx(46.0, abs=0.01), 7.0)


def test_leases_of_several_processes_never_admit_more_than_the_bucket_holds(db: Runtime) -> None:
    """Two buckets on one database stand for two processes; the client's requests alternate between them.

    All they admit was granted by the shared bucket (at most its burst: the refill over the test is
    far below one token); at most a lease per process is stranded, never used.
    """
    processes = [SharedTokenBucket(db.engine, per_minute=1, burst=50) for _ in range(2)]  # lease: 5
    key = f"user:{uuid.uuid4()}"
    admitted = sum(processes[i % 2].take(key) == 0.0 for i in range(120))
    assert 50 - 2 * 5 <= admitted <= 50
    waits = [process.take(key) for process in processes]
    assert all(wait > 0 for wait in waits)  # refused, and told to wait for the refill


def test_a_batch_larger_than_the_lease_is_paid_by_the_shared_bucket(db: Runtime) -> None:
    bucket = SharedTokenBucket(db.engine, per_minute=1, burst=30)  # lease: 3
    key = f"user:{uuid.uuid4()}"
    assert bucket.take(key) == 0.0  # 1 and a lease of 3: 26 left
    assert bucket.take(key, 20) == 0.0  # more than the 3 held: the table pays 20, and leases 3 more
    assert _bucket_row(db, key) == (pytest.approx(3.0, abs=0.01), 23.0)
    assert bucket.take(key, 40) == pytest.approx((30 - 3) * 60, rel=0.01)  # 6 held, 3 in the table: wait for 30
    assert _bucket_row(db, key)[1] == 0.0  # refused: nothing granted
    assert all(bucket.take_held(key) for _ in range(6))  # the leases survive a refusal
