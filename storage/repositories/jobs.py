"""Training jobs: the record every replica reads, and the one-running-job-per-algorithm rule.

A tenant may run one training job per algorithm at a time: a claim for algorithms that overlap
a running (or queued) job of the tenant returns that job instead of a new one. The check and
the insert run after a write on the tenant's row, which takes PostgreSQL's row lock and
SQLite's write lock, so two replicas claiming at once are served one after the other and the
second sees the first's job. A job whose ``updated_at`` is older than ``stale_after`` (its
process died without saying so) no longer blocks: it is marked failed when next seen.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import JobStatus, JobTrigger, TrainingJobRecord, utcnow
from storage.repositories._common import check_page, savepoint
from storage.repositories.tenants import lock_tenant

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)
LOST = "the training process stopped reporting (it died or was restarted)"


@dataclass(frozen=True)
class Claim:
    job: TrainingJobRecord
    created: bool  # False: an active job of the tenant already covers these algorithms


def _overlap(first: Sequence[str], second: Sequence[str]) -> bool:
    """Jobs overlap when they share an algorithm; an empty list stands for all of them."""
    return not first or not second or bool(set(first) & set(second))


async def active_jobs(
    *, session: AsyncSession, tenant_id: uuid.UUID, stale_after: timedelta, now: datetime
) -> list[TrainingJobRecord]:
    """The tenant's queued and running jobs; stale ones are marked failed on the way."""
    rows = await session.scalars(
        select(TrainingJobRecord).where(
            TrainingJobRecord.tenant_id == tenant_id, TrainingJobRecord.status.in_(ACTIVE)
        )
    )
    active = []
    for row in rows:
        if row.updated_at < now - stale_after:
            _finish(row, JobStatus.FAILED, now, error=LOST)
        else:
            active.append(row)
    await session.flush()
    return active


async def claim_job(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    algorithms: Sequence[str] | None,
    trigger: JobTrigger | str = JobTrigger.API,
    reason: str | None = None,
    distributed: bool = False,
    stale_after: timedelta,
    now: datetime | None = None,
) -> Claim:
    """A new queued job, or the tenant's active job that covers any of ``algorithms``.

    Commit right after: the tenant's row stays locked until then."""
    now = now or utcnow()
    wanted = list(algorithms or [])
    await lock_tenant(session=session, tenant_id=tenant_id)
    for job in await active_jobs(
        session=session, tenant_id=tenant_id, stale_after=stale_after, now=now
    ):
        if _overlap(job.algorithms, wanted):
            return Claim(job, created=False)
    job = TrainingJobRecord(
        tenant_id=tenant_id,
        algorithms=wanted,
        status=JobStatus.QUEUED,
        trigger=JobTrigger(trigger),
        reason=reason,
        distributed=distributed,
        progress={name: {"state": "queued"} for name in wanted},
        metrics={},
        versions={},
        created_at=now,
        updated_at=now,
    )
    async with savepoint(session):
        session.add(job)
    return Claim(job, created=True)


async def get_job(
    *, session: AsyncSession, tenant_id: uuid.UUID | None, job_id: uuid.UUID
) -> TrainingJobRecord | None:
    """The job, or None (also when it belongs to another tenant than ``tenant_id``)."""
    job = await session.get(TrainingJobRecord, job_id, populate_existing=True)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        return None
    return job


async def list_jobs(
    *, session: AsyncSession, tenant_id: uuid.UUID, limit: int = 20, offset: int = 0
) -> list[TrainingJobRecord]:
    """The tenant's jobs, newest first."""
    check_page(limit, offset)
    query = (
        select(TrainingJobRecord)
        .where(TrainingJobRecord.tenant_id == tenant_id)
        .order_by(TrainingJobRecord.created_at.desc(), TrainingJobRecord.id)
        .limit(limit)
        .offset(offset)
    )
    return list(await session.scalars(query))


