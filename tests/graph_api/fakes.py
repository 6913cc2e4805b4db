"""An in-process Recommender over the tenant's catalogue: the protocol, with no Ray.

Scores are deterministic (catalogue order), the user's history and excluded ids are never
returned, and every call is recorded so tests can check what the API asked for.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from recommend.types import (
    AlgorithmCatalog,
    ItemContent,
    RecommendationRequest,
    RecommendationResponse,
    ScoredItem,
    Strategy,
    TrainingJob,
)
from storage import repositories as repo
from storage.db import Database
from storage.models import Item
from training.algorithms import ALGORITHMS, ALIASES


@dataclass
class CatalogueService:
    database: Database
    requests: list[RecommendationRequest] = field(default_factory=list)
    similar_asked: list[tuple[str, int]] = field(default_factory=list)  # (item, k)
    trending_asked: list[tuple[str | None, int]] = field(default_factory=list)  # (category, limit)
    trained: list[tuple[str, list[str] | None]] = field(default_factory=list)
    changed: list[tuple[str, list[ItemContent]]] = field(default_factory=list)
    deleted: list[tuple[str, list[str]]] = field(default_factory=list)
    fail_with: Exception | None = None
    catalog: AlgorithmCatalog = field(
        default_factory=lambda: AlgorithmCatalog(tuple(ALGORITHMS), ALIASES)
    )

    async def _catalogue(self, tenant_id: str, category: str | None = None) -> list[Item]:
        async with self.database.session(readonly=True) as session:
            rows = await repo.list_items(
                session=session, tenant_id=uuid.UUID(tenant_id), category=category, limit=1000
            )
        return list(rows)

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        skip = set(request.history or ()) | set(request.exclude_item_ids)
        items = [
            row
            for row in await self._catalogue(request.tenant_id)
            if str(row.id) not in skip
            and (not request.categories or row.category in request.categories)
        ]
        engine = "popularity" if request.algorithm == "hybrid" else request.algorithm
        # Like the combiner: the reason names the history item by id; the API shows its title.
        because = request.history[0] if request.history else None
        reason = f"popular; because you interacted with {because}" if because else "popular"
        scored = [
            ScoredItem(
                item_id=str(row.id),
                score=1.0 / (rank + 1),
                engine_scores={engine: 1.0 / (rank + 1)},
                reason=reason if request.explain else None,
                because_item_ids=(because,) if because and request.explain else (),
                engine_shares={engine: 1.0},
            )
            for rank, row in enumerate(items[: request.k])
        ]
        return RecommendationResponse(
            items=scored,
            algorithm=request.algorithm,
            engines_used=[engine],
            model_version="v1",
            strategy=Strategy.COLD_START if not request.history else Strategy.WEIGHTED,
        )

    async def similar_items(
        self, *, tenant_id: str, item_id: str, k: int
    ) -> list[tuple[str, float]]:
        self.similar_asked.append((item_id, k))
        rows = [row for row in await self._catalogue(tenant_id) if str(row.id) != item_id]
        return [(str(row.id), 0.9 / (rank + 1)) for rank, row in enumerate(rows[:k])]

    async def trending(
        self, *, tenant_id: str, category: str | None, limit: int
    ) -> list[tuple[str, float]]:
        self.trending_asked.append((category, limit))
        rows = await self._catalogue(tenant_id, category)
        return [(str(row.id), float(len(rows) - rank)) for rank, row in enumerate(rows[:limit])]

    async def train(self, *, tenant_id: str, algorithms: list[str] | None) -> TrainingJob:
        self.trained.append((tenant_id, algorithms))
        return TrainingJob(
            job_id=f"job-{len(self.trained)}",
            tenant_id=tenant_id,
            algorithms=algorithms or ["popularity"],
            status="queued",
        )

    async def items_changed(self, *, tenant_id: str, items: list[ItemContent]) -> None:
        self.changed.append((tenant_id, list(items)))

    async def items_deleted(self, *, tenant_id: str, item_ids: list[str]) -> None:
        self.deleted.append((tenant_id, list(item_ids)))
