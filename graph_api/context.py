"""The per-request context: services shared by the app, plus what belongs to one request.

The token is verified once, on first use; a bad token is remembered rather than raised so that
public mutations (``register``, ``login``) still work, while every field that needs a caller
raises it through ``authorize()``. ``authorize()`` also asks the ``AccountGuard`` whether the
token's user and tenant are still active and its session not ended (one cache read; a
websocket's context lives as long as the connection, so the answer is trusted for at most
``ACCOUNT_RECHECK_SECONDS``, and subscriptions re-check on start). DataLoaders are created
per request and scoped to the principal's tenant, so nothing cached can cross requests or tenants.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.fastapi import BaseContext

from graph_api.accounts import AccountGuard, LoginThrottle
from graph_api.assignment import ExperimentDirectory
from graph_api.auth import Principal, TokenService, bearer_token
from graph_api.errors import ApiError, Forbidden, Unauthenticated
from graph_api.feedback_recorder import FeedbackRecorder
from graph_api.loaders import Loaders
from graph_api.quotas import TenantQuotas
from graph_api.ratelimit import Admission, RateLimiter, SubscriptionSlots
from graph_api.request_metrics import MetricsRecorder
from graph_api.row_cache import RowCache
from recommend.types import RecommendationService
from storage.settings import Settings


@dataclass
class Services:
    """Everything one app instance shares between requests."""

    settings: Settings
    database: Any  # storage.db.Database
    cache: Any  # storage.cache.Cache
    recommender: RecommendationService
    tokens: TokenService
    metrics: MetricsRecorder
    rate_limiter: RateLimiter
    accounts: AccountGuard
    login_throttle: LoginThrottle
    quotas: TenantQuotas
    results: Any = None  # graph_api.result_cache.ResultCache over ``cache``
    subscriptions: SubscriptionSlots | None = None  # open subscriptions, this replica
    feedback: FeedbackRecorder | None = None  # impressions and attributions, written behind
    experiments: ExperimentDirectory | None = None  # tenant defaults and running experiments


# One HTTP request (several root fields) checks the account once; a long-lived websocket
# context checks again when its last check is older than this.
ACCOUNT_RECHECK_SECONDS = 1.0
ACCOUNT_INACTIVE = "This session has ended or the account is not active."


class RequestContext(BaseContext):
    """One HTTP request, or one websocket connection with all its operations."""

    def __init__(
        self,
        services: Services,
        authorization: str | None = None,
        client_address: str = "unknown",
    ) -> None:
        super().__init__()
        self.services = services
        self._authorization = authorization
        # Resolved from trusted proxies only (graph_api.clients): the per-IP limit's key.
        self.client_address = client_address
        self.connection_id = uuid.uuid4().hex
        self._principal: Principal | None = None
        self._auth_error: ApiError | None = None
        self._verified = False
        self.admission: Admission | None = None
        # Top-level query fields resolve concurrently; the lock makes a request count once.
        self._admission_lock = asyncio.Lock()
        self._account_lock = asyncio.Lock()
        self._account_checked_at: float | None = None
        # Cache values read along with the account check (``authorize(read_along=...)``).
        self.read_ahead: dict[str, Any] = {}
        self._loaders: Loaders | None = None

    def _header(self) -> str | None:
        if self._authorization is not None:
            return self._authorization
        # Websocket clients send the token in connection_init, after this context was built.
        params = self.connection_params
        if isinstance(params, dict):
            value = params.get("authorization") or params.get("Authorization")
            return value if isinstance(value, str) else None
        return None

    @property
    def principal(self) -> Principal | None:
        """The verified caller, or None (no token, or a token that failed verification)."""
        if not self._verified:
            self._verified = True
            try:
                token = bearer_token(self._header())
                if token is not None:
                    self._principal = self.services.tokens.verify(token, "access")
            except ApiError as error:
                self._auth_error = error
        return self._principal

    async def authorize(
        self, *, recheck: bool = False, read_along: Sequence[str] = ()
    ) -> Principal:
        """The verified, still active caller; raises UNAUTHENTICATED or RATE_LIMITED.

        ``RequestLimits`` has charged the operation already; this charges 1 only if nothing
        did. ``recheck`` asks the account guard again even if it answered moments ago (a
        subscription starting on a long-lived websocket). ``read_along``: cache keys of the
        caller's tenant to read in the account check's round trip; their values land in
        ``read_ahead`` (absent when the check did not run or the cache was down).
        """
        principal = self.principal
        if self._auth_error is not None:
            raise self._auth_error
        if principal is None:
            raise Unauthenticated("Authentication required.")
        await self._check_account(principal, recheck, read_along)
        async with self._admission_lock:
            if self.admission is None:
                self.admission = await self.services.rate_limiter.admit(principal)
        return principal

    async def _check_account(
        self, principal: Principal, recheck: bool, read_along: Sequence[str]
    ) -> None:
        async with self._account_lock:
            checked = self._account_checked_at
            fresh = checked is not None and time.monotonic() - checked < ACCOUNT_RECHECK_SECONDS
            if fresh and not recheck:
                return
            active, along = await self.services.accounts.check(principal, read_along)
            if not active:
                self._account_checked_at = None
                raise Unauthenticated(ACCOUNT_INACTIVE)
            self._account_checked_at = time.monotonic()
            if along is not None:
                self.read_ahead.update(along)

    @property
    def credentials_rejected(self) -> bool:
        """True when a token was presented and failed verification (not when none was sent)."""
        return self.principal is None and self._auth_error is not None

    @contextmanager
    def subscription_slot(self) -> Iterator[None]:
        """Held while a subscription streams: RATE_LIMITED when the connection or the user has
        too many open already."""
        slots = self.services.subscriptions
        if slots is None:
            yield
            return
        principal = self.principal
        user = (principal.tenant_id, principal.user_id) if principal is not None else None
        with slots.hold(self.connection_id, user):
            yield

    def refresh_loaders(self) -> None:
        """Forget loaded rows: a subscription lives on, and must see writes made since."""
        self._loaders = None

    @property
    def loaders(self) -> Loaders:
        """Tenant-scoped loaders; only reachable from fields whose parent was authorized."""
        principal = self.principal
        if principal is None:
            raise Unauthenticated("Authentication required.")
        if self._loaders is None:
            ttl = self.services.settings.cache_row_ttl_seconds
            rows = RowCache(self.services.cache, principal.tenant_id, ttl=ttl) if ttl else None
            self._loaders = Loaders(self.services.database, principal.tenant_id, rows)
        return self._loaders

    @asynccontextmanager
    async def session(self, *, readonly: bool = False) -> AsyncIterator[AsyncSession]:
        """A session of its own: resolvers run concurrently and a session is not shareable
        (``readonly``: as in ``Database.session``)."""
        async with self.services.database.session(readonly=readonly) as session:
            yield session

    async def similar_items(self, item_id: Any, top_k: int) -> list[Any]:
        # Imported here because the recommendations module needs the types, which need us.
        from graph_api.recommendations import similar_items

        return await similar_items(self, item_id, top_k)


Info: TypeAlias = strawberry.Info[RequestContext, None]


async def require_admin(ctx: RequestContext) -> Principal:
    principal = await ctx.authorize()
    if not principal.is_admin:
        raise Forbidden("Only a tenant admin may do this.")
    return principal
