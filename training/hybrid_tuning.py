"""Choosing the hybrid's engine weights on a validation split carved from the training data.

The test split is never looked at here: the caller splits its *training* rows again (same
stratified protocol), fits the engines on the inner part and hands the held-out inner rows in.
Every engine's normalised score matrix is computed once; a weight vector is then just a dense
weighted sum, so coordinate ascent over a weight grid costs milliseconds per candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from training.algorithms.base import Recommender
from training.data import InteractionMatrix
from training.hybrid_model import RowNormalisation, normalise_rows

WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)


@dataclass
class TuningResult:
    weights: dict[str, float]
    normalisation: RowNormalisation
    ndcg: float
    single_engine_ndcg: dict[str, float] = field(default_factory=dict)


@dataclass
class _Problem:
    scores: dict[str, np.ndarray]  # engine -> normalised users x items, seen items at -inf
    relevant: np.ndarray  # bool users x items
    ideal: np.ndarray  # IDCG per user
    k: int

    def ndcg(self, weights: Mapping[str, float]) -> float:
        total = sum(w * self.scores[e] for e, w in weights.items() if w > 0)
        if isinstance(total, int):
            return 0.0
        top = np.argpartition(-total, self.k, axis=1)[:, : self.k]
        order = np.argsort(-np.take_along_axis(total, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        gains = np.take_along_axis(self.relevant, top, axis=1)
        discounts = 1.0 / np.log2(np.arange(2, self.k + 2))
        return float(np.mean((gains @ discounts) / self.ideal))


def _problem(
    engines: Mapping[str, Recommender],
    train: InteractionMatrix,
    validation_rows: Iterable[tuple],
    method: RowNormalisation,
    k: int,
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
        normalised = normalise_rows(engine.score_rows(users), seen, method)
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
    methods: Sequence[RowNormalisation] = ("zscore", "rrf"),
    k: int = 10,
    rounds: int = 4,
    min_gain: float = 0.001,
) -> TuningResult:
    """Best NDCG@k weights (and normalisation) for engines fitted on ``train``."""
    folds = [(engines, train, validation_rows)]
    return tune_weights_folds(folds, methods=methods, k=k, rounds=rounds, min_gain=min_gain)


def tune_weights_folds(
    folds: Sequence[Fold],
    *,
    methods: Sequence[RowNormalisation] = ("zscore", "rrf"),
    k: int = 10,
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
        problem = _Folds([_problem(e, train, rows, method, k) for e, train, rows in folds])
        singles = {e: problem.ndcg({e: 1.0}) for e in problem.engines}
        leader = max(singles, key=singles.__getitem__)
        weights, score = _coordinate_ascent(problem, {leader: 1.0}, rounds, min_gain)
        if best is None or score > best.ndcg:
            chosen = {e: w for e, w in weights.items() if w > 0}
            best = TuningResult(chosen, method, score, singles)
    if best is None:
        raise ValueError("no normalisation methods to try")
    return best
