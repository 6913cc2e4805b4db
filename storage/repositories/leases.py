"""Named leases in the database: one holder at a time, until it stops renewing.

``acquire_lease`` is one conditional UPDATE (held by us, or expired) and, when no row exists
yet, one INSERT whose primary key refuses a second inserter: whichever replica's statement
lands first holds the lease, on SQLite and PostgreSQL alike, with no clock but the caller's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import CursorResult, delete, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from storage.errors import Conflict
from storage.models import Lease
from storage.repositories._common import savepoint


async def acquire_lease(
    *, session: AsyncSession, name: str, holder: str, ttl: timedelta, now: datetime
) -> bool:
    """Take or renew the lease ``name`` for ``holder`` until ``now + ttl``; False: held by
    another holder whose lease has not expired."""
    expires = now + ttl
    claim = (
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at <= now))
        .values(holder=holder, expires_at=expires)
    )
    result: CursorResult = await session.execute(claim)  # type: ignore[assignment]
    if result.rowcount == 1:
        return True
    if await session.get(Lease, name, populate_existing=True) is not None:
        return False  # someone else holds it
    try:
        async with savepoint(session):
            session.add(Lease(name=name, holder=holder, expires_at=expires))
    except Conflict:
        return False  # another holder inserted it first
    return True


async def release_lease(*, session: AsyncSession, name: str, holder: str) -> None:
    """Give the lease up (only if ``holder`` holds it), so another can take it at once."""
    await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
