"""Metric functions against hand-computed cases; the split against the Recommenders semantics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from training.data import Events, InteractionMatrix, ItemInfo
from training.evaluation import (
    catalogue_coverage,
    category_similarity,
    cooccurrence_similarity,
    evaluate_ranking,
    evaluate_rating_folds,
    intra_list_diversity,
    map_at_k,
    mean_average_precision,
    ndcg_at_k,
    novelty,
    pair_split_index,
    precision_at_k,
    python_stratified_split,
    recall_at_k,
    rmse_mae,
)

# user a: hits at ranks 1 and 3 of 4, three relevant; user b: one hit at rank 4
RECOMMENDED = {"a": ["1", "2", "3", "4"], "b": ["7", "8", "9", "10"], "d": ["1"]}
RELEVANT = {"a": {"1", "3", "5"}, "b": {"10"}, "c": {"1"}}


def test_precision_and_recall_by_hand() -> None:
    assert precision_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert recall_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx((2 / 3 + 1) / 2)


def test_ndcg_by_hand() -> None:
    ndcg_a = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    ndcg_b = (1 / math.log2(5)) / 1.0
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx((ndcg_a + ndcg_b) / 2)


def test_map_divides_by_all_relevant_items_and_map_at_k_by_min_k() -> None:
    assert mean_average_precision(RECOMMENDED, RELEVANT, 4) == pytest.approx(
        ((1 + 2 / 3) / 3 + (1 / 4) / 1) / 2
    )
    ranked = {"u": [str(i) for i in range(10)]}
    relevant = {"u": {str(i) for i in range(20)}}
    assert mean_average_precision(ranked, relevant, 10) == pytest.approx(0.5)
    assert map_at_k(ranked, relevant, 10) == pytest.approx(1.0)


def test_cut_off_at_k_and_no_common_users() -> None:
    assert precision_at_k({"a": ["x", "y", "1"]}, {"a": {"1"}}, 2) == 0.0
    assert ndcg_at_k({"z": ["1"]}, {"a": {"1"}}, 10) == 0.0


def test_coverage_novelty_and_diversity() -> None:
    assert catalogue_coverage({"a": ["1", "2"], "b": ["2", "3"]}, 10) == pytest.approx(0.3)
    assert catalogue_coverage({"a": ["1", "x"]}, ["1", "2", "3", "4"]) == pytest.approx(0.25)
    train = InteractionMatrix.from_ratings(
        [(u, "x", 4.0, 0) for u in "pqrs"] + [("p", "y", 3.0, 0)]
    )
    # x reaches every user (0 bits), y one in four (2 bits)
    assert novelty({"p": ["x", "y"]}, train) == pytest.approx(1.0)
    items = [
        ItemInfo("a", category="c1"),
        ItemInfo("b", category="c1"),
        ItemInfo("c", category="c2"),
    ]
    assert intra_list_diversity(
        {"u": ["a", "b", "c"]}, category_similarity(items)
    ) == pytest.approx(1 - 2 / 6)
    sims = cooccurrence_similarity(train)(["x", "y", "unknown"])
    assert sims[0, 0] == pytest.approx(1.0)
    assert sims[0, 1] == pytest.approx(1 / 2)  # cosine of (1,1,1,1) and (1,0,0,0)
    assert sims[2].sum() == 0.0


def _reference_split(rows: list[tuple], ratio: float, seed: int) -> tuple[set, set]:
    """Recommenders' python_stratified_split, written with pandas the way they do it."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    train, test = [], []
    for _, group in frame.groupby("user"):
        shuffled = group.sample(frac=1, random_state=seed)
        cut = round(ratio * len(shuffled))
        train.append(shuffled.iloc[:cut])
        test.append(shuffled.iloc[cut:])
    as_set = lambda parts: set(map(tuple, pd.concat(parts).itertuples(index=False)))  # noqa: E731
    return as_set(train), as_set(test)


def test_stratified_split_matches_the_recommenders_semantics(rng: np.random.Generator) -> None:
    rows = [
        (f"u{u}", f"i{i}", float(rng.integers(1, 6)), float(i))
        for u in range(30)
        for i in rng.choice(200, size=int(rng.integers(1, 40)), replace=False)
    ]
    train, test = python_stratified_split(rows, 0.75, seed=42)
    expected_train, expected_test = _reference_split(rows, 0.75, 42)
    assert set(train) == expected_train
    assert set(test) == expected_test


def test_stratified_split_rounds_half_to_even_and_is_seeded() -> None:
    rows = [("two", str(i), 1.0, 0) for i in range(2)] + [("six", str(i), 1.0, 0) for i in range(6)]
    train, _ = python_stratified_split(rows, 0.75, seed=42)
    assert sum(r[0] == "two" for r in train) == 2  # round(1.5) == 2
    assert sum(r[0] == "six" for r in train) == 4  # round(4.5) == 4
    many = [("u", str(i), 1.0, 0) for i in range(40)]
    assert python_stratified_split(many, seed=1) != python_stratified_split(many, seed=2)
    assert python_stratified_split(many, seed=1) == python_stratified_split(many, seed=1)
    with pytest.raises(ValueError):
        python_stratified_split(rows, 1.0)


