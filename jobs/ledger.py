"""Training jobs on either training path: the record, the one-running-job rule, and the run.

Every job is a row of ``training_jobs`` (``storage.repositories.jobs``) that any replica can
read, so ``trainingJob(id)`` answers after a restart and on every replica. At most one job per
tenant and algorithm runs at a time: a start while a job of the tenant covers any of the same
algorithms returns that job, and the database decides (the claim locks the tenant's row), so
the rule holds across replicas. Both paths start jobs through ``TrainingRunner.start``: the Ray
one (``jobs.ray_runner``, on the combiner) and the in-process one (``ThreadJobs``,
used by ``recommend.inprocess``); ``trainModel`` and the scheduler alike.

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
from dataclasses import dataclass, field
import importlib
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from storage.db import Database, migrate
from storage.errors import StorageError, Unavailable
from storage.model_registry import version_label
from storage.models import JobTrigger, TrainingJobRecord
from storage.repositories import count_interactions
from storage.repositories import jobs as jobs_repo
from storage.settings import Settings
from storage.vectors import VectorStore
from training.algorithms import DEFAULT_ALGORITHMS, REGISTRY

logger = logging.getLogger(__name__)
REPORT_TIMEOUT_S = 30.0
REPORT_ATTEMPTS = 5


@dataclass(frozen=True)
class TrainingJob:
    """A training job as its record says (``storage.repositories.jobs``)."""

    job_id: str
    tenant_id: str
    algorithms: list[str]
    status: str  # "queued", "running", "succeeded", "failed"
    model_version: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    progress: dict[str, dict[str, str]] = field(default_factory=dict)
    error: str | None = None
    trigger: str | None = None  # "api" or "scheduler"
    reason: str | None = None  # why the scheduler started it
    distributed: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None



def job_from_record(record: TrainingJobRecord) -> TrainingJob:
    """The record as the ``TrainingJob`` the API, the serving side and the CLI read."""
    versions = {str(k): str(v) for k, v in (record.versions or {}).items()}
    return TrainingJob(
        job_id=record.id.hex,
        tenant_id=str(record.tenant_id),
        algorithms=list(versions) or list(record.algorithms or []),
        status=str(record.status),
        model_version=version_label(versions),
        metrics={str(a): dict(m) for a, m in (record.metrics or {}).items()},
        progress={str(a): dict(p) for a, p in (record.progress or {}).items()},
        error=record.error,
        trigger=str(record.trigger) if record.trigger is not None else None,
        reason=record.reason,
        distributed=bool(record.distributed),
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        duration_seconds=record.duration_seconds,
    )


def error_text(error: BaseException) -> str:
    """One line for the job's ``error``, which the tenant's admins read: our own data errors
    by their message (e.g. "no interactions to train on"); anything else by its type only, the
    details staying in the training process's log (they may name hosts, paths or SQL)."""
    if isinstance(error, Unavailable):
        return "storage unavailable during training (details in the training logs)"
    if isinstance(error, StorageError):
        return str(error) or type(error).__name__
    return f"{type(error).__name__} (details in the training logs)"


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


def _job_uuid(job_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        return None


class JobLedger:
    """The job records of one database, for the serving side (claims, reads, failures)."""

    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self._owned = database is None
        self.database = database if database is not None else Database.from_settings(settings)
        self._migrated = False
        self._migrating = asyncio.Lock()

    @property
    def stale_after(self) -> timedelta:
        return timedelta(seconds=self.settings.training_job_stale_seconds)

    async def ready(self) -> None:
        """The schema is current: the combiner may be the first to touch a new database (the
        ingress migrates too, and an app without one has only the combiner)."""
        async with self._migrating:
            if not self._migrated:
                await migrate(self.database.url)
                self._migrated = True

    async def claim(
        self,
        tenant_id: str,
        algorithms: Sequence[str] | None,
        *,
        trigger: JobTrigger | str = JobTrigger.API,
        reason: str | None = None,
        distributed: bool = False,
    ) -> tuple[TrainingJob, bool]:
        """A new queued job (True), or the tenant's active one covering these algorithms."""
        await self.ready()
        async with self.database.session() as session:
            claim = await jobs_repo.claim_job(
                session=session,
                tenant_id=uuid.UUID(str(tenant_id)),
                algorithms=algorithms,
                trigger=trigger,
                reason=reason,
                distributed=distributed,
                stale_after=self.stale_after,
            )
            job = job_from_record(claim.job)
        return job, claim.created

    async def get(self, job_id: str, tenant_id: str | None = None) -> TrainingJob | None:
        """The job (None if unknown, or another tenant's when ``tenant_id`` is given)."""
        key = _job_uuid(job_id)
        if key is None:
            return None
        await self.ready()
        tenant = uuid.UUID(str(tenant_id)) if tenant_id is not None else None
        async with self.database.session() as session:
            record = await jobs_repo.get_job(session=session, tenant_id=tenant, job_id=key)
            return job_from_record(record) if record is not None else None

    async def fail(self, job_id: str, error: str) -> None:
        """Failed, unless the run recorded its outcome already."""
        async with self.database.session() as session:
            await jobs_repo.fail_job(session=session, job_id=uuid.UUID(job_id), error=error)

    async def wants_distributed(self, tenant_id: str, algorithms: Sequence[str] | None) -> bool:
        """ALS and SVD go to Ray Train for tenants of at least
        ``train_distributed_min_interactions`` interactions (0: never)."""
        threshold = self.settings.train_distributed_min_interactions
        names = list(algorithms or DEFAULT_ALGORITHMS)
        if not threshold or not any(REGISTRY[n].distributed for n in names if n in REGISTRY):
            return False
        await self.ready()
        async with self.database.session() as session:
            count = await count_interactions(session=session, tenant_id=uuid.UUID(tenant_id))
        return count >= threshold

    async def close(self) -> None:
        if self._owned:
            await self.database.dispose()


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
