"""Hybrid blending: the pure functions by hand, then HybridRecommender on planted-cluster data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.algorithms import create, load
from training.data import InteractionMatrix
from training.datasets import generate_catalogue
from training.evaluation import python_stratified_split
from training.hybrid import (
    HybridItem,
    HybridRecommender,
    adaptive_weights,
    explain,
    mmr_diversify,
    normalise,
    switching_hybrid,
    weighted_hybrid,
)
from training.hybrid_model import normalise_rows
from training.hybrid_tuning import tune_weights, tune_weights_folds


def test_normalise_methods() -> None:
    recs = [("a", 9.0), ("b", 6.0), ("c", 3.0)]
    assert normalise(recs, "minmax") == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert normalise(recs, "rank") == pytest.approx({"a": 1.0, "b": 2 / 3, "c": 1 / 3})
    rrf = normalise(recs, "rrf")
    assert rrf["a"] == pytest.approx(1 / 61) and rrf["a"] > rrf["b"] > rrf["c"]
    assert sum(normalise(recs, "zscore").values()) == pytest.approx(0.0)
    assert normalise([], "rrf") == {}
    with pytest.raises(ValueError):
        normalise(recs, "softmax")  # type: ignore[arg-type]


def test_adaptive_weights_shift_from_collaborative_to_cold_start_engines() -> None:
    base = {"ease": 0.6, "item_knn": 0.2, "popularity": 0.2}
    cold = adaptive_weights(base, 0, ["ease", "item_knn", "popularity"])
    assert cold == {"popularity": 1.0}
    warm = adaptive_weights(base, 50, ["ease", "item_knn", "popularity"])
    assert warm == pytest.approx(base)
    lukewarm = adaptive_weights(base, 10, ["ease", "popularity"])
    assert sum(lukewarm.values()) == pytest.approx(1.0)
    assert lukewarm["popularity"] > base["popularity"] and "item_knn" not in lukewarm
    assert adaptive_weights(base, 50, ["ease", "popularity"], {"popularity": 0.6}) == pytest.approx(
        {"ease": 0.5, "popularity": 0.5}
    )
    # a cold user with only collaborative engines answering still gets a usable blend
    assert adaptive_weights(base, 0, ["ease", "item_knn"]) == {"ease": 0.5, "item_knn": 0.5}


def test_weighted_hybrid_rewards_agreement_and_explains() -> None:
    results = {
        "ease": [("solo", 5.0), ("shared", 4.0)],
        "item_knn": [("other", 0.9), ("shared", 0.8)],
    }
    blended = weighted_hybrid(results, {"ease": 1.0, "item_knn": 1.0}, k=3, because={"shared": "x"})
    top = blended[0]
    assert top.item_id == "shared"
    assert set(top.engine_scores) == {"ease", "item_knn"}
    assert top.score == pytest.approx(2 / 62)
    assert top.reason == "ease 50%, item_knn 50%; because you interacted with x"
    only_ease = weighted_hybrid(results, {"ease": 1.0, "item_knn": 0.0}, k=5)
    assert [it.item_id for it in only_ease] == ["solo", "shared"]


def test_switching_hybrid_picks_by_interaction_count_with_fallback() -> None:
    results = {"popularity": [("p", 1.0)], "content": [("c", 1.0)], "ease": []}
    thresholds = ((0, "popularity"), (3, "content"), (10, "ease"))
    assert switching_hybrid(results, 1, thresholds)[0].item_id == "p"
    assert switching_hybrid(results, 5, thresholds)[0].item_id == "c"
    fallback = switching_hybrid(results, 50, thresholds)  # ease answered nothing
    assert fallback[0].item_id == "c" and fallback[0].reason == "from content"
    assert switching_hybrid({}, 5, thresholds) == []


def test_mmr_trades_relevance_for_diversity() -> None:
    items = [HybridItem("a", 1.0), HybridItem("a2", 0.95), HybridItem("b", 0.8)]
    vectors = {"a": np.array([1.0, 0.0]), "a2": np.array([1.0, 0.05]), "b": np.array([0.0, 1.0])}
    assert [i.item_id for i in mmr_diversify(items, vectors, lambda_=1.0, k=3)] == ["a", "a2", "b"]
    assert [i.item_id for i in mmr_diversify(items, vectors, lambda_=0.5, k=2)] == ["a", "b"]
    same = lambda x, y: 1.0  # noqa: E731
    assert len(mmr_diversify(items, same, lambda_=0.3, k=10)) == 3


def test_explain_names_engines_and_the_because_item() -> None:
    assert explain({"ease": 3.0, "als": 1.0}) == "ease 75%, als 25%"
    titled = explain({"ease": 1.0}, "1", title_of={"1": "Toy Story"}.get)
    assert titled == "ease 100%; because you interacted with Toy Story"
    assert explain({}) is None


def test_normalise_rows_ignores_seen_items_for_the_statistics() -> None:
    import scipy.sparse as sp

    scores = np.array([[100.0, 1.0, 2.0, 3.0]])
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0]]))
    z = normalise_rows(scores, seen, "zscore")
    assert z[0, 1:].mean() == pytest.approx(0.0)
    rrf = normalise_rows(scores, seen, "rrf")
    assert rrf[0, 3] == pytest.approx(1 / 61) and rrf[0, 0] < rrf[0, 1]


@pytest.fixture(scope="module")
def shop() -> tuple[InteractionMatrix, list]:
    catalogue = generate_catalogue(120, 90, 4, 15, seed=5)
    return InteractionMatrix.from_interactions(catalogue.interactions, items=catalogue.items), (
        catalogue.items
    )


def test_hybrid_recommender_behaves_like_any_algorithm(shop, tmp_path: Path) -> None:
    matrix, items = shop
    config = {"weights": {"ease": 1.0, "popularity": 0.3}, "normalisation": "zscore"}
    model = HybridRecommender(config, seed=1).fit(matrix, items)
    user = str(matrix.user_ids[0])
    recs = model.recommend(user, k=10)
    seen = {str(matrix.item_ids[j]) for j in matrix.matrix[0].indices}
    assert len(recs) == 10 and not seen & {item for item, _ in recs}
    assert model.recommend("nobody", k=5) == []
    assert len(model.recommend(user, k=10_000)) == matrix.n_items - len(seen)
    assert model.recommend("nobody", k=3, history=[items[0].id])  # fold-in for a fresh user
    model.save(tmp_path / "hybrid")
    restored = load(tmp_path / "hybrid")
    assert isinstance(restored, HybridRecommender)
    assert restored.recommend(user, k=10) == recs
    assert restored.similar_items(items[0].id, k=3) == model.similar_items(items[0].id, k=3)


def test_single_engine_hybrid_ranks_exactly_like_that_engine(shop) -> None:
    matrix, items = shop
    ease = create("ease").fit(matrix, items)
    hybrid = HybridRecommender({"weights": {"ease": 1.0}}).use_engines({"ease": ease})
    users = [str(u) for u in matrix.user_ids[:20]]
    ranked = [[i for i, _ in recs] for recs in hybrid.recommend_many(users, k=10)]
    assert ranked == [[i for i, _ in recs] for recs in ease.recommend_many(users, k=10)]


def test_tuning_keeps_the_leader_and_never_loses_on_validation(shop) -> None:
    matrix, items = shop
    rows = [
        (str(matrix.user_ids[r]), str(matrix.item_ids[c]), 1.0, 0)
        for r, c in zip(*matrix.matrix.nonzero(), strict=True)
    ]
    inner, validation = python_stratified_split(rows, 0.75, seed=42)
    fit_on = InteractionMatrix.from_ratings(inner, items=items)
    engines = {name: create(name).fit(fit_on, items) for name in ("ease", "popularity", "content")}
    result = tune_weights(engines, fit_on, validation, methods=("zscore", "rrf"))
    leader = max(result.single_engine_ndcg, key=result.single_engine_ndcg.__getitem__)
    assert result.weights[leader] > 0
    assert result.ndcg >= result.single_engine_ndcg[leader]
    assert result.normalisation in ("zscore", "rrf")


def test_fold_tuning_scores_the_mean_over_its_folds(shop) -> None:
    matrix, items = shop
    rows = [
        (str(matrix.user_ids[r]), str(matrix.item_ids[c]), 1.0, 0)
        for r, c in zip(*matrix.matrix.nonzero(), strict=True)
    ]
    folds, singles = [], []
    for seed in (1, 2):
        inner, validation = python_stratified_split(rows, 0.75, seed=seed)
        fit_on = InteractionMatrix.from_ratings(inner, items=items)
        engines = {name: create(name).fit(fit_on, items) for name in ("ease", "popularity")}
        folds.append((engines, fit_on, validation))
        singles.append(tune_weights(engines, fit_on, validation, methods=("rrf",)))
    result = tune_weights_folds(folds, methods=("rrf",))
    for engine in ("ease", "popularity"):
        mean = np.mean([single.single_engine_ndcg[engine] for single in singles])
        assert result.single_engine_ndcg[engine] == pytest.approx(mean)
    assert result.ndcg >= max(result.single_engine_ndcg.values())
    with pytest.raises(ValueError):
        tune_weights_folds([])


def test_a_saved_hybrid_loads_in_a_fresh_process(shop, tmp_path: Path) -> None:
    import subprocess
    import sys

    matrix, items = shop
    HybridRecommender().fit(matrix, items).save(tmp_path / "hybrid")
    code = (
        "import sys; from training.algorithms import load\n"
        f"model = load({str(tmp_path / 'hybrid')!r})\n"
        "assert model.name == 'hybrid', model.name\n"
        f"assert len(model.recommend({str(matrix.user_ids[0])!r}, k=3)) == 3\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
