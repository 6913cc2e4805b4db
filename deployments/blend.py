"""From per-engine answers to the reply's ranked items, with ``training.hybrid`` doing the maths.

Weights adapt to how much we know about the user; MMR diversification and the "because you
interacted with" explanation both need item-item similarity, which the combiner fetches from an
engine (``Engine.similarity``) and passes in here as a matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from graph_api.recommender import RecommendationRequest, ScoredItem
from training.hybrid import HybridItem, adaptive_weights, explain, mmr_diversify, weighted_hybrid

Pairs = Sequence[tuple[str, float]]
# A user with a history (or known to a collaborative engine) counts as warm from this many items.
WARM_AT = 20
MMR_LAMBDA = 0.7


@dataclass(frozen=True)
class Similarity:
    """Cosine-like similarity of ``rows`` (candidates) to ``cols`` (candidates, then history)."""

    rows: list[str]
    cols: list[str]
    matrix: np.ndarray

    def pair(self, a: str, b: str) -> float:
        try:
            return float(self.matrix[self.rows.index(a), self.cols.index(b)])
        except ValueError:
            return 0.0

    def most_similar(self, item: str, among: Sequence[str]) -> str | None:
        scored = [(self.pair(item, other), other) for other in among if other != item]
        best = max(scored, default=(0.0, None))
        return best[1] if best[0] > 0 else None


def engine_weights(
    answered: Mapping[str, Pairs], request: RecommendationRequest, base: Mapping[str, float]
) -> dict[str, float]:
    # Collaborative engines only answer users they know; a fresh history says how much we know.
    count = len(request.history) if request.history is not None else WARM_AT
    base_weights = {engine: base.get(engine, 1.0) for engine in answered}
    return adaptive_weights(base_weights, count, answered, request.weights, warm_at=WARM_AT)


def blend_candidates(
    answered: Mapping[str, Pairs], request: RecommendationRequest, base: Mapping[str, float]
) -> list[HybridItem]:
    """Blended candidates, more than ``k`` when diversifying (MMR picks among them)."""
    if not answered:
        return []
    weights = engine_weights(answered, request, base)
    depth = request.k * 3 if request.diversify else request.k
    return weighted_hybrid(answered, weights, depth)


def finish(
    candidates: list[HybridItem],
    request: RecommendationRequest,
    similarity: Similarity | None,
) -> list[ScoredItem]:
    """Diversify (when asked and similarity is known), cut to ``k``, attach explanations."""
    chosen = candidates
    if request.diversify and similarity is not None:
        chosen = mmr_diversify(candidates, similarity.pair, MMR_LAMBDA, request.k)
    chosen = chosen[: request.k]
    history = list(request.history or ())
    items = []
    for item in chosen:
        because = None
        if request.explain and similarity is not None and history:
            because = similarity.most_similar(item.item_id, history)
        reason = explain(item.engine_scores, because) if request.explain else None
        items.append(
            ScoredItem(
                item_id=item.item_id,
                score=float(item.score),
                engine_scores={e: float(s) for e, s in item.engine_scores.items()},
                reason=reason,
                because_item_id=because,
            )
        )
    return items
