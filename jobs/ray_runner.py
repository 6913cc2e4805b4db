"""Training runs submitted from the serving side, each as a Ray task with a fraction of a CPU.

The pipeline (and torch with it) is imported only inside the task's worker process: the
entry point travels as a ``"module:function"`` string so no serving replica ever loads it. The
task records its own progress and outcome in the job's row (``jobs.ledger``); the
combiner awaits it only to record a task that died before it could say so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ray

from jobs.ledger import JobLedger, TrainingJob
from jobs.runners import TrainingRunner, run_recorded
from storage import meters
from storage.settings import Settings
from storage.vectors import VectorStore


# max_calls=1: the worker process exits after its run. Otherwise Ray keeps it as an idle
# worker, still holding what the fit imported and allocated (torch and the tenant's matrices:
# ~500 MiB of PSS in the soak, for as long as the app runs).
@ray.remote(max_retries=0, max_calls=1)
def _run_training(
    entrypoint: str,
    settings: Settings,
    job_id: str,
    tenant_id: str,
    algorithms: list[str] | None,
    distributed: bool,
    vectors: VectorStore | None,
    setup: Callable[[], None] | None,
) -> dict[str, Any]:
    """Runs ``training.pipeline.train_tenant`` (or ``entrypoint``) in this worker process;
    ``vectors`` is the app's vector store when this process may not open it itself; ``setup``
    runs first (the serving app's: its metrics backend, so training_runs_total & co. from this
    worker reach Ray's endpoint)."""
    if setup is not None:
        setup()
    started = time.perf_counter()
    try:
        return run_recorded(
            entrypoint, settings, job_id, tenant_id, algorithms, distributed, vectors=vectors
        )
    except Exception:
        # The pipeline counts the algorithms it fitted; a run that dies is counted here.
        for name in algorithms or ["all"]:
            meters.training_run(name, "failed", time.perf_counter() - started)
        raise


class RayJobs(TrainingRunner):
    """Jobs as Ray tasks; their records live in the database, so any replica answers for them
    and a restart forgets nothing. ALS and SVD of a large tenant fit on Ray Train."""

    def __init__(
        self,
        entrypoint: str,
        ledger: JobLedger,
        *,
        num_cpus: float = 0.5,
        vectors: VectorStore | None = None,
        setup: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(ledger, allow_distributed=True)
        self.setup = setup
        self.entrypoint = entrypoint
        self.num_cpus = num_cpus
        self.vectors = vectors
        self._watching: dict[str, asyncio.Task[None]] = {}

    async def _launch(self, job: TrainingJob, algorithms: list[str] | None) -> None:
        task = _run_training.options(num_cpus=self.num_cpus)
        ref = task.remote(
            self.entrypoint,
            self.ledger.settings,
            job.job_id,
            job.tenant_id,
            algorithms,
            job.distributed,
            self.vectors,
            self.setup,
        )
        watcher = asyncio.get_running_loop().create_task(self._finished(job, ref))
        self._watching[job.job_id] = watcher
        watcher.add_done_callback(lambda _: self._watching.pop(job.job_id, None))

    async def wait(self, job_id: str, timeout_s: float) -> TrainingJob | None:
        """Block until the job ends (or the timeout passes); for the CLI and tests."""
        watcher = self._watching.get(job_id)
        if watcher is not None:
            await asyncio.wait({watcher}, timeout=timeout_s)
        return await self.status(job_id)
