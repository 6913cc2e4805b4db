"""`recserve serve` and `recserve demo` take `serve run` down with them, SIGTERM included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Stands in for `recserve serve`: a child that would run for minutes, held by the context.
PARENT = """
import subprocess, sys, time
from cluster.serving import stopping_with_this_process
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
with stopping_with_this_process(child, timeout_s=10) as process:
    process.wait()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # reaped by its parent, or a zombie nobody waits for any more
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_a_sigterm_to_the_cli_stops_its_serve_process() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "serve run outlived the CLI that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
