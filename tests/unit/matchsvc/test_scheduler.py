"""The periodic runner keeps its schedule through failures and stops promptly."""

from __future__ import annotations

import threading

import pytest

from matchsvc.jobs.scheduler import PeriodicJob


def test_runs_repeatedly_and_survives_failures() -> None:
    calls: list[int] = []
    done = threading.Event()

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("transient")
        if len(calls) >= 4:
            done.set()

    job = PeriodicJob(name="test", interval=0.01, func=flaky)
    job.start()
    assert done.wait(5)
    job.stop()
    assert len(calls) >= 4 and job.runs == len(calls) - 1


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval"):
        PeriodicJob(name="x", interval=0, func=lambda: None)
