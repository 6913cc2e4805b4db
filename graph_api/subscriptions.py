"""GraphQL subscriptions, served over websockets (graphql-transport-ws and graphql-ws).

Each stream listens on its own tenant's channels only; a subscriber can never name another
tenant, because the channel comes from the verified token. Recomputing streams coalesce bursts
(one recomputation per burst), and ``trendingItems`` is throttled: it asks the trending engine
at most once per ``TRENDING_MIN_INTERVAL_S``.

A websocket authenticates once, at ``connection_init``; so every stream re-checks the caller's
account when it starts and runs under ``guarded``: when the user or tenant is deactivated, or
the session logged out, the stream ends with UNAUTHENTICATED (woken by the tenant's auth
events, re-checked every ``RECSERVE_ACCOUNT_STATE_TTL_SECONDS`` in case one is missed).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

import strawberry
from strawberry.scalars import JSON

from graph_api.accounts import guarded
from graph_api.auth import Principal
from graph_api.context import ACCOUNT_INACTIVE, Info, RequestContext
from graph_api.errors import BadUserInput, Forbidden, ObjectNotFound, Unauthenticated
from graph_api.inputs import MAX_PAGE
from graph_api.live import (
    ActivityEvent,
    ItemUpdate,
    drain,
    is_item_event,
    is_write_event,
    subscribe_tenant,
    touches_user,
)
from graph_api.queries import require_admin
from graph_api.recommendations import RecommendationParams, hydrate_pairs, recommend
from graph_api.training import job_updates
from graph_api.types import (
    PerformanceMetrics,
    RecommendationItem,
    SimilarItem,
    TrainingJob,
)
from storage.cache.channels import events_channel, items_channel

T = TypeVar("T")
TRENDING_MIN_INTERVAL_S = 1.0
MIN_METRICS_INTERVAL_S = 0.5
MAX_METRICS_INTERVAL_S = 300.0


async def _authorize(info: Info) -> Principal:
    """The caller, re-checked now: the websocket's context may be hours old."""
    return await info.context.authorize(recheck=True)


