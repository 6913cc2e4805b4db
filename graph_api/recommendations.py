"""Recommendation resolvers' logic: validate, cache, ask the RecommendationService, filter, hydrate.

Results are cached per (tenant, user, options) under ``rec:{tenant}:recs:{user}:{fingerprint}``,
stamped with the model epoch (see ``graph_api.result_cache``), so a new
interaction or a change of the user's preferences (read on a miss, from the user's row) can drop
exactly that user's entries and a promotion retires them all; hydration
goes through the items loader, one query per request however many items come back.
``similarItems`` and ``trendingItems`` lists are cached beside them, with their own TTLs.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import orjson
import strawberry

from graph_api.assignment import assign, assigned_now
from graph_api.auth import Principal
from graph_api.context import RequestContext
from graph_api.errors import BadUserInput, ObjectNotFound
from graph_api.feedback_recorder import new_recommendation_id
from graph_api.preferences import Preferences
from graph_api.row_cache import restore, snapshot
from graph_api.types import (
    EngineContribution,
    Item,
    ItemExplanation,
    RecommendationExplanation,
    RecommendationItem,
    RecommendationResult,
    SimilarItem,
)
from recommend.types import (
    HYBRID,
    HYBRID_STRATEGIES,
    AlgorithmCatalog,
    RecommendationRequest,
    RecommendationResponse,
    ScoredItem,
    Strategy,
)
from storage import repositories as repo
from storage.cache.base import tenant_key
from storage.cache.keys import model_epoch_key

Pairs = list[tuple[str, float]]
MAX_K = 100
# The newest items of a user sent with a request: engines fold in those their model lacks
# and exclude them all; older ones are in the trained model already.
HISTORY_LENGTH = 200
# minRating filters after scoring, so ask for more than needed; ratings are sparse.
MIN_RATING_OVERFETCH = 4
PAYLOAD_FORMAT = 3  # of the cached result (``_response_to_json``): 2 added explanations,
# 3 spells a weighted blend's strategy "weighted" (``Strategy``)
T = TypeVar("T")


@dataclass(frozen=True)
class RecommendationParams:
    algorithm: str = HYBRID
    k: int = 10
    diversify: bool = True
    explain: bool = False
    categories: tuple[str, ...] | None = None
    exclude_item_ids: tuple[str, ...] = ()
    min_rating: float | None = None
    weights: dict[str, float] | None = None
    strategy: str | None = None

    def validate(self, catalog: AlgorithmCatalog) -> None:
        if not catalog.knows(self.algorithm):
            known = ", ".join(catalog.names())
            raise BadUserInput(f"Unknown algorithm {self.algorithm!r}; known: {known}.")
        if self.strategy is not None and self.strategy not in HYBRID_STRATEGIES:
            raise BadUserInput(f"strategy must be one of {', '.join(HYBRID_STRATEGIES)}.")
        if not 1 <= self.k <= MAX_K:
            raise BadUserInput(f"numRecommendations must be between 1 and {MAX_K}.")
        if self.min_rating is not None and self.min_rating < 0.0:
            raise BadUserInput("minRating must not be negative.")
        for engine, weight in (self.weights or {}).items():
            if engine not in catalog.engines:
                raise BadUserInput(f"Unknown engine {engine!r} in weights.")
            if not 0.0 <= weight <= 100.0:
                raise BadUserInput("Engine weights must be between 0 and 100.")

    def fingerprint(self) -> str:
        # The payload's format is part of the key: a result cached by an older release (another
        # shape) is a miss rather than an error.
        fields = {**self.__dict__, "payload": PAYLOAD_FORMAT}
        payload = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(payload).hexdigest()[:16]


def user_cache_prefix(tenant_id: uuid.UUID, user_id: uuid.UUID) -> str:
    return tenant_key(tenant_id, "recs", user_id) + ":"


def result_key(tenant_id: uuid.UUID, user_id: uuid.UUID, params: RecommendationParams) -> str:
    """The value stored under it carries the model epoch it was computed under (see
    ``graph_api.result_cache``): a promotion makes older results misses."""
    return f"{user_cache_prefix(tenant_id, user_id)}{params.fingerprint()}"


def result_keys(principal: Principal, params: RecommendationParams) -> tuple[str, str]:
    """The result's key and its tenant's model-epoch key."""
    key = result_key(principal.tenant_id, principal.user_id, params)
    return key, model_epoch_key(principal.tenant_id)


def result_lookup(ctx: RequestContext, params: RecommendationParams) -> list[str]:
    """The cache keys ``recommend`` reads for the token's caller: for ``authorize(read_along=)``,
    so the account check and the result lookup share one round trip. Empty without a token."""
    principal = ctx.principal
    if principal is None:
        return []
    params = assigned_now(ctx.services.experiments, principal, params)
    return ctx.services.results.lookup_keys(*result_keys(principal, params))


def tenant_cache_prefix(tenant_id: uuid.UUID) -> str:
    return tenant_key(tenant_id, "recs") + ":"


def parse_uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as error:
        raise BadUserInput(f"{field} is not a valid id.") from error


async def recommend(
    ctx: RequestContext, principal: Principal, params: RecommendationParams, *, served: bool = True
) -> RecommendationResult:
    """The caller's list; ``served`` (the query, not a subscription's push) records it as an
    impression under the answer's ``recommendationId``. The tenant's defaults and a running
    experiment's variant may change the options (``graph_api.assignment``)."""
    params.validate(ctx.services.recommender.catalog)
    assigned = await assign(ctx.services.experiments, principal, params)
    params = assigned.params
    if params.min_rating is not None:  # on the tenant's rating scale, as averages are shown
        highest = (await ctx.loaders.rating_scale()).high
        if params.min_rating > highest:
            raise BadUserInput(f"minRating must be between 0 and {highest:g}.")
    started = time.perf_counter()
    results = ctx.services.results

    async def compute() -> dict[str, Any]:
        preferences = await _preferences(ctx, principal)
        response = await _ask_recommender(ctx, principal, params, preferences)
        rows = await _item_rows(ctx, response)
        return _response_to_json(_without_excluded(response, rows, preferences), rows)

    key, epoch_key = result_keys(principal, params)
    # Read with the account check when the resolver asked for them (``result_lookup``): a
    # hit then costs that one round trip. Taken, not kept: a subscription re-reads each time.
    lookup = results.lookup_keys(key, epoch_key)
    known = {k: ctx.read_ahead.pop(k) for k in lookup if k in ctx.read_ahead}
    payload, cached = await results.get_or_compute(
        key, compute, epoch_key=epoch_key, known=known or None
    )
    # The cached payload carries the item rows too: a hit reads nothing else. (Any item change
    # drops the tenant's cached results, so the rows in them are never older than the list.)
    response, rows = _response_from_json(payload)
    ctx.services.metrics.record_cache(hit=cached, tenant_id=principal.tenant_id)
    items = await _hydrate(ctx, response, params, rows)
    elapsed_ms = max((time.perf_counter() - started) * 1000.0, 1e-3)
    explanation = RecommendationExplanation(
        strategy=response.strategy,
        engines_used=response.engines_used,
        engines_failed=response.engines_failed,
        model_version=response.model_version,
        cached=cached,
        recommended=items,
    )
    recommendation_id = record_served(
        ctx,
        principal,
        "recommendations",
        [str(entry.item.id) for entry in items],
        strategy=str(response.strategy),
        algorithm=response.algorithm,
        engines=response.engines_used,
        model_version=response.model_version,
        experiment_id=assigned.experiment_id,
        variant=assigned.variant,
        record=served,
    )
    return RecommendationResult(
        items=items,
        algorithm=response.algorithm,
        generated_at=datetime.now(UTC),
        response_time_ms=elapsed_ms,
        total_count=len(items),
        explanation=explanation,
        recommendation_id=strawberry.ID(str(recommendation_id)),
        variant=assigned.variant,
    )


