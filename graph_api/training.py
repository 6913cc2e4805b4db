"""Training through the API: job records, model versions, promotion and rollback (admins only).

Jobs are read from their records (``storage.repositories.jobs``), so any replica answers for
any job, after restarts too; a tenant's admin sees the tenant's own jobs only (another tenant's
job id reads as not found). Model versions come from the artifact store through
``storage.model_registry``, the same code as ``recserve models list|promote|rollback``: a
promotion or rollback moves the tenant's model epoch (cached results of the old version are not
served again) and is announced on ``models:{tenant}``, so serving replicas resolve the new
version on their next request; the in-process server's short version cache lapses as quickly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator

import strawberry

from graph_api import bounds
from graph_api.context import Info, RequestContext, require_admin
from graph_api.errors import BadUserInput, ObjectNotFound
from graph_api.inputs import check_page
from graph_api.recommendations import tenant_cache_prefix
from graph_api.types import ModelVersion, TrainingJob
from jobs import ledger
from recommend.types import HYBRID
from storage import model_registry
from storage.artifacts import create_artifact_store
from storage.repositories import jobs as jobs_repo

# trainingJobUpdates reads the record this often (the training process writes it).
JOB_POLL_SECONDS = 1.0
FINISHED = ("succeeded", "failed")


def _job_key(job_id: str) -> uuid.UUID:
    bounds.check_text("id", job_id, 64)
    try:
        return uuid.UUID(job_id)
    except ValueError:
        raise ObjectNotFound("Training job not found.") from None


async def load_job(ctx: RequestContext, tenant_id: uuid.UUID, job_id: str) -> ledger.TrainingJob:
    key = _job_key(job_id)
    async with ctx.session(readonly=True) as session:
        record = await jobs_repo.get_job(session=session, tenant_id=tenant_id, job_id=key)
        if record is None:  # also another tenant's job: its existence is not revealed
            raise ObjectNotFound("Training job not found.")
        return ledger.job_from_record(record)


def _model_names(ctx: RequestContext, algorithm: str | None) -> list[str]:
    """The algorithms to list: the one asked (an engine, or the tuned hybrid blend) or all."""
    engines = list(ctx.services.recommender.catalog.engines)
    if algorithm is None:
        return [*engines, HYBRID]
    bounds.check_text("algorithm", algorithm, bounds.NAME_CHARS)
    if algorithm != HYBRID and algorithm not in engines:
        raise BadUserInput(f"Unknown algorithm: {algorithm}.")
    return [algorithm]


def _model_version(row: model_registry.ModelVersion) -> ModelVersion:
    return ModelVersion(
        algorithm=row.algorithm,
        version=row.version,
        current=row.current,
        created_at=row.created_at,
        metrics=row.metrics,
        duration_seconds=row.duration_seconds,
        counts=row.counts,
    )


async def _versions(ctx: RequestContext, tenant_id: str, names: list[str]) -> list[ModelVersion]:
    store = create_artifact_store(ctx.services.settings)
    rows = await asyncio.to_thread(model_registry.list_models, store, tenant_id, names)
    return [_model_version(row) for row in rows]


async def _served(ctx: RequestContext, tenant_id: uuid.UUID, algorithm: str) -> ModelVersion:
    """After a promotion or rollback: drop the tenant's cached results, answer the new row."""
    await ctx.services.results.drop_prefix(tenant_cache_prefix(tenant_id))
    rows = await _versions(ctx, str(tenant_id), [algorithm])
    return next(row for row in rows if row.current)


@strawberry.type
class TrainingQuery:
    @strawberry.field
    async def training_job(self, info: Info, id: str) -> TrainingJob:
        """A training job of the caller's tenant: status, per-algorithm progress, times,
        holdout metrics, error."""
        principal = await require_admin(info.context)
        return TrainingJob.from_job(await load_job(info.context, principal.tenant_id, id))

    @strawberry.field
    async def training_jobs(
        self, info: Info, limit: int = 20, offset: int = 0
    ) -> list[TrainingJob]:
        """The tenant's training jobs, newest first."""
        principal = await require_admin(info.context)
        check_page(limit, offset)
        async with info.context.session(readonly=True) as session:
            rows = await jobs_repo.list_jobs(
                session=session, tenant_id=principal.tenant_id, limit=limit, offset=offset
            )
            return [TrainingJob.from_job(ledger.job_from_record(row)) for row in rows]

    @strawberry.field
    async def model_versions(self, info: Info, algorithm: str | None = None) -> list[ModelVersion]:
        """Every stored version (oldest first) with its holdout metrics; ``current`` is the
        one served. Without ``algorithm``: every served engine and the tuned hybrid blend."""
        principal = await require_admin(info.context)
        names = _model_names(info.context, algorithm)
        return await _versions(info.context, str(principal.tenant_id), names)


@strawberry.type
class TrainingMutation:
    @strawberry.mutation
    async def promote_model(self, info: Info, algorithm: str, version: str) -> ModelVersion:
        """Serve ``version`` of ``algorithm`` from the next request on (a missing or
        half-written version is NOT_FOUND); the previous one is kept for ``rollbackModel``."""
        principal = await require_admin(info.context)
        [name] = _model_names(info.context, algorithm)
        bounds.check_text("version", version, bounds.NAME_CHARS)
        await model_registry.promote(
            info.context.services.settings,
            str(principal.tenant_id),
            name,
            version,
            cache=info.context.services.cache,
        )
        return await _served(info.context, principal.tenant_id, name)

    @strawberry.mutation
    async def rollback_model(self, info: Info, algorithm: str) -> ModelVersion:
        """Serve the previously promoted version of ``algorithm`` again (NOT_FOUND if none)."""
        principal = await require_admin(info.context)
        [name] = _model_names(info.context, algorithm)
        await model_registry.rollback(
            info.context.services.settings,
            str(principal.tenant_id),
            name,
            cache=info.context.services.cache,
        )
        return await _served(info.context, principal.tenant_id, name)


async def job_updates(
    ctx: RequestContext, tenant_id: uuid.UUID, job_id: str
) -> AsyncGenerator[TrainingJob, None]:
    """The job now, then each time its record changes, until it has ended."""
    job = await load_job(ctx, tenant_id, job_id)
    yield TrainingJob.from_job(job)
    while job.status not in FINISHED:
        await asyncio.sleep(JOB_POLL_SECONDS)
        latest = await load_job(ctx, tenant_id, job_id)
        if latest != job:
            job = latest
            yield TrainingJob.from_job(job)
