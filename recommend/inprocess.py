"""The recommendation step with in-process models: the single-process server, tests, benchmarks.

``InProcessEngines`` is the ``recommend.step.Engines`` of one process: each engine's model is
loaded on first use and kept per (tenant, engine, version), and a call runs the same
``recommend.scoring.answer`` an engine replica runs, in a worker thread. ``InProcessService``
puts ``RecommendationStep`` over it and trains in this process (jobs recorded in the database,
``jobs.ledger``, and started by the same retraining scheduler as the Serve app's,
``jobs.scheduler``, while the app runs), so small installs and the benchmarks serve
exactly what the Serve app serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobs.ledger import JobLedger
from jobs.runners import ThreadJobs
from jobs.scheduler import Scheduler
from recommend.cold import ColdSource
from recommend.model_cache import BlendCache, ModelSource, VersionCache, resolve_source
from recommend.options import ServingOptions
from recommend.scoring import Pairs, answer, scored
from recommend.step import RecommendationStep
from recommend.types import (
    ItemContent,
    RecommendationRequest,
    RecommendationResponse,
    TrainingJob,
)
from recommend.vector_similar import VectorSimilar
from storage.cache import Cache
from storage.cache.keys import bump_model_epoch
from storage.db import Database
from storage.settings import Settings
from training.algorithms import ALGORITHMS

if TYPE_CHECKING:
    from training.algorithms.base import Recommender as Model


class InProcessEngines:
    def __init__(self, names: Sequence[str], source: ModelSource, *, version_ttl_s: float) -> None:
        self.names = tuple(dict.fromkeys(names))
        self._source = source
        self._versions = VersionCache(source, version_ttl_s)
        self._blends = BlendCache(source, self._versions)
        self._models: dict[tuple[str, str, str], Model] = {}
        self._loading: dict[tuple[str, str, str], asyncio.Future[Model]] = {}

    async def versions(self, tenant_id: str, names: Sequence[str]) -> dict[str, str]:
        return await self._versions.current(tenant_id, names)

    async def blend(self, tenant_id: str) -> dict[str, float] | None:
        return await self._blends.current(tenant_id)

    def invalidate(self, tenant_id: str | None = None) -> None:
        self._versions.invalidate(tenant_id)

    async def call(self, engine: str, method: str, tenant_id: str, version: str, query: Any) -> Any:
        model = await self.model(tenant_id, engine, version)
        return await scored(model, 1, answer, model, method, query)

    async def model(self, tenant_id: str, engine: str, version: str) -> Model:
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


class InProcessService:
    """``recommend.types.RecommendationService`` with every engine in this process, no Ray.

    This process is the only one serving, so without a Qdrant server the hashed content
    vectors of new items live in the embedded store it holds (``VectorSimilar(local=True)``);
    the cold source reads the database named by ``settings`` (``recommend.cold``).
    """

    def __init__(
        self,
        settings: Settings,
        engines: Sequence[str] = tuple(ALGORITHMS),
        *,
        source: ModelSource | None = None,
        options: ServingOptions | None = None,
        vectors: VectorSimilar | None = None,
        database: Database | None = None,
        cache: Cache | None = None,
    ) -> None:
        self._settings = settings
        self.options = options = options or ServingOptions()
        self.engines = InProcessEngines(
            engines, resolve_source(source, settings), version_ttl_s=options.version_ttl_s
        )
        vectors = vectors if vectors is not None else VectorSimilar(settings, local=True)
        self._vectors = vectors
        self.step = RecommendationStep(
            self.engines,
            options,
            vectors,
            ColdSource(settings, vectors, database=database, cache=cache),
        )
        self.catalog = self.step.catalog
        self.jobs = ThreadJobs(JobLedger(settings, database), options.train_entrypoint)
        self.jobs.on_done = self._job_ended
        self.scheduler = Scheduler(self.jobs, self.jobs.ledger.database, algorithms=engines)
        self._cache: Cache | None = None

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        return await self.step.recommend(request)

    async def similar_items(self, *, tenant_id: str, item_id: str, k: int) -> Pairs:
        return await self.step.similar_items(tenant_id=tenant_id, item_id=item_id, k=k)

    async def trending(self, *, tenant_id: str, category: str | None, limit: int) -> Pairs:
        return await self.step.trending(tenant_id=tenant_id, category=category, limit=limit)

    async def items_changed(self, *, tenant_id: str, items: list[ItemContent]) -> None:
        await self.step.items_changed(tenant_id, items)

    async def items_deleted(self, *, tenant_id: str, item_ids: list[str]) -> None:
        await self.step.items_deleted(tenant_id, item_ids)

    async def train(self, *, tenant_id: str, algorithms: list[str] | None) -> TrainingJob:
        """Trains in this process and returns the job once it ended: there is no cluster to
        hand it to. While the tenant's job for any of these algorithms runs: that job, at once."""
        job, created = await self.jobs.start(tenant_id, algorithms)
        if not created:
            return job
        return await self.jobs.wait(job.job_id) or job

    async def _job_ended(self, tenant_id: str) -> None:
        """The next request sees the new versions, and no result cached for the old ones (the
        pipeline moves the model epoch on its own cache, which is not the app's without Redis)."""
        self.engines.invalidate(tenant_id)
        if self._cache is not None:
            await bump_model_epoch(self._cache, tenant_id)

    async def start_background(self, cache: Cache) -> None:
        """The retraining scheduler, while the app runs (``scheduler_enabled``); ``cache`` is
        the app's, whose cached results a finished job outdates."""
        self._cache = cache
        if self._settings.scheduler_enabled:
            self.scheduler.start()

    async def stop_background(self) -> None:
        await self.scheduler.stop()
        await self.jobs.close()
        await self.jobs.ledger.close()
        # The embedded store's folder is free again for whatever process opens it next.
        await self._vectors.close()
