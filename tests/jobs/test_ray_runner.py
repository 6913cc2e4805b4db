"""The Ray task a training job runs in."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_worker_of_a_training_run_exits_after_it(serve_instance: int, tmp_path: Path) -> None:
    """A run's worker holds what the fit imported and allocated (torch, the tenant's matrices):
    kept as an idle worker it would hold that for as long as the app runs."""
    import ray

    from jobs.ray_runner import _run_training
    from storage.settings import Settings

    marker = tmp_path / "pid"

    def note_pid() -> None:
        marker.write_text(str(os.getpid()))

    settings = Settings(env="test", data_dir=tmp_path)
    task = _run_training.options(num_cpus=0.1)
    ref = task.remote("no_such:train", settings, "job", "tenant", None, False, None, note_pid)
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(ref, timeout=120)
    pid = int(marker.read_text())
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pid), "the training worker stayed behind as an idle worker"
