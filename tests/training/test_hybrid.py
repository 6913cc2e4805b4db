"""The hybrid: its weights per user, the blending maths by hand, and weight tuning."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training.algorithms import create
from training.data import InteractionMatrix
from training.datasets import generate_catalogue
from training.evaluation import python_stratified_split
from training.hybrid import (
    HybridConfig,
    HybridItem,
    explain,
    mmr_diversify,
    normalise,
    switching_hybrid,
    weighted_hybrid,
)
from training.hybrid_tuning import choose_blend, normalise_top, tune_weights, tune_weights_folds


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


def test_weights_move_from_the_cold_blend_to_the_warm_one() -> None:
    config = HybridConfig(
        weights={"ease": 1.0, "als": 0.5}, cold_weights={"popularity": 1.0}, warm_at=4
    )
    assert config.weights_for(0) == {"popularity": 1.0}
    assert config.weights_for(4) == {"ease": 1.0, "als": 0.5}
    assert config.weights_for(400) == {"ease": 1.0, "als": 0.5}
    halfway = config.weights_for(2)
    assert halfway == pytest.approx({"ease": 0.5, "als": 0.25, "popularity": 0.5})
    # a request's own weights replace the blend; zero drops an engine
    assert config.weights_for(0, {"als": 2.0, "ease": 0.0}) == {"als": 2.0}
    assert config.engines() == ["ease", "als", "popularity", "content"]


def test_weighted_hybrid_rewards_agreement_and_explains() -> None:
    results = {
        "ease": [("solo", 5.0), ("shared", 4.0)],
        "item_knn": [("other", 0.9), ("shared", 0.8)],
    }
    blended = weighted_hybrid(results, {"ease": 1.0, "item_knn": 1.0}, k=3)
    top = blended[0]
    assert top.item_id == "shared"
    assert set(top.engine_scores) == {"ease", "item_knn"}
    assert top.score == pytest.approx(2 / 62)
    only_ease = weighted_hybrid(results, {"ease": 1.0, "item_knn": 0.0}, k=5)
    assert [it.item_id for it in only_ease] == ["solo", "shared"]


def test_switching_hybrid_picks_by_interaction_count_with_fallback() -> None:
    results = {"popularity": [("p", 1.0)], "content": [("c", 1.0)], "ease": []}
    thresholds = ((0, "popularity"), (3, "content"), (10, "ease"))
    assert switching_hybrid(results, 1, thresholds)[0].item_id == "p"
    assert switching_hybrid(results, 5, thresholds)[0].item_id == "c"
    fallback = switching_hybrid(results, 50, thresholds)  # ease answered nothing
    assert fallback[0].item_id == "c" and fallback[0].engine_scores == {"content": 1.0}
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


@pytest.mark.parametrize("method", ["rrf", "rank", "minmax", "zscore"])
def test_tuning_normalises_exactly_as_the_served_blend(method: str) -> None:
    """Tuning's dense matrix holds, per user, what ``normalise`` gives that engine's top list."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(3, 12))
    seen = sp.csr_matrix(rng.random((3, 12)) < 0.3)
    dense = normalise_top(scores, seen, method, depth=5)
    for row in range(3):
        unseen = [j for j in np.argsort(-scores[row], kind="stable") if not seen[row, j]]
        served = normalise([(str(j), scores[row, j]) for j in unseen[:5]], method)  # type: ignore[arg-type]
        expected = np.zeros(12)
        for item, value in served.items():
            expected[int(item)] = value
        assert dense[row] == pytest.approx(expected)


@pytest.fixture(scope="module")
def shop() -> tuple[InteractionMatrix, list]:
    catalogue = generate_catalogue(120, 90, 4, 15, seed=5)
    return InteractionMatrix.from_interactions(catalogue.interactions, items=catalogue.items), (
        catalogue.items
    )


def _validation_fold(shop) -> tuple[dict, InteractionMatrix, list]:
    """Engines fitted on 75% of the shop's pairs, and the other 25% to validate on."""
    matrix, items = shop
    rows = [
        (str(matrix.user_ids[r]), str(matrix.item_ids[c]), 1.0, 0)
        for r, c in zip(*matrix.matrix.nonzero(), strict=True)
    ]
    inner, validation = python_stratified_split(rows, 0.75, seed=42)
    fit_on = InteractionMatrix.from_ratings(inner, items=items)
    engines = {name: create(name).fit(fit_on, items) for name in ("ease", "popularity", "content")}
    return engines, fit_on, validation


def test_tuning_keeps_the_leader_and_never_loses_on_validation(shop) -> None:
    engines, fit_on, validation = _validation_fold(shop)
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


def test_a_tenant_blend_leaves_the_defaults_only_for_a_significant_gain(shop) -> None:
    engines, fit_on, validation = _validation_fold(shop)
    # defaults far worse than the tenant's best engine: replaced
    poor = choose_blend(engines, fit_on, validation, {"content": 1.0})
    assert poor.weights != {"content": 1.0} and poor.weights.get("ease", 0) > 0
    assert poor.ndcg > poor.single_engine_ndcg["content"]
    # defaults that are the best engine: a blend that wins by noise does not replace them
    kept = choose_blend(engines, fit_on, validation, {"ease": 1.0})
    assert kept.weights == {"ease": 1.0}
    # default engines the tenant did not train are dropped, not asked
    assert choose_blend(engines, fit_on, validation, {"svd": 1.0, "ease": 1.0}).weights == {
        "ease": 1.0
    }
