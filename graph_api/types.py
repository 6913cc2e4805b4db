"""GraphQL object types. Nested fields resolve through the per-request DataLoaders.

Each type is built from a storage row by ``from_row``; the tenant never travels as a field
argument, nested resolvers take it from the verified principal in the context.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from graph_api.context import Info, require_admin
from graph_api.errors import BadUserInput
from graph_api.preferences import UserPreferences
from jobs import ledger
from recommend.types import Strategy

# A user's interactions and ratings are lists without end: each is cut to a page.
DEFAULT_NESTED_PAGE = 20
MAX_NESTED_PAGE = 100


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_NESTED_PAGE:
        raise BadUserInput(f"limit must be between 1 and {MAX_NESTED_PAGE}.")


@strawberry.type
class Tenant:
    id: uuid.UUID
    name: str
    domain: str
    tier: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Tenant:
        return cls(
            id=row.id,
            name=row.name,
            domain=row.domain,
            tier=str(row.tier),
            created_at=row.created_at,
        )


async def _tenant(info: Info, tenant_id: uuid.UUID) -> Tenant | None:
    """Through the loader, which only ever loads the caller's own tenant."""
    row = await info.context.loaders.tenants.load(tenant_id)
    return Tenant.from_row(row) if row is not None else None


@strawberry.type
class Item:
    id: uuid.UUID
    external_id: str
    title: str
    description: str | None
    category: str | None
    tags: list[str]
    metadata: JSON
    created_at: datetime
    updated_at: datetime
    tenant_id: strawberry.Private[uuid.UUID]

    @classmethod
    def from_row(cls, row: Any) -> Item:
        return cls(
            id=row.id,
            external_id=row.external_id,
            title=row.title,
            description=row.description,
            category=row.category,
            tags=list(row.tags or []),
            metadata=dict(row.item_metadata or {}),
            created_at=row.created_at,
            updated_at=row.updated_at,
            tenant_id=row.tenant_id,
        )

    @strawberry.field(description="The tenant whose catalogue holds the item (the caller's).")
    async def tenant(self, info: Info) -> Tenant | None:
        return await _tenant(info, self.tenant_id)

    @strawberry.field
    async def average_rating(self, info: Info) -> float | None:
        return await info.context.loaders.average_rating.load(self.id)

    @strawberry.field
    async def similar_items(self, info: Info, top_k: int = 10) -> list[SimilarItem]:
        return await info.context.similar_items(self.id, top_k)

    @strawberry.field
    async def popularity(self, info: Info) -> ItemPopularity:
        """How much the tenant's users interacted with the item (all time)."""
        found = await info.context.loaders.item_popularity.load(self.id)
        return ItemPopularity(interaction_count=found.interactions, user_count=found.users)

    @strawberry.field
    async def interactions(
        self, info: Info, type: str | None = None, limit: int = DEFAULT_NESTED_PAGE
    ) -> list[Interaction]:
        """The newest ``limit`` (1 to 100) interactions with the item, by anyone: they name
        other users, so a tenant admin's only."""
        await require_admin(info.context)
        _check_limit(limit)
        rows = await info.context.loaders.item_interactions.load((self.id, type, limit))
        return [Interaction.from_row(row) for row in rows]


@strawberry.type
class ItemPopularity:
    interaction_count: int
    user_count: int = strawberry.field(description="Distinct users who interacted with the item.")


@strawberry.type
class SimilarItem:
    item: Item
    score: float
    recommendation_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The list this item was served in (the same for every item of one "
        "similarItems or trendingItems answer): pass it as recordInteraction's "
        "recommendationId. Null in subscription pushes, which are not recorded as served.",
    )


