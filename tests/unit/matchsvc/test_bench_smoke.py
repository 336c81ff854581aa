"""The render, API, scoring and matching benchmarks run end to end on small settings (figures are not asserted)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from matchsvc.cli import app


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,keys",
    [
        (["bench", "render", "--json", "--faces", "5"], {"procedural", "diffusion_tiny_random"}),
        (["bench", "api", "--json", "--requests", "100", "--threads", "2"], {"ratio_ours_to_bare"}),
        (["bench", "scoring", "--json", "--sizes", "500", "--repeats", "1"], set()),
        (["bench", "matching", "--json", "--sizes", "200", "--k", "5", "--no-ray"], {"cases", "k"}),
    ],
    ids=["render", "api", "scoring", "matching"],
)
def test_bench_command_emits_json(args: list[str], keys: set[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert keys <= set(json.loads(result.output))
