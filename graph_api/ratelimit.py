"""Per-user, per-tenant and per-IP request budgets on the cache's sliding window.

User and tenant budgets come from the tenant's subscription tier (carried in the verified
token); requests without a valid token are counted against their client IP. A request costs the
sum of its root fields' costs (``graph_api.query_limits``), charged atomically to each window, which
lives in the cache (Redis in production, one Lua script per window) so every replica shares it.
The outcome of the request's own admission is kept on the context, which is what
``rateLimitStatus`` reports: real figures, not a second counting call. If the cache cannot be
reached, requests are admitted (logged) rather than failed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from graph_api.auth import Principal
from graph_api.errors import RateLimited
from storage import meters
from storage.cache.base import Cache, WindowResult, tenant_key
from storage.errors import Unavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TierLimits:
    per_user: int
    per_tenant: int


DEFAULT_TIER_LIMITS: dict[str, TierLimits] = {
    "basic": TierLimits(per_user=300, per_tenant=3_000),
    "premium": TierLimits(per_user=1_500, per_tenant=15_000),
    "enterprise": TierLimits(per_user=6_000, per_tenant=60_000),
}
DEFAULT_IP_LIMIT = 60


@dataclass(frozen=True)
class Admission:
    user: WindowResult
    tenant: WindowResult
    limits: TierLimits
    window_seconds: int


class RateLimiter:
    def __init__(
        self,
        cache: Cache,
        *,
        window_seconds: int = 60,
        tier_limits: dict[str, TierLimits] | None = None,
        ip_limit: int = DEFAULT_IP_LIMIT,
    ) -> None:
        self._cache = cache
        self.window_seconds = window_seconds
        self._tiers = tier_limits or DEFAULT_TIER_LIMITS
        self.ip_limit = ip_limit

    @classmethod
    def from_settings(cls, cache: Cache, settings: Any) -> RateLimiter:
        tiers = {
            name: TierLimits(per_user=int(v["per_user"]), per_tenant=int(v["per_tenant"]))
            for name, v in settings.rate_limit_tiers.items()
        }
        return cls(
            cache,
            window_seconds=settings.rate_limit_window_seconds,
            tier_limits=tiers or None,
            ip_limit=settings.rate_limit_ip,
        )

    async def _window(self, key: str, limit: int, cost: int) -> WindowResult:
        try:
            return await self._cache.sliding_window(key, limit, self.window_seconds, cost)
        except Unavailable as error:
            # Limits protect the backends; a cache outage must not take the API down with it.
            logger.warning("rate limit not enforced, cache unavailable: %s", error)
            return WindowResult(allowed=True, remaining=limit, retry_after_seconds=0.0, count=0)

    async def admit_ip(self, address: str, cost: int = 1) -> WindowResult:
        """Count an unauthenticated request against its client address."""
        window = await self._window(tenant_key(f"ip-{address}", "ratelimit"), self.ip_limit, cost)
        if not window.allowed:
            meters.rate_limited(None, "ip")  # no tenant before authentication
            raise _refusal("ip", window)
        return window

    def limits_for(self, tier: str) -> TierLimits:
        # An unknown tier gets the smallest budget rather than an unlimited one.
        return self._tiers.get(tier) or min(self._tiers.values(), key=lambda t: t.per_user)

    async def admit(self, principal: Principal, cost: int = 1) -> Admission:
        """Charge ``cost`` units; raises RATE_LIMITED when either budget cannot cover it."""
        limits = self.limits_for(principal.tier)
        tenant = principal.tenant_id
        # Both windows are charged either way, so they go out together: one round trip of wait.
        user_window, tenant_window = await asyncio.gather(
            self._window(
                tenant_key(tenant, "ratelimit", "user", principal.user_id), limits.per_user, cost
            ),
            self._window(tenant_key(tenant, "ratelimit", "tenant"), limits.per_tenant, cost),
        )
        for scope, window in (("user", user_window), ("tenant", tenant_window)):
            if not window.allowed:
                meters.rate_limited(tenant, scope)
                raise _refusal(scope, window)
        return Admission(user_window, tenant_window, limits, self.window_seconds)


def _refusal(scope: str, window: WindowResult) -> RateLimited:
    label = "client address" if scope == "ip" else scope
    return RateLimited(
        f"Rate limit exceeded for this {label}; retry later.",
        retryAfter=max(1, math.ceil(window.retry_after_seconds)),
        retryAfterSeconds=round(window.retry_after_seconds, 3),
        scope=scope,
    )


class SubscriptionSlots:
    """Open subscriptions on this replica, per connection and per user.

    A subscription holds a socket, a pub/sub listener and a recomputation on every matching
    write for as long as it lives; the caps keep one client from holding them without end.
    Counted per replica: a user spreading sockets over replicas gets the cap on each.
    """

    def __init__(self, per_connection: int, per_user: int) -> None:
        self.per_connection = per_connection
        self.per_user = per_user
        self._open: Counter[Hashable] = Counter()

    def open_count(self, key: Hashable) -> int:
        return self._open[key]

    @contextmanager
    def hold(self, connection: Hashable, user: Hashable | None) -> Iterator[None]:
        """Occupy a slot for the body; RATE_LIMITED (scope ``subscriptions``) when none is free."""
        keys = [("connection", connection, self.per_connection)]
        if user is not None:
            keys.append(("user", user, self.per_user))
        for scope, key, cap in keys:
            if self._open[(scope, key)] >= cap:
                raise RateLimited(
                    f"Too many open subscriptions for this {scope} (at most {cap}); "
                    "complete one first.",
                    scope="subscriptions",
                    limit=cap,
                    retryAfter=1,
                )
        for scope, key, _cap in keys:
            self._open[(scope, key)] += 1
        try:
            yield
        finally:
            for scope, key, _cap in keys:
                self._open[(scope, key)] -= 1
                if self._open[(scope, key)] <= 0:
                    del self._open[(scope, key)]
