"""The load benchmark's ratio drives the two servers in alternating slices (D45)."""

from __future__ import annotations

import pytest

import benchmarks.load as load


@pytest.fixture
def driven(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list]]:
    """Record each slice instead of sending it: server "a" does 100 requests/s at 2 ms of server
    CPU each, "b" 40/s at 5 ms."""
    calls: list[tuple[str, list]] = []

    def fake(base: str, requests: list, *, threads: int, server: int, postgres: int | None) -> tuple[float, dict]:
        calls.append((base, list(requests)))
        rate, server_ms = (100.0, 2.0) if base == "a" else (40.0, 5.0)
        return rate, {"client": 1.0, "server": server_ms, "postgres": None}

    monkeypatch.setattr(load, "_drive_measured", fake)
    return calls


def test_slices_alternate_abba_and_send_every_request_once(driven: list[tuple[str, list]]) -> None:
    requests = list(range(16 * 30 + 5))  # 16 users, 30 rounds, and a partial one
    a, b, pairs = load._alternated(("a", 1, requests), ("b", 2, requests), threads=8, postgres=None, users=16, slices=6)
    assert [base for base, _ in driven] == ["a", "b", "b", "a"] * 3
    for side in "ab":
        sent = [request for base, part in driven if base == side for request in part]
        assert sent == requests
    assert all(len(part) % 16 == 0 for _, part in driven[:-2])  # whole rounds, the rest in the last slice
    assert a[0] == pytest.approx(100.0) and a[1] == {"client": 1.0, "server": 2.0, "postgres": None}
    assert b[0] == pytest.approx(40.0) and b[1] == {"client": 1.0, "server": 5.0, "postgres": None}
    assert pairs == [(100.0, 40.0)] * 6


def test_fewer_requests_than_slices_of_whole_rounds(driven: list[tuple[str, list]]) -> None:
    requests = list(range(40))  # under one round of 64 users
    load._alternated(("a", 1, requests), ("b", 2, requests), threads=32, postgres=None, users=64, slices=6)
    assert driven == [("a", requests), ("b", requests)]


def test_the_rate_is_all_requests_over_all_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the mean of the slices' rates: a slow slice weighs by the time it took."""
    rates = iter([100.0, 40.0, 40.0, 25.0])  # a, b, b, a

    def fake(base: str, requests: list, *, threads: int, server: int, postgres: int | None) -> tuple[float, dict]:
        return next(rates), {"client": 1.0, "server": 1.0, "postgres": 1.0}

    monkeypatch.setattr(load, "_drive_measured", fake)
    requests = list(range(200))
    (a_rate, _), (b_rate, _), pairs = load._alternated(
        ("a", 1, requests), ("b", 2, requests), threads=1, postgres=None, users=1, slices=2
    )
    assert a_rate == pytest.approx(200 / (100 / 100.0 + 100 / 25.0))  # 40, where the mean of rates is 62.5
    assert b_rate == pytest.approx(40.0)
    assert pairs == [(100.0, 40.0), (25.0, 40.0)]