@strawberry.type
class Interaction:
    id: uuid.UUID
    user_id: uuid.UUID
    item_id: uuid.UUID
    interaction_type: str
    interaction_value: float
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Interaction:
        return cls(
            id=row.id,
            user_id=row.user_id,
            item_id=row.item_id,
            interaction_type=str(row.interaction_type),
            interaction_value=float(row.value),
            created_at=row.created_at,
        )

    @strawberry.field
    async def item(self, info: Info) -> Item | None:
        row = await info.context.loaders.items.load(self.item_id)
        return Item.from_row(row) if row is not None else None


@strawberry.type
class Rating:
    user_id: uuid.UUID
    item_id: uuid.UUID
    stored: strawberry.Private[float]  # on the stored 0.5-5 scale
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Rating:
        return cls(
            user_id=row.user_id,
            item_id=row.item_id,
            stored=float(row.rating),
            created_at=row.created_at,
        )

    @strawberry.field(description="On the tenant's rating scale (0.5 to 5 unless it set one).")
    async def rating(self, info: Info) -> float:
        return (await info.context.loaders.rating_scale()).shown(self.stored)

    @strawberry.field
    async def item(self, info: Info) -> Item | None:
        row = await info.context.loaders.items.load(self.item_id)
        return Item.from_row(row) if row is not None else None


@strawberry.type
class User:
    id: uuid.UUID
    email: str
    username: str
    role: str
    created_at: datetime
    tenant_id: strawberry.Private[uuid.UUID]
    stored_preferences: strawberry.Private[dict[str, Any]]

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(
            id=row.id,
            email=row.email,
            username=row.username,
            role=str(row.role),
            created_at=row.created_at,
            tenant_id=row.tenant_id,
            stored_preferences=dict(row.preferences or {}),
        )

    @strawberry.field
    async def tenant(self, info: Info) -> Tenant | None:
        return await _tenant(info, self.tenant_id)

    @strawberry.field(description="The user's own settings (visible to them and their admins).")
    def preferences(self) -> UserPreferences:
        return UserPreferences.from_stored(self.stored_preferences)

    @strawberry.field
    async def interactions(
        self, info: Info, type: str | None = None, limit: int = DEFAULT_NESTED_PAGE
    ) -> list[Interaction]:
        """The newest ``limit`` (1 to 100) interactions."""
        _check_limit(limit)
        rows = await info.context.loaders.interactions.load((self.id, type, limit))
        return [Interaction.from_row(row) for row in rows]

    @strawberry.field
    async def ratings(self, info: Info, limit: int = DEFAULT_NESTED_PAGE) -> list[Rating]:
        """The ``limit`` (1 to 100) most recently changed ratings."""
        _check_limit(limit)
        rows = await info.context.loaders.ratings.load((self.id, limit))
        return [Rating.from_row(row) for row in rows]


@strawberry.enum
class RegistrationMode(Enum):
    """Who may ``register`` in a tenant: anyone, invite holders, or nobody."""

    OPEN = "open"
    INVITE = "invite"
    CLOSED = "closed"


@strawberry.type
class InvitePayload:
    """A minted invite. ``token`` is shown only here: the server keeps just its hash."""

    token: str
    expires_at: datetime
    email: str | None
    role: str


@strawberry.type
class AuthPayload:
    access_token: str
    refresh_token: str
    user: User


# How a list was made: COLD_START (no history, or no engine had anything: popularity,
# content), WEIGHTED (a weighted blend of engines), SWITCHING (one engine, chosen by how much
# the user has done), ENGINE (the one engine, or an alias's engines, the request named).
strawberry.enum(Strategy, name="RecommendationStrategy", description="How a list was made.")


@strawberry.type
class EngineContribution:
    engine: str
    share: float = strawberry.field(description="Of the item's score, 0 to 1 (shares sum to 1).")
    score: float = strawberry.field(
        description="What the engine added to the item's score: its weight times its "
        "normalised score in a blend, its own score when it answered alone."
    )


@strawberry.type
class ItemExplanation:
    """Why one item is in the list."""

    item_id: uuid.UUID
    contributions: list[EngineContribution] = strawberry.field(
        description="The engines that put the item in the list, largest share first."
    )
    strategy: Strategy
    because_of: list[Item] = strawberry.field(
        description="The user's items it is most like, most similar first (up to 3; only "
        "with `explain: true`)."
    )