def record_served(
    ctx: RequestContext,
    principal: Principal,
    surface: str,
    items: list[str],
    *,
    record: bool = True,
    **how: Any,
) -> uuid.UUID:
    """The list's ``recommendationId``, its impression queued when ``record`` (and the app
    records feedback)."""
    feedback = ctx.services.feedback
    if feedback is None or not record:
        return new_recommendation_id()
    return feedback.served(
        tenant_id=principal.tenant_id, user_id=principal.user_id, surface=surface, items=items,
        **how,
    )  # fmt: skip


async def _ask_recommender(
    ctx: RequestContext,
    principal: Principal,
    params: RecommendationParams,
    preferences: Preferences,
) -> RecommendationResponse:
    history = await _history(ctx, principal)
    fetch = params.k * MIN_RATING_OVERFETCH if params.min_rating is not None else params.k
    request = RecommendationRequest(
        tenant_id=str(principal.tenant_id),
        user_id=str(principal.user_id),
        algorithm=params.algorithm,
        k=min(fetch, MAX_K * MIN_RATING_OVERFETCH),
        diversify=params.diversify,
        explain=params.explain,
        categories=params.categories,
        exclude_item_ids=params.exclude_item_ids,
        exclude_categories=preferences.excluded_categories,
        preferred_categories=preferences.favorite_categories,
        weights=params.weights,
        history=history,
        strategy=None if params.strategy is None else Strategy(params.strategy),
    )
    return await ctx.services.recommender.recommend(request)


