"""Quality benchmark on MovieLens-100K with the Microsoft Recommenders protocol.

    python -m benchmarks.quality --data ../shared/data/ml-100k --json bench-quality.json [--tune]

The training part of a 75/25 per-user stratified split (seed 42) becomes the interaction matrix
exactly as the training pipeline builds it (ratings as ``rating`` events, the default weights);
every engine is fitted as the pipeline fits it, and every list, the hybrid's included, comes from
the serving core (``recommend.step``) over in-process engines, with the user's training items
as the request's history, as the API sends them. So this is the offline row of what the API
serves; ``benchmarks.api_quality`` measures the same through HTTP GraphQL. ``--tune`` chooses
the hybrid's weights on validation splits of the training part only (seeds 7, 123, 2024) and
prints them; the defaults in ``training.hybrid.HybridConfig`` come from such a run. Rating
predictors also get RMSE/MAE on the official u1..u5 folds.

Lists are diversified as the API's default (``diversify: true``, MMR at
``ServingOptions.mmr_lambda``); the diversity table sets the hybrid beside itself with
``diversify: false``, NDCG@10 and intra-list diversity (1 - mean pairwise co-occurrence cosine
of the training rows) for each;
``--mmr-lambdas 0.8,0.9`` adds a row per MMR trade-off (how the default was chosen).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recommend.inprocess import InProcessService
from recommend.model_cache import MemoryModelSource
from recommend.options import ServingOptions
from recommend.types import HYBRID, RecommendationRequest
from storage.settings import Settings
from training.algorithms import ALGORITHMS, Recommender, create
from training.data import InteractionMatrix, InteractionWeights, ItemInfo
from training.datasets import load_movielens
from training.evaluation import (
    catalogue_coverage,
    cooccurrence_similarity,
    evaluate_rating_folds,
    intra_list_diversity,
    python_stratified_split,
    ranking_metrics,
    relevant_items,
)
from training.hybrid import HybridConfig
from training.hybrid_tuning import TuningResult, tune_weights_folds
from training.pipeline import Holdout, TenantData

K = 10
TENANT = "offline"
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
COLUMNS = (
    "precision@10",
    "recall@10",
    "ndcg@10",
    "map",
    "coverage",
    "diversity",
    "fit_seconds",
)
# The hybrid asked with ``diversify: false`` (every other row is diversified, as the API's default)
NO_DIVERSIFY = "hybrid (diversify off)"
Similarity = Callable[[Sequence[str]], Any]
# Validation seeds for the blend: not 42, the split the engines' own defaults were tuned on
# (benchmarks/tune_algorithms.py), or the blend would favour the engine tuned hardest there
VALIDATION_SEEDS = (7, 123, 2024)
TUNE_CANDIDATES = ("ease", "als", "user_knn", "item_knn", "bpr", "popularity")


def tenant_data(rows: Sequence[tuple], items: list[ItemInfo]) -> TenantData:
    """Ratings as the pipeline reads them from the database: ``rating`` events, default weights
    (rows already in event form ``(user, item, type, value, time)`` pass through)."""
    events = [
        row if len(row) == 5 else (str(row[0]), str(row[1]), "rating", float(row[2]), row[3])
        for row in rows
    ]
    return TenantData.from_rows(events, items, InteractionWeights())


def pipeline_matrix(rows: Sequence[tuple], items: list[ItemInfo]) -> InteractionMatrix:
    return tenant_data(rows, items).matrix()


def tenant_blend(data: TenantData, names: Sequence[str], seed: int = 42) -> dict[str, float] | None:
    """The blend the training pipeline would tune for this tenant (its own holdout, seed 42)."""
    holdout = Holdout(data, seed)
    for name in names:
        holdout.metrics(name)
    blend = holdout.blend()
    print(f"  tenant blend: {blend}", file=sys.stderr)
    return blend.weights if blend is not None else None


def histories(rows: Sequence[tuple]) -> dict[str, tuple[str, ...]]:
    """Each user's items newest first, as the API sends them with a request (rows are ratings
    ``(user, item, rating, time)`` or events ``(user, item, type, value, time)``)."""
    by_user: dict[str, list[tuple[float, str]]] = {}
    for row in rows:
        by_user.setdefault(str(row[0]), []).append((float(row[-1]), str(row[1])))
    return {
        u: tuple(dict.fromkeys(i for _, i in sorted(events, reverse=True)))
        for u, events in by_user.items()
    }


def fit_engines(
    matrix: InteractionMatrix, items: list[ItemInfo], names: Sequence[str]
) -> tuple[dict[str, Recommender], dict[str, float]]:
    models, seconds = {}, {}
    for name in names:
        started = time.perf_counter()
        models[name] = create(name, seed=42).fit(matrix, items)
        seconds[name] = time.perf_counter() - started
        print(f"  fitted {name:<11} in {seconds[name]:.1f}s", file=sys.stderr)
    return models, seconds


async def served_lists(
    recommender: InProcessService,
    users: Sequence[str],
    history: dict[str, tuple[str, ...]],
    algorithm: str,
    k: int = K,
) -> dict[str, list[str]]:
    """Every user's list from the serving core, as the API would ask for it (``NO_DIVERSIFY``:
    the hybrid with ``diversify: false``)."""
    diversify = algorithm != NO_DIVERSIFY
    algorithm = HYBRID if algorithm == NO_DIVERSIFY else algorithm

    async def one(user: str) -> list[str]:
        request = RecommendationRequest(
            tenant_id=TENANT,
            user_id=user,
            algorithm=algorithm,
            k=k,
            history=history.get(user),
            diversify=diversify,
        )
        return [item.item_id for item in (await recommender.recommend(request)).items]

    lists: dict[str, list[str]] = {}
    for start in range(0, len(users), 64):
        chunk = users[start : start + 64]
        for user, found in zip(chunk, await asyncio.gather(*map(one, chunk)), strict=True):
            lists[user] = found
    return lists


def core_recommender(
    models: dict[str, Recommender],
    hybrid: HybridConfig | None = None,
    blend: dict[str, float] | None = None,
    mmr_lambda: float | None = None,
) -> InProcessService:
    options = ServingOptions(hybrid=hybrid or HybridConfig(), engine_timeout_s=60.0)
    if mmr_lambda is not None:
        options = options.model_copy(update={"mmr_lambda": mmr_lambda})
    return InProcessService(
        Settings(),
        list(models),
        source=MemoryModelSource(TENANT, models, blend=blend),
        options=options,
    )


def evaluate_served(
    models: dict[str, Recommender],
    train_rows: Sequence[tuple],
    test_rows: Sequence[tuple],
    algorithms: Sequence[str],
    hybrid: HybridConfig | None = None,
    blend: dict[str, float] | None = None,
    *,
    similarity: Similarity | None = None,
    mmr_lambda: float | None = None,
) -> dict[str, dict[str, float]]:
    """Ranking metrics of the served lists, per algorithm name (engines, aliases, "hybrid",
    ``NO_DIVERSIFY``), with ``blend`` as the tenant's tuned weights (None: the defaults);
    intra-list diversity too when given the ``similarity`` it is measured with."""
    recommender = core_recommender(models, hybrid, blend, mmr_lambda)
    relevant = relevant_items(test_rows)
    history = histories(train_rows)
    users = [u for u in relevant if u in history]
    catalogue = [str(i) for i in next(iter(models.values())).item_ids]
    results = {}
    for algorithm in algorithms:
        started = time.perf_counter()
        lists = asyncio.run(served_lists(recommender, users, history, algorithm))
        row = ranking_metrics(lists, relevant, K)
        row["coverage"] = catalogue_coverage(lists, catalogue)
        if similarity is not None:
            row["diversity"] = intra_list_diversity(lists, similarity)
        results[algorithm] = {c: round(float(row[c]), 4) for c in COLUMNS if c in row}
        print(
            f"  {algorithm:<11} ndcg@10={row['ndcg@10']:.4f} "
            f"({time.perf_counter() - started:.1f}s for {len(users)} users)",
            file=sys.stderr,
        )
    return results


def tune_hybrid(
    train: list, items: list[ItemInfo], candidates: Sequence[str] = TUNE_CANDIDATES
) -> TuningResult:
    """Weights from validation splits of the training rows; the test rows are never seen."""
    depth = HybridConfig().depth
    folds = []
    for seed in VALIDATION_SEEDS:
        inner, validation = python_stratified_split(train, 0.75, seed=seed)
        matrix = pipeline_matrix(inner, items)
        engines = {name: create(name, seed=42).fit(matrix, items) for name in candidates}
        folds.append((engines, matrix, validation))
    return tune_weights_folds(folds, methods=("rrf",), k=K, depth=depth)


def rating_errors(path: Path) -> dict[str, float]:
    rmse = {}
    for name in ALGORITHMS:
        if ALGORITHMS[name].predicts_ratings():
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


def print_diversity(rows: dict[str, dict[str, float]]) -> None:
    """The hybrid with and without MMR: what diversifying costs in NDCG@10, and buys."""
    base = rows[NO_DIVERSIFY]["ndcg@10"]
    print(f"{'hybrid':<28}{'ndcg@10':>10}{'vs off':>10}{'diversity':>12}")
    for name, row in rows.items():
        change = row["ndcg@10"] - base
        print(f"{name:<28}{row['ndcg@10']:>10.4f}{change:>+10.4f}{row['diversity']:>12.4f}")


def diversity_rows(
    models: dict[str, Recommender],
    train: Sequence[tuple],
    test: Sequence[tuple],
    served: dict[str, dict[str, float]],
    lambdas: Sequence[float],
    **serving: Any,
) -> dict[str, dict[str, float]]:
    """The hybrid with ``diversify`` off and on (the default trade-off, then each of
    ``lambdas``): NDCG@10 and intra-list diversity."""
    wanted = ("ndcg@10", "diversity")
    rows = {
        NO_DIVERSIFY: {c: served[NO_DIVERSIFY][c] for c in wanted},
        f"on, lambda {ServingOptions().mmr_lambda} (default)": {
            c: served[HYBRID][c] for c in wanted
        },
    }
    for value in lambdas:
        found = evaluate_served(models, train, test, [HYBRID], mmr_lambda=value, **serving)
        rows[f"on, lambda {value}"] = {c: found[HYBRID][c] for c in wanted}
    return rows


def run(
    data_path: Path,
    *,
    with_rmse: bool = True,
    tune: bool = False,
    lambdas: Sequence[float] = (),
) -> dict[str, Any]:
    data = load_movielens(data_path)
    train, test = python_stratified_split(data.rows, 0.75, seed=42)
    report: dict[str, Any] = {}
    hybrid = HybridConfig()
    if tune:
        started = time.perf_counter()
        tuning = tune_hybrid(train, data.items)
        hybrid = hybrid.model_copy(update={"weights": tuning.weights})
        report["tuning"] = {
            "weights": tuning.weights,
            "validation_ndcg@10": round(tuning.ndcg, 4),
            "validation_single_engine_ndcg@10": {
                e: round(v, 4) for e, v in tuning.single_engine_ndcg.items()
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"  tuned: {report['tuning']}", file=sys.stderr)
    tenant = tenant_data(train, data.items)
    models, seconds = fit_engines(tenant.matrix(), data.items, ALGORITHMS)
    blend = tenant_blend(tenant, ALGORITHMS)
    similarity = cooccurrence_similarity(tenant.matrix())
    asked = [*ALGORITHMS, HYBRID, NO_DIVERSIFY]
    algorithms = evaluate_served(models, train, test, asked, hybrid, blend, similarity=similarity)
    report["diversity"] = diversity_rows(
        models, train, test, algorithms, lambdas, hybrid=hybrid, blend=blend, similarity=similarity
    )
    if blend is not None:
        # the defaults alone, for tenants too small to tune on
        default = evaluate_served(models, train, test, [HYBRID], hybrid, similarity=similarity)
        algorithms["hybrid (defaults)"] = default[HYBRID]
    for name, fit in seconds.items():
        algorithms[name]["fit_seconds"] = round(fit, 2)
    report["algorithms"] = algorithms
    report["hybrid"] = hybrid.model_dump(mode="json")
    report["tenant_blend"] = blend
    report["rmse"] = rating_errors(data_path) if with_rmse else {}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ML-100K folder (u.data, u.item)")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--no-rmse", action="store_true", help="skip the u1..u5 rating folds")
    parser.add_argument(
        "--tune", action="store_true", help="choose the hybrid's weights on validation splits"
    )
    parser.add_argument(
        "--mmr-lambdas", default="", help="comma-separated MMR trade-offs to compare (0..1)"
    )
    args = parser.parse_args(argv)
    lambdas = [float(value) for value in args.mmr_lambdas.split(",") if value.strip()]
    report = run(args.data, with_rmse=not args.no_rmse, tune=args.tune, lambdas=lambdas)
    print_table(report["algorithms"])
    print()
    print_diversity(report["diversity"])
    print(f"\nhybrid defaults: {report['hybrid']}")
    print(f"this tenant's tuned blend (training's holdout): {report['tenant_blend']}")
    if "tuning" in report:
        print(f"tuned on validation splits: {report['tuning']}")
    if report["rmse"]:
        print("RMSE over u1..u5:", report["rmse"])
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
