"""The render, API, scoring and matching benchmarks run end to end on small settings (figures are not asserted)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from matchsvc.cli import app


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,keys",
    [
        (["bench", "render", "--json", "--faces", "5"], {"procedural", "diffusion_tiny_random"}),
        (["bench", "api", "--json", "--requests", "100", "--threads", "2"], {"ratio_ours_to_bare"}),
        (["bench", "matching", "--json", "--sizes", "200", "--k", "5", "--no-ray"], {"cases", "k"}),
    ],
    ids=["render", "api", "matching"],
)
def test_bench_command_emits_json(args: list[str], keys: set[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert keys <= set(json.loads(result.output))


@pytest.mark.slow
def test_bench_scoring_names_the_backend_and_adds_a_threads_row() -> None:
    """One thread by default (where the FAISS target is stated), the kernel that ran, and every
    case repeated on all the cores the process is given."""
    result = CliRunner().invoke(app, ["bench", "scoring", "--json", "--sizes", "500", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scoring_backend"] == "cpu-native"
    assert report["threads"] == 1 and report["cores_given"] == len(os.sched_getaffinity(0))
    for case in report["cases"]:
        row = case["threads_row"]
        if report["cores_given"] > 1:
            assert row["threads"] == report["cores_given"]
            assert row["reciprocal_topk"]["seconds"] > 0 and row["ratio_to_faiss"] > 0
        else:
            assert row["threads"] == 1 and "reason" in row
