"""Turning engine request dicts into model calls, batched where the model allows it.

The engine receives plain dicts (they cross process boundaries); this module holds the pure logic
so it is tested without Ray: requests that share a model, a filter and ``exclude_seen`` are
answered by one vectorised ``recommend_many`` call; requests carrying a fresh history need the
per-user fold-in, so they go one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from training.algorithms.base import RecFilter

if TYPE_CHECKING:
    from training.algorithms.base import Recommendation, Recommender


# Engines whose ranking does not depend on the user: they answer cold users too.
NON_PERSONAL = frozenset({"popularity", "trending"})


@dataclass(frozen=True)
class EngineQuery:
    user_id: str
    k: int = 10
    exclude_seen: bool = True
    filter: RecFilter | None = None
    history: tuple[str, ...] | None = None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> EngineQuery:
        history = payload.get("history")
        return cls(
            user_id=str(payload.get("user_id") or ""),
            k=max(0, int(payload.get("k", 10))),
            exclude_seen=bool(payload.get("exclude_seen", True)),
            filter=filter_from_payload(payload),
            history=tuple(history) if history is not None else None,
        )


def filter_from_payload(payload: dict[str, Any]) -> RecFilter | None:
    categories = payload.get("categories")
    excluded = payload.get("exclude_item_ids") or ()
    allowed = payload.get("allowed_item_ids")
    if categories is None and not excluded and allowed is None:
        return None
    return RecFilter(
        categories=frozenset(categories) if categories is not None else None,
        exclude_items=frozenset(excluded),
        allowed_items=frozenset(allowed) if allowed is not None else None,
    )


def as_pairs(recs: Sequence[Recommendation]) -> list[tuple[str, float]]:
    """Plain (str, float) pairs: numpy scalars would make every reply pickle numpy types."""
    return [(str(item), float(score)) for item, score in recs]


def non_personal_top(model: Recommender, query: EngineQuery) -> list[tuple[str, float]]:
    """The model's ranking for nobody in particular (popularity, trending).

    ``recommend`` answers an unknown user with nothing, which is right for personal models but
    not for the cold-start engines: their scores do not depend on the row, so row 0 stands in.
    """
    if model.name not in NON_PERSONAL or model.n_items == 0 or query.k <= 0:
        return []
    scores = np.array(model.score_rows(np.zeros(1, dtype=np.int64))[0], dtype=np.float64)
    eligible = np.isfinite(scores)
    rec_filter = query.filter
    if rec_filter is not None:
        if rec_filter.categories is not None:
            eligible &= np.array([c in rec_filter.categories for c in model.categories], bool)
        if rec_filter.allowed_items is not None:
            eligible &= np.isin(model.item_ids.astype(str), list(rec_filter.allowed_items))
        eligible &= ~np.isin(model.item_ids.astype(str), list(rec_filter.exclude_items))
    history = [model.item_index(i) for i in query.history or ()]
    eligible[[i for i in history if i is not None]] = False
    candidates = np.flatnonzero(eligible)
    order = np.argsort(-scores[candidates], kind="stable")[: query.k]
    return [(str(model.item_ids[j]), float(scores[j])) for j in candidates[order]]


def run_queries(
    model: Recommender, queries: Sequence[EngineQuery]
) -> list[list[tuple[str, float]]]:
    """Answer ``queries`` in order, sharing one ``recommend_many`` per compatible group."""
    results: list[list[tuple[str, float]] | None] = [None] * len(queries)
    groups: dict[tuple[RecFilter | None, bool], list[int]] = {}
    non_personal = model.name in NON_PERSONAL
    for position, query in enumerate(queries):
        if non_personal and model.user_index(query.user_id) is None:
            results[position] = non_personal_top(model, query)
        elif query.history is not None:
            recs = model.recommend(
                query.user_id,
                query.k,
                exclude_seen=query.exclude_seen,
                filter=query.filter,
                history=query.history,
            )
            results[position] = as_pairs(recs)
        else:
            groups.setdefault((query.filter, query.exclude_seen), []).append(position)
    for (rec_filter, exclude_seen), positions in groups.items():
        # One call at the largest k, then each request keeps its own prefix.
        k = max(queries[p].k for p in positions)
        users = [queries[p].user_id for p in positions]
        many = model.recommend_many(users, k, exclude_seen=exclude_seen, filter=rec_filter)
        for position, recs in zip(positions, many, strict=True):
            results[position] = as_pairs(recs[: queries[position].k])
    return [r if r is not None else [] for r in results]


def similarity_matrix(model: Recommender, rows: Sequence[str], cols: Sequence[str]) -> np.ndarray:
    """``len(rows) x len(cols)`` similarities scaled to [0, 1]; unknown items score 0."""
    matrix = np.zeros((len(rows), len(cols)), dtype=np.float64)
    col_index = [model.item_index(c) for c in cols]
    known_cols = [j for j, c in enumerate(col_index) if c is not None]
    targets = np.array([col_index[j] for j in known_cols], dtype=np.int64)
    for i, item in enumerate(rows):
        row = model.item_index(item)
        if row is not None and len(targets):
            matrix[i, known_cols] = np.asarray(model.item_scores(row), dtype=np.float64)[targets]
    matrix[~np.isfinite(matrix)] = 0.0
    # Engines score on their own scales (cosine, dot products): MMR needs a common one.
    peak = matrix.max(initial=0.0)
    return np.clip(matrix / peak, 0.0, 1.0) if peak > 0 else matrix
