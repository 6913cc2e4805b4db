"""Tenants: the unit of isolation. Every other repository filters by a tenant id."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.feedback_rules import SETTING as FEEDBACK_SETTING
from storage.feedback_rules import FeedbackRules
from storage.models import Registration, Tenant, TenantTier
from storage.rating_scale import SETTING as RATING_SCALE_SETTING
from storage.rating_scale import RatingScale
from storage.repositories._common import check_page, found, savepoint
from storage.repositories.interaction_loads import LOCK_NOT_AVAILABLE


async def create_tenant(
    *,
    session: AsyncSession,
    name: str,
    domain: str,
    tier: TenantTier | str = TenantTier.BASIC,
    settings: Mapping[str, Any] | None = None,
    registration: Registration | str = Registration.CLOSED,
) -> Tenant:
    """Create a tenant. ``domain`` is unique (case-insensitive); a duplicate raises Conflict.

    ``registration`` says who may sign up through the API: nobody (``closed``, the default),
    invite holders (``invite``) or anyone (``open``).
    """
    tenant = Tenant(
        name=name,
        domain=domain.strip().lower(),
        tier=TenantTier(tier),
        settings=dict(settings or {}),
        registration=Registration(registration),
    )
    async with savepoint(session):
        session.add(tenant)
    return tenant


async def get_tenant(*, session: AsyncSession, tenant_id: uuid.UUID) -> Tenant:
    """The tenant with this id; NotFound otherwise."""
    return found(await session.get(Tenant, tenant_id), "tenant", tenant_id)


async def get_tenant_by_domain(*, session: AsyncSession, domain: str) -> Tenant:
    """The tenant owning ``domain`` (case-insensitive); NotFound otherwise."""
    normalized = domain.strip().lower()
    tenant = await session.scalar(select(Tenant).where(Tenant.domain == normalized))
    return found(tenant, "tenant with domain", normalized)


async def list_tenants(
    *, session: AsyncSession, limit: int = 100, offset: int = 0, active_only: bool = False
) -> Sequence[Tenant]:
    """Tenants ordered by creation time (oldest first)."""
    check_page(limit, offset)
    query = select(Tenant).order_by(Tenant.created_at, Tenant.id).limit(limit).offset(offset)
    if active_only:
        query = query.where(Tenant.is_active.is_(True))
    return (await session.scalars(query)).all()


async def set_tenant_active(
    *, session: AsyncSession, tenant_id: uuid.UUID, is_active: bool
) -> Tenant:
    """Enable or disable a tenant (its data stays in place)."""
    tenant = await get_tenant(session=session, tenant_id=tenant_id)
    tenant.is_active = is_active
    await session.flush()
    return tenant


async def set_tenant_registration(
    *, session: AsyncSession, tenant_id: uuid.UUID, registration: Registration | str
) -> Tenant:
    """Change who may register in the tenant (``open``, ``invite`` or ``closed``)."""
    tenant = await get_tenant(session=session, tenant_id=tenant_id)
    tenant.registration = Registration(registration)
    await session.flush()
    return tenant


async def set_tenant_tier(
    *, session: AsyncSession, tenant_id: uuid.UUID, tier: TenantTier | str
) -> Tenant:
    """Move the tenant to another subscription tier (its rate limits and quotas)."""
    tenant = await get_tenant(session=session, tenant_id=tenant_id)
    tenant.tier = TenantTier(tier)
    await session.flush()
    return tenant


async def set_tenant_rating_scale(
    *, session: AsyncSession, tenant_id: uuid.UUID, scale: RatingScale
) -> Tenant:
    """The scale the tenant's ratings arrive on and are shown on (``storage.rating_scale``)."""
    tenant = await get_tenant(session=session, tenant_id=tenant_id)
    tenant.settings = {**(tenant.settings or {}), RATING_SCALE_SETTING: scale.name}
    await session.flush()
    return tenant


async def set_tenant_feedback_rules(
    *, session: AsyncSession, tenant_id: uuid.UUID, rules: FeedbackRules
) -> Tenant:
    """Which interactions count as clicks and conversions (``storage.feedback_rules``)."""
    tenant = await get_tenant(session=session, tenant_id=tenant_id)
    tenant.settings = {**(tenant.settings or {}), FEEDBACK_SETTING: rules.stored()}
    await session.flush()
    return tenant


async def lock_tenant(*, session: AsyncSession, tenant_id: uuid.UUID) -> None:
    """Serialise writers of one tenant until the transaction ends: a no-op write on its row
    takes PostgreSQL's row lock and SQLite's write lock (a check-then-insert, such as a quota
    or the one-job rule, then sees every earlier writer's rows)."""
    await session.execute(
        update(Tenant).where(Tenant.id == tenant_id).values(is_active=Tenant.is_active)
    )


# Partitions of ``interactions`` whose tenant is gone: a tenant delete drops its partition, but
# waits at most 2 s for running readers and otherwise leaves it behind, emptied (migration 0007).
_ORPHAN_PARTITIONS_SQL = text(
    """
    SELECT child.relname FROM pg_inherits AS link
    JOIN pg_class AS child ON child.oid = link.inhrelid
    WHERE link.inhparent = 'interactions'::regclass
      AND child.relname ~ '^interactions_[0-9a-f]{32}$'
      AND NOT EXISTS (SELECT 1 FROM tenants AS t
                      WHERE replace(t.id::text, '-', '') = substr(child.relname, 14))
    """
)


async def drop_orphan_partitions(*, session: AsyncSession, lock_wait: str = "2s") -> list[str]:
    """Drop the interaction partitions of deleted tenants (PostgreSQL; elsewhere nothing to do).
    One still held by readers past ``lock_wait`` is left for the next call; returns the
    dropped ones. The retraining scheduler's leader calls this every round."""
    if session.bind.dialect.name != "postgresql":
        return []
    dropped = []
    for name in (await session.scalars(_ORPHAN_PARTITIONS_SQL)).all():
        try:
            async with session.begin_nested():
                await session.execute(text(f"SET LOCAL lock_timeout = '{lock_wait}'"))
                await session.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
            dropped.append(name)
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
    return dropped
