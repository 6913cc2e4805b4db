"""Choosing the hybrid's engine weights on a validation split carved from the training data.

The test split is never looked at here: the caller splits its *training* rows again (same
stratified protocol), fits the engines on the inner part and hands the held-out inner rows in.
Each engine's list is normalised exactly as the served blend does it (its top ``depth`` unseen
items, ``training.hybrid.normalise``, nothing for the rest), once, as a dense matrix; a weight
vector is then a weighted sum, so coordinate ascent over a weight grid costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from training.algorithms.base import Recommender
from training.data import InteractionMatrix
from training.hybrid import RRF_OFFSET, Normalisation

DEFAULT_DEPTH = 100

WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)


@dataclass
class TuningResult:
    weights: dict[str, float]
    normalisation: Normalisation
    ndcg: float
    single_engine_ndcg: dict[str, float] = field(default_factory=dict)


def normalise_top(
    scores: np.ndarray, seen: sp.csr_matrix, method: Normalisation, depth: int
) -> np.ndarray:
    """Each row's top ``depth`` unseen items normalised as ``training.hybrid.normalise`` does
    for one engine's list; every other item 0 (the served blend never sees it)."""
    scores = np.array(scores, dtype=np.float64)
    scores[~np.isfinite(scores)] = -np.inf
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    depth = min(depth, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    values = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    top, values = np.take_along_axis(top, order, axis=1), np.take_along_axis(values, order, axis=1)
    valid = np.isfinite(values)
    if method == "rrf":
        normalised = np.broadcast_to(1.0 / (RRF_OFFSET + np.arange(1, depth + 1)), values.shape)
    elif method == "rank":
        counts = np.maximum(valid.sum(axis=1, keepdims=True), 1)
        normalised = 1.0 - np.arange(depth)[None, :] / counts
    else:
        masked = np.where(valid, values, np.nan)
        if method == "minmax":
            low = np.nanmin(masked, axis=1, keepdims=True)
            span = np.nanmax(masked, axis=1, keepdims=True) - low
            normalised = np.where(span > 0, (masked - low) / np.where(span > 0, span, 1), 1.0)
        else:
            mean = np.nanmean(masked, axis=1, keepdims=True)
            std = np.nanstd(masked, axis=1, keepdims=True)
            normalised = np.where(std > 0, (masked - mean) / np.where(std > 0, std, 1), 0.0)
    out = np.zeros_like(scores)
    np.put_along_axis(out, top, np.where(valid, normalised, 0.0), axis=1)
    return out


@dataclass
class _Problem:
    scores: dict[str, np.ndarray]  # engine -> normalised users x items, seen items at -inf
    relevant: np.ndarray  # bool users x items
    ideal: np.ndarray  # IDCG per user
    k: int

    def ndcg(self, weights: Mapping[str, float]) -> float:
        return float(np.mean(self.per_user(weights)))

    def per_user(self, weights: Mapping[str, float]) -> np.ndarray:
        total = sum(w * self.scores[e] for e, w in weights.items() if w > 0)
        if isinstance(total, int):
            return np.zeros(len(self.ideal))
        top = np.argpartition(-total, self.k, axis=1)[:, : self.k]
        order = np.argsort(-np.take_along_axis(total, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        gains = np.take_along_axis(self.relevant, top, axis=1)
        discounts = 1.0 / np.log2(np.arange(2, self.k + 2))
        return (gains @ discounts) / self.ideal


def _problem(
    engines: Mapping[str, Recommender],
    train: InteractionMatrix,
    validation_rows: Iterable[tuple],
    method: Normalisation,
    k: int,
    depth: int = DEFAULT_DEPTH,
) -> _Problem:
    truth: dict[int, list[int]] = {}
    for row in validation_rows:
        u, i = train.user_index(str(row[0])), train.item_index(str(row[1]))
        if u is not None and i is not None:
            truth.setdefault(u, []).append(i)
    users = np.array(sorted(truth), dtype=np.int64)
    relevant = np.zeros((len(users), train.n_items), dtype=bool)
    for pos, u in enumerate(users):
        relevant[pos, truth[u]] = True
    seen = train.matrix[users]
    scores = {}
    for name, engine in engines.items():
        normalised = normalise_top(engine.score_rows(users), seen, method, depth)
        rows, cols = seen.nonzero()
        normalised[rows, cols] = -np.inf
        scores[name] = normalised
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(relevant.sum(axis=1), k) - 1]
    return _Problem(scores, relevant, ideal, k)


class _Folds:
    """Several validation problems scored as one: the mean NDCG over the folds."""

    def __init__(self, problems: Sequence[_Problem]):
        self.problems = list(problems)
        self.engines = list(self.problems[0].scores)

    def ndcg(self, weights: Mapping[str, float]) -> float:
        return float(np.mean([problem.ndcg(weights) for problem in self.problems]))

    def per_user(self, weights: Mapping[str, float]) -> np.ndarray:
        return np.concatenate([problem.per_user(weights) for problem in self.problems])


def _coordinate_ascent(
    problem: _Folds, start: dict[str, float], rounds: int, min_gain: float
) -> tuple[dict, float]:
    weights, best = dict(start), problem.ndcg(start)
    for _ in range(rounds):
        improved = False
        for engine in problem.engines:
            for value in WEIGHT_GRID:
                candidate = {**weights, engine: value}
                score = problem.ndcg(candidate)
                if score > best + min_gain:
                    weights, best, improved = candidate, score, True
        if not improved:
            break
    return weights, best


Fold = tuple[Mapping[str, Recommender], InteractionMatrix, Sequence[tuple]]


def tune_weights(
    engines: Mapping[str, Recommender],
    train: InteractionMatrix,
    validation_rows: Sequence[tuple],
    *,
    methods: Sequence[Normalisation] = ("zscore", "rrf"),
    k: int = 10,
    depth: int = DEFAULT_DEPTH,
    rounds: int = 4,
    min_gain: float = 0.001,
) -> TuningResult:
    """Best NDCG@k weights (and normalisation) for engines fitted on ``train``."""
    folds = [(engines, train, validation_rows)]
    return tune_weights_folds(
        folds, methods=methods, k=k, depth=depth, rounds=rounds, min_gain=min_gain
    )


def tune_weights_folds(
    folds: Sequence[Fold],
    *,
    methods: Sequence[Normalisation] = ("zscore", "rrf"),
    k: int = 10,
    depth: int = DEFAULT_DEPTH,
    rounds: int = 4,
    min_gain: float = 0.001,
) -> TuningResult:
    """Weights maximising the mean validation NDCG@k over several (engines, train, rows) folds.

    One validation split is noisy at this scale (two seeds can crown different leaders), so
    several splits are averaged. Starts from the best single engine with weight 1 so the blend
    can only add to it; a change must gain ``min_gain`` NDCG, so noise does not dilute it.
    """
    if not folds:
        raise ValueError("no validation folds to tune on")
    best: TuningResult | None = None
    for method in methods:
        problem = _Folds([_problem(e, tr, rows, method, k, depth) for e, tr, rows in folds])
        singles = {e: problem.ndcg({e: 1.0}) for e in problem.engines}
        leader = max(singles, key=singles.__getitem__)
        weights, score = _coordinate_ascent(problem, {leader: 1.0}, rounds, min_gain)
        if best is None or score > best.ndcg:
            chosen = {e: w for e, w in weights.items() if w > 0}
            best = TuningResult(chosen, method, score, singles)
    if best is None:
        raise ValueError("no normalisation methods to try")
    return best


def choose_blend(
    engines: Mapping[str, Recommender],
    train: InteractionMatrix,
    validation_rows: Sequence[tuple],
    default: Mapping[str, float],
    *,
    k: int = 10,
    depth: int = DEFAULT_DEPTH,
    z: float = 2.0,
) -> TuningResult:
    """A tenant's blend: the tuned one, or its best engine alone, only where it beats
    ``default`` on this validation split by more than ``z`` standard errors of the per-user
    NDCG difference; else ``default`` (restricted to the engines it has).

    One tenant's holdout is small and noisy: searching weights freely on it finds blends that
    win on the holdout and lose on new data. Asking for a significant gain keeps the tuned
    defaults unless the tenant's data clearly says otherwise (another engine leads it).
    """
    problem = _Folds([_problem(engines, train, validation_rows, "rrf", k, depth)])
    singles = {e: problem.ndcg({e: 1.0}) for e in problem.engines}
    leader = max(singles, key=singles.__getitem__)
    base = {e: float(w) for e, w in default.items() if e in engines and w > 0} or {leader: 1.0}
    tuned, _ = _coordinate_ascent(problem, {leader: 1.0}, rounds=4, min_gain=0.001)
    chosen, base_scores = base, problem.per_user(base)
    for candidate in ({e: w for e, w in tuned.items() if w > 0}, {leader: 1.0}):
        diff = problem.per_user(candidate) - base_scores
        error = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.inf
        if diff.mean() > z * error:
            chosen = candidate
            break
    return TuningResult(chosen, "rrf", problem.ndcg(chosen), singles)