def _loop_split(rows: list[tuple], ratio: float, seed: int) -> tuple[list, list]:
    """The split as a loop over users (the tuple code it replaced): order included."""
    groups: dict[str, list[tuple]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    train, test = [], []
    for user in sorted(groups, key=str):
        order = np.random.RandomState(seed).permutation(len(groups[user]))
        cut = round(ratio * len(groups[user]))
        train.extend(groups[user][i] for i in order[:cut])
        test.extend(groups[user][i] for i in order[cut:])
    return train, test


def test_vectorised_split_keeps_the_loop_order_exactly(rng: np.random.Generator) -> None:
    """One permutation per group size serves every group of that size: same rows, same order."""
    rows = [
        (f"u{int(u)}", f"i{n}", 1.0, float(n)) for n, u in enumerate(rng.zipf(1.6, size=3000) % 400)
    ]
    for ratio, seed in ((0.75, 42), (0.8, 7), (0.5, 1)):
        assert python_stratified_split(rows, ratio, seed=seed) == _loop_split(rows, ratio, seed)


def test_pair_split_keeps_pairs_whole_and_ignores_the_row_order(
    rng: np.random.Generator,
) -> None:
    rows = [
        (f"u{int(rng.integers(40))}", f"i{int(rng.integers(30))}", kind, None, float(t // 3))
        for t, kind in enumerate(rng.choice(["view", "click", "purchase"], size=2000))
    ]
    events = Events.from_rows(rows)
    train, test = pair_split_index(events, 0.75, seed=42)
    pairs = list(events.pairs())
    held_out = [pairs[i] for i in test]
    assert len(set(held_out)) == len(held_out)  # one event per held-out pair
    assert not set(held_out) & {pairs[i] for i in train}  # no pair on both sides
    assert len(train) + sum(pairs.count(p) for p in held_out) == len(rows)
    assert np.all(np.diff(events.times[train]) >= 0)  # training events in time order
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    other = Events.from_rows(shuffled)
    _, other_test = pair_split_index(other, 0.75, seed=42)
    assert [p for p in map(tuple, np.array(list(other.pairs()))[other_test])] == held_out


class FixedModel:
    """Returns a fixed ranking per user and records the call."""

    def __init__(self, lists: dict[str, list[str]]):
        self.lists = lists
        self.calls: list[tuple] = []

    def recommend_many(self, users, k=10, *, exclude_seen=True):
        self.calls.append((tuple(users), k, exclude_seen))
        return [[(item, 1.0 / (r + 1)) for r, item in enumerate(self.lists[u][:k])] for u in users]


def test_evaluate_ranking_scores_known_users_with_seen_items_excluded() -> None:
    train = InteractionMatrix.from_ratings(
        [("a", "1", 5.0, 0), ("b", "2", 4.0, 0), ("a", "3", 1, 0)]
    )
    model = FixedModel({"a": ["2", "9"], "b": ["1", "3"]})
    test_rows = [("a", "2", 3.0, 1), ("b", "3", 4.0, 1), ("stranger", "1", 5.0, 1)]
    result = evaluate_ranking(model, train, test_rows, k=2)
    assert model.calls == [(("a", "b"), 2, True)]
    assert result["users"] == 2
    assert result["precision@2"] == pytest.approx(0.5)
    assert result["recall@2"] == pytest.approx(1.0)
    assert result["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert result["coverage"] == pytest.approx(1.0)  # "9" is not in the catalogue


def test_rmse_and_mae_by_hand() -> None:
    assert rmse_mae(np.array([3.0, 4.0]), np.array([4.0, 4.0])) == pytest.approx((0.5**0.5, 0.5))


class MeanPredictor:
    def fit(self, data: InteractionMatrix, items=None) -> MeanPredictor:
        self.mean = float(data.ratings.data.mean())
        return self

    def predict(self, user_ids, item_ids) -> np.ndarray:
        return np.full(len(user_ids), self.mean)


def test_rating_folds_use_the_official_base_and_test_files(tmp_path: Path) -> None:
    (tmp_path / "u.genre").write_text("unknown|0\nDrama|1\n", encoding="latin-1")
    (tmp_path / "u.item").write_text(
        "1|A (1990)|01-Jan-1990||url|0|1\n2|B (1991)|01-Jan-1991||url|0|1\n", encoding="latin-1"
    )
    (tmp_path / "u1.base").write_text("1\t1\t4\t10\n2\t1\t2\t11\n")  # mean 3
    (tmp_path / "u1.test").write_text("1\t2\t5\t12\n2\t2\t3\t13\n")  # errors 2 and 0
    result = evaluate_rating_folds(MeanPredictor, tmp_path, folds=(1,))
    assert result["rmse"] == pytest.approx(2**0.5)
    assert result["mae"] == pytest.approx(1.0)
    assert result["folds"] == [{"fold": 1, "rmse": pytest.approx(2**0.5), "mae": 1.0}]
