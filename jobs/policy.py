"""Automatic retraining: which tenants are due under their policy.

A tenant is due when its current models are older than ``after_minutes`` (and something new
happened since), or when at least ``after_interactions`` interactions arrived since they were
trained, or, never trained, once it has enough data to train on: at least
``first_train_min_interactions`` interactions from ``first_train_min_users`` users (defaults 50
and 2). The policy comes from the tenant's settings JSON
(``{"retrain": {"after_interactions": N, "after_minutes": T}}``) over the defaults in
``Settings``; a value of 0 turns that rule off. ``jobs.scheduler`` starts their jobs,
for the serving app's scheduler and ``recserve retrain-due`` alike.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from storage import repositories as repo
from storage.artifacts import ArtifactStore, create_artifact_store
from storage.db import Database, migrate
from storage.models import Tenant
from storage.settings import Settings
from training.algorithms import ALGORITHMS

log = logging.getLogger(__name__)


class RetrainPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_interactions: int = Field(ge=0)
    after_minutes: float = Field(ge=0)

    @classmethod
    def for_tenant(
        cls, settings: Settings, tenant_settings: dict[str, Any] | None
    ) -> RetrainPolicy:
        defaults = {
            "after_interactions": settings.retrain_after_interactions,
            "after_minutes": settings.retrain_after_minutes,
        }
        return cls.model_validate({**defaults, **((tenant_settings or {}).get("retrain") or {})})


@dataclass(frozen=True)
class DueTenant:
    tenant_id: str
    domain: str
    reason: str
    new_interactions: int
    trained_at: datetime | None


def last_trained_at(store: ArtifactStore, tenant_id: str) -> datetime | None:
    """When the newest of the tenant's current (promoted) models was created."""
    stamps = []
    for algorithm in ALGORITHMS:
        version = store.current(tenant_id, algorithm)
        if version is not None:
            created = store.metadata(tenant_id, algorithm, version).get("created_at")
            if created:
                stamps.append(datetime.fromisoformat(created))
    return max(stamps) if stamps else None


@dataclass(frozen=True)
class FirstTraining:
    """How much data a never-trained tenant needs before its first training starts."""

    min_interactions: int = 1
    min_users: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> FirstTraining:
        return cls(settings.first_train_min_interactions, settings.first_train_min_users)


def why_due(
    policy: RetrainPolicy,
    trained_at: datetime | None,
    new_interactions: int,
    now: datetime,
    *,
    users: int | None = None,
    first: FirstTraining = FirstTraining(),
) -> str | None:
    """The reason the tenant must be retrained now, or None (``users``: how many users the
    interactions come from, asked only when it was never trained)."""
    if new_interactions == 0:
        return None
    if trained_at is None:
        enough_users = users is None or users >= first.min_users
        if new_interactions >= first.min_interactions and enough_users:
            return "never trained"
        return None
    if policy.after_interactions and new_interactions >= policy.after_interactions:
        return f"{new_interactions} new interactions (threshold {policy.after_interactions})"
    if policy.after_minutes and now - trained_at >= timedelta(minutes=policy.after_minutes):
        return f"models older than {policy.after_minutes:g} minutes"
    return None


async def _check_tenant(
    database: Database, store: ArtifactStore, settings: Settings, tenant: Tenant, now: datetime
) -> DueTenant | None:
    try:
        policy = RetrainPolicy.for_tenant(settings, tenant.settings)
    except ValidationError as error:
        log.warning("tenant %s has an invalid retrain policy, skipped: %s", tenant.domain, error)
        return None
    trained_at = await asyncio.to_thread(last_trained_at, store, str(tenant.id))
    async with database.session(readonly=True) as session:
        new = await repo.count_interactions(session=session, tenant_id=tenant.id, since=trained_at)
        users = None
        if trained_at is None and new:
            users = await repo.count_interacting_users(session=session, tenant_id=tenant.id)
    first = FirstTraining.from_settings(settings)
    reason = why_due(policy, trained_at, new, now, users=users, first=first)
    if reason is None:
        return None
    return DueTenant(str(tenant.id), tenant.domain, reason, new, trained_at)


async def due_tenants(
    settings: Settings, *, now: datetime | None = None, database: Database | None = None
) -> list[DueTenant]:
    """Every active tenant whose retraining policy says it is due at ``now`` (on ``database``,
    or on one opened for this look)."""
    now = now or datetime.now(UTC)
    own = database is None
    if database is None:
        assert settings.database_url is not None
        await migrate(settings.database_url)
        database = Database.from_settings(settings)
    store = create_artifact_store(settings)
    due: list[DueTenant] = []
    try:
        offset = 0
        while True:
            async with database.session() as session:
                page = await repo.list_tenants(
                    session=session, limit=100, offset=offset, active_only=True
                )
            for tenant in page:
                if (
                    found := await _check_tenant(database, store, settings, tenant, now)
                ) is not None:
                    due.append(found)
            if len(page) < 100:
                return due
            offset += 100
    finally:
        if own:
            await database.dispose()
