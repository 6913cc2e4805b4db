"""The HTTP edge: FastAPI + Strawberry built on the replica, talking to the combiner handle.

``graph_api`` knows only its ``Recommender`` protocol; ``HandleRecommender`` implements it over
the combiner's ``DeploymentHandle``, turning the dataclasses into plain dicts for the hop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.ray_metrics import install_ray_metrics
from graph_api.recommender import (
    RecommendationRequest,
    RecommendationResponse,
    ScoredItem,
    TrainingJob,
)
from storage.logs import configure_logging
from storage.settings import Settings
from storage.tracing import configure_tracing, inject


def response_from_dict(data: dict[str, Any]) -> RecommendationResponse:
    return RecommendationResponse(
        items=[ScoredItem(**item) for item in data.get("items", ())],
        algorithm=data["algorithm"],
        engines_used=list(data.get("engines_used", ())),
        engines_failed=list(data.get("engines_failed", ())),
        model_version=data.get("model_version"),
    )


def job_from_dict(data: dict[str, Any]) -> TrainingJob:
    fields = {f.name for f in dataclasses.fields(TrainingJob)}
    return TrainingJob(**{k: v for k, v in data.items() if k in fields})


def _pairs(values: Any) -> list[tuple[str, float]]:
    return [(str(item), float(score)) for item, score in values]


class HandleRecommender:
    """``graph_api.recommender.Recommender`` over the combiner's deployment handle."""

    def __init__(self, combiner: DeploymentHandle) -> None:
        self._combiner = combiner

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        payload = inject(dataclasses.asdict(request))
        return response_from_dict(await self._combiner.recommend.remote(payload))

    async def similar_items(
        self, *, tenant_id: str, item_id: str, k: int
    ) -> list[tuple[str, float]]:
        payload = inject({"tenant_id": tenant_id, "item_id": item_id, "k": k})
        return _pairs(await self._combiner.similar_items.remote(payload))

    async def trending(
        self, *, tenant_id: str, category: str | None, limit: int
    ) -> list[tuple[str, float]]:
        payload = inject({"tenant_id": tenant_id, "category": category, "limit": limit})
        return _pairs(await self._combiner.trending.remote(payload))

    async def health(self) -> dict[str, str]:
        """Each engine's state, as the combiner sees it (read by the ``/health`` report)."""
        return dict(await self._combiner.health.remote())

    async def train(self, *, tenant_id: str, algorithms: list[str] | None) -> TrainingJob:
        payload = {"tenant_id": tenant_id, "algorithms": algorithms}
        return job_from_dict(await self._combiner.train.remote(payload))


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress()
class GraphQLIngress:
    def __init__(self, combiner: DeploymentHandle) -> None:
        install_ray_metrics()
        configure_tracing("recserve-ingress")
        configure_logging()
        self._recommender = HandleRecommender(combiner)
        self._settings = Settings()

    def __serve_build_asgi_app__(self) -> Any:
        # Built here, on the replica, so the schema and its connections live in this process.
        from graph_api.app import create_app

        return create_app(recommender=self._recommender, settings=self._settings)
