"""One running training job per tenant and algorithm (``deployments.jobs``), in-process path."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from deployments.inprocess import InProcessRecommender
from deployments.jobs import RunningJobs
from deployments.models import MemoryModelSource
from graph_api.recommender import TrainingJob
from storage.settings import Settings
from tests.deployments.fakes import fake_train

GATE = threading.Event()
STARTED = threading.Event()
CALLS: list[str] = []


def gated_train(settings: Any, tenant_id: str, algorithms: list[str] | None) -> Any:
    """``fake_train`` that holds until the test opens the gate, counting its runs."""
    CALLS.append(tenant_id)
    STARTED.set()
    GATE.wait(timeout=10)
    return fake_train(settings, tenant_id, algorithms)


async def test_a_second_call_while_training_returns_the_running_job(tmp_path: Path) -> None:
    GATE.clear()
    STARTED.clear()
    CALLS.clear()
    local = InProcessRecommender(
        Settings(data_dir=tmp_path),
        ["ease"],
        source=MemoryModelSource("acme", {}),
        train_entrypoint="tests.deployments.test_training_once:gated_train",
    )
    first = asyncio.create_task(local.train(tenant_id="acme", algorithms=["ease"]))
    assert await asyncio.to_thread(STARTED.wait, 10)
    again = await local.train(tenant_id="acme", algorithms=["ease"])
    everything = await local.train(tenant_id="acme", algorithms=None)  # covers ease too
    GATE.set()
    done = await first
    assert CALLS == ["acme"]  # one run, not three
    assert again.status == everything.status == "running"
    assert again.job_id == everything.job_id == done.job_id
    assert done.status == "succeeded"
    # Once it ended, the next call trains again.
    after = await local.train(tenant_id="acme", algorithms=["ease"])
    assert after.job_id != done.job_id and CALLS == ["acme", "acme"]


def test_running_jobs_are_per_tenant_and_algorithm() -> None:
    jobs = RunningJobs()
    finished = False
    job = TrainingJob(job_id="j1", tenant_id="a", algorithms=["ease"], status="submitted")
    jobs.add(job, ["ease"], lambda: finished)
    assert jobs.running("a", ["ease", "als"]) is not None
    assert jobs.running("a", None) is not None
    assert jobs.running("a", ["als"]) is None  # another algorithm may train meanwhile
    assert jobs.running("b", ["ease"]) is None  # another tenant too
    finished = True
    assert jobs.running("a", ["ease"]) is None
