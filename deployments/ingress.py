"""The HTTP edge: FastAPI + Strawberry built on the replica, talking to the combiner handle.

``graph_api`` knows only its ``RecommendationService`` protocol; ``ServeHandleService``
implements it over the combiner's ``DeploymentHandle``; the request and reply dataclasses cross
the hop as they are.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.ray_metrics import install_ray_metrics
from recommend.batching import CallBatcher
from recommend.options import ServingOptions
from recommend.types import (
    AlgorithmCatalog,
    ItemContent,
    RecommendationRequest,
    RecommendationResponse,
    TrainingJob,
)
from storage.logs import configure_logging
from storage.settings import Settings
from storage.tracing import configure_tracing, inject

logger = logging.getLogger(__name__)


class ServeHandleService:
    """``recommend.types.RecommendationService`` over the combiner's deployment handle."""

    def __init__(
        self, combiner: DeploymentHandle, catalog: AlgorithmCatalog, *, max_batch: int
    ) -> None:
        self._combiner = combiner
        self.catalog = catalog
        # Concurrent requests leave for the combiner together (``recommend.batching``).
        self.batcher: CallBatcher[None, RecommendationRequest] = CallBatcher(
            self._recommend_many, max_batch=max_batch
        )

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        return await self.batcher.submit(None, replace(request, trace=inject({})))

    async def _recommend_many(
        self, _: None, requests: list[RecommendationRequest]
    ) -> list[RecommendationResponse | Exception]:
        return await self._combiner.recommend_many.remote(requests)

    async def similar_items(
        self, *, tenant_id: str, item_id: str, k: int
    ) -> list[tuple[str, float]]:
        return await self._combiner.similar_items.remote(tenant_id, item_id, k)

    async def trending(
        self, *, tenant_id: str, category: str | None, limit: int
    ) -> list[tuple[str, float]]:
        return await self._combiner.trending.remote(tenant_id, category, limit)

    async def items_changed(self, *, tenant_id: str, items: list[ItemContent]) -> None:
        try:
            await self._combiner.items_changed.remote(tenant_id, items)
        except Exception as error:  # the item is committed; its vector waits for training
            logger.warning("content vectors of %d items not written: %s", len(items), error)

    async def items_deleted(self, *, tenant_id: str, item_ids: list[str]) -> None:
        try:
            await self._combiner.items_deleted.remote(tenant_id, item_ids)
        except Exception as error:  # the item is deleted; hydration never shows it anyway
            logger.warning("content vectors of deleted items kept: %s", error)

    async def health(self) -> dict[str, str]:
        """Each engine's state, as the combiner sees it (read by the ``/health`` report)."""
        return dict(await self._combiner.health.remote())

    async def train(self, *, tenant_id: str, algorithms: list[str] | None) -> TrainingJob:
        return await self._combiner.train.remote(tenant_id, algorithms)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class GraphQLIngress:
    def __init__(
        self,
        combiner: DeploymentHandle,
        catalog: AlgorithmCatalog,
        options: dict[str, Any] | None = None,
    ) -> None:
        install_ray_metrics()
        configure_tracing("recserve-ingress")
        configure_logging()
        self._options = ServingOptions.model_validate(options or {})
        self._recommender = ServeHandleService(
            combiner, catalog, max_batch=self._options.max_batch_size
        )
        self._settings = Settings()

    def __serve_build_asgi_app__(self) -> Any:
        # Built here, on the replica, so the schema and its connections live in this process.
        from graph_api.app import create_app

        return create_app(recommender=self._recommender, settings=self._settings)
