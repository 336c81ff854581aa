"""The CPU scoring kernel is built at install time and needs no compiler at run time (D22).

The Docker image is not built here (no Docker engine): its stages are read from the Dockerfile,
and the build stage's step (a wheel from the source tree) runs for real, its kernel then loaded
by an interpreter that can reach no C compiler, as in the slim runtime stage.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Prints the backend, where engine.scoring was loaded from, and a tiny reciprocal_topk.
_PROBE = """
import shutil, sys
import numpy as np
assert shutil.which("cc") is None and shutil.which("gcc") is None, "a compiler is reachable"
import engine.scoring
from engine.scoring import reciprocal_topk, scoring_backend
scores, indices = reciprocal_topk(np.eye(4, 2), np.zeros(4), np.eye(4, 2), 2, device="cpu")
print(scoring_backend(device="cpu"), engine.scoring.__file__, indices.tolist())
"""


def _without_compiler(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment minus any way to reach a C compiler: PATH holds one empty folder, no CC."""
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in {"CC", "CXX", "PATH", "PYTHONPATH"}}
    return {**env, "PATH": str(empty), **extra}


def _probe(env: dict[str, str], cwd: Path) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split(maxsplit=2)


def test_installed_kernel_loads_with_no_compiler_at_run_time(tmp_path: Path) -> None:
    backend, _, indices = _probe(_without_compiler(tmp_path), tmp_path)
    assert backend == "cpu-native"
    rows = json.loads(indices)
    assert all(len(set(row)) == 2 and i not in row for i, row in enumerate(rows)), rows


@pytest.mark.slow
def test_built_wheel_carries_the_kernel_and_runs_without_a_compiler(tmp_path: Path) -> None:
    """What the Dockerfile's two stages do: build a wheel where gcc exists, run it where none does."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("matchsvc-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert any(re.fullmatch(r"engine/scoring/_kernel\..*\.so", name) for name in names), names
        site = tmp_path / "site"
        archive.extractall(site)
    backend, origin, _ = _probe(_without_compiler(tmp_path, PYTHONPATH=str(site)), tmp_path)
    assert backend == "cpu-native"
    assert Path(origin).is_relative_to(site), origin


def _stages(text: str) -> dict[str, list[str]]:
    """Dockerfile instructions per stage name (continuation lines joined, comments dropped)."""
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            words = line.split()
            assert len(words) == 4 and words[2].upper() == "AS", f"every stage is named: {line}"
            current = stages.setdefault(words[3], [line])
        else:
            assert current is not None, f"an instruction before FROM: {line}"
            current.append(line)
    return stages


def test_dockerfile_builds_the_wheel_with_a_compiler_and_runs_it_without() -> None:
    stages = _stages((ROOT / "Dockerfile").read_text())
    assert list(stages) == ["build", "runtime"]
    build, runtime = stages["build"], stages["runtime"]
    runs = lambda stage: [shlex.split(line)[1:] for line in stage if line.startswith("RUN ")]  # noqa: E731
    build_words = [word for run in runs(build) for word in run]
    assert "gcc" in build_words and "libc6-dev" in build_words
    assert any(run[:3] == ["pip", "wheel", "--no-deps"] for run in runs(build))
    # The runtime stage is the same slim base, gets no compiler, and installs the built wheel.
    assert runtime[0].split()[1] == build[0].split()[1] == "python:3.11-slim"
    assert not any(word in {"gcc", "cc", "build-essential", "clang"} for run in runs(runtime) for word in run)
    assert any(line.startswith("COPY --from=build /wheels") for line in runtime)
    assert any("/wheels/matchsvc-*.whl" in line and "pip install" in line for line in runtime)
    assert not any(line.startswith(("COPY engine", "COPY matchsvc")) for line in runtime), "runs the wheel, not the source"
    # Migrations ship beside the wheel and are named for matchsvc.db.migrate.
    assert "COPY alembic ./alembic" in runtime and "COPY alembic.ini ./" in runtime
    assert "ENV MATCHSVC_MIGRATIONS_DIR=/app/alembic" in runtime
    assert runtime[-1].startswith("CMD ")


def test_dockerignore_keeps_local_builds_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "**/*.so"} <= set(ignored)
