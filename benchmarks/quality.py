"""Quality benchmark on MovieLens-100K with the Microsoft Recommenders protocol.

    python -m benchmarks.quality --data ../shared/data/ml-100k --json bench-quality.json --png q.png

Every registered algorithm and the hybrid are fitted on a 75/25 per-user stratified split
(seed 42) and ranked at k=10 with seen items excluded; the published Recommenders rows are shown
alongside. The hybrid's weights are tuned on a validation split carved from the training part
only. Rating predictors also get RMSE/MAE on the official u1..u5 folds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from training.algorithms import REGISTRY, create
from training.data import InteractionMatrix
from training.datasets import MovieLens, load_movielens
from training.evaluation import evaluate_ranking, evaluate_rating_folds, python_stratified_split
from training.hybrid_model import HybridRecommender
from training.hybrid_tuning import TuningResult, tune_weights_folds

K = 10
# Recommenders README, ML-100K, same split and k (NDCG@10, P@10, R@10, MAP)
PUBLISHED = {
    "BiVAE (published)": {
        "ndcg@10": 0.475,
        "precision@10": 0.412,
        "recall@10": 0.219,
        "map": 0.146,
    },
    "BPR Cornac (published)": {
        "ndcg@10": 0.442,
        "precision@10": 0.388,
        "recall@10": 0.213,
        "map": 0.132,
    },
}
ORDER = ("popularity", "trending", "content", "item_knn", "user_knn", "als", "bpr", "svd", "ease")
COLUMNS = ("precision@10", "recall@10", "ndcg@10", "map", "coverage", "fit_seconds")


def _row(metrics: dict[str, float], fit_seconds: float) -> dict[str, float]:
    row = {c: round(float(metrics[c]), 4) for c in COLUMNS if c in metrics}
    row["fit_seconds"] = round(fit_seconds, 2)
    return row


def rank_algorithms(data: MovieLens, train: list, test: list) -> dict[str, dict[str, float]]:
    matrix = InteractionMatrix.from_ratings(train, items=data.items)
    results = {}
    for name in [n for n in ORDER if n in REGISTRY] + sorted(set(REGISTRY) - set(ORDER)):
        started = time.perf_counter()
        model = create(name).fit(matrix, data.items)
        elapsed = time.perf_counter() - started
        results[name] = _row(evaluate_ranking(model, matrix, test, K), elapsed)
        print(
            f"  {name:<11} ndcg@10={results[name]['ndcg@10']:.4f} fit {elapsed:.1f}s",
            file=sys.stderr,
        )
    return results


# Validation seeds for the blend: not 42, the split the engines' own defaults were tuned on
# (benchmarks/tune_algorithms.py), or the blend would favour the engine tuned hardest there
VALIDATION_SEEDS = (7, 123, 2024)


def tune_hybrid(
    data: MovieLens, train: list, candidates: list[str], seeds: tuple[int, ...] = VALIDATION_SEEDS
) -> TuningResult:
    """Weights from validation splits of the training rows; the test rows are never seen."""
    folds = []
    for seed in seeds:
        inner, validation = python_stratified_split(train, 0.75, seed=seed)
        matrix = InteractionMatrix.from_ratings(inner, items=data.items)
        engines = {name: create(name).fit(matrix, data.items) for name in candidates}
        folds.append((engines, matrix, validation))
    return tune_weights_folds(folds, k=K)


def rank_hybrid(data: MovieLens, train: list, test: list, tuning: TuningResult) -> dict[str, float]:
    matrix = InteractionMatrix.from_ratings(train, items=data.items)
    config = {"weights": tuning.weights, "normalisation": tuning.normalisation}
    started = time.perf_counter()
    model = HybridRecommender(config).fit(matrix, data.items)
    elapsed = time.perf_counter() - started
    return _row(evaluate_ranking(model, matrix, test, K), elapsed)


def rating_errors(path: Path) -> dict[str, float]:
    rmse = {}
    for name, algorithm in sorted(REGISTRY.items()):
        if callable(getattr(algorithm, "predict", None)):
            folds = evaluate_rating_folds(lambda name=name: create(name), path)
            rmse[name] = round(folds["rmse"], 4)
            print(f"  {name} RMSE={folds['rmse']:.4f} MAE={folds['mae']:.4f}", file=sys.stderr)
    return rmse


def print_table(algorithms: dict[str, dict[str, float]]) -> None:
    header = f"{'algorithm':<24}" + "".join(f"{c:>14}" for c in COLUMNS)
    print(header)
    print("-" * len(header))
    for name, row in {**algorithms, **PUBLISHED}.items():
        cells = "".join(
            f"{row[c]:>14.4f}" if c in row and c != "fit_seconds" else f"{row.get(c, '-'):>14}"
            for c in COLUMNS
        )
        print(f"{name:<24}{cells}")


def write_png(algorithms: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = {**algorithms, **PUBLISHED}
    names = list(rows)
    metrics = ("precision@10", "recall@10", "ndcg@10", "map")
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(12, 5))
    for offset, metric in enumerate(metrics):
        values = [rows[n].get(metric, 0.0) for n in names]
        ax.bar(x + (offset - 1.5) * 0.2, values, width=0.2, label=metric)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("score")
    ax.set_title("MovieLens-100K, stratified 75/25 split, k=10")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(data_path: Path, *, with_rmse: bool = True) -> dict[str, Any]:
    data = load_movielens(data_path)
    train, test = python_stratified_split(data.rows, 0.75, seed=42)
    algorithms = rank_algorithms(data, train, test)
    candidates = [n for n in ("ease", "user_knn", "item_knn", "als", "popularity") if n in REGISTRY]
    started = time.perf_counter()
    tuning = tune_hybrid(data, train, candidates)
    tune_seconds = time.perf_counter() - started
    print(f"  hybrid tuned in {tune_seconds:.1f}s: {tuning}", file=sys.stderr)
    algorithms["hybrid"] = rank_hybrid(data, train, test, tuning)
    return {
        "algorithms": algorithms,
        "rmse": rating_errors(data_path) if with_rmse else {},
        "hybrid": {
            "weights": tuning.weights,
            "normalisation": tuning.normalisation,
            "validation_ndcg@10": round(tuning.ndcg, 4),
            "tune_seconds": round(tune_seconds, 2),
            "validation_single_engine_ndcg@10": {
                e: round(v, 4) for e, v in tuning.single_engine_ndcg.items()
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ML-100K folder (u.data, u.item)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--png", type=Path, help="optional bar chart")
    parser.add_argument("--no-rmse", action="store_true", help="skip the u1..u5 rating folds")
    args = parser.parse_args(argv)
    report = run(args.data, with_rmse=not args.no_rmse)
    print_table(report["algorithms"])
    hybrid = report["hybrid"]
    print(f"\nhybrid weights ({hybrid['normalisation']}): {hybrid['weights']}")
    if report["rmse"]:
        print("RMSE over u1..u5:", report["rmse"])
    args.json.write_text(json.dumps(report, indent=2))
    if args.png:
        write_png(report["algorithms"], args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
