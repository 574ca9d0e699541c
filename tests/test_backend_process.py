"""A local backend started by the explorer ends with it, even when the explorer is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import sys, time
from explorer.backend_process import start_local_backend
backend = start_local_backend(["--sessions", sys.argv[1], "--engine", "classic"])
print(backend.process.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow  # an explorer process and the backend process it starts, then a kill
def test_a_killed_explorer_takes_its_local_backend_with_it(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "sessions")],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    child = int(parent.stdout.readline())
    assert _running(child)
    os.kill(parent.pid, signal.SIGKILL)  # no chance to stop its backend
    parent.wait()
    deadline = time.monotonic() + 20
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(child), "the backend outlived the explorer that started it"
