"""The recommendation step, written once: choose engines, fan out, blend, fall back, filter,
diversify, explain.

It is free of any transport. It talks to an ``Engines`` object: the combiner deployment passes
one over Serve handles (``deployments.combiner.ServeEngines``); the single-process app, the tests
and the benchmarks pass in-process models (``recommend.inprocess.InProcessEngines``). What the
benchmarks measure is therefore what the API serves.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from recommend.cold import EXPLORE, ColdSource, exploration_slots
from recommend.fanout import FanOutResult, fan_out, first_answer
from recommend.model_cache import version_label
from recommend.options import ServingOptions
from recommend.scoring import EngineQuery, Pairs, SimilarityQuery, SimilarQuery, make_filter
from recommend.types import (
    HYBRID,
    AlgorithmCatalog,
    ItemContent,
    RecommendationRequest,
    RecommendationResponse,
    ScoredItem,
    Strategy,
)
from recommend.vector_similar import VectorSimilar
from storage import meters
from storage.tracing import extract, tracer
from training.algorithms import ALGORITHMS, ALIASES, non_personal, similarity_engines
from training.hybrid import (
    HybridItem,
    engine_shares,
    explain,
    mmr_diversify,
    switching_hybrid,
    weighted_hybrid,
)


class Engines(Protocol):
    """The engines the step may ask; ``call`` mirrors the engine deployment's methods."""

    names: tuple[str, ...]

    async def versions(self, tenant_id: str, names: Sequence[str]) -> dict[str, str]:
        """Each engine's promoted version for the tenant; untrained engines are left out."""
        ...

    def call(
        self, engine: str, method: str, tenant_id: str, version: str, query: Any
    ) -> Awaitable[Any]: ...

    async def blend(self, tenant_id: str) -> dict[str, float] | None:
        """The tenant's tuned hybrid weights (written by training), or None."""
        ...

    def invalidate(self, tenant_id: str | None = None) -> None: ...


# History items an explanation names per recommended item ("because you liked ...").
BECAUSE_ITEMS = 3


def catalog_for(engines: Sequence[str]) -> AlgorithmCatalog:
    """What requests may name when ``engines`` are served (from the algorithm registry)."""
    served = tuple(e for e in engines if e in ALGORITHMS)
    aliases = {a: tuple(e for e in m if e in served) for a, m in ALIASES.items()}
    return AlgorithmCatalog(served, {a: m for a, m in aliases.items() if m})


@dataclass(frozen=True)
class Similarity:
    """Cosine-like similarity of ``rows`` (candidates) to ``cols`` (candidates, then history)."""

    rows: Sequence[str]
    cols: Sequence[str]
    matrix: np.ndarray

    def pair(self, a: str, b: str) -> float:
        try:
            return float(self.matrix[self.rows.index(a), self.cols.index(b)])
        except ValueError:
            return 0.0

    def most_similar(self, item: str, among: Sequence[str], count: int) -> list[str]:
        """Up to ``count`` of ``among`` with a positive similarity to ``item``, most first."""
        scored = [(self.pair(item, other), other) for other in among if other != item]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda pair: -pair[0])
        return [other for _, other in ranked[:count]]


