"""What one engine does with one model: the typed queries and the pure functions answering them.

The engine deployment and the in-process engines both call ``answer`` (or ``run_queries`` for a
batch), so an engine answers the same whichever transport carried the query. Queries are frozen
dataclasses that Serve passes through handles as they are; nothing is converted to dicts.
Requests that share a model, a filter and ``exclude_seen`` and add nothing to the user's trained
row are answered by one vectorised ``recommend_many``; the others fold their history in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from training.algorithms.base import RecFilter

if TYPE_CHECKING:
    from training.algorithms.base import Recommendation, Recommender

Pairs = list[tuple[str, float]]
T = TypeVar("T")
# Up to this many item scores a call is scored on the caller's event loop (one ML-100K user:
# 1,682; one user of 50,000 items: 50,000, about a millisecond); beyond, in a worker thread.
INLINE_SCORES = 100_000


async def scored(model: Any, queries: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)``: on the event loop when it scores at most ``INLINE_SCORES`` items (a
    thread handoff cost an engine replica more CPU than scoring one ML-100K user), else in a
    worker thread, so a large batch does not hold the loop."""
    if queries * int(getattr(model, "n_items", 0) or 0) <= INLINE_SCORES:
        return work(*args)
    return await asyncio.to_thread(work, *args)


@dataclass(frozen=True)
class EngineQuery:
    """A user's top-k (``recommend``), or everybody's (``top_items``)."""

    user_id: str = ""
    k: int = 10
    exclude_seen: bool = True
    filter: RecFilter | None = None
    history: tuple[str, ...] | None = None
    trace: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SimilarityQuery:
    """Similarity of ``rows`` (candidates) to ``cols`` (candidates, then history)."""

    rows: tuple[str, ...]
    cols: tuple[str, ...]
    trace: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class SimilarQuery:
    item_id: str
    k: int = 10
    trace: dict[str, str] = field(default_factory=dict, compare=False)


def make_filter(
    categories: Sequence[str] | None = None,
    exclude_items: Sequence[str] = (),
    allowed_items: Sequence[str] | None = None,
    exclude_categories: Sequence[str] = (),
) -> RecFilter | None:
    if categories is None and allowed_items is None and not (exclude_items or exclude_categories):
        return None
    return RecFilter(
        categories=frozenset(categories) if categories is not None else None,
        exclude_items=frozenset(exclude_items),
        allowed_items=frozenset(allowed_items) if allowed_items is not None else None,
        exclude_categories=frozenset(exclude_categories),
    )


def as_pairs(recs: Sequence[Recommendation]) -> Pairs:
    """Plain (str, float) pairs: numpy scalars would make every reply pickle numpy types."""
    return [(str(item), float(score)) for item, score in recs]


def non_personal_top(model: Recommender, query: EngineQuery) -> Pairs:
    """The model's ranking for nobody in particular (popularity, trending).

    ``recommend`` answers an unknown user with nothing, which is right for personal models but
    not for the cold-start engines: their scores do not depend on the row, so row 0 stands in.
    """
    if model.personal or model.n_items == 0 or query.k <= 0:
        return []
    scores = np.array(model.score_rows(np.zeros(1, dtype=np.int64))[0], dtype=np.float64)
    eligible = np.isfinite(scores)
    rec_filter = query.filter
    if rec_filter is not None:
        by_category = rec_filter.category_mask(model.categories)
        if by_category is not None:
            eligible &= by_category
        if rec_filter.allowed_items is not None:
            eligible &= np.isin(model.item_ids.astype(str), list(rec_filter.allowed_items))
        eligible &= ~np.isin(model.item_ids.astype(str), list(rec_filter.exclude_items))
    history = [model.item_index(i) for i in query.history or ()]
    eligible[[i for i in history if i is not None]] = False
    candidates = np.flatnonzero(eligible)
    order = np.argsort(-scores[candidates], kind="stable")[: query.k]
    return [(str(model.item_ids[j]), float(scores[j])) for j in candidates[order]]


def run_queries(model: Recommender, queries: Sequence[EngineQuery]) -> list[Pairs]:
    """Answer ``queries`` in order, sharing one ``recommend_many`` per compatible group."""
    results: list[Pairs | None] = [None] * len(queries)
    groups: dict[tuple[RecFilter | None, bool], list[int]] = {}
    for position, query in enumerate(queries):
        known = model.user_index(query.user_id) is not None
        if not model.personal and not known:
            results[position] = non_personal_top(model, query)
        elif model.fold_in_row(query.user_id, query.history) is not None:
            recs = model.recommend(
                query.user_id,
                query.k,
                exclude_seen=query.exclude_seen,
                filter=query.filter,
                history=query.history,
            )
            results[position] = as_pairs(recs)
        elif known:
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
    row_index = [model.item_index(item) for item in rows]
    known_rows = [i for i, r in enumerate(row_index) if r is not None]
    if known_rows and len(targets):
        sources = np.array([row_index[i] for i in known_rows], dtype=np.int64)
        matrix[np.ix_(known_rows, known_cols)] = model.pair_scores(sources, targets)
    matrix[~np.isfinite(matrix)] = 0.0
    # Engines score on their own scales (cosine, dot products): MMR needs a common one.
    peak = matrix.max(initial=0.0)
    return np.clip(matrix / peak, 0.0, 1.0) if peak > 0 else matrix


def answer(model: Recommender, method: str, query: Any) -> Any:
    """One engine call by method name, as the engine deployment exposes them."""
    if method == "recommend":
        return run_queries(model, [query])[0]
    if method == "top_items":
        return non_personal_top(model, query)
    if method == "similar_items":
        return as_pairs(model.similar_items(query.item_id, query.k))
    if method == "similarity":
        return similarity_matrix(model, query.rows, query.cols)
    raise ValueError(f"unknown engine method {method!r}")
