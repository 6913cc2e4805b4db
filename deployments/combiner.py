"""The combiner deployment: ``recommend.step.RecommendationStep`` over Serve handles.

All of the recommendation step lives in ``recommend.step``; this shell resolves model versions
(cached briefly, dropped at once when a promotion is announced), turns an engine call into a
call on that engine's handle with the tenant's multiplexed model id, and runs training jobs: those
asked for (``trainModel``) and those its retraining scheduler starts (one leader among the
replicas, ``jobs.scheduler``), all recorded in the database (``jobs.ledger``).
Requests, queries and answers cross the handles as the dataclasses they are.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.ray_metrics import install_ray_metrics
from deployments.vector_store import RemoteVectorStore
from jobs.ledger import JobLedger
from jobs.ray_runner import RayJobs
from jobs.scheduler import Scheduler
from recommend.batching import CallBatcher
from recommend.cold import ColdSource
from recommend.fanout import failed_calls
from recommend.model_cache import (
    MIB,
    BlendCache,
    ModelSource,
    NearModels,
    VersionCache,
    model_id,
    resolve_source,
)
from recommend.options import ServingOptions
from recommend.scoring import EngineQuery, Pairs, answer, scored
from recommend.step import RecommendationStep
from recommend.types import (
    ItemContent,
    RecommendationRequest,
    RecommendationResponse,
    TrainingJob,
)
from recommend.vector_similar import VectorSimilar
from recommend.version_events import VersionEvents
from storage.settings import Settings
from storage.tracing import configure_tracing, inject

# What the combiner may answer with a model it holds (``NearModels``) instead of a round trip.
LOCAL_METHODS = frozenset({"similarity"})


class ServeEngines:
    """``recommend.step.Engines`` over the engine deployments' handles: ``{algorithm: handle}``,
    where the algorithms of one engine pool share their deployment's handle."""

    def __init__(
        self,
        handles: dict[str, DeploymentHandle],
        versions: VersionCache,
        blends: BlendCache,
        near: NearModels | None = None,
        *,
        max_batch: int,
    ) -> None:
        self.names = tuple(handles)
        self._handles = handles
        self._versions = versions
        self._blends = blends
        # Similarity (MMR, explanations) from models held here: no round trip after the fan-out.
        self.near = near
        self.watch: Any = lambda tenant_id: None
        # Concurrent requests' queries to one engine and model leave as one call (the key keeps
        # algorithms apart even when a pool serves several behind one handle).
        self.batcher: CallBatcher[tuple[str, str], EngineQuery] = CallBatcher(
            self._recommend_many, max_batch=max_batch
        )

    async def versions(self, tenant_id: str, names: Sequence[str]) -> dict[str, str]:
        self.watch(tenant_id)
        return await self._versions.current(tenant_id, names)

    async def blend(self, tenant_id: str) -> dict[str, float] | None:
        return await self._blends.current(tenant_id)

    def call(
        self, engine: str, method: str, tenant_id: str, version: str, query: Any
    ) -> Awaitable[Any]:
        if method in LOCAL_METHODS and self.near is not None:
            held = self.near.get(engine, tenant_id, version)
            if held is not None:
                return scored(held, 1, answer, held, method, query)
        # The id names the engine's algorithm: pooled algorithms share a handle, not models.
        model = model_id(engine, tenant_id, version)
        # Called inside the engine's span, so the carried context names it as the parent.
        query = dataclasses.replace(query, trace=inject({}))
        if method == "recommend":
            return self.batcher.submit((engine, model), query)
        handle = self._handles[engine].options(multiplexed_model_id=model)
        return getattr(handle, method).remote(query)

    async def _recommend_many(
        self, key: tuple[str, str], queries: list[EngineQuery]
    ) -> list[Pairs]:
        engine, model = key
        handle = self._handles[engine].options(multiplexed_model_id=model)
        return await handle.recommend_many.remote(queries)

    def invalidate(self, tenant_id: str | None = None) -> None:
        self._versions.invalidate(tenant_id)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=128)
