"""Training job records: the one-running-job rule, reads and failures, for every path.

Every job is a row of ``training_jobs`` (``storage.repositories.jobs``) that any replica can
read, so ``trainingJob(id)`` answers after a restart and on every replica. At most one job per
tenant and algorithm runs at a time: a start while a job of the tenant covers any of the same
algorithms returns that job, and the database decides (the claim locks the tenant's row), so
the rule holds across replicas. The runners (``jobs.runners``, ``jobs.ray_runner``) start jobs
through ``JobLedger.claim``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from storage.db import Database, migrate
from storage.errors import StorageError, Unavailable
from storage.model_registry import version_label
from storage.models import JobTrigger, TrainingJobRecord
from storage.repositories import count_interactions
from storage.repositories import jobs as jobs_repo
from storage.settings import Settings
from training.algorithms import ALGORITHMS, DEFAULT_ALGORITHMS


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
        if not threshold or not any(ALGORITHMS[n].distributed for n in names if n in ALGORITHMS):
            return False
        await self.ready()
        async with self.database.session() as session:
            count = await count_interactions(session=session, tenant_id=uuid.UUID(tenant_id))
        return count >= threshold

    async def close(self) -> None:
        if self._owned:
            await self.database.dispose()