async def _open_job(
    session: AsyncSession, job_id: uuid.UUID, now: datetime
) -> TrainingJobRecord | None:
    """The job if it has not finished: a late report never rewrites an ended job.

    The write comes first (the heartbeat): on SQLite it takes the write lock before the read,
    so a commit by another connection in between cannot void this transaction."""
    await touch_job(session=session, job_id=job_id, now=now)
    job = await session.get(TrainingJobRecord, job_id, populate_existing=True)
    return job if job is not None and job.status in ACTIVE else None


async def mark_running(
    *, session: AsyncSession, job_id: uuid.UUID, now: datetime | None = None
) -> TrainingJobRecord | None:
    now = now or utcnow()
    job = await _open_job(session, job_id, now)
    if job is not None:
        job.status, job.started_at, job.updated_at = JobStatus.RUNNING, now, now
        await session.flush()
    return job


async def record_progress(
    *,
    session: AsyncSession,
    job_id: uuid.UUID,
    algorithm: str,
    state: str,
    detail: str | None = None,
    now: datetime | None = None,
) -> None:
    """One algorithm's state (``running``, ``succeeded``, ``skipped``), and a heartbeat."""
    job = await _open_job(session, job_id, now or utcnow())
    if job is None:
        return
    entry: dict[str, Any] = {"state": state}
    if detail:
        entry["detail"] = detail
    job.progress = {**job.progress, algorithm: entry}  # JSON: assign, never edit in place
    await session.flush()


def _finish(
    job: TrainingJobRecord, status: JobStatus, now: datetime, *, error: str | None = None
) -> None:
    job.status, job.finished_at, job.updated_at, job.error = status, now, now, error
    if job.started_at is not None:
        job.duration_seconds = max((now - job.started_at).total_seconds(), 0.0)


async def finish_job(
    *,
    session: AsyncSession,
    job_id: uuid.UUID,
    versions: dict[str, str],
    metrics: dict[str, dict[str, float]],
    skipped: dict[str, str] | None = None,
    now: datetime | None = None,
) -> TrainingJobRecord | None:
    """Succeeded: the versions it promoted, their holdout metrics, the skipped algorithms."""
    now = now or utcnow()
    job = await _open_job(session, job_id, now)
    if job is None:
        return None
    progress = dict(job.progress)
    for name in versions:
        progress[name] = {"state": "succeeded"}
    for name, why in (skipped or {}).items():
        progress[name] = {"state": "skipped", "detail": why}
    job.progress, job.versions, job.metrics = progress, dict(versions), dict(metrics)
    _finish(job, JobStatus.SUCCEEDED, now)
    await session.flush()
    return job


async def fail_job(
    *, session: AsyncSession, job_id: uuid.UUID, error: str, now: datetime | None = None
) -> TrainingJobRecord | None:
    """Failed, with one line saying why (never a traceback: admins read it)."""
    now = now or utcnow()
    job = await _open_job(session, job_id, now)
    if job is None:
        return None
    _finish(job, JobStatus.FAILED, now, error=error[:2000])
    await session.flush()
    return job


async def last_job(
    *, session: AsyncSession, tenant_id: uuid.UUID, trigger: JobTrigger | None = None
) -> TrainingJobRecord | None:
    """The tenant's newest job (of ``trigger``, when given)."""
    query = select(TrainingJobRecord).where(TrainingJobRecord.tenant_id == tenant_id)
    if trigger is not None:
        query = query.where(TrainingJobRecord.trigger == trigger)
    query = query.order_by(TrainingJobRecord.created_at.desc()).limit(1)
    return await session.scalar(query)


async def touch_job(
    *, session: AsyncSession, job_id: uuid.UUID, now: datetime | None = None
) -> None:
    """The run's heartbeat: it is alive, even while one long fit reports nothing."""
    await session.execute(
        update(TrainingJobRecord)
        .where(TrainingJobRecord.id == job_id, TrainingJobRecord.status.in_(ACTIVE))
        .values(updated_at=now or utcnow())
    )
