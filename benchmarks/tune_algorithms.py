"""Hyperparameter search for the single engines on MovieLens-100K, printed as one table.

    python -m benchmarks.tune_algorithms --data ../shared/data/ml-100k [--algorithms ease als]

Ranking engines: the Recommenders protocol (per-user stratified 75/25 split, seed 42, k=10).
Every grid point is scored on a validation split carved from the *training* part only (75/25
again); the winner is refitted on the whole training part and scored once on the test part.
SVD is tuned on a random 85/15 split of u1.base and then reported on the official u1..u5 folds.
The winners are the ``Config`` defaults in ``training/algorithms``.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.algorithms import SVD, create
from training.data import InteractionMatrix
from training.datasets.movielens import read_ml100k_items, read_ml100k_ratings
from training.evaluation import (
    evaluate_ranking,
    evaluate_rating_folds,
    python_stratified_split,
    rmse_mae,
)

RANKING_GRIDS: dict[str, dict[str, list[Any]]] = {
    "ease": {
        "regularization": [150, 300, 500],
        "dropout": [1.5, 2.5, 4.0],
        "user_weighting": [0.0, 0.25, 0.5],
    },
    "item_knn": {"neighbours": [50, 400], "shrinkage": [10, 50], "alpha": [1.0, 2.0, 4.0]},
    "user_knn": {"neighbours": [50, 150], "shrinkage": [10, 50], "alpha": [1.0, 2.0]},
    "als": {"factors": [32, 64], "regularization": [30.0, 60.0, 120.0], "alpha": [4.0, 8.0, 16.0]},
    "bpr": {
        "factors": [64, 128],
        "learning_rate": [0.005, 0.01, 0.02],
        "regularization": [0.001, 0.01],
        "iterations": [50, 150],
    },
}
SVD_GRID: dict[str, list[Any]] = {"regularization": [0.05, 0.08, 0.12, 0.16], "epochs": [20, 40]}


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def ndcg(name: str, config: dict[str, Any], train: list, test: list, items: list) -> dict:
    matrix = InteractionMatrix.from_ratings(train, items=items)
    model = create(name, config, seed=42).fit(matrix, items)
    return evaluate_ranking(model, matrix, test, k=10)


def tune_ranking(name: str, root: Path) -> dict[str, Any]:
    items = read_ml100k_items(root)
    train, test = python_stratified_split(read_ml100k_ratings(root / "u.data"), 0.75, seed=42)
    inner, validation = python_stratified_split(train, 0.75, seed=42)
    scored = [
        (ndcg(name, cfg, inner, validation, items)["ndcg@10"], cfg)
        for cfg in grid(RANKING_GRIDS[name])
    ]
    best_score, best = max(scored, key=lambda pair: pair[0])
    final = ndcg(name, best, train, test, items)
    return {"algorithm": name, "config": best, "validation": best_score, **final}


def tune_svd(root: Path) -> dict[str, Any]:
    rows = read_ml100k_ratings(root / "u1.base")
    order = np.random.default_rng(0).permutation(len(rows))
    cut = int(0.85 * len(rows))
    fit_rows, held = [rows[i] for i in order[:cut]], [rows[i] for i in order[cut:]]
    actual = np.array([r[2] for r in held])
    scored = []
    for cfg in grid(SVD_GRID):
        model = SVD(cfg, seed=42).fit(InteractionMatrix.from_ratings(fit_rows))
        predicted = model.predict([r[0] for r in held], [r[1] for r in held])
        scored.append((rmse_mae(predicted, actual)[0], cfg))
    best_rmse, best = min(scored, key=lambda pair: pair[0])
    folds = evaluate_rating_folds(lambda: SVD(best, seed=42), root)
    return {"algorithm": "svd", "config": best, "validation": best_rmse, **folds}


def print_table(results: Sequence[dict[str, Any]]) -> None:
    print(f"{'algorithm':<10} {'validation':>10} {'ndcg@10':>8} {'p@10':>6} {'rmse':>6}  config")
    for r in results:
        ndcg_ = f"{r['ndcg@10']:.4f}" if "ndcg@10" in r else "-"
        precision = f"{r['precision@10']:.3f}" if "precision@10" in r else "-"
        rmse = f"{r['rmse']:.4f}" if "rmse" in r else "-"
        line = f"{r['algorithm']:<10} {r['validation']:>10.4f} {ndcg_:>8} {precision:>6} {rmse:>6}"
        print(f"{line}  {r['config']}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="ML-100K folder (u.data, u1.base…)"
    )
    parser.add_argument("--algorithms", nargs="*", default=[*RANKING_GRIDS, "svd"])
    args = parser.parse_args(argv)
    results = [
        tune_svd(args.data) if name == "svd" else tune_ranking(name, args.data)
        for name in args.algorithms
    ]
    print_table(results)


if __name__ == "__main__":
    main()
