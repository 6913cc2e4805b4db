"""The hybrid: which engines blend, with what weights, and the pure blending maths.

There is one hybrid. ``HybridConfig`` names it (engines, weights, normalisation, candidate
depth, cold-user weights); ``recommend.step`` serves it, ``benchmarks/quality.py`` measures it
through the same code, and ``training.hybrid_tuning`` chooses its weights on validation splits.

Input to the blend is always ``{engine: [(item_id, score), ...]}`` (best first, each engine's
top ``depth`` unseen items). Engines score on incomparable scales (EASE regression outputs,
cosine sums, counts), so each list is normalised first; reciprocal-rank fusion is the default
because it ignores scale entirely and holds up when one engine is missing or returns a short list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from training.algorithms import ALGORITHMS

Recommendation = tuple[str, float]
Normalisation = Literal["rrf", "rank", "minmax", "zscore"]


class Strategy(StrEnum):
    """How a list is made: the one vocabulary of the API's input (``strategy``), its output
    (``explanation.strategy``) and the recommendation step."""

    COLD_START = "cold_start"  # no history, or no engine had anything: popularity, content
    WEIGHTED = "weighted"  # a weighted blend of engines
    SWITCHING = "switching"  # one engine, chosen by how much the user has done
    ENGINE = "engine"  # the one engine (or an alias's engines) the request named


# What the hybrid may be asked to do (``HybridConfig.strategy``, a request's ``strategy``).
HYBRID_STRATEGIES = (Strategy.WEIGHTED, Strategy.SWITCHING)
RRF_OFFSET = 60.0  # the constant of Cormack et al.: damps the gap between rank 1 and rank 2
# The hybrid's name: what a request names to get the blend of engines, and the artifact name
# under which training stores a tenant's tuned blend weights (beside the engines').
HYBRID = "hybrid"


def _traits(trait: str) -> dict[str, float]:
    """``{engine: value}`` of a weight trait, highest first (the order engines are asked in)."""
    found = {name: float(getattr(cls, trait)) for name, cls in ALGORITHMS.items()}
    return dict(sorted(((n, w) for n, w in found.items() if w > 0), key=lambda nw: -nw[1]))


class HybridConfig(BaseModel):
    """The served hybrid. Defaults chosen by ``benchmarks/quality.py --tune`` on validation
    splits carved from the ML-100K training rows only (seeds 7, 123, 2024)."""

    # warm users: the tuned blend (each algorithm's ``hybrid_weight``)
    weights: dict[str, float] = Field(default_factory=lambda: _traits("hybrid_weight"))
    # a user with no history at all; warmth moves linearly from these to ``weights``
    cold_weights: dict[str, float] = Field(default_factory=lambda: _traits("cold_start_weight"))
    warm_at: int = Field(default=5, ge=0)
    # serve each tenant the warm weights its training tuned on its own holdout, when it has them
    per_tenant: bool = True
    # candidates asked of each engine (the blend sees each engine's top ``depth``)
    depth: int = Field(default=100, ge=1, le=1000)
    normalisation: Normalisation = "rrf"
    strategy: Strategy = Strategy.WEIGHTED
    # switching: serve the engine of the highest threshold <= the user's interaction count
    switch_at: list[tuple[int, str]] = Field(
        default_factory=lambda: sorted(
            (cls.switch_at, name) for name, cls in ALGORITHMS.items() if cls.switch_at is not None
        )
    )

    @field_validator("strategy")
    @classmethod
    def _hybrid_strategy(cls, value: Strategy) -> Strategy:
        if value not in HYBRID_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(HYBRID_STRATEGIES)}")
        return value

    def engines(self) -> list[str]:
        """Every engine this hybrid may ask, in a stable order."""
        named = [*self.weights, *self.cold_weights, *(e for _, e in self.switch_at)]
        return list(dict.fromkeys(named))

    def warmth(self, interactions: int) -> float:
        if self.warm_at <= 0:
            return 1.0
        return min(max(interactions, 0) / self.warm_at, 1.0)

    def weights_for(
        self,
        interactions: int,
        overrides: Mapping[str, float] | None = None,
        tenant: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """This user's engine weights (> 0 only): explicit ``overrides`` replace the blend;
        ``tenant`` (the tenant's tuned warm weights) replaces ``weights`` when ``per_tenant``."""
        if overrides:
            return {e: float(w) for e, w in overrides.items() if w > 0}
        warm = tenant if tenant and self.per_tenant else self.weights
        warmth = self.warmth(interactions)
        mixed: dict[str, float] = {}
        for engine, weight in warm.items():
            mixed[engine] = mixed.get(engine, 0.0) + warmth * weight
        for engine, weight in self.cold_weights.items():
            mixed[engine] = mixed.get(engine, 0.0) + (1.0 - warmth) * weight
        return {e: w for e, w in mixed.items() if w > 0}


@dataclass(frozen=True)
class HybridItem:
    item_id: str
    score: float
    engine_scores: dict[str, float] = field(default_factory=dict)


def normalise(scores: Sequence[Recommendation], method: Normalisation = "rrf") -> dict[str, float]:
    """One engine's list as ``{item: score}`` on a comparable scale (higher is better)."""
    if not scores:
        return {}
    ids = [item for item, _ in scores]
    raw = np.array([s for _, s in scores], dtype=np.float64)
    if method == "rrf":
        values = 1.0 / (RRF_OFFSET + np.arange(1, len(ids) + 1))
    elif method == "rank":
        values = 1.0 - np.arange(len(ids)) / len(ids)
    elif method == "minmax":
        span = raw.max() - raw.min()
        values = (raw - raw.min()) / span if span > 0 else np.ones_like(raw)
    elif method == "zscore":
        std = raw.std()
        values = (raw - raw.mean()) / std if std > 0 else np.zeros_like(raw)
    else:
        raise ValueError(f"unknown normalisation {method!r}")
    return dict(zip(ids, values.tolist(), strict=True))


def weighted_hybrid(
    results: Mapping[str, Sequence[Recommendation]],
    weights: Mapping[str, float],
    k: int = 10,
    *,
    method: Normalisation = "rrf",
) -> list[HybridItem]:
    """Sum of weighted normalised scores; ties broken by item id so the order is deterministic."""
    blended: dict[str, dict[str, float]] = {}
    for engine, recs in results.items():
        weight = weights.get(engine, 0.0)
        if weight <= 0:
            continue
        for item, value in normalise(recs, method).items():
            blended.setdefault(item, {})[engine] = weight * value
    ranked = sorted(blended.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[: max(k, 0)]
    return [HybridItem(item, sum(parts.values()), parts) for item, parts in ranked]


def switching_hybrid(
    results: Mapping[str, Sequence[Recommendation]],
    interaction_count: int,
    thresholds: Sequence[tuple[int, str]],
    k: int = 10,
) -> list[HybridItem]:
    """Serve one engine: the one with the highest threshold <= the user's interaction count
    that actually answered, falling back to lower thresholds (then to any answering engine)."""
    eligible = sorted((t for t in thresholds if t[0] <= interaction_count), reverse=True)
    order = [engine for _, engine in eligible] + sorted(results)
    for engine in order:
        recs = results.get(engine) or []
        if recs:
            return [
                HybridItem(item, float(score), {engine: float(score)})
                for item, score in list(recs)[: max(k, 0)]
            ]
    return []


def mmr_diversify(
    items: Sequence[HybridItem],
    similarity: Mapping[str, np.ndarray] | Callable[[str, str], float],
    lambda_: float = 0.7,
    k: int = 10,
) -> list[HybridItem]:
    """Maximal marginal relevance: trade relevance against similarity to items already chosen.

    ``similarity`` is either item vectors (cosine is used) or a pairwise function.
    ``lambda_ = 1`` keeps the relevance order; lower values diversify more.
    """
    if not items or k <= 0:
        return []
    sim = _pairwise(similarity)
    scores = np.array([it.score for it in items], dtype=np.float64)
    span = scores.max() - scores.min()
    relevance = (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    chosen: list[int] = []
    remaining = list(range(len(items)))
    max_sim = np.zeros(len(items))
    while remaining and len(chosen) < k:
        gains = [lambda_ * relevance[i] - (1 - lambda_) * max_sim[i] for i in remaining]
        best = remaining.pop(int(np.argmax(gains)))
        chosen.append(best)
        for i in remaining:
            max_sim[i] = max(max_sim[i], sim(items[i].item_id, items[best].item_id))
    return [items[i] for i in chosen]


def _pairwise(
    similarity: Mapping[str, np.ndarray] | Callable[[str, str], float],
) -> Callable[[str, str], float]:
    if callable(similarity):
        return similarity
    vectors = similarity

    def cosine(a: str, b: str) -> float:
        va, vb = vectors.get(a), vectors.get(b)
        if va is None or vb is None:
            return 0.0
        norm = float(np.linalg.norm(va) * np.linalg.norm(vb))
        return float(va @ vb) / norm if norm > 0 else 0.0

    return cosine


def engine_shares(engine_scores: Mapping[str, float]) -> dict[str, float]:
    """Each engine's share of an item's blended score (its positive parts only), largest first:
    what the explanation shows per engine."""
    total = sum(v for v in engine_scores.values() if v > 0)
    if total <= 0:
        return {}
    shares = sorted((-v / total, e) for e, v in engine_scores.items() if v > 0)
    return {engine: -share for share, engine in shares}


def explain(
    engine_scores: Mapping[str, float],
    because: str | None = None,
    title_of: Callable[[str], str] | None = None,
) -> str | None:
    """ "ease 70%, item_knn 30%; because you interacted with Toy Story (1995)"."""
    parts = []
    shares = engine_shares(engine_scores)
    if shares:
        parts.append(", ".join(f"{engine} {share:.0%}" for engine, share in shares.items()))
    if because:
        parts.append(f"because you interacted with {title_of(because) if title_of else because}")
    return "; ".join(parts) or None
