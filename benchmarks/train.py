"""Single-node ALS (``implicit``) against distributed ALS on Ray Train with 1 and 2 workers.

    python -m benchmarks.train --data ../shared/data/ml-100k --json bench-train.json

Same factors, regularisation, alpha and iterations (``ALS.Config`` defaults) for every row.
Seconds per iteration are the solver's own (Ray Train workers time their iterations: row
solves plus the factor exchange, whose share is the ``exch`` column); job seconds are wall
time including Ray Train's start-up, and ``overhead`` is what of it is not the workers' loop
(``start-up``: worker and process-group start before it; checkpoint and teardown after).
``--together`` adds, on ML-100K, the wall time of ALS and SVD fitted in one Ray Train run (as
the pipeline fits a tenant) against each in a run of its own. NDCG@10 follows the evaluation
protocol (75/25 per-user stratified split, seed 42, seen items excluded). The JSON holds the
ML-100K rows; ``--generated N`` adds a generated set of about N interactions to the table (0
skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from training.algorithms import create
from training.data import InteractionMatrix
from training.datasets import load_movielens
from training.datasets.synthetic import generate_catalogue
from training.distributed.runner import run_distributed
from training.evaluation import evaluate_ranking, python_stratified_split

K = 10
WORKERS = (1, 2)


def ml100k_split(path: Path) -> tuple[InteractionMatrix, list]:
    data = load_movielens(path)
    train, test = python_stratified_split(data.rows, 0.75, seed=42)
    return InteractionMatrix.from_ratings(train, items=data.items), test


def generated_split(interactions: int) -> tuple[InteractionMatrix, list]:
    """About ``interactions`` events: each engaged item yields a view and often more."""
    users = max(interactions // 50, 10)
    catalogue = generate_catalogue(
        n_users=users, n_items=max(users // 4, 50), n_clusters=20, interactions_per_user=25
    )
    train, test = python_stratified_split(catalogue.interactions, 0.75, seed=42)
    positives = [row for row in test if row[2] != "dislike"]
    return InteractionMatrix.from_interactions(train, items=catalogue.items), positives


def measure(matrix: InteractionMatrix, test: list) -> list[dict[str, Any]]:
    iterations = create("als").config.iterations
    started = time.perf_counter()
    single = create("als").fit(matrix)
    seconds = time.perf_counter() - started
    rows = [_row("implicit", 1, seconds / iterations, seconds, single, matrix, test)]
    print(f"  implicit: {seconds:.1f}s", file=sys.stderr)
    for workers in WORKERS:
        started = time.perf_counter()
        run = run_distributed("als", matrix, workers=workers)
        seconds = time.perf_counter() - started
        metrics = run.metrics["als"]
        per_iteration = metrics["train_seconds"] / iterations
        row = _row("distributed", workers, per_iteration, seconds, run.model, matrix, test)
        row["exchange_share"] = round(metrics["exchange_seconds"] / metrics["train_seconds"], 3)
        row["overhead_seconds"] = round(seconds - run.timeline["loop_seconds"], 2)
        row["startup_seconds"] = round(run.timeline["startup_seconds"], 2)
        rows.append(row)
        print(f"  distributed x{workers}: {seconds:.1f}s {run.timeline}", file=sys.stderr)
    return rows


def together(matrix: InteractionMatrix, workers: int = 2) -> dict[str, float]:
    """Wall seconds of ALS and SVD in runs of their own, and of both in one run."""
    walls = {}
    for names in (["als"], ["svd"], ["als", "svd"]):
        started = time.perf_counter()
        run_distributed(names, matrix, workers=workers)
        walls["+".join(names)] = round(time.perf_counter() - started, 2)
        print(f"  {'+'.join(names)} x{workers}: {walls['+'.join(names)]:.1f}s", file=sys.stderr)
    return walls


def _row(
    name: str,
    workers: int,
    per_iteration: float,
    job_seconds: float,
    model: Any,
    matrix: InteractionMatrix,
    test: list,
) -> dict[str, Any]:
    ndcg = evaluate_ranking(model, matrix, test, K)[f"ndcg@{K}"]
    return {
        "name": name,
        "workers": workers,
        "sec_per_iter": round(per_iteration, 4),
        "job_seconds": round(job_seconds, 2),
        "ndcg@10": round(float(ndcg), 4),
        "exchange_share": 0.0,
        "overhead_seconds": 0.0,
        "startup_seconds": 0.0,
    }


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    header = (
        f"{'data':<10}{'model':<13}{'workers':>8}{'s/iter':>9}{'x impl':>8}{'exch':>7}"
        f"{'job s':>9}{'overhead':>9}{'start-up':>9}{'ndcg@10':>9}{'x impl':>8}"
    )
    print(header)
    print("-" * len(header))
    for dataset, rows in results.items():
        base = rows[0]
        for row in rows:
            print(
                f"{dataset:<10}{row['name']:<13}{row['workers']:>8}"
                f"{row['sec_per_iter']:>9.4f}{row['sec_per_iter'] / base['sec_per_iter']:>8.2f}"
                f"{row['exchange_share']:>7.1%}{row['job_seconds']:>9.2f}"
                f"{row['overhead_seconds']:>9.2f}{row['startup_seconds']:>9.2f}"
                f"{row['ndcg@10']:>9.4f}{row['ndcg@10'] / base['ndcg@10']:>8.3f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the ml-100k directory")
    parser.add_argument("--json", type=Path, required=True, help="where to write ML-100K rows")
    parser.add_argument("--generated", type=int, default=1_000_000, help="interactions; 0 skips")
    parser.add_argument("--together", action="store_true", help="ALS+SVD in one run vs apart")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    walls: dict[str, float] = {}
    try:
        ml100k = ml100k_split(args.data)
        results = {"ml-100k": measure(*ml100k)}
        if args.together:
            walls = together(ml100k[0])
        args.json.write_text(json.dumps({"rows": results["ml-100k"]}, indent=2))
        if args.generated:
            print(f"generating ~{args.generated} interactions", file=sys.stderr)
            results[f"gen-{args.generated // 1000}k"] = measure(*generated_split(args.generated))
    finally:
        ray.shutdown()
    print_table(results)
    if walls:
        apart = walls["als"] + walls["svd"]
        print(
            f"ml-100k x2 wall: als {walls['als']:.1f}s + svd {walls['svd']:.1f}s = {apart:.1f}s "
            f"apart, {walls['als+svd']:.1f}s in one run"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
