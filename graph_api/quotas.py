"""Per-tenant quotas by subscription tier: what a tenant may hold and use, not how fast.

Rate limits (``graph_api.ratelimit``) pace requests per minute; quotas cap use over longer
periods, with figures per tier from ``settings.tenant_quotas``:

- ``items``: active catalogue items. ``createItem`` and ``importItems`` count them in the
  transaction of their write, after taking the tenant's lock, so concurrent writers cannot pass
  the limit together; an import that would pass it writes nothing.
- ``recommendations``: ``recommendations`` fields (and ``recommendationUpdates``
  subscriptions started) per clock hour, charged with the rate limits before execution.
- ``trainingRuns``: ``trainModel`` calls per UTC day (one that returns the tenant's running job
  counts too: the call is what the quota meters).

The two time quotas are fixed-window counters in the cache, ``rec:{tenant}:quota:{name}:
{window start}``: one key per call (slot-safe on a Redis Cluster), shared by every replica, gone
after the window. A charge increments first and takes its increment back when the total passed
the limit, so concurrent charges never admit more than the limit together (at the edge one that
would have fitted may be refused). The tier is the one in the caller's token, as for rate
limits; if the cache cannot be reached, charges are admitted (logged) rather than failed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from graph_api.auth import Principal
from graph_api.errors import QuotaExceeded
from storage.cache.base import Cache, tenant_key
from storage.errors import Unavailable
from storage.repositories import items as items_repo
from storage.repositories import tenants as tenants_repo

logger = logging.getLogger(__name__)

ITEMS = "items"


@dataclass(frozen=True)
class TierQuotas:
    max_items: int
    recommendations_per_hour: int
    training_runs_per_day: int


@dataclass(frozen=True)
class Window:
    """A quota counted per fixed period (clock hours, UTC days)."""

    name: str
    seconds: int
    figure: str  # the TierQuotas attribute holding its limit
    unit: str  # for messages


RECOMMENDATIONS = Window("recommendations", 3600, "recommendations_per_hour", "recommendations")
TRAINING_RUNS = Window("trainingRuns", 86_400, "training_runs_per_day", "training runs")
WINDOWS = (RECOMMENDATIONS, TRAINING_RUNS)


@dataclass(frozen=True)
class QuotaUsage:
    name: str
    used: int
    limit: int
    resets_at: datetime | None  # None: a quota on a stock (items), not on a period

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


class TenantQuotas:
    """The tenant resource manager: charges and reports each quota of the caller's tenant."""

    def __init__(
        self,
        cache: Cache,
        tiers: dict[str, TierQuotas],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        self._tiers = tiers
        self._clock = clock

    @classmethod
    def from_settings(cls, cache: Cache, settings: Any) -> TenantQuotas:
        tiers = {
            name: TierQuotas(**{key: int(value) for key, value in figures.items()})
            for name, figures in settings.tenant_quotas.items()
        }
        return cls(cache, tiers)

    def quotas_for(self, tier: str) -> TierQuotas:
        # An unknown tier gets the smallest figures rather than unlimited ones.
        return self._tiers.get(tier) or min(self._tiers.values(), key=lambda q: q.max_items)

    def _window(self, principal: Principal, window: Window) -> tuple[str, float, int]:
        """The counter's key, when its window ends (epoch seconds), and the limit."""
        start = math.floor(self._clock() / window.seconds) * window.seconds
        key = tenant_key(principal.tenant_id, "quota", window.name, start)
        return (
            key,
            float(start + window.seconds),
            getattr(self.quotas_for(principal.tier), window.figure),
        )

    async def charge(self, principal: Principal, window: Window, amount: int = 1) -> None:
        """Count ``amount`` uses; QUOTA_EXCEEDED (nothing counted) when they do not fit."""
        key, ends, limit = self._window(principal, window)
        # A little past the window's end: a slow clock on another replica still finds it.
        ttl = ends - self._clock() + 60
        try:
            used = await self._cache.incr(key, amount, ttl=ttl)
            if used <= limit:
                return
            await self._cache.incr(key, -amount)
        except Unavailable as error:
            logger.warning("quota %s not enforced, cache unavailable: %s", window.name, error)
            return
        retry_after = max(1, math.ceil(ends - self._clock()))
        raise QuotaExceeded(
            f"This tenant's tier allows {limit} {window.unit} per "
            f"{'hour' if window.seconds == 3600 else 'day'}; the quota resets in {retry_after} s.",
            quota=window.name,
            limit=limit,
            used=used - amount,
            resetAt=_iso(ends),
            retryAfter=retry_after,
        )

    async def refund(self, principal: Principal, window: Window, amount: int = 1) -> None:
        """Take back a charge whose operation did not run."""
        key, _ends, _limit = self._window(principal, window)
        try:
            await self._cache.incr(key, -amount)
        except Unavailable as error:
            logger.warning("quota %s not refunded, cache unavailable: %s", window.name, error)

    async def check_items(
        self, session: AsyncSession, principal: Principal, external_ids: Sequence[str]
    ) -> None:
        """Before writing items with these external ids (new ones and updates alike): QUOTA_
        EXCEEDED when the new ones would take the catalogue past the tier's ``max_items``.

        Locks the tenant for the rest of ``session``'s transaction, which must do the write."""
        limit = self.quotas_for(principal.tier).max_items
        tenant = principal.tenant_id
        await tenants_repo.lock_tenant(session=session, tenant_id=tenant)
        current = await items_repo.count_items(session=session, tenant_id=tenant)
        existing = await items_repo.item_ids_by_external_ids(
            session=session, tenant_id=tenant, external_ids=external_ids, active_only=True
        )
        after = current + len(set(external_ids)) - len(existing)
        if after <= limit:
            return
        what = "This import" if len(external_ids) > 1 else "This item"
        raise QuotaExceeded(
            f"{what} would bring the catalogue to {after} items; this tenant's tier allows "
            f"{limit}. Nothing was written.",
            quota=ITEMS,
            limit=limit,
            used=current,
        )

    async def usage(self, session: AsyncSession, principal: Principal) -> list[QuotaUsage]:
        """Every quota of the caller's tenant: used, limit, and when it resets."""
        quotas = self.quotas_for(principal.tier)
        items = await items_repo.count_items(session=session, tenant_id=principal.tenant_id)
        rows = [QuotaUsage(ITEMS, items, quotas.max_items, None)]
        windows = {window: self._window(principal, window) for window in WINDOWS}
        try:
            counts = await self._cache.get_many(key for key, _ends, _limit in windows.values())
        except Unavailable as error:
            logger.warning("quota usage unknown, cache unavailable: %s", error)
            counts = {}
        for window, (key, ends, limit) in windows.items():
            used = int(counts.get(key) or 0)
            rows.append(QuotaUsage(window.name, used, limit, datetime.fromtimestamp(ends, UTC)))
        return rows


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()
