"""Starting and running training jobs: the runner every path shares, the in-process one.

Both paths start jobs through ``TrainingRunner.start``: the Ray one (``jobs.ray_runner``, on
the combiner) and the in-process one (``ThreadJobs``, used by ``recommend.inprocess`` and
``recserve retrain-due``); ``trainModel`` and the scheduler alike.

The run itself (``run_recorded``) happens in the training process, a Ray worker or a thread,
and writes its own progress: each algorithm's state as it goes, a heartbeat meanwhile, then the
outcome. A process that dies without a word leaves a job whose heartbeat stops; it is marked
failed once older than ``training_job_stale_seconds`` and blocks nothing after that.
No Ray import here: the in-process server has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from jobs.ledger import JobLedger, TrainingJob, error_text
from storage.db import Database
from storage.errors import Unavailable
from storage.models import JobTrigger
from storage.repositories import jobs as jobs_repo
from storage.settings import Settings
from storage.vectors import VectorStore

logger = logging.getLogger(__name__)
REPORT_TIMEOUT_S = 30.0
REPORT_ATTEMPTS = 5


def _plain(result: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    return dict(result) if isinstance(result, dict) else {}


def summarise(training_result: Any) -> dict[str, Any]:
    """A ``TrainingResult`` as plain values: versions, holdout metrics, skipped algorithms."""
    result = _plain(training_result)
    return {
        "versions": {str(k): str(v) for k, v in (result.get("versions") or {}).items()},
        "metrics": {
            str(algo): {str(name): float(value) for name, value in values.items()}
            for algo, values in (result.get("metrics") or {}).items()
        },
        "skipped": {str(k): str(v) for k, v in (result.get("skipped") or {}).items()},
    }


async def _nothing(_tenant_id: str) -> None:
    return None


class TrainingRunner:
    """Starts jobs on one training path; ``_launch`` hands a claimed job to that path."""

    def __init__(self, ledger: JobLedger, *, allow_distributed: bool) -> None:
        self.ledger = ledger
        self.allow_distributed = allow_distributed
        # Called with the tenant once a job ended (however): serving drops stale versions.
        self.on_done: Callable[[str], Awaitable[None]] = _nothing

    async def start(
        self,
        tenant_id: str,
        algorithms: Sequence[str] | None,
        *,
        trigger: JobTrigger | str = JobTrigger.API,
        reason: str | None = None,
    ) -> tuple[TrainingJob, bool]:
        """The new job (True), or the tenant's running job that covers these algorithms."""
        distributed = self.allow_distributed and await self.ledger.wants_distributed(
            tenant_id, algorithms
        )
        job, created = await self.ledger.claim(
            tenant_id, algorithms, trigger=trigger, reason=reason, distributed=distributed
        )
        if created:
            try:
                await self._launch(job, list(algorithms) if algorithms else None)
            except Exception as error:  # nothing runs it: the record must not say queued
                await self.ledger.fail(job.job_id, error_text(error))
                raise
        return job, created

    async def status(self, job_id: str, tenant_id: str | None = None) -> TrainingJob | None:
        return await self.ledger.get(job_id, tenant_id)

    async def _launch(self, job: TrainingJob, algorithms: list[str] | None) -> None:
        raise NotImplementedError

    async def _finished(self, job: TrainingJob, outcome: Awaitable[Any]) -> None:
        """Await the run; a run that died before recording its end is recorded failed here."""
        try:
            await outcome
        except Exception as error:
            await self.ledger.fail(job.job_id, error_text(error))
        finally:
            await self.on_done(job.tenant_id)


class ThreadJobs(TrainingRunner):
    """Jobs run in a thread of this process (the in-process server, tests, benchmarks)."""

    def __init__(self, ledger: JobLedger, entrypoint: str, *, address: str | None = None) -> None:
        # Ray Train needs a Ray cluster: only with an ``address`` (``recserve retrain-due
        # --address auto`` in a RayJob) do large tenants' ALS and SVD fit there.
        super().__init__(ledger, allow_distributed=address is not None)
        self.entrypoint = entrypoint
        self.address = address
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def _launch(self, job: TrainingJob, algorithms: list[str] | None) -> None:
        run = asyncio.to_thread(
            run_recorded,
            self.entrypoint,
            self.ledger.settings,
            job.job_id,
            job.tenant_id,
            algorithms,
            job.distributed,
            self.address,
        )
        task = asyncio.ensure_future(self._finished(job, run))
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.job_id, None))

    async def wait(self, job_id: str) -> TrainingJob | None:
        """The job once it ended, when it runs in this process; its record otherwise."""
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)
        return await self.ledger.get(job_id)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            with contextlib.suppress(Exception):
                await task