@strawberry.type
class RecommendationItem:
    item: Item
    score: float
    reason: str | None
    engine_scores: JSON
    # Built only when a query selects it (here or in the list's explanation), at most once.
    explain: strawberry.Private[Callable[[], ItemExplanation]]

    @strawberry.field
    def explanation(self) -> ItemExplanation:
        return self.explain()


@strawberry.type
class RecommendationExplanation:
    """How the list was made, and why each item is in it."""

    strategy: Strategy
    engines_used: list[str]
    engines_failed: list[str]
    model_version: str | None
    cached: bool
    recommended: strawberry.Private[list[RecommendationItem]]

    @strawberry.field(
        description="One per recommended item, in list order (each item's `explanation`)."
    )
    def items(self) -> list[ItemExplanation]:
        return [item.explain() for item in self.recommended]


@strawberry.type
class RecommendationResult:
    items: list[RecommendationItem]
    algorithm: str
    generated_at: datetime
    response_time_ms: float
    total_count: int
    explanation: RecommendationExplanation
    recommendation_id: strawberry.ID = strawberry.field(
        description="This answer as a served list (an impression): pass it as "
        "recordInteraction's recommendationId so a click or purchase is credited to it."
    )
    variant: str | None = strawberry.field(
        default=None, description="The experiment variant that served this list, if any."
    )


@strawberry.type
class TrainingJob:
    """A training run as its record says; ``progress`` maps each algorithm to its state
    (``{"state": "queued" | "running" | "succeeded" | "skipped", "detail": why}``) and
    ``metrics`` each trained algorithm to its holdout metrics."""

    job_id: str
    algorithms: list[str]
    status: str  # queued, running, succeeded, failed
    model_version: str | None
    metrics: JSON
    progress: JSON
    error: str | None
    trigger: str | None  # api (trainModel) or scheduler
    reason: str | None  # why the scheduler started it
    distributed: bool  # ALS and SVD on Ray Train
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None

    @classmethod
    def from_job(cls, job: ledger.TrainingJob) -> TrainingJob:
        return cls(
            job_id=job.job_id,
            algorithms=list(job.algorithms),
            status=job.status,
            model_version=job.model_version,
            metrics=job.metrics,
            progress=job.progress,
            error=job.error,
            trigger=job.trigger,
            reason=job.reason,
            distributed=job.distributed,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            duration_seconds=job.duration_seconds,
        )


@strawberry.type
class ModelVersion:
    """One stored version of a tenant's model; ``current`` marks the one served."""

    algorithm: str
    version: str
    current: bool
    created_at: str | None
    metrics: JSON
    duration_seconds: float | None
    counts: JSON


@strawberry.type
class QuotaStatus:
    name: str = strawberry.field(
        description="items (active catalogue items), recommendations (per clock hour) or "
        "trainingRuns (trainModel calls per UTC day)."
    )
    used: int
    limit: int
    remaining: int
    resets_at: datetime | None = strawberry.field(
        description="When the period's count starts again; null for items."
    )


@strawberry.type
class RateLimitStatus:
    limit: int
    remaining: int
    used: int
    window_seconds: int
    tenant_limit: int
    tenant_remaining: int
    quotas: list[QuotaStatus] = strawberry.field(
        description="The tenant's quotas for its subscription tier."
    )


@strawberry.type
class PerformanceMetrics:
    total_requests: int
    total_errors: int  # the server's faults
    total_client_errors: int  # invalid queries, refusals, rate limits
    query_count: int = strawberry.field(
        description="Query operations served (answered without an error), since start."
    )
    window_seconds: float
    window_requests: int
    requests_per_second: float
    p50_latency_ms: float
    p95_latency_ms: float
    error_rate: float
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float
    operations: JSON
