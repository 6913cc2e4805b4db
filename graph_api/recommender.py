"""The one seam between the GraphQL layer and whatever produces recommendations.

``graph_api`` never imports Ray or ``deployments``: resolvers call a ``Recommender``. In
production ``deployments`` passes an adapter around the combiner's ``DeploymentHandle``; tests
and the single-process server pass an in-process implementation.

Item and user ids here are the string form of the database UUIDs: the models are trained on
those, so results hydrate straight from the items table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# The engine names a request may name (besides "hybrid"); one engine deployment serves each.
ENGINE_NAMES: tuple[str, ...] = (
    "als",
    "bpr",
    "item_knn",
    "user_knn",
    "ease",
    "svd",
    "content",
    "popularity",
    "trending",
)


@dataclass(frozen=True)
class RecommendationRequest:
    tenant_id: str
    user_id: str
    algorithm: str = "hybrid"  # "hybrid" or one engine name, e.g. "ease", "item_knn"
    k: int = 10
    diversify: bool = False
    explain: bool = False
    categories: tuple[str, ...] | None = None
    exclude_item_ids: tuple[str, ...] = ()
    weights: dict[str, float] | None = None  # per-request engine weight overrides
    # The user's most recent item ids, newer than any trained model: engines fold them in.
    history: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    engine_scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    because_item_id: str | None = None


@dataclass(frozen=True)
class RecommendationResponse:
    items: list[ScoredItem]
    algorithm: str
    engines_used: list[str]
    engines_failed: list[str] = field(default_factory=list)
    model_version: str | None = None


@dataclass(frozen=True)
class TrainingJob:
    job_id: str
    tenant_id: str
    algorithms: list[str]
    status: str  # "submitted", "running", "succeeded", "failed"
    model_version: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


@runtime_checkable
class Recommender(Protocol):
    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse: ...

    async def similar_items(
        self, *, tenant_id: str, item_id: str, k: int
    ) -> list[tuple[str, float]]: ...

    async def trending(
        self, *, tenant_id: str, category: str | None, limit: int
    ) -> list[tuple[str, float]]: ...

    async def train(self, *, tenant_id: str, algorithms: list[str] | None) -> TrainingJob: ...
