"""Quality gate: the served hybrid keeps ML-100K NDCG@10 at or above 0.48.

Runs the benchmark's own protocol (stratified 75/25 split, seed 42, the pipeline's matrix, lists
from the serving core with the user's history as the API sends it) on the hybrid's default
engines, with the default ``HybridConfig``. Skips when the dataset folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.quality import evaluate_served, fit_engines, pipeline_matrix
from recommend.types import HYBRID
from training.datasets import load_movielens
from training.evaluation import python_stratified_split
from training.hybrid import HybridConfig

ML100K = Path(
    os.environ.get("RECSERVE_ML100K", Path(__file__).parents[2] / "../shared/data/ml-100k")
)
GATE_NDCG = 0.48


@pytest.mark.slow
@pytest.mark.skipif(not (ML100K / "u.data").exists(), reason=f"ML-100K not found at {ML100K}")
def test_the_served_hybrid_meets_the_gate_and_beats_its_engines() -> None:
    data = load_movielens(ML100K)
    train, test = python_stratified_split(data.rows, 0.75, seed=42)
    engines = list(HybridConfig().weights)
    models, _ = fit_engines(pipeline_matrix(train, data.items), data.items, engines)
    results = evaluate_served(models, train, test, [*engines, HYBRID])
    hybrid = results[HYBRID]
    assert hybrid["ndcg@10"] >= GATE_NDCG, results
    assert hybrid["precision@10"] > 0.42, results
    assert hybrid["ndcg@10"] >= max(results[e]["ndcg@10"] for e in engines) - 0.005, results
