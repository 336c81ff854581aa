"""The per-process limit on requests in progress (issue 13, item 13): beyond it, 503 at once."""

from __future__ import annotations

import threading

from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.middleware import ConcurrencyLimitMiddleware


def test_requests_past_the_limit_get_503_problem_with_retry_after_and_health_is_exempt() -> None:
    entered, release = threading.Event(), threading.Event()
    app = FastAPI()

    @app.get("/slow")
    def slow() -> dict[str, bool]:
        entered.set()
        return {"released": release.wait(timeout=30)}

    @app.get("/fast")
    def fast() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(ConcurrencyLimitMiddleware, limit=1)
    with TestClient(app) as client:
        holder = threading.Thread(target=lambda: client.get("/slow"))
        holder.start()
        try:
            assert entered.wait(timeout=30)
            refused = client.get("/fast")
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["status"] == 503
            assert client.get("/healthz").status_code == 200
        finally:
            release.set()
            holder.join(timeout=30)
        assert client.get("/fast").status_code == 200
