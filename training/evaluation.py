"""Offline evaluation with the Microsoft Recommenders protocol, so our numbers compare with theirs.

Split: ``python_stratified_split(ratio=0.75, seed=42)`` — per user, the user's rows (in input
order) are shuffled by ``RandomState(seed).permutation`` (what ``DataFrame.sample(frac=1,
random_state=seed)`` does) and the first ``round(0.75 * n)`` go to train; Python's ``round`` rounds
half to even, as theirs does. Ranking metrics use binary relevance over the top k and average over
the users present in both truth and predictions; ``mean_average_precision`` is their ``map`` (hit
precision summed over the top k, divided by *all* relevant items), the MAP of the published table.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from training.data import Events, InteractionMatrix, ItemInfo

RowT = TypeVar("RowT", bound=tuple)
Ranked = Mapping[str, Sequence[str]]
Truth = Mapping[str, set[str]]


class RankingModel(Protocol):
    def recommend_many(
        self, users: Sequence[str], k: int = 10, *, exclude_seen: bool = True
    ) -> list[list[tuple[str, float]]]: ...


class RatingModel(Protocol):
    def fit(self, data: InteractionMatrix, items: Sequence[ItemInfo] | None = None) -> Any: ...

    def predict(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray: ...


def python_stratified_split(
    rows: Iterable[RowT], ratio: float = 0.75, seed: int = 42, *, key: int = 0
) -> tuple[list[RowT], list[RowT]]:
    """Per-user (``row[key]``) random split; every user with >= 2 rows lands in both parts."""
    rows = list(rows)
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(r[key], len(index)) for r in rows), np.int64, len(rows))
    # Users in str order (ties in order of first appearance), as ``sorted(groups, key=str)``
    by_name = sorted(range(len(index)), key=[str(u) for u in index].__getitem__)
    rank = np.empty(len(index), dtype=np.int64)
    rank[by_name] = np.arange(len(index))
    train, test = stratified_split_index(rank[codes], ratio, seed)
    return [rows[i] for i in train], [rows[i] for i in test]


def stratified_split_index(
    groups: np.ndarray, ratio: float = 0.75, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """``python_stratified_split`` on group codes (rows of a group in input order, groups by
    ascending code): the positions of the training rows and of the test rows, in that order.

    Each group's shuffle is ``RandomState(seed).permutation(size)`` (a fresh state per group,
    as pandas builds one per ``.sample(random_state=seed)``), so it depends on the group's size
    alone: one permutation per distinct size serves every group, and no loop runs per row.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError("ratio must be strictly between 0 and 1")
    grouped = np.argsort(groups, kind="stable")
    ordered = groups[grouped]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else []
    sizes = np.diff(np.r_[starts, len(ordered)]).astype(np.int64)
    size_of_row = np.repeat(sizes, sizes)
    position = np.arange(len(ordered)) - np.repeat(starts, sizes)
    distinct = np.unique(sizes)
    offsets = np.zeros(int(distinct.max(initial=0)) + 1, dtype=np.int64)
    cuts = np.zeros_like(offsets)
    shuffles = []  # per distinct size: each position's place in the shuffled group
    for at, size in zip(np.cumsum(np.r_[0, distinct[:-1]]), distinct.tolist(), strict=True):
        offsets[size], cuts[size] = at, round(ratio * size)
        shuffles.append(np.argsort(np.random.RandomState(seed).permutation(size)))
    table = np.concatenate(shuffles) if shuffles else np.empty(0, dtype=np.int64)
    place = table[offsets[size_of_row] + position]
    group = np.repeat(np.arange(len(sizes)), sizes)
    order = np.lexsort((place, group))
    rows, is_train = grouped[order], (place < cuts[size_of_row])[order]
    return rows[is_train], rows[~is_train]


def stratified_pair_split(
    events: Iterable[RowT], ratio: float = 0.75, seed: int = 42
) -> tuple[list[RowT], list[RowT]]:
    """``pair_split_index`` over events ``(user, item, type, value, time)``."""
    events = list(events)
    train, test = pair_split_index(Events.from_rows(events), ratio, seed)
    return [events[i] for i in train], [events[i] for i in test]


