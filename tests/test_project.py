"""Project-level promises: the README's two set-up commands and what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks if block.strip().startswith("python3 -m venv")]


def test_readme_has_exactly_two_setup_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    serve, test = commands
    assert serve.endswith("matchsvc serve") and "pytest" in test
    for command in commands:
        assert command.count("\n") == 0, "each set-up step is one command line"
        # torch first, pinned, so pip never resolves the CUDA build on its own
        assert command.index("pip install torch==2.13.0") < command.index("pip install -e")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == _readme_commands()[1]
