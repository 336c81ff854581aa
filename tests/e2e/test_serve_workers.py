"""``matchsvc serve --workers 2`` reports its metrics as one server: a scrape that reaches either
worker counts the requests that both served (prometheus_client's multiprocess mode, D25)."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import PASSWORD
from tests.support.serve import free_port, matchsvc_command, serving

REQUESTS = 40
HEALTHZ_COUNT = re.compile(r'^http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.M)


@pytest.mark.slow
def test_every_scrape_counts_the_requests_of_every_worker() -> None:
    data_dir = Path("/tmp") / f"matchsvc-workers-{uuid.uuid4().hex[:8]}"
    env = {"MATCHSVC_DATA_DIR": str(data_dir), "MATCHSVC_RATE_LIMIT_PER_MINUTE": "100000", "MATCHSVC_RATE_LIMIT_BURST": "100000"}
    try:
        matchsvc_command({**env, "MATCHSVC_NEW_PASSWORD": PASSWORD}, "users", "create", "operator", "--scope", "admin")
        with serving(env, free_port(), args=("--workers", "2")) as base:
            for _ in range(REQUESTS):  # a new connection each time, so the kernel spreads them over the workers
                assert httpx.get(base + "/healthz", timeout=10).status_code == 200
            token = httpx.post(
                base + "/v1/auth/token", data={"username": "operator", "password": PASSWORD, "scope": "admin"}, timeout=30
            ).json()["access_token"]
            counts = set()
            for _ in range(8):
                scrape = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
                assert scrape.status_code == 200, scrape.text
                (value,) = HEALTHZ_COUNT.findall(scrape.text)
                counts.add(float(value))
            assert counts == {float(REQUESTS)}  # the /readyz polls before start-up are another route
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
