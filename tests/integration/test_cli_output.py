"""Command results are for machines: stdout carries only the result, logs go to stderr (issue 13, item 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from matchsvc.runtime import Runtime


def test_keys_rotate_prints_only_json_on_stdout_and_logs_on_stderr(db: Runtime, tmp_path: Path) -> None:
    # A fresh data directory makes the command generate a development secret and key ring, and log
    # a warning for each: exactly the lines that used to precede the result on stdout.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHSVC_")}
    env.update(
        DATABASE_URL=db.engine.url.render_as_string(hide_password=False),
        MATCHSVC_DATA_DIR=str(tmp_path),
        MATCHSVC_LOG_LEVEL="INFO",
    )
    matchsvc = Path(sys.executable).with_name("matchsvc")
    done = subprocess.run(
        [str(matchsvc), "keys", "rotate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"kek_version": 2, "rewrapped": 0}
    events = [json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")]
    assert "generated_development_keyring" in events
