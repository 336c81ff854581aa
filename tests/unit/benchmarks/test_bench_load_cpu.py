"""The load benchmark's CPU accounting counts a process tree's CPU, children included."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from benchmarks.load import _cpu_seconds

_BUSY_THEN_WAIT = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()"


def test_a_busy_child_is_counted_under_its_parent() -> None:
    child = subprocess.Popen([sys.executable, "-c", _BUSY_THEN_WAIT], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while _cpu_seconds([os.getpid()]).get(child.pid, 0.0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        measured = _cpu_seconds([os.getpid()])
        assert measured[os.getpid()] > 0 and measured[child.pid] >= 0.3
        assert _cpu_seconds([child.pid]).keys() == {child.pid}
    finally:
        child.communicate(b"\n", timeout=30)
