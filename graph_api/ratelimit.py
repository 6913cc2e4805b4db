"""Per-user and per-tenant request budgets on the cache's sliding window.

Both budgets come from the tenant's subscription tier (carried in the verified token). One
request costs one unit of each; the window lives in the cache (Redis in production) so every
replica shares it. The outcome of the request's own admission is kept on the context, which is
what ``rateLimitStatus`` reports: real figures, not a second counting call.
"""

from __future__ import annotations

from dataclasses import dataclass

from graph_api.auth import Principal
from graph_api.errors import RateLimited
from storage.cache.base import Cache, WindowResult, tenant_key


@dataclass(frozen=True)
class TierLimits:
    per_user: int
    per_tenant: int


DEFAULT_TIER_LIMITS: dict[str, TierLimits] = {
    "basic": TierLimits(per_user=120, per_tenant=1_200),
    "premium": TierLimits(per_user=600, per_tenant=6_000),
    "enterprise": TierLimits(per_user=3_000, per_tenant=30_000),
}


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
    ) -> None:
        self._cache = cache
        self.window_seconds = window_seconds
        self._tiers = tier_limits or DEFAULT_TIER_LIMITS

    def limits_for(self, tier: str) -> TierLimits:
        # An unknown tier gets the smallest budget rather than an unlimited one.
        return self._tiers.get(tier) or min(self._tiers.values(), key=lambda t: t.per_user)

    async def admit(self, principal: Principal) -> Admission:
        """Count one request; raises RATE_LIMITED when either budget is spent."""
        limits = self.limits_for(principal.tier)
        tenant = principal.tenant_id
        user_window = await self._cache.sliding_window(
            tenant_key(tenant, "ratelimit", "user", principal.user_id),
            limits.per_user,
            self.window_seconds,
        )
        tenant_window = await self._cache.sliding_window(
            tenant_key(tenant, "ratelimit", "tenant"), limits.per_tenant, self.window_seconds
        )
        for scope, window in (("user", user_window), ("tenant", tenant_window)):
            if not window.allowed:
                raise RateLimited(
                    f"Rate limit exceeded for this {scope}; retry later.",
                    retryAfterSeconds=round(window.retry_after_seconds, 3),
                    scope=scope,
                )
        return Admission(user_window, tenant_window, limits, self.window_seconds)
