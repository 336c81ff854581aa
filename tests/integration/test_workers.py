"""Several worker processes behave as one: one matching run at a time, one rate limit shared."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from matchsvc.runtime import Runtime
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
