"""Refresh-token families: one row per login, rotated on every refresh.

A family remembers the only refresh token (by its ``jti``) that may be exchanged next. The
exchange is one conditional UPDATE (compare-and-swap on ``current_jti``), so two replicas can
never both accept the same token; a signed token of the family whose ``jti`` is no longer
current was already exchanged, and presenting it again revokes the whole family.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import RefreshFamily, utcnow
from storage.repositories._common import savepoint

RotationOutcome = Literal["rotated", "reused", "revoked"]


@dataclass(frozen=True)
class Rotation:
    outcome: RotationOutcome
    family_id: uuid.UUID


async def start_family(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    jti: str,
    expires_at: datetime,
) -> RefreshFamily:
    """A new family whose first refresh token is ``jti`` (one per login or registration)."""
    family = RefreshFamily(
        tenant_id=tenant_id, user_id=user_id, current_jti=jti, generation=0, expires_at=expires_at
    )
    async with savepoint(session):
        session.add(family)
    return family


async def rotate_family(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    presented_jti: str,
    next_jti: str,
    expires_at: datetime,
) -> RotationOutcome:
    """Exchange ``presented_jti`` for ``next_jti``.

    ``rotated``: it was the family's current token. ``reused``: it was an older one, and the
    family is now revoked (flushed; the caller must commit before refusing). ``revoked``: the
    family is unknown, already revoked or expired.
    """
    now = utcnow()
    live = (
        RefreshFamily.id == family_id,
        RefreshFamily.tenant_id == tenant_id,
        RefreshFamily.user_id == user_id,
        RefreshFamily.revoked_at.is_(None),
        RefreshFamily.expires_at > now,
    )
    swap = (
        update(RefreshFamily)
        .where(*live, RefreshFamily.current_jti == presented_jti)
        .values(
            current_jti=next_jti,
            generation=RefreshFamily.generation + 1,
            last_used_at=now,
            expires_at=expires_at,
        )
    )
    result: CursorResult = await session.execute(swap)  # type: ignore[assignment]
    if result.rowcount == 1:
        return "rotated"
    still_live = await session.scalar(select(RefreshFamily.id).where(*live))
    if still_live is None:
        return "revoked"
    await revoke_family(session=session, tenant_id=tenant_id, family_id=family_id, reason="reuse")
    return "reused"


async def revoke_family(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    family_id: uuid.UUID,
    user_id: uuid.UUID | None = None,
    reason: str = "logout",
) -> bool:
    """Revoke one family (of ``user_id`` when given); False if none was live."""
    query = update(RefreshFamily).where(
        RefreshFamily.id == family_id,
        RefreshFamily.tenant_id == tenant_id,
        RefreshFamily.revoked_at.is_(None),
    )
    if user_id is not None:
        query = query.where(RefreshFamily.user_id == user_id)
    result: CursorResult = await session.execute(  # type: ignore[assignment]
        query.values(revoked_at=utcnow(), revoked_reason=reason)
    )
    return result.rowcount > 0


async def revoke_user_families(
    *, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, reason: str
) -> list[uuid.UUID]:
    """Revoke every live family of the user; returns their ids (the sessions ended)."""
    live = (
        RefreshFamily.tenant_id == tenant_id,
        RefreshFamily.user_id == user_id,
        RefreshFamily.revoked_at.is_(None),
    )
    ids = list((await session.scalars(select(RefreshFamily.id).where(*live))).all())
    if ids:
        await session.execute(
            update(RefreshFamily)
            .where(*live, RefreshFamily.id.in_(ids))
            .values(revoked_at=utcnow(), revoked_reason=reason)
        )
    return ids


async def get_family(
    *, session: AsyncSession, tenant_id: uuid.UUID, family_id: uuid.UUID
) -> RefreshFamily | None:
    return await session.scalar(
        select(RefreshFamily).where(
            RefreshFamily.id == family_id, RefreshFamily.tenant_id == tenant_id
        )
    )