def pair_split_index(
    events: Events, ratio: float = 0.75, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """``python_stratified_split`` over (user, item) pairs: every event of a pair lands on one
    side (a view trained on and the purchase of the same item held out would measure nothing).
    Returns the positions of the training events (in time order) and of one event per held-out
    pair; pairs are taken in time order (ties by item id, then type), so the split does not
    depend on the input order."""
    kinds = _str_rank(events.kind_names)[events.kinds]
    ordered = np.lexsort((kinds, _str_rank(events.item_ids)[events.items], events.times))
    pair = events.users[ordered].astype(np.int64) * len(events.item_ids) + events.items[ordered]
    _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    first_events = np.sort(first)  # one per pair, in order of the pair's first event
    users = events.users[ordered[first_events]]
    train_pairs, test_pairs = stratified_split_index(_str_rank(events.user_ids)[users], ratio, seed)
    kept = np.zeros(len(first), dtype=bool)
    kept[inverse[first_events[train_pairs]]] = True
    return ordered[kept[inverse]], ordered[first_events[test_pairs]]


def _str_rank(ids: Sequence[Any]) -> np.ndarray:
    """Each id's place in the ids sorted by ``str``."""
    rank = np.empty(len(ids), dtype=np.int64)
    rank[sorted(range(len(ids)), key=[str(i) for i in ids].__getitem__)] = np.arange(len(ids))
    return rank


def relevant_items(rows: Iterable[tuple]) -> dict[str, set[str]]:
    truth: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        truth[str(row[0])].add(str(row[1]))
    return dict(truth)


def _common(recommended: Ranked, relevant: Truth) -> list[str]:
    return [u for u, items in recommended.items() if items and relevant.get(u)]


def precision_at_k(recommended: Ranked, relevant: Truth, k: int = 10) -> float:
    users = _common(recommended, relevant)
    if not users:
        return 0.0
    hits = sum(len(set(recommended[u][:k]) & relevant[u]) for u in users)
    return hits / k / len(users)


def recall_at_k(recommended: Ranked, relevant: Truth, k: int = 10) -> float:
    users = _common(recommended, relevant)
    if not users:
        return 0.0
    total = sum(len(set(recommended[u][:k]) & relevant[u]) / len(relevant[u]) for u in users)
    return total / len(users)


def ndcg_at_k(recommended: Ranked, relevant: Truth, k: int = 10) -> float:
    """Binary-gain NDCG; the log base cancels in the ratio."""
    users = _common(recommended, relevant)
    if not users:
        return 0.0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    total = 0.0
    for u in users:
        gains = np.array([item in relevant[u] for item in recommended[u][:k]], dtype=float)
        ideal = discounts[: min(len(relevant[u]), k)].sum()
        total += float(gains @ discounts[: len(gains)]) / ideal
    return total / len(users)


def _average_precision_sum(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    hits, total = 0, 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total


def mean_average_precision(recommended: Ranked, relevant: Truth, k: int = 10) -> float:
    """Recommenders' ``map``: denominator is the user's number of relevant items."""
    users = _common(recommended, relevant)
    if not users:
        return 0.0
    total = sum(
        _average_precision_sum(recommended[u], relevant[u], k) / len(relevant[u]) for u in users
    )
    return total / len(users)


def map_at_k(recommended: Ranked, relevant: Truth, k: int = 10) -> float:
    """Recommenders' ``map_at_k`` (Spark's): denominator is min(relevant, k)."""
    users = _common(recommended, relevant)
    if not users:
        return 0.0
    total = sum(
        _average_precision_sum(recommended[u], relevant[u], k) / min(len(relevant[u]), k)
        for u in users
    )
    return total / len(users)


def catalogue_coverage(recommended: Ranked, catalogue: Collection[str] | int) -> float:
    """Share of the catalogue (ids, or just its size) that appears in at least one list."""
    distinct = {item for items in recommended.values() for item in items}
    if isinstance(catalogue, int):
        return len(distinct) / catalogue if catalogue > 0 else 0.0
    known = set(catalogue)
    return len(distinct & known) / len(known) if known else 0.0


def novelty(recommended: Ranked, train: InteractionMatrix) -> float:
    """Mean self-information -log2(share of training users who interacted with the item)."""
    reach = np.asarray((train.matrix != 0).sum(axis=0)).ravel() / max(train.n_users, 1)
    infos = []
    for items in recommended.values():
        for item in items:
            col = train.item_index(item)
            if col is not None and reach[col] > 0:
                infos.append(-math.log2(reach[col]))
    return float(np.mean(infos)) if infos else 0.0


def intra_list_diversity(
    recommended: Ranked,
    similarity: Callable[[Sequence[str]], np.ndarray],
) -> float:
    """Mean over lists of 1 - mean pairwise similarity (lists shorter than two are skipped)."""
    values = []
    for items in recommended.values():
        n = len(items)
        if n < 2:
            continue
        sims = similarity(items)
        pairwise = (sims.sum() - np.trace(sims)) / (n * (n - 1))
        values.append(1.0 - float(pairwise))
    return float(np.mean(values)) if values else 0.0


def cooccurrence_similarity(train: InteractionMatrix) -> Callable[[Sequence[str]], np.ndarray]:
    """Cosine of items' binary user vectors (recommenders' default co-occurrence measure)."""
    binary = (train.matrix != 0).astype(np.float32).tocsc()
    norms = np.sqrt(np.asarray(binary.multiply(binary).sum(axis=0)).ravel())

    def similarity(items: Sequence[str]) -> np.ndarray:
        cols = [train.item_index(i) for i in items]
        known = np.array([c is not None for c in cols])
        idx = np.array([c if c is not None else 0 for c in cols])
        block = binary[:, idx]
        sims = (block.T @ block).toarray() / np.maximum(np.outer(norms[idx], norms[idx]), 1e-12)
        sims[~known, :] = 0.0
        sims[:, ~known] = 0.0
        return sims

    return similarity


def category_similarity(items: Sequence[ItemInfo]) -> Callable[[Sequence[str]], np.ndarray]:
    """1 when two items share a category, else 0."""
    category = {item.id: item.category for item in items}

    def similarity(ids: Sequence[str]) -> np.ndarray:
        cats = [category.get(i) for i in ids]
        return np.array([[float(a is not None and a == b) for b in cats] for a in cats])

    return similarity


def ranking_metrics(recommended: Ranked, relevant: Truth, k: int = 10) -> dict[str, float]:
    return {
        f"precision@{k}": precision_at_k(recommended, relevant, k),
        f"recall@{k}": recall_at_k(recommended, relevant, k),
        f"ndcg@{k}": ndcg_at_k(recommended, relevant, k),
        "map": mean_average_precision(recommended, relevant, k),
        f"map@{k}": map_at_k(recommended, relevant, k),
    }


def evaluate_ranking(
    model: RankingModel, train: InteractionMatrix, test_rows: Iterable[tuple], k: int = 10
) -> dict[str, float]:
    """Top-k quality of a fitted model on held-out rows (user, item, ...), seen items excluded."""
    relevant = relevant_items(test_rows)
    users = [u for u in relevant if train.user_index(u) is not None]
    started = time.perf_counter()
    lists = model.recommend_many(users, k, exclude_seen=True)
    elapsed = time.perf_counter() - started
    recommended = {u: [item for item, _ in recs] for u, recs in zip(users, lists, strict=True)}
    result = ranking_metrics(recommended, relevant, k)
    result["coverage"] = catalogue_coverage(recommended, [str(i) for i in train.item_ids])
    result["novelty"] = novelty(recommended, train)
    result["diversity"] = intra_list_diversity(recommended, cooccurrence_similarity(train))
    result["users"] = float(len(users))
    result["recommend_seconds"] = elapsed
    return result


def rmse_mae(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    error = np.asarray(predicted, dtype=float) - np.asarray(actual, dtype=float)
    return float(np.sqrt(np.mean(error**2))), float(np.mean(np.abs(error)))


def evaluate_rating_folds(
    factory: Callable[[], RatingModel], path: str | Path, folds: Sequence[int] = (1, 2, 3, 4, 5)
) -> dict[str, Any]:
    """RMSE/MAE on MovieLens-100K's official u1..u5 base/test folds, averaged."""
    from training.datasets.movielens import read_ml100k_items, read_ml100k_ratings

    root = Path(path)
    items = read_ml100k_items(root)
    per_fold = []
    for fold in folds:
        train_rows = read_ml100k_ratings(root / f"u{fold}.base")
        test_rows = read_ml100k_ratings(root / f"u{fold}.test")
        model = factory()
        model.fit(InteractionMatrix.from_ratings(train_rows, items=items), items)
        predicted = model.predict([r[0] for r in test_rows], [r[1] for r in test_rows])
        rmse, mae = rmse_mae(predicted, np.array([r[2] for r in test_rows]))
        per_fold.append({"fold": fold, "rmse": rmse, "mae": mae})
    return {
        "rmse": float(np.mean([f["rmse"] for f in per_fold])),
        "mae": float(np.mean([f["mae"] for f in per_fold])),
        "folds": per_fold,
    }


__all__ = [
    "catalogue_coverage",
    "category_similarity",
    "cooccurrence_similarity",
    "evaluate_ranking",
    "evaluate_rating_folds",
    "intra_list_diversity",
    "map_at_k",
    "mean_average_precision",
    "ndcg_at_k",
    "novelty",
    "pair_split_index",
    "precision_at_k",
    "python_stratified_split",
    "ranking_metrics",
    "recall_at_k",
    "relevant_items",
    "rmse_mae",
    "stratified_pair_split",
    "stratified_split_index",
]
