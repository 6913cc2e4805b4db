"""The whole recommendation path in one process, with no Ray: the single-process server.

``LocalRecommender`` implements ``graph_api.recommender.Recommender`` with the same pieces the
Serve deployments use (``scoring`` per engine, ``blend`` to merge, ``fanout`` for deadlines and
dropping failed engines, ``models`` for versions and loading), only called directly instead of
through deployment handles. Benchmarks compare it with the Serve app; small installs can run it.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from deployments.blend import Similarity, blend_candidates, finish
from deployments.fanout import FanOutResult, fan_out, first_answer
from deployments.models import ModelSource, VersionCache, resolve_source, version_label
from deployments.scoring import (
    EngineQuery,
    as_pairs,
    non_personal_top,
    run_queries,
    similarity_matrix,
)
from deployments.vector_similar import VectorSimilar
from graph_api.recommender import RecommendationRequest, RecommendationResponse, TrainingJob
from storage.settings import Settings

if TYPE_CHECKING:
    from training.algorithms.base import Recommender as Model

FALLBACK = "popularity"
SIMILAR_ENGINES = ("item_knn", "ease", "als", "content")
CANDIDATE_FACTOR = 3  # as the combiner: blending and MMR need more than k candidates


class LocalRecommender:
    """Engines as in-process models, loaded on first use and kept per (tenant, engine, version)."""

    def __init__(
        self,
        settings: Settings,
        engines: Sequence[str],
        *,
        source: ModelSource | None = None,
        engine_timeout_s: float = 2.0,
        version_ttl_s: float = 2.0,
        default_weights: dict[str, float] | None = None,
        train_entrypoint: str = "training.pipeline:train_tenant",
        vectors: VectorSimilar | None = None,
    ) -> None:
        self._train_entrypoint = train_entrypoint
        self._vectors = vectors or VectorSimilar(settings)
        self._settings = settings
        self._engines = list(dict.fromkeys(engines))
        self._source = resolve_source(source, settings)
        self._versions = VersionCache(self._source, version_ttl_s)
        self._timeout_s = engine_timeout_s
        self._weights = dict(default_weights or {})
        self._models: dict[tuple[str, str, str], Model] = {}
        self._loading: dict[tuple[str, str, str], asyncio.Future[Model]] = {}

    async def _model(self, tenant_id: str, engine: str, version: str) -> Model:
        key = (tenant_id, engine, version)
        if (model := self._models.get(key)) is not None:
            return model
        task = self._loading.get(key)
        if task is None:
            # Concurrent first requests share one load instead of each reading the artifact.
            task = asyncio.ensure_future(self._load(key))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, key: tuple[str, str, str]) -> Model:
        model = await asyncio.to_thread(self._source.load, *key)
        # Stored before the task completes, so no request can miss both the model and the task.
        # Older versions of this engine are never asked again once a newer one is current.
        for stale in [k for k in self._models if k[:2] == key[:2]]:
            del self._models[stale]
        self._models[key] = model
        return model

    async def _versions_for(self, tenant_id: str, names: Sequence[str]) -> dict[str, str]:
        def lookup() -> dict[str, str]:
            found = {name: self._versions.get(tenant_id, name) for name in names}
            return {name: version for name, version in found.items() if version is not None}

        return await asyncio.to_thread(lookup)

    async def _run(self, tenant_id: str, engine: str, version: str, job: Any, *args: Any) -> Any:
        model = await self._model(tenant_id, engine, version)
        return await asyncio.to_thread(job, model, *args)

    async def _ask(
        self, tenant_id: str, names: list[str], versions: dict[str, str], query: EngineQuery
    ) -> FanOutResult:
        def one(model: Model, q: EngineQuery) -> list[tuple[str, float]]:
            return run_queries(model, [q])[0]

        calls = {n: (lambda n=n: self._run(tenant_id, n, versions[n], one, query)) for n in names}
        return await fan_out(calls, self._timeout_s)

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        if request.algorithm != "hybrid" and request.algorithm not in self._engines:
            raise ValueError(f"unknown algorithm {request.algorithm!r}")
        hybrid = [n for n in self._engines if n != "trending"]
        names = hybrid if request.algorithm == "hybrid" else [request.algorithm]
        wanted = [*names, FALLBACK] if FALLBACK in self._engines else names
        versions = await self._versions_for(request.tenant_id, list(dict.fromkeys(wanted)))
        query = _engine_query(request)
        trained = [name for name in names if name in versions]
        outcome = await self._ask(request.tenant_id, trained, versions, query)
        answered = {name: recs for name, recs in outcome.results.items() if recs}
        if not answered and FALLBACK in versions and FALLBACK not in names:
            fallback = await self._ask(request.tenant_id, [FALLBACK], versions, query)
            answered = {n: recs for n, recs in fallback.results.items() if recs}
            outcome.failed.extend(fallback.failed)
        candidates = blend_candidates(answered, request, self._weights)
        similarity = None
        if candidates and (request.diversify or (request.explain and request.history)):
            similarity = await self._similarity(request, [c.item_id for c in candidates])
        return RecommendationResponse(
            items=finish(candidates, request, similarity),
            algorithm=request.algorithm,
            engines_used=list(answered),
            engines_failed=outcome.failed,
            model_version=version_label({n: versions[n] for n in answered}),
        )

    async def _first_answer(
        self, tenant_id: str, names: Sequence[str], job: Any, *args: Any, usable: Any = bool
    ) -> Any:
        available = [n for n in names if n in self._engines]
        versions = await self._versions_for(tenant_id, available)
        calls = {
            n: (lambda n=n: self._run(tenant_id, n, versions[n], job, *args))
            for n in available
            if n in versions
        }
        _, answer, _ = await first_answer(calls, self._timeout_s, usable=usable)
        return answer

    async def _similarity(
        self, request: RecommendationRequest, rows: list[str]
    ) -> Similarity | None:
        cols = [*rows, *(request.history or ())]
        matrix = await self._first_answer(
            request.tenant_id,
            SIMILAR_ENGINES,
            similarity_matrix,
            rows,
            cols,
            usable=lambda found: bool(np.any(found)),
        )
        return Similarity(rows, cols, np.asarray(matrix)) if matrix is not None else None

    async def similar_items(
        self, *, tenant_id: str, item_id: str, k: int
    ) -> list[tuple[str, float]]:
        if (found := await self._vectors.similar(tenant_id, item_id, k)) is not None:
            return found

        def similar(model: Model, item: str, count: int) -> list[tuple[str, float]]:
            return as_pairs(model.similar_items(item, count))

        answer = await self._first_answer(tenant_id, SIMILAR_ENGINES, similar, item_id, k)
        return answer or []

    async def trending(
        self, *, tenant_id: str, category: str | None, limit: int
    ) -> list[tuple[str, float]]:
        query = EngineQuery.from_payload(
            {"k": limit, "categories": [category] if category else None, "exclude_seen": False}
        )
        answer = await self._first_answer(
            tenant_id, ("trending", "popularity"), non_personal_top, query
        )
        return answer or []

    async def train(self, *, tenant_id: str, algorithms: list[str] | None) -> TrainingJob:
        """Trains in this process and returns when done: there is no cluster to hand it to."""
        module_name, _, attribute = self._train_entrypoint.partition(":")
        # Imported by name, as the Serve side does: serving code never loads the pipeline.
        train = getattr(importlib.import_module(module_name), attribute)
        result = await asyncio.to_thread(train, self._settings, tenant_id, algorithms)
        self._versions.invalidate(tenant_id)
        versions = {str(k): str(v) for k, v in result.versions.items()}
        return TrainingJob(
            job_id=uuid.uuid4().hex,
            tenant_id=tenant_id,
            algorithms=list(versions),
            status="succeeded",
            model_version=version_label(versions),
            metrics={str(a): dict(m) for a, m in result.metrics.items()},
        )


def _engine_query(request: RecommendationRequest) -> EngineQuery:
    payload = {
        "user_id": request.user_id,
        "k": request.k * CANDIDATE_FACTOR,
        "exclude_seen": True,
        "categories": list(request.categories) if request.categories is not None else None,
        "exclude_item_ids": list(request.exclude_item_ids),
        "history": list(request.history) if request.history is not None else None,
    }
    return EngineQuery.from_payload(payload)
