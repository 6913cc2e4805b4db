"""Training runs submitted from the serving side, each as a Ray task with a fraction of a CPU.

The pipeline (and torch with it) is imported only inside the task's worker process: the
entry point travels as a ``"module:function"`` string so no serving replica ever loads it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import time
import uuid
from typing import Any

import ray

from deployments.jobs import RunningJobs
from deployments.models import version_label
from deployments.ray_metrics import install_ray_metrics
from graph_api.recommender import TrainingJob
from storage import meters
from storage.settings import Settings


def _resolve(entrypoint: str) -> Any:
    module_name, sep, attribute = entrypoint.partition(":")
    if not sep:
        raise ValueError(f"entry point must be 'module:function', got {entrypoint!r}")
    return getattr(importlib.import_module(module_name), attribute)


def _plain(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    return dict(result) if isinstance(result, dict) else {}


@ray.remote(max_retries=0)
def _run_training(
    entrypoint: str, settings: Settings, tenant_id: str, algorithms: list[str] | None
) -> dict[str, Any]:
    """Runs ``training.pipeline.train_tenant`` (or ``entrypoint``) in this worker process."""
    install_ray_metrics()  # training_runs_total & co. from this worker reach Ray's endpoint
    started = time.perf_counter()
    try:
        return summarise(_resolve(entrypoint)(settings, tenant_id, algorithms))
    except Exception:
        # The pipeline counts the algorithms it fitted; a run that dies is counted here.
        for name in algorithms or ["all"]:
            meters.training_run(name, "failed", time.perf_counter() - started)
        raise


def summarise(training_result: Any) -> dict[str, Any]:
    """A ``TrainingResult`` as the plain values a ``TrainingJob`` carries."""
    result = _plain(training_result)
    versions = {str(k): str(v) for k, v in (result.get("versions") or {}).items()}
    metrics = result.get("metrics") or {}
    return {
        "model_version": version_label(versions),
        "algorithms": list(versions),
        "metrics": {
            str(algo): {str(name): float(value) for name, value in values.items()}
            for algo, values in metrics.items()
        },
    }


@dataclasses.dataclass
class _Submitted:
    job: TrainingJob
    ref: ray.ObjectRef


class TrainingJobs:
    """Jobs of this replica, by id. A restart forgets them; the artifacts stay promoted.

    A tenant's job still running for any of the asked algorithms is returned instead of
    submitting another (``deployments.jobs``)."""

    def __init__(self, entrypoint: str, *, num_cpus: float = 0.5) -> None:
        self.entrypoint = entrypoint
        self.num_cpus = num_cpus
        self._jobs: dict[str, _Submitted] = {}
        self._running = RunningJobs()

    def submit(
        self, settings: Settings, tenant_id: str, algorithms: list[str] | None
    ) -> TrainingJob:
        running = self._running.running(tenant_id, algorithms)
        if running is not None:
            return running
        task = _run_training.options(num_cpus=self.num_cpus)
        ref = task.remote(self.entrypoint, settings, tenant_id, algorithms)
        job = TrainingJob(
            job_id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            algorithms=list(algorithms or []),
            status="submitted",
        )
        self._jobs[job.job_id] = _Submitted(job, ref)
        self._running.add(job, algorithms, lambda: bool(ray.wait([ref], timeout=0)[0]))
        return job

    async def status(self, job_id: str) -> TrainingJob | None:
        submitted = self._jobs.get(job_id)
        if submitted is None:
            return None
        if submitted.job.status in ("succeeded", "failed"):
            return submitted.job
        ready, _ = await asyncio.to_thread(ray.wait, [submitted.ref], timeout=0)
        if not ready:
            submitted.job = dataclasses.replace(submitted.job, status="running")
            return submitted.job
        try:
            outcome = await submitted.ref
        except Exception:
            submitted.job = dataclasses.replace(submitted.job, status="failed")
            return submitted.job
        submitted.job = dataclasses.replace(
            submitted.job,
            status="succeeded",
            model_version=outcome["model_version"],
            algorithms=outcome["algorithms"] or submitted.job.algorithms,
            metrics=outcome["metrics"],
        )
        return submitted.job

    async def wait(self, job_id: str, timeout_s: float) -> TrainingJob | None:
        """Block until the job ends (or the timeout passes); for the CLI and tests."""
        submitted = self._jobs.get(job_id)
        if submitted is None:
            return None
        await asyncio.to_thread(ray.wait, [submitted.ref], timeout=timeout_s)
        return await self.status(job_id)