async def _history(ctx: RequestContext, principal: Principal) -> tuple[str, ...]:
    """Newest first: the items the user interacted with or rated (a rating is an interaction
    whose weight grows with the rating, as in training), one bounded query."""
    items = await ctx.services.database.read(
        lambda session: repo.recent_items(
            session=session,
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            limit=HISTORY_LENGTH,
        )
    )
    return tuple(str(item) for item in items)


async def _preferences(ctx: RequestContext, principal: Principal) -> Preferences:
    """The caller's preferences, from their (cached) row: ``updatePreferences`` drops both
    that row and the user's cached results, so a change counts from the next request."""
    row = await ctx.loaders.users.load(principal.user_id)
    return Preferences.from_stored(row.preferences if row is not None else None)


def _without_excluded(
    response: RecommendationResponse, rows: list[Any], preferences: Preferences
) -> RecommendationResponse:
    """The engines filter excluded categories by the categories they were trained with; an item
    moved into one since then is dropped here, by its current row."""
    excluded = set(preferences.excluded_categories)
    if not excluded:
        return response
    dropped = {str(row.id) for row in rows if row.category in excluded}
    kept = [scored for scored in response.items if scored.item_id not in dropped]
    return replace(response, items=kept)


async def _item_rows(ctx: RequestContext, response: RecommendationResponse) -> list[Any]:
    """The rows of the listed items and of their "because" items, in one loader batch."""
    ids = [_safe_uuid(scored.item_id) for scored in response.items]
    because = [_safe_uuid(i) for s in response.items for i in s.because_item_ids]
    wanted = list(dict.fromkeys(i for i in (*ids, *because) if i is not None))
    return [row for row in await ctx.loaders.items.load_many(wanted) if row is not None]


async def _hydrate(
    ctx: RequestContext,
    response: RecommendationResponse,
    params: RecommendationParams,
    rows: list[Any],
) -> list[RecommendationItem]:
    ids = [_safe_uuid(scored.item_id) for scored in response.items]
    by_id = {row.id: row for row in rows}
    strategy = response.strategy
    averages: dict[uuid.UUID, float | None] = {}
    if params.min_rating is not None:
        found = list(by_id)
        averages = dict(zip(found, await ctx.loaders.average_rating.load_many(found), strict=True))
    result: list[RecommendationItem] = []
    for scored, item_id in zip(response.items, ids, strict=True):
        row = by_id.get(item_id) if item_id is not None else None
        if row is None:  # deleted since training, or not this tenant's: never shown
            continue
        if params.min_rating is not None and (averages.get(row.id) or 0.0) < params.min_rating:
            continue
        because = [by_id.get(i) for i in map(_safe_uuid, scored.because_item_ids) if i]
        because_rows = [r for r in because if r is not None]
        result.append(
            RecommendationItem(
                item=Item.from_row(row),
                score=float(scored.score),
                reason=_titled_reason(scored, by_id) if params.explain else None,
                engine_scores=dict(scored.engine_scores),
                explain=_once(partial(_item_explanation, row.id, scored, strategy, because_rows)),
            )
        )
    return result[: params.k]


def _once(make: Callable[[], T]) -> Callable[[], T]:
    """``make``'s value, made on the first call only (``functools.cache`` would build an LRU
    wrapper per item, which cost a cached request more than most of its fields)."""
    made: list[T] = []

    def value() -> T:
        if not made:
            made.append(make())
        return made[0]

    return value


def _item_explanation(
    item_id: uuid.UUID, scored: ScoredItem, strategy: Strategy, because: list[Any]
) -> ItemExplanation:
    return ItemExplanation(
        item_id=item_id,
        contributions=[
            EngineContribution(
                engine=engine, share=share, score=float(scored.engine_scores.get(engine, 0.0))
            )
            for engine, share in scored.engine_shares.items()
        ],
        strategy=strategy,
        because_of=[Item.from_row(row) for row in because],
    )


def _titled_reason(scored: ScoredItem, items: dict[uuid.UUID, Any]) -> str | None:
    """The engines name the item behind a recommendation by id; people read its title."""
    first = scored.because_item_ids[0] if scored.because_item_ids else None
    because = _safe_uuid(first) if first else None
    row = items.get(because) if because is not None else None
    if scored.reason is None or row is None or first is None:
        return scored.reason
    return scored.reason.replace(first, row.title)


