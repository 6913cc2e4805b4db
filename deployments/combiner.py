"""The hybrid combiner: one request in, several engines out, one blended answer back.

It resolves each engine's current model version for the tenant (cached briefly), calls the
engines concurrently with a per-engine deadline, drops the ones that fail, blends the rest with
``training.hybrid`` and returns the dict form of ``RecommendationResponse``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.blend import Similarity, blend_candidates, finish
from deployments.fanout import FanOutResult, failed_calls, fan_out, first_answer
from deployments.models import (
    ModelSource,
    VersionCache,
    model_id,
    resolve_source,
    version_label,
)
from deployments.ray_metrics import install_ray_metrics
from deployments.scoring import as_pairs
from deployments.training_jobs import TrainingJobs
from deployments.vector_similar import VectorSimilar
from deployments.version_events import VersionEvents
from graph_api.recommender import RecommendationRequest, RecommendationResponse
from storage import meters
from storage.settings import Settings
from storage.tracing import configure_tracing, extract, inject, tracer
from training.hybrid import HybridItem

FALLBACK = "popularity"
NON_PERSONAL = ("trending", "popularity")


class CombinerConfig(BaseModel):
    engine_timeout_s: float = Field(default=2.0, gt=0)
    version_ttl_s: float = Field(default=2.0, ge=0)
    # Engines fetch more than k so blending and MMR have candidates to choose from.
    candidate_factor: int = Field(default=3, ge=1)
    hybrid_engines: list[str] | None = None  # None: every engine except trending
    default_weights: dict[str, float] = Field(default_factory=dict)
    similar_engines: list[str] = Field(
        default_factory=lambda: ["item_knn", "ease", "als", "content"]
    )
    train_num_cpus: float = Field(default=0.5, gt=0)


def request_from_dict(data: dict[str, Any]) -> RecommendationRequest:
    fields = {f.name for f in dataclasses.fields(RecommendationRequest)}
    values = {k: v for k, v in data.items() if k in fields}
    for name in ("categories", "history", "exclude_item_ids"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return RecommendationRequest(**values)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)
class HybridCombiner:
    def __init__(
        self,
        engines: dict[str, DeploymentHandle],
        *,
        source: ModelSource | None = None,
        config: dict[str, Any] | None = None,
        train_entrypoint: str = "training.pipeline:train_tenant",
    ) -> None:
        install_ray_metrics()
        configure_tracing("recserve-combiner")
        self._engines = dict(engines)
        self._settings = Settings()
        self._config = CombinerConfig.model_validate(config or {})
        self._versions = VersionCache(resolve_source(source, self._settings))
        self._versions.ttl_seconds = self._config.version_ttl_s
        # Promotions announced on models:{tenant} invalidate at once; the TTL is the fallback.
        self._events = VersionEvents(self._settings, self._versions.invalidate)
        self._jobs = TrainingJobs(train_entrypoint, num_cpus=self._config.train_num_cpus)
        self._vectors = VectorSimilar(self._settings)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self._config = CombinerConfig.model_validate({**self._config.model_dump(), **config})
        self._versions.ttl_seconds = self._config.version_ttl_s
        self._jobs.num_cpus = self._config.train_num_cpus

    def _hybrid_engines(self) -> list[str]:
        wanted = self._config.hybrid_engines
        if wanted is None:
            return [name for name in self._engines if name != "trending"]
        return [name for name in wanted if name in self._engines]

    async def _versions_for(self, tenant_id: str, names: list[str]) -> dict[str, str]:
        """Each engine's current version; engines the tenant never trained are left out."""
        self._events.watch(tenant_id)

        def lookup() -> dict[str, str]:
            # to_thread copies the context: this span is a child of the request's.
            with tracer().start_as_current_span("storage artifacts.current"):
                found = {name: self._versions.get(tenant_id, name) for name in names}
            return {name: version for name, version in found.items() if version is not None}

        return await asyncio.to_thread(lookup)

    def _caller(self, engine: str, method: str, tenant_id: str, version: str, payload: dict):
        handle = self._engines[engine].options(multiplexed_model_id=model_id(tenant_id, version))
        return lambda: getattr(handle, method).remote(inject(dict(payload)))

    async def recommend(self, request: dict[str, Any]) -> dict[str, Any]:
        algorithm = str(request.get("algorithm", ""))
        label = algorithm if algorithm == "hybrid" or algorithm in self._engines else "unknown"
        started = time.perf_counter()
        status = "error"
        with tracer().start_as_current_span(
            "combiner recommend", context=extract(request), attributes={"algorithm": label}
        ):
            try:
                response = await self._recommend(request)
                status = "degraded" if response["engines_failed"] else "ok"
                return response
            finally:
                seconds = time.perf_counter() - started
                meters.recommendation(label, request.get("tenant_id"), status, seconds)

    async def _recommend(self, request: dict[str, Any]) -> dict[str, Any]:
        req = request_from_dict(request)
        if req.algorithm != "hybrid" and req.algorithm not in self._engines:
            raise ValueError(f"unknown algorithm {req.algorithm!r}")
        names = self._hybrid_engines() if req.algorithm == "hybrid" else [req.algorithm]
        wanted = [*names, FALLBACK] if FALLBACK in self._engines else names
        versions = await self._versions_for(req.tenant_id, list(dict.fromkeys(wanted)))
        payload = self._engine_payload(req)
        trained = [name for name in names if name in versions]
        from_vectors = await self._content_from_vectors(req, trained)
        if from_vectors is not None:
            trained.remove("content")
        outcome = await self._ask(req.tenant_id, trained, versions, payload)
        if from_vectors is not None:
            outcome.results["content"] = from_vectors
        answered = {name: recs for name, recs in outcome.results.items() if recs}
        if not answered and FALLBACK in versions and FALLBACK not in names:
            # A single engine with nothing to say (cold user, failure): popularity answers.
            fallback = await self._ask(req.tenant_id, [FALLBACK], versions, payload)
            answered = {n: recs for n, recs in fallback.results.items() if recs}
            outcome.failed.extend(fallback.failed)
        candidates = blend_candidates(answered, req, self._config.default_weights)
        similarity = await self._similarity(req, candidates)
        response = RecommendationResponse(
            items=finish(candidates, req, similarity),
            algorithm=req.algorithm,
            engines_used=list(answered),
            engines_failed=outcome.failed,
            model_version=version_label({n: versions[n] for n in answered}),
        )
        return dataclasses.asdict(response)

    async def _content_from_vectors(
        self, req: RecommendationRequest, trained: list[str]
    ) -> list[tuple[str, float]] | None:
        """With a vector server, the content engine's candidates come from a nearest-neighbour
        search around the user's recent items instead of scoring the whole catalogue."""
        if "content" not in trained or not req.history:
            return None
        return await self._vectors.content_candidates(
            req.tenant_id,
            req.history,
            req.k,
            exclude=req.exclude_item_ids,
            categories=req.categories,
        )

    async def _ask(
        self, tenant_id: str, names: list[str], versions: dict[str, str], payload: dict[str, Any]
    ) -> FanOutResult:
        calls = {n: self._caller(n, "recommend", tenant_id, versions[n], payload) for n in names}
        return await fan_out(calls, self._config.engine_timeout_s)

    async def _similarity(
        self, req: RecommendationRequest, candidates: list[HybridItem]
    ) -> Similarity | None:
        """Item similarity from the first similarity engine, only when MMR or "because" needs it."""
        if not candidates or not (req.diversify or (req.explain and req.history)):
            return None
        names = [n for n in self._config.similar_engines if n in self._engines]
        versions = await self._versions_for(req.tenant_id, names)
        rows = [item.item_id for item in candidates]
        payload = {"rows": rows, "cols": [*rows, *(req.history or ())]}
        calls = {
            n: self._caller(n, "similarity", req.tenant_id, versions[n], payload)
            for n in names
            if n in versions
        }
        _, answer, _ = await first_answer(
            calls, self._config.engine_timeout_s, usable=lambda a: bool(np.any(a["matrix"]))
        )
        if answer is None:
            return None
        return Similarity(answer["rows"], answer["cols"], np.asarray(answer["matrix"]))

    def _engine_payload(self, req: RecommendationRequest) -> dict[str, Any]:
        return {
            "user_id": req.user_id,
            "k": req.k * self._config.candidate_factor,
            "exclude_seen": True,
            "categories": list(req.categories) if req.categories is not None else None,
            "exclude_item_ids": list(req.exclude_item_ids),
            "history": list(req.history) if req.history is not None else None,
        }

    async def similar_items(self, request: dict[str, Any]) -> list[tuple[str, float]]:
        tenant_id, item_id, k = request["tenant_id"], str(request["item_id"]), int(request["k"])
        if (found := await self._vectors.similar(tenant_id, item_id, k)) is not None:
            return found
        names = [n for n in self._config.similar_engines if n in self._engines]
        versions = await self._versions_for(tenant_id, names)
        payload = {"item_id": item_id, "k": k}
        calls = {
            n: self._caller(n, "similar_items", tenant_id, versions[n], payload)
            for n in names
            if n in versions
        }
        _, answer, _ = await first_answer(calls, self._config.engine_timeout_s)
        return as_pairs(answer or [])

    async def trending(self, request: dict[str, Any]) -> list[tuple[str, float]]:
        tenant_id, limit = request["tenant_id"], int(request["limit"])
        category = request.get("category")
        names = [n for n in NON_PERSONAL if n in self._engines]
        versions = await self._versions_for(tenant_id, names)
        payload = {"k": limit, "categories": [category] if category else None}
        calls = {
            n: self._caller(n, "top_items", tenant_id, versions[n], payload)
            for n in names
            if n in versions
        }
        _, answer, _ = await first_answer(calls, self._config.engine_timeout_s)
        return as_pairs(answer or [])

    async def health(self) -> dict[str, str]:
        """Each engine's state: "ok" when a replica answers ``info`` within the timeout."""
        names = list(self._engines)
        calls = {name: (lambda n=name: self._engines[n].info.remote()) for name in names}
        outcome = await failed_calls(calls, self._config.engine_timeout_s)
        return {name: "unavailable" if name in outcome else "ok" for name in names}

    async def train(self, request: dict[str, Any]) -> dict[str, Any]:
        tenant_id = str(request["tenant_id"])
        algorithms = request.get("algorithms")
        job = self._jobs.submit(self._settings, tenant_id, algorithms)
        self._versions.invalidate(tenant_id)
        return dataclasses.asdict(job)

    async def training_job(self, job_id: str) -> dict[str, Any] | None:
        job = await self._jobs.status(job_id)
        if job is not None and job.status == "succeeded":
            # The new versions are promoted: the next request must not serve the old ones.
            self._versions.invalidate(job.tenant_id)
        return dataclasses.asdict(job) if job is not None else None