def _resolve(entrypoint: str) -> Any:
    module_name, sep, attribute = entrypoint.partition(":")
    if not sep:
        raise ValueError(f"entry point must be 'module:function', got {entrypoint!r}")
    return getattr(importlib.import_module(module_name), attribute)


class JobReporter:
    """Writes one job's record from the training process, on a loop of its own (the pipeline
    blocks its thread while it fits), with a heartbeat while the run lasts. A write that fails
    is logged: a database hiccup must not fail the training itself."""

    def __init__(self, settings: Settings, job_id: str) -> None:
        self._job_id = uuid.UUID(job_id)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._database = Database.from_settings(settings)
        self._heartbeat = self._submit(self._beat(settings.training_heartbeat_seconds))

    def _submit(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _write(self, action: Callable[..., Awaitable[Any]], **values: Any) -> None:
        async def write() -> None:
            async with self._database.session() as session:
                await action(session=session, job_id=self._job_id, **values)

        for attempt in range(REPORT_ATTEMPTS):
            try:
                self._submit(write()).result(REPORT_TIMEOUT_S)
                return
            except Unavailable as error:  # a busy database: worth another try
                logger.info("training job %s: write %d failed: %s", self._job_id, attempt, error)
                time.sleep(0.2 * (attempt + 1))
            except Exception as error:
                logger.warning("training job %s: record not written: %s", self._job_id, error)
                return
        logger.warning("training job %s: record not written, database busy", self._job_id)

    async def _beat(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            with contextlib.suppress(Exception):
                async with self._database.session() as session:
                    await jobs_repo.touch_job(session=session, job_id=self._job_id)

    def running(self) -> None:
        self._write(jobs_repo.mark_running)

    def report(self, algorithm: str, state: str, detail: str | None) -> None:
        self._write(jobs_repo.record_progress, algorithm=algorithm, state=state, detail=detail)

    def succeeded(self, summary: dict[str, Any]) -> None:
        self._write(
            jobs_repo.finish_job,
            versions=summary["versions"],
            metrics=summary["metrics"],
            skipped=summary["skipped"],
        )

    def failed(self, error: str) -> None:
        self._write(jobs_repo.fail_job, error=error)

    def close(self) -> None:
        self._heartbeat.cancel()
        with contextlib.suppress(Exception):
            self._submit(self._database.dispose()).result(REPORT_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=REPORT_TIMEOUT_S)
        self._loop.close()


def run_recorded(
    entrypoint: str,
    settings: Settings,
    job_id: str,
    tenant_id: str,
    algorithms: list[str] | None,
    distributed: bool = False,
    address: str | None = None,
    *,
    vectors: VectorStore | None = None,
) -> dict[str, Any]:
    """Run ``entrypoint`` (``training.pipeline:train_tenant``) for the job, recording it.

    Called in the training process: a Ray worker, or a thread of the in-process server. The
    entry point takes ``(settings, tenant_id, algorithms, *, report, distributed, workers,
    address, vector_store)``; ``address`` names the Ray cluster for Ray Train (None: the one this
    process is part of, as in a Ray task); ``vectors`` (passed only when given) is the vector
    store to write item vectors to instead of the one ``settings`` names."""
    reporter = JobReporter(settings, job_id)
    try:
        reporter.running()
        options: dict[str, Any] = {"report": reporter.report}
        if vectors is not None:
            options["vector_store"] = vectors
        if distributed:
            options |= {"distributed": True, "workers": settings.train_distributed_workers}
            if address is not None:
                options["address"] = address
        try:
            result = _resolve(entrypoint)(settings, tenant_id, algorithms, **options)
        except Exception as error:
            logger.exception("training job %s of tenant %s failed", job_id, tenant_id)
            reporter.failed(error_text(error))
            raise
        summary = summarise(result)
        reporter.succeeded(summary)
        return summary
    finally:
        reporter.close()
