"""A tenant's experiments: at most one running per surface (a partial unique index)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import Conflict
from storage.models import Experiment, utcnow
from storage.repositories._common import found

RUNNING = "running"
STOPPED = "stopped"
PROMOTED = "promoted"


async def create_experiment(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    name: str,
    surface: str,
    allocation: str,
    metric: str,
    variants: Sequence[dict[str, Any]],
) -> Experiment:
    """Conflict when another experiment is running on the surface."""
    if await running_experiment(session=session, tenant_id=tenant_id, surface=surface):
        raise Conflict(f"another experiment is running on {surface}: stop it first")
    experiment = Experiment(
        tenant_id=tenant_id, name=name, surface=surface, status=RUNNING, allocation=allocation,
        metric=metric, variants=list(variants),
    )  # fmt: skip
    session.add(experiment)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:  # started meanwhile by another request
        raise Conflict(f"another experiment is running on {surface}: stop it first") from error
    return experiment


async def running_experiment(
    *, session: AsyncSession, tenant_id: uuid.UUID, surface: str
) -> Experiment | None:
    found_rows = await session.scalars(
        select(Experiment).where(
            Experiment.tenant_id == tenant_id,
            Experiment.surface == surface,
            Experiment.status == RUNNING,
        )
    )
    return found_rows.first()


async def get_experiment(
    *, session: AsyncSession, tenant_id: uuid.UUID, experiment_id: uuid.UUID
) -> Experiment:
    experiment = await session.get(Experiment, experiment_id)
    if experiment is not None and experiment.tenant_id != tenant_id:
        experiment = None
    return found(experiment, "experiment", experiment_id)


async def list_experiments(
    *, session: AsyncSession, tenant_id: uuid.UUID, limit: int, offset: int
) -> list[Experiment]:
    rows = await session.scalars(
        select(Experiment)
        .where(Experiment.tenant_id == tenant_id)
        .order_by(Experiment.created_at.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows)


async def end_experiment(
    *,
    session: AsyncSession,
    experiment: Experiment,
    status: str,
    winner: str | None = None,
    when: datetime | None = None,
) -> Experiment:
    experiment.status = status
    experiment.winner = winner
    experiment.stopped_at = when or utcnow()
    await session.flush()
    return experiment
