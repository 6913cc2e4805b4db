"""Blending per-engine results: pure functions the Serve combiner and HybridRecommender share.

Input is always ``{engine: [(item_id, score), ...]}`` (best first). Engines score on incomparable
scales (EASE regression outputs, cosine sums, counts), so every blend normalises each engine's
list first; reciprocal-rank fusion is the default because it ignores scale entirely and holds up
when one engine is missing or returns a short list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from training.hybrid_model import HybridRecommender

Recommendation = tuple[str, float]
Normalisation = Literal["rrf", "rank", "minmax", "zscore"]
COLLABORATIVE = frozenset({"ease", "item_knn", "user_knn", "als", "bpr", "svd"})
COLD_START = frozenset({"content", "popularity", "trending"})
RRF_OFFSET = 60.0  # the constant of Cormack et al.: damps the gap between rank 1 and rank 2


@dataclass(frozen=True)
class HybridItem:
    item_id: str
    score: float
    engine_scores: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


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


def adaptive_weights(
    base_weights: Mapping[str, float],
    user_interaction_count: int,
    engines_available: Iterable[str],
    overrides: Mapping[str, float] | None = None,
    *,
    warm_at: int = 20,
) -> dict[str, float]:
    """Weights for this user, summing to 1 over the engines that answered.

    Collaborative engines scale with the user's warmth (interactions / ``warm_at``, capped at 1);
    content and popularity engines gain what they lose, so a cold user leans on them.
    ``overrides`` (e.g. a tenant's or request's explicit weights) win over both.
    """
    available = [
        e for e in engines_available if base_weights.get(e, 0.0) > 0 or e in (overrides or {})
    ]
    warmth = min(max(user_interaction_count, 0) / warm_at, 1.0) if warm_at > 0 else 1.0
    weights: dict[str, float] = {}
    for engine in available:
        base = base_weights.get(engine, 0.0)
        if engine in COLLABORATIVE:
            weights[engine] = base * warmth
        elif engine in COLD_START:
            weights[engine] = base * (1.0 + 2.0 * (1.0 - warmth))
        else:
            weights[engine] = base
    weights.update({e: w for e, w in (overrides or {}).items() if e in available})
    total = sum(max(w, 0.0) for w in weights.values())
    if total <= 0:
        # Nothing usable (e.g. a brand-new user and only collaborative engines): fall back to
        # popularity when it answered, else treat every answering engine alike
        fallback = ["popularity"] if "popularity" in available else available
        return {e: 1.0 / len(fallback) for e in fallback} if fallback else {}
    return {e: max(w, 0.0) / total for e, w in weights.items() if w > 0}


def weighted_hybrid(
    results: Mapping[str, Sequence[Recommendation]],
    weights: Mapping[str, float],
    k: int = 10,
    *,
    method: Normalisation = "rrf",
    because: Mapping[str, str] | None = None,
) -> list[HybridItem]:
    """Sum of weighted normalised scores; ``because`` maps item -> an item the user knows."""
    blended: dict[str, dict[str, float]] = {}
    for engine, recs in results.items():
        weight = weights.get(engine, 0.0)
        if weight <= 0:
            continue
        for item, value in normalise(recs, method).items():
            blended.setdefault(item, {})[engine] = weight * value
    ranked = sorted(blended.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[: max(k, 0)]
    return [
        HybridItem(item, sum(parts.values()), parts, explain(parts, (because or {}).get(item)))
        for item, parts in ranked
    ]


def switching_hybrid(
    results: Mapping[str, Sequence[Recommendation]],
    interaction_count: int,
    thresholds: Sequence[tuple[int, str]] = ((0, "popularity"), (3, "content"), (10, "ease")),
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
                HybridItem(item, float(score), {engine: float(score)}, f"from {engine}")
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


def explain(
    engine_scores: Mapping[str, float],
    because: str | None = None,
    title_of: Callable[[str], str] | None = None,
) -> str | None:
    """ "ease 70%, item_knn 30%; because you interacted with Toy Story (1995)"."""
    total = sum(v for v in engine_scores.values() if v > 0)
    parts = []
    if total > 0:
        shares = sorted((-v / total, e) for e, v in engine_scores.items() if v > 0)
        parts.append(", ".join(f"{engine} {-share:.0%}" for share, engine in shares))
    if because:
        parts.append(f"because you interacted with {title_of(because) if title_of else because}")
    return "; ".join(parts) or None


def __getattr__(name: str) -> Any:
    # The model wrapper imports the algorithm registry; load it only when asked for, so the
    # combiner can use these pure functions cheaply.
    if name == "HybridRecommender":
        from training.hybrid_model import HybridRecommender

        return HybridRecommender
    raise AttributeError(name)


__all__ = [
    "COLD_START",
    "COLLABORATIVE",
    "HybridItem",
    "HybridRecommender",
    "adaptive_weights",
    "explain",
    "mmr_diversify",
    "normalise",
    "switching_hybrid",
    "weighted_hybrid",
]