class RecommendationStep:
    """``recommend.types.RecommendationService``'s read side over any ``Engines``.

    ``cold`` (``recommend.cold.ColdSource``) is the last fallback, asked only when no trained
    engine answers, and the source of the exploration slots for items newer than the last
    training; without it an untrained tenant gets empty lists.
    """

    def __init__(
        self,
        engines: Engines,
        options: ServingOptions | None = None,
        vectors: VectorSimilar | None = None,
        cold: ColdSource | None = None,
    ) -> None:
        self.engines = engines
        self.options = options or ServingOptions()
        self.catalog = catalog_for(engines.names)
        self._vectors = vectors
        self._cold = cold
        # popularity before trending: the engine that answers anybody, whatever the time
        self._fallback = sorted(non_personal(self.catalog.engines), key=_by_recency)[:1]
        self._similar = similarity_engines(self.catalog.engines)

    # ---- recommendations ---------------------------------------------------------------------
    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        label = request.algorithm if self.catalog.knows(request.algorithm) else "unknown"
        started = time.perf_counter()
        status = "error"
        with tracer().start_as_current_span(
            "recommend", context=extract(request.trace), attributes={"algorithm": label}
        ):
            try:
                response = await self._recommend_with_preferences(request)
                status = "degraded" if response.engines_failed else "ok"
                return response
            finally:
                elapsed = time.perf_counter() - started
                meters.recommendation(label, request.tenant_id, status, elapsed)

    async def _recommend_with_preferences(
        self, request: RecommendationRequest
    ) -> RecommendationResponse:
        """A user with no history starts from their favourite categories: the step restricted
        to them first, then the unrestricted list fills the rest (both through every filter)."""
        preferred = request.preferred_categories
        if request.categories:  # the request's own filter narrows the favourites
            preferred = tuple(c for c in preferred if c in request.categories)
        plain = replace(request, preferred_categories=())
        if request.history or not preferred:
            return await self._recommend(plain)
        first = await self._recommend(replace(plain, categories=preferred))
        rest = await self._recommend(plain)
        listed = {item.item_id for item in first.items}
        items = [*first.items, *(item for item in rest.items if item.item_id not in listed)]
        return RecommendationResponse(
            items=items[: request.k],
            algorithm=request.algorithm,
            engines_used=list(dict.fromkeys([*first.engines_used, *rest.engines_used])),
            engines_failed=list(dict.fromkeys([*first.engines_failed, *rest.engines_failed])),
            model_version=first.model_version or rest.model_version,
        )

    async def _recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        if not self.catalog.knows(request.algorithm):
            raise ValueError(f"unknown algorithm {request.algorithm!r}")
        weights = await self._weights(request)
        names = [n for n in weights if n in self.catalog.engines]
        versions = await self.engines.versions(request.tenant_id, [*names, *self._fallback])
        trained = [n for n in names if n in versions]
        query = self._engine_query(request, blended=len(trained) > 1)
        outcome = await self._ask(request, trained, versions, query)
        answered = {name: recs for name, recs in outcome.results.items() if recs}
        fallback = [n for n in self._fallback if n in versions and n not in trained]
        cold = not answered
        if not answered and fallback:
            # Nothing to say (cold user, failures): the engine that answers anybody does.
            extra = await self._ask(request, fallback, versions, query)
            answered = {n: recs for n, recs in extra.results.items() if recs}
            outcome.failed.extend(extra.failed)
            weights = {n: 1.0 for n in answered}
        trained_answer = bool(answered)
        if not answered and self._cold is not None:
            # No trained engine has anything: the database and the content vectors answer.
            answered = await self._cold.recommend(request, query.k)
            weights = {n: 1.0 for n in answered}
        candidates = self._blend(answered, weights, request)
        used = list(answered)
        if trained_answer:
            candidates, explored = await self._explore(request, candidates)
            used += [EXPLORE] if explored else []
        similarity = await self._similarity(request, candidates)
        return RecommendationResponse(
            items=self._finish(candidates, request, similarity),
            algorithm=request.algorithm,
            engines_used=used,
            engines_failed=outcome.failed,
            model_version=version_label({n: versions[n] for n in answered if n in versions}),
            strategy=self._strategy(request, answered, cold=cold),
        )

    def _strategy(
        self, request: RecommendationRequest, answered: Mapping[str, Pairs], *, cold: bool
    ) -> Strategy:
        """How the list was made: ``cold`` when no
        engine asked first had anything for the user, so a fallback answered."""
        hybrid = request.algorithm == HYBRID
        if cold or (hybrid and not request.history):
            return Strategy.COLD_START
        if hybrid and (request.strategy or self.options.hybrid.strategy) == Strategy.SWITCHING:
            return Strategy.SWITCHING
        return Strategy.WEIGHTED if hybrid or len(answered) > 1 else Strategy.ENGINE

    async def _explore(
        self, request: RecommendationRequest, candidates: list[HybridItem]
    ) -> tuple[list[HybridItem], bool]:
        """The last ``exploration_slots`` of the top ``k`` go to items newer than the last
        training nearest to the user's history, when the tenant has any."""
        if self._cold is None or not await self._cold.has_fresh(request.tenant_id):
            return candidates, False
        slots = exploration_slots(request.k, self._cold.exploration_share)
        kept = request.k - slots
        listed = [item.item_id for item in candidates[:kept]]
        fresh = await self._cold.fresh_for_user(request, slots, listed)
        if not fresh:
            return candidates, False
        new = [HybridItem(item, score, {EXPLORE: score}) for item, score in fresh]
        taken = {item for item, _ in fresh}
        rest = [item for item in candidates[kept:] if item.item_id not in taken]
        return [*candidates[:kept], *new, *rest], True

    async def _weights(self, request: RecommendationRequest) -> dict[str, float]:
        """Engine -> weight for this request, in the order the engines are asked."""
        if request.algorithm != HYBRID:
            return {name: 1.0 for name in self.catalog.engines_of(request.algorithm)}
        hybrid = self.options.hybrid
        if (request.strategy or hybrid.strategy) == Strategy.SWITCHING:
            return {engine: 1.0 for engine in hybrid.engines()}
        interactions = len(request.history) if request.history is not None else hybrid.warm_at
        tenant = None
        if hybrid.per_tenant and not request.weights:
            tenant = await self.engines.blend(request.tenant_id)
        return hybrid.weights_for(interactions, request.weights, tenant)

    def _engine_query(self, request: RecommendationRequest, *, blended: bool) -> EngineQuery:
        # A blend needs each engine's deeper list (an item 15th for two engines can win);
        # MMR needs more candidates than it keeps.
        wanted = request.k * 3 if request.diversify else request.k
        depth = max(self.options.hybrid.depth, wanted) if blended else wanted
        return EngineQuery(
            user_id=request.user_id,
            k=depth,
            exclude_seen=True,
            filter=make_filter(
                request.categories,
                request.exclude_item_ids,
                exclude_categories=request.exclude_categories,
            ),
            history=request.history,
        )

    async def _ask(
        self,
        request: RecommendationRequest,
        names: list[str],
        versions: Mapping[str, str],
        query: EngineQuery,
    ) -> FanOutResult:
        from_vectors = await self._vector_candidates(request, names, query.k)
        calls = {
            n: (
                lambda n=n: self.engines.call(n, "recommend", request.tenant_id, versions[n], query)
            )
            for n in names
            if n not in from_vectors
        }
        outcome = await fan_out(calls, self.options.engine_timeout_s)
        outcome.results.update(from_vectors)
        return outcome

    async def _vector_candidates(
        self, request: RecommendationRequest, names: list[str], k: int
    ) -> dict[str, Pairs]:
        """With a vector server, engines whose user profile is a mean of item vectors are
        answered by a nearest-neighbour search instead of scoring the whole catalogue."""
        if self._vectors is None or not request.history:
            return {}
        found: dict[str, Pairs] = {}
        for name in names:
            if not ALGORITHMS[name].candidates_from_vectors:
                continue
            hits = await self._vectors.content_candidates(
                request.tenant_id,
                request.history,
                k,
                exclude=request.exclude_item_ids,
                categories=request.categories,
                exclude_categories=request.exclude_categories,
            )
            if hits is not None:
                found[name] = hits
        return found

    def _blend(
        self,
        answered: Mapping[str, Pairs],
        weights: Mapping[str, float],
        request: RecommendationRequest,
    ) -> list[HybridItem]:
        """Blended candidates, more than ``k`` when diversifying (MMR picks among them)."""
        depth = request.k * 3 if request.diversify else request.k
        hybrid = self.options.hybrid
        if len(answered) == 1:
            # One engine: its own order and scores, nothing to normalise against.
            [(engine, recs)] = answered.items()
            return [HybridItem(i, float(s), {engine: float(s)}) for i, s in recs[:depth]]
        if (
            request.algorithm == HYBRID
            and (request.strategy or hybrid.strategy) == Strategy.SWITCHING
        ):
            count = len(request.history or ())
            return switching_hybrid(answered, count, hybrid.switch_at, depth)
        return weighted_hybrid(answered, weights, depth, method=hybrid.normalisation)

    async def _similarity(
        self, request: RecommendationRequest, candidates: list[HybridItem]
    ) -> Similarity | None:
        """Item similarity from the first similarity engine, only when MMR or "because" needs it:
        among the candidates (MMR), and to the history only when explaining (a history has
        up to 200 items, the candidates 3k: most requests need the small square only)."""
        because = bool(request.explain and request.history)
        if not candidates or not (request.diversify or because):
            return None
        rows = tuple(item.item_id for item in candidates)
        query = SimilarityQuery(rows, (*rows, *(request.history or ())) if because else rows)
        matrix = await self._first_answer(
            request.tenant_id, "similarity", query, usable=lambda found: bool(np.any(found))
        )
        return (
            Similarity(query.rows, query.cols, np.asarray(matrix)) if matrix is not None else None
        )

    def _finish(
        self,
        candidates: list[HybridItem],
        request: RecommendationRequest,
        similarity: Similarity | None,
    ) -> list[ScoredItem]:
        """Diversify (when asked and similarity is known), cut to ``k``, attach explanations."""
        chosen = candidates
        if request.diversify and similarity is not None:
            chosen = mmr_diversify(candidates, similarity.pair, self.options.mmr_lambda, request.k)
        history = list(request.history or ())
        items = []
        for item in chosen[: request.k]:
            because: tuple[str, ...] = ()
            if request.explain and similarity is not None and history:
                because = tuple(similarity.most_similar(item.item_id, history, BECAUSE_ITEMS))
            reason = explain(item.engine_scores, because[0] if because else None)
            items.append(
                ScoredItem(
                    item_id=item.item_id,
                    score=float(item.score),
                    engine_scores={e: float(s) for e, s in item.engine_scores.items()},
                    reason=reason if request.explain else None,
                    because_item_ids=because,
                    engine_shares=engine_shares(item.engine_scores),
                )
            )
        return items

    # ---- similar and trending items -----------------------------------------------------------
    async def similar_items(self, *, tenant_id: str, item_id: str, k: int) -> Pairs:
        found = await self._trained_similar(tenant_id, item_id, k)
        if self._cold is None:
            return found
        if not found:  # untrained tenant, or an item newer than the models: content vectors
            return await self._cold.similar(tenant_id, item_id, k)
        if not await self._cold.has_fresh(tenant_id):
            return found
        slots = exploration_slots(k, self._cold.exploration_share)
        kept = [pair for pair in found if pair[0] != item_id][: k - slots]
        listed = [item_id, *(i for i, _ in kept)]
        fresh = await self._cold.fresh_near_item(tenant_id, item_id, slots, listed)
        taken = {*listed, *(i for i, _ in fresh)}
        return [*kept, *fresh, *(p for p in found if p[0] not in taken)][:k]

    async def _trained_similar(self, tenant_id: str, item_id: str, k: int) -> Pairs:
        if self._vectors is not None:
            found = await self._vectors.similar(tenant_id, item_id, k)
            if found is not None:
                return found
        answer = await self._first_answer(tenant_id, "similar_items", SimilarQuery(item_id, k))
        return list(answer or [])

    async def trending(self, *, tenant_id: str, category: str | None, limit: int) -> Pairs:
        query = EngineQuery(
            k=limit, exclude_seen=False, filter=make_filter([category] if category else None)
        )
        ordered = sorted(non_personal(self.catalog.engines), key=_by_recency, reverse=True)
        answer = await self._first_answer(tenant_id, "top_items", query, names=ordered)
        if not answer and self._cold is not None:
            return await self._cold.trending(tenant_id, category, limit)
        return list(answer or [])

    # ---- item writes -------------------------------------------------------------------------
    async def items_changed(self, tenant_id: str, items: list[ItemContent]) -> None:
        if self._cold is not None:
            await self._cold.items_changed(tenant_id, items)

    async def items_deleted(self, tenant_id: str, item_ids: list[str]) -> None:
        if self._cold is not None:
            await self._cold.items_deleted(tenant_id, item_ids)

    async def _first_answer(
        self,
        tenant_id: str,
        method: str,
        query: Any,
        *,
        names: Sequence[str] | None = None,
        usable: Any = bool,
    ) -> Any:
        """The first usable answer among ``names`` (default: the similarity engines) in order."""
        names = list(self._similar if names is None else names)
        versions = await self.engines.versions(tenant_id, names)
        calls = {
            n: (lambda n=n: self.engines.call(n, method, tenant_id, versions[n], query))
            for n in names
            if n in versions
        }
        _, answer, _ = await first_answer(calls, self.options.engine_timeout_s, usable=usable)
        return answer


def _by_recency(name: str) -> bool:
    return ALGORITHMS[name].ranks_by_recency