async def similar_items(ctx: RequestContext, item_id: Any, top_k: int) -> list[SimilarItem]:
    principal = await ctx.authorize()
    if not 1 <= top_k <= MAX_K:
        raise BadUserInput(f"topK must be between 1 and {MAX_K}.")
    item_uuid = parse_uuid(item_id, "itemId")
    if await ctx.loaders.items.load(item_uuid) is None:
        raise ObjectNotFound("Item not found.")

    async def compute() -> Pairs:
        return await ctx.services.recommender.similar_items(
            tenant_id=str(principal.tenant_id), item_id=str(item_uuid), k=top_k
        )

    key = tenant_key(principal.tenant_id, "recs", "similar", item_uuid, top_k)
    ttl = ctx.services.settings.cache_similar_ttl_seconds
    pairs = await _cached_pairs(ctx, principal, key, ttl, compute)
    return _served_pairs(
        ctx, principal, "similarItems", await hydrate_pairs(ctx, pairs, exclude=item_uuid)
    )


def _served_pairs(
    ctx: RequestContext, principal: Principal, surface: str, listed: list[SimilarItem]
) -> list[SimilarItem]:
    served = record_served(ctx, principal, surface, [str(entry.item.id) for entry in listed])
    identifier = strawberry.ID(str(served))
    for entry in listed:
        entry.recommendation_id = identifier
    return listed


async def trending_items(
    ctx: RequestContext, principal: Principal, category: str | None, limit: int
) -> list[SimilarItem]:
    async def compute() -> Pairs:
        return await ctx.services.recommender.trending(
            tenant_id=str(principal.tenant_id), category=category, limit=limit
        )

    digest = hashlib.sha256(orjson.dumps(category)).hexdigest()[:16]
    key = tenant_key(principal.tenant_id, "recs", "top", digest, limit)
    ttl = ctx.services.settings.cache_trending_ttl_seconds
    listed = await hydrate_pairs(ctx, await _cached_pairs(ctx, principal, key, ttl, compute))
    return _served_pairs(ctx, principal, "trendingItems", listed)


async def _cached_pairs(
    ctx: RequestContext,
    principal: Principal,
    key: str,
    ttl: float,
    compute: Callable[[], Awaitable[Pairs]],
) -> Pairs:
    """A list of ``(item id, score)`` from the result cache (``ttl`` 0: always computed).

    The key lives under the tenant's results prefix and the value carries the model epoch, so
    an item change drops it and a new model version retires it, as recommendations are.
    """
    if ttl <= 0:
        return await compute()
    epoch_key = model_epoch_key(principal.tenant_id)
    pairs, cached = await ctx.services.results.get_or_compute(
        key, compute, epoch_key=epoch_key, ttl=float(ttl)
    )
    ctx.services.metrics.record_cache(hit=cached, tenant_id=principal.tenant_id)
    return [(str(item_id), float(score)) for item_id, score in pairs]


async def hydrate_pairs(
    ctx: RequestContext, pairs: Pairs, exclude: uuid.UUID | None = None
) -> list[SimilarItem]:
    ids = [_safe_uuid(item_id) for item_id, _ in pairs]
    rows = await ctx.loaders.items.load_many([i for i in ids if i is not None])
    by_id = {row.id: row for row in rows if row is not None}
    return [
        SimilarItem(item=Item.from_row(by_id[item_id]), score=float(score))
        for item_id, (_, score) in zip(ids, pairs, strict=True)
        if item_id in by_id and item_id != exclude
    ]


def _safe_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _response_to_json(response: RecommendationResponse, rows: list[Any]) -> dict[str, Any]:
    return {
        "rows": [snapshot("item", row) for row in rows],
        "algorithm": response.algorithm,
        "engines_used": response.engines_used,
        "engines_failed": response.engines_failed,
        "model_version": response.model_version,
        "strategy": response.strategy,
        "items": [
            [s.item_id, s.score, s.engine_scores, s.reason, s.because_item_ids, s.engine_shares]
            for s in response.items
        ],
    }


def _response_from_json(data: dict[str, Any]) -> tuple[RecommendationResponse, list[Any]]:
    response = RecommendationResponse(
        items=[
            ScoredItem(i, s, dict(e), r, tuple(b), dict(shares))
            for i, s, e, r, b, shares in data["items"]
        ],
        algorithm=data["algorithm"],
        engines_used=list(data["engines_used"]),
        engines_failed=list(data["engines_failed"]),
        model_version=data["model_version"],
        strategy=Strategy(data["strategy"]),
    )
    return response, [restore(values) for values in data["rows"]]