def _live(info: Info, principal: Principal, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """``source`` until the caller's account or session stops being valid."""
    refusal = Unauthenticated(ACCOUNT_INACTIVE)
    return guarded(info.context.services.accounts, principal, source, refusal)


async def _fresh_recommendations(
    context: RequestContext, principal: Principal, params: RecommendationParams
) -> list[RecommendationItem]:
    context.refresh_loaders()  # the history must include the write that woke us
    result = await recommend(context, principal, params, served=False)
    return result.items


async def _fresh_trending(
    context: RequestContext, principal: Principal, category: str | None, limit: int
) -> list[SimilarItem]:
    context.refresh_loaders()
    pairs = await context.services.recommender.trending(
        tenant_id=str(principal.tenant_id), category=category, limit=limit
    )
    return await hydrate_pairs(context, pairs)


async def _activity(
    info: Info, principal: Principal, wanted: dict[str, str]
) -> AsyncGenerator[ActivityEvent, None]:
    """The tenant's committed writes whose fields equal ``wanted``."""
    cache = info.context.services.cache
    async with await cache.subscribe(events_channel(principal.tenant_id)) as subscription:
        async for _channel, event in subscription:
            if is_write_event(event) and all(event.get(k) == v for k, v in wanted.items()):
                yield ActivityEvent.from_event(event, principal)


def counted(
    resolver: Callable[..., AsyncGenerator[T, None]],
) -> Callable[..., AsyncGenerator[T, None]]:
    """A subscription holds one of its connection's and its user's slots while it streams
    (``RequestContext.subscription_slot``); none free: RATE_LIMITED before anything runs."""

    @functools.wraps(resolver)
    async def streaming(self: Any, info: Info, **arguments: Any) -> AsyncGenerator[T, None]:
        with info.context.subscription_slot():
            async for value in resolver(self, info, **arguments):
                yield value

    return streaming


async def _tenant_events(
    info: Info, principal: Principal, only_mine: bool
) -> AsyncGenerator[Any, None]:
    cache = info.context.services.cache
    async with await cache.subscribe(events_channel(principal.tenant_id)) as subscription:
        async for _channel, event in subscription:
            if only_mine and event.get("user_id") != str(principal.user_id):
                continue
            yield event


async def _recommendation_updates(
    context: RequestContext, principal: Principal, params: RecommendationParams
) -> AsyncGenerator[list[RecommendationItem], None]:
    """The list now; again after each of the user's writes and each promotion; and after a
    catalogue change only when the list is different (an item came into it or left it)."""
    async with await subscribe_tenant(context, principal, items=True) as subscription:
        listed = await _fresh_recommendations(context, principal, params)
        yield listed
        async for _channel, event in subscription:
            if not (touches_user(event, principal.user_id) or is_item_event(event)):
                continue
            burst = [event, *await drain(subscription)]
            fresh = await _fresh_recommendations(context, principal, params)
            mine = any(touches_user(e, principal.user_id) for e in burst)
            if mine or _item_ids(fresh) != _item_ids(listed):
                yield fresh
            listed = fresh


def _item_ids(items: list[RecommendationItem]) -> list[uuid.UUID]:
    return [entry.item.id for entry in items]


async def _item_updates(
    context: RequestContext, principal: Principal
) -> AsyncGenerator[ItemUpdate, None]:
    """Each item change, with the item's row as it is now: a burst (an import) is read in one
    loader batch rather than one query per item."""
    cache = context.services.cache
    async with await cache.subscribe(items_channel(principal.tenant_id)) as subscription:
        async for _channel, event in subscription:
            burst = [e for e in (event, *await drain(subscription)) if is_item_event(e)]
            if not burst:
                continue
            context.refresh_loaders()  # the rows as these changes left them
            ids = [uuid.UUID(str(e["item_id"])) for e in burst]
            rows = await context.loaders.items.load_many(ids)
            for change, item_id, row in zip(burst, ids, rows, strict=True):
                yield ItemUpdate.from_event(change, item_id, row)


async def _trending(
    context: RequestContext, principal: Principal, category: str | None, limit: int
) -> AsyncGenerator[list[SimilarItem], None]:
    async with await subscribe_tenant(context, principal) as subscription:
        yield await _fresh_trending(context, principal, category, limit)
        last = time.monotonic()
        async for _channel, _event in subscription:
            await asyncio.sleep(max(0.0, last + TRENDING_MIN_INTERVAL_S - time.monotonic()))
            await drain(subscription)
            yield await _fresh_trending(context, principal, category, limit)
            last = time.monotonic()


async def _metrics(
    context: RequestContext, principal: Principal, interval_seconds: float
) -> AsyncGenerator[PerformanceMetrics, None]:
    metrics = context.services.metrics
    while True:
        yield PerformanceMetrics(**metrics.snapshot(principal.tenant_id).__dict__)
        await asyncio.sleep(interval_seconds)


@strawberry.type
class Subscription:
    @strawberry.subscription
    @counted
    async def tenant_events(self, info: Info, only_mine: bool = True) -> AsyncGenerator[JSON, None]:
        """Interactions and ratings recorded in the caller's tenant, as they are committed: the
        caller's own, or (``onlyMine: false``, admins only) everyone's."""
        principal = await _authorize(info)
        if not only_mine and not principal.is_admin:
            raise Forbidden("Only a tenant admin may follow other users' events.")
        async for event in _live(info, principal, _tenant_events(info, principal, only_mine)):
            yield event

    @strawberry.subscription
    @counted
    async def recommendation_updates(
        self, info: Info, algorithm: str = "hybrid", num_recommendations: int = 10
    ) -> AsyncGenerator[list[RecommendationItem], None]:
        """The caller's recommendations now, then again after each of their interactions or
        ratings (folded in without retraining), after each model promotion, and after a
        catalogue change that brings an item into the list or takes one out of it."""
        principal = await _authorize(info)
        params = RecommendationParams(algorithm=algorithm, k=num_recommendations)
        params.validate(info.context.services.recommender.catalog)
        source = _recommendation_updates(info.context, principal, params)
        async for items in _live(info, principal, source):
            yield items

    @strawberry.subscription
    @counted
    async def tenant_item_updates(self, info: Info) -> AsyncGenerator[ItemUpdate, None]:
        """Items of the caller's tenant as they are created, updated or deleted (one update
        per item of an importItems call)."""
        principal = await _authorize(info)
        async for update in _live(info, principal, _item_updates(info.context, principal)):
            yield update

    @strawberry.subscription
    @counted
    async def item_interactions(
        self, info: Info, item_id: uuid.UUID
    ) -> AsyncGenerator[ActivityEvent, None]:
        """Interactions and ratings on one of the tenant's items, by anyone in the tenant."""
        principal = await _authorize(info)
        if await info.context.loaders.items.load(item_id) is None:
            raise ObjectNotFound("Item not found.")  # another tenant's id reads as missing
        source = _activity(info, principal, {"item_id": str(item_id)})
        async for event in _live(info, principal, source):
            yield event

    @strawberry.subscription
    @counted
    async def user_activity(self, info: Info) -> AsyncGenerator[ActivityEvent, None]:
        """The caller's own interactions and ratings, from any device or replica."""
        principal = await _authorize(info)
        source = _activity(info, principal, {"user_id": str(principal.user_id)})
        async for event in _live(info, principal, source):
            yield event

    @strawberry.subscription
    @counted
    async def trending_items(
        self, info: Info, category: str | None = None, limit: int = 10
    ) -> AsyncGenerator[list[SimilarItem], None]:
        """The trending list now, then re-computed as interactions arrive (throttled)."""
        principal = await _authorize(info)
        if not 1 <= limit <= MAX_PAGE:
            raise BadUserInput(f"limit must be between 1 and {MAX_PAGE}.")
        source = _trending(info.context, principal, category, limit)
        async for items in _live(info, principal, source):
            yield items

    @strawberry.subscription
    @counted
    async def performance_metrics_stream(
        self, info: Info, interval_seconds: float = 5.0
    ) -> AsyncGenerator[PerformanceMetrics, None]:
        """``performanceMetrics`` every ``intervalSeconds`` (admins only, their tenant's share)."""
        await _authorize(info)
        principal = await require_admin(info.context)
        if not MIN_METRICS_INTERVAL_S <= interval_seconds <= MAX_METRICS_INTERVAL_S:
            raise BadUserInput(
                f"intervalSeconds must be between {MIN_METRICS_INTERVAL_S} "
                f"and {MAX_METRICS_INTERVAL_S}."
            )
        source = _metrics(info.context, principal, interval_seconds)
        async for snapshot in _live(info, principal, source):
            yield snapshot

    @strawberry.subscription
    @counted
    async def training_job_updates(self, info: Info, id: str) -> AsyncGenerator[TrainingJob, None]:
        """A training job of the caller's tenant now, then at each change of its record
        (status, per-algorithm progress), ending once it succeeded or failed (admins only)."""
        await _authorize(info)
        principal = await require_admin(info.context)
        source = job_updates(info.context, principal.tenant_id, id)
        async for job in _live(info, principal, source):
            yield job
