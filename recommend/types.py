"""The one seam between the GraphQL layer and whatever produces recommendations.

``graph_api`` never imports Ray or ``deployments``: resolvers call a ``RecommendationService``. In
production ``deployments`` passes an adapter around the combiner's ``DeploymentHandle``; tests
and the single-process server pass an in-process implementation.

Item and user ids here are the string form of the database UUIDs: the models are trained on
those, so results hydrate straight from the items table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from jobs.ledger import TrainingJob
from training.hybrid import HYBRID, Strategy
from training.hybrid import HYBRID_STRATEGIES as HYBRID_STRATEGIES

# The hybrid's name and the strategies, as the GraphQL edge imports them (it imports no
# training code): how a list was made is ``RecommendationResponse.strategy``.

if TYPE_CHECKING:
    from storage.cache import Cache


@dataclass(frozen=True)
class AlgorithmCatalog:
    """What a request may name: the hybrid, a served engine, or an alias of some engines.

    The serving layer builds it from the algorithm registry (``graph_api`` imports no training
    code); resolvers validate names against it once, at the edge.
    """

    engines: tuple[str, ...]
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        return (HYBRID, *self.engines, *self.aliases)

    def knows(self, name: str) -> bool:
        return name == HYBRID or name in self.engines or name in self.aliases

    def engines_of(self, name: str) -> tuple[str, ...]:
        """The engines a non-hybrid name stands for, restricted to the served ones."""
        members = self.aliases.get(name, (name,))
        return tuple(engine for engine in members if engine in self.engines)


@dataclass(frozen=True)
class RecommendationRequest:
    tenant_id: str
    user_id: str
    algorithm: str = HYBRID  # "hybrid", an engine ("ease") or an alias ("collaborative")
    k: int = 10
    diversify: bool = True  # MMR over the blended candidates, as the API's default
    explain: bool = False
    categories: tuple[str, ...] | None = None
    exclude_item_ids: tuple[str, ...] = ()
    # The user's preferences: never these categories; with no history, these first.
    exclude_categories: tuple[str, ...] = ()
    preferred_categories: tuple[str, ...] = ()
    weights: dict[str, float] | None = None  # per-request engine weight overrides
    # The user's item ids, newest first: engines fold in those newer than their model.
    history: tuple[str, ...] | None = None
    strategy: Strategy | None = None  # None: the hybrid's own; one of ``HYBRID_STRATEGIES``
    # W3C trace context of the caller, so spans across Serve hops join one trace
    trace: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    # what each engine added to ``score`` (weight x normalised score in a blend)
    engine_scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    # the user's history items it is most like, most similar first (only when explaining)
    because_item_ids: tuple[str, ...] = ()
    # each engine's share of ``score``, largest first (sums to 1)
    engine_shares: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RecommendationResponse:
    items: list[ScoredItem]
    algorithm: str
    engines_used: list[str]
    engines_failed: list[str] = field(default_factory=list)
    model_version: str | None = None
    strategy: Strategy = Strategy.WEIGHTED


@dataclass(frozen=True)
class ItemContent:
    """What the content vectors are built from: sent on every item write so a new or changed
    item is placed among the others at once (``recommend.cold``)."""

    item_id: str
    title: str
    description: str = ""
    category: str | None = None
    tags: tuple[str, ...] = ()


@runtime_checkable
class RecommendationService(Protocol):
    catalog: AlgorithmCatalog

    async def recommend(self, request: RecommendationRequest) -> RecommendationResponse: ...

    async def similar_items(
        self, *, tenant_id: str, item_id: str, k: int
    ) -> list[tuple[str, float]]: ...

    async def trending(
        self, *, tenant_id: str, category: str | None, limit: int
    ) -> list[tuple[str, float]]: ...

    async def train(self, *, tenant_id: str, algorithms: list[str] | None) -> TrainingJob: ...

    async def items_changed(self, *, tenant_id: str, items: list[ItemContent]) -> None:
        """Created, imported or updated items: their content vectors are written now."""
        ...

    async def items_deleted(self, *, tenant_id: str, item_ids: list[str]) -> None: ...


@runtime_checkable
class BackgroundWork(Protocol):
    """A recommender with work of its own while the app runs (the in-process server's
    retraining scheduler): the app starts it on startup, with the app's cache (whose cached
    results a new model outdates), and stops it on shutdown."""

    async def start_background(self, cache: Cache) -> None: ...

    async def stop_background(self) -> None: ...