class HybridCombiner:
    def __init__(
        self,
        engines: dict[str, DeploymentHandle],
        *,
        source: ModelSource | None = None,
        config: dict[str, Any] | None = None,
        vectors: DeploymentHandle | None = None,
    ) -> None:
        """``vectors``: the app's ``VectorStoreServer`` when the embedded store is used (no
        Qdrant server); this replica and its training tasks reach the store through it."""
        install_ray_metrics()
        configure_tracing("recserve-combiner")
        self._handles = dict(engines)
        self._settings = Settings()
        self._config = ServingOptions.model_validate(config or {})
        source = resolve_source(source, self._settings)
        versions = VersionCache(source, self._config.version_ttl_s)
        self._near = NearModels(source, max_bytes=int(self._config.near_model_mb * MIB))
        self._engines = ServeEngines(
            self._handles,
            versions,
            BlendCache(source, versions),
            self._near,
            max_batch=self._config.max_batch_size,
        )
        # Promotions announced on models:{tenant} invalidate at once; the TTL is the fallback.
        self._events = VersionEvents(self._settings, versions.invalidate)
        self._engines.watch = self._events.watch
        self._versions = versions
        # The cold source opens the database and the cache from Settings, as the ingress does:
        # cold answers are computed here, in the one recommendation step, like every other.
        store = RemoteVectorStore(vectors) if vectors is not None else None
        # The embedded store (through the vectors replica) keeps new items' content vectors;
        # the trained engines answer for themselves, as in the single-process server.
        similar = VectorSimilar(self._settings, store, local=store is not None)
        self._step = RecommendationStep(
            self._engines, self._config, similar, ColdSource(self._settings, similar)
        )
        ledger = JobLedger(self._settings)
        self._jobs = RayJobs(
            self._config.train_entrypoint,
            ledger,
            num_cpus=self._config.train_num_cpus,
            vectors=store,
            setup=install_ray_metrics,
        )
        self._jobs.on_done = self._job_ended
        self._scheduler = Scheduler(self._jobs, ledger.database, algorithms=list(engines))
        if self._settings.scheduler_enabled:
            self._scheduler.start()  # Serve runs the constructor on the replica's event loop

    def reconfigure(self, config: dict[str, Any]) -> None:
        self._config = self._config.updated(config)
        self._versions.ttl_seconds = self._config.version_ttl_s
        self._near.resize(int(self._config.near_model_mb * MIB))
        self._step.options = self._config
        self._engines.batcher.max_batch = self._config.max_batch_size
        self._jobs.num_cpus = self._config.train_num_cpus

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        return await self._step.recommend(request)

    async def recommend_many(
        self, requests: list[RecommendationRequest]
    ) -> list[RecommendationResponse | Exception]:
        """Requests an ingress batched (``recommend.batching``), answered concurrently; a
        request's own error is returned in its place, for its caller alone."""
        return await asyncio.gather(
            *(self._step.recommend(request) for request in requests), return_exceptions=True
        )

    async def similar_items(self, tenant_id: str, item_id: str, k: int) -> Pairs:
        return await self._step.similar_items(tenant_id=tenant_id, item_id=item_id, k=k)

    async def trending(self, tenant_id: str, category: str | None, limit: int) -> Pairs:
        return await self._step.trending(tenant_id=tenant_id, category=category, limit=limit)

    async def items_changed(self, tenant_id: str, items: list[ItemContent]) -> None:
        await self._step.items_changed(tenant_id, items)

    async def items_deleted(self, tenant_id: str, item_ids: list[str]) -> None:
        await self._step.items_deleted(tenant_id, item_ids)

    async def health(self) -> dict[str, str]:
        """Each engine's state: "ok" when a replica of its deployment answers ``info`` within
        the timeout (asked once per deployment: the algorithms of a pool share the answer)."""
        served_by: dict[str, list[str]] = {}
        for name, handle in self._handles.items():
            served_by.setdefault(getattr(handle, "deployment_name", name), []).append(name)
        calls = {
            deployment: (lambda n=names[0]: self._handles[n].info.remote())
            for deployment, names in served_by.items()
        }
        outcome = await failed_calls(calls, self._config.engine_timeout_s)
        down = {name for deployment in outcome for name in served_by[deployment]}
        return {name: "unavailable" if name in down else "ok" for name in self._handles}

    def near_models(self) -> dict[str, int]:
        """The models this replica holds to answer similarity itself (key -> bytes)."""
        return self._near.held()

    async def train(self, tenant_id: str, algorithms: list[str] | None) -> TrainingJob:
        """A new job, or the tenant's running one covering these algorithms."""
        job, _created = await self._jobs.start(tenant_id, algorithms)
        return job

    async def training_job(self, job_id: str) -> TrainingJob | None:
        """The job's record (from the database: any replica answers for any job)."""
        return await self._jobs.status(job_id)

    async def _job_ended(self, tenant_id: str) -> None:
        # A finished job promoted new versions: the next request must not serve the old ones.
        self._versions.invalidate(tenant_id)

    async def schedule_once(self) -> list[TrainingJob]:
        """One scheduler round now (as the leader only); for operators and tests."""
        return await self._scheduler.tick()

    async def __del__(self) -> None:
        # Serve calls this on shutdown: hand the scheduler's lease to another replica.
        await self._scheduler.stop()
