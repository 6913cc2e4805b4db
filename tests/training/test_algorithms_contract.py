"""The contract every recommender keeps; each algorithm's class only supplies ``make_model``.

Data: three planted clusters of items (categories a/b/c, with cluster words in their titles);
each user interacts mostly inside one cluster, so any working model must favour that cluster.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from training.algorithms import ALGORITHMS, RecFilter, Recommender, create, load
from training.data import InteractionMatrix, InteractionWeights, ItemInfo

CLUSTERS = {"a": "space rocket galaxy", "b": "cooking recipe kitchen", "c": "football goal league"}
ITEMS_PER_CLUSTER = 10
USERS_PER_CLUSTER = 20
COLD = "cold-a"


def cluster_of(item: str) -> str:
    return item.split("-")[-1] if item == COLD else item.split("-")[0]


@cache
def catalogue() -> tuple[ItemInfo, ...]:
    items = [
        ItemInfo(id=f"{c}-{n}", title=f"{words} {n}", category=c, tags=(c,))
        for c, words in CLUSTERS.items()
        for n in range(ITEMS_PER_CLUSTER)
    ]
    return (*items, ItemInfo(id=COLD, title=CLUSTERS["a"], category="a", tags=("a",)))


@cache
def planted() -> InteractionMatrix:
    rng = np.random.default_rng(7)
    rows = []
    for cluster in CLUSTERS:
        others = [c for c in CLUSTERS if c != cluster]
        for u in range(USERS_PER_CLUSTER):
            user = f"u{cluster}{u}"
            liked = rng.choice(ITEMS_PER_CLUSTER, size=6, replace=False)
            for item, stars in zip(liked, rng.choice([4.0, 5.0], size=len(liked)), strict=True):
                rows.append((user, f"{cluster}-{item}", "rating", stars, 1e9 + u))
            # a few low ratings elsewhere: explicit models need to see what the user dislikes
            for other in others:
                disliked = rng.choice(ITEMS_PER_CLUSTER, size=2, replace=False)
                rows += [(user, f"{other}-{i}", "rating", 1.0, 1e9) for i in disliked]
    # A tenant whose low ratings mean "not for me": with the offset at the midpoint they
    # arrive as negative feedback (the default counts every rating as a weak positive).
    weights = InteractionWeights(rating_offset=2.5)
    return InteractionMatrix.from_interactions(rows, items=catalogue(), weights=weights)


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is (a view of) a memory map."""
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base if isinstance(array.base, np.ndarray) else None
    return False


def ids(recs: Sequence[tuple[str, float]]) -> list[str]:
    return [item for item, _ in recs]


class RecommenderContract:
    personalised: ClassVar[bool] = True  # popularity-style engines rank alike for everyone
    folds_in: ClassVar[bool] = True  # scores a fresh history for an unknown user

    def make_model(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def model(self) -> Recommender:
        return self.make_model().fit(planted())

    def seen(self, user: str) -> set[str]:
        data = planted()
        row = data.matrix[data.user_index(user)]
        return {str(data.item_ids[j]) for j in row.indices}

    def test_registered_under_its_name(self, model: Recommender) -> None:
        assert ALGORITHMS[model.name] is type(model)

    def test_unknown_user_gets_nothing(self, model: Recommender) -> None:
        assert model.recommend("nobody") == []
        assert model.recommend_many(["nobody"]) == [[]]

    def test_seen_items_excluded_unless_asked(self, model: Recommender) -> None:
        recs = ids(model.recommend("ua0", k=100))
        assert not set(recs) & self.seen("ua0")
        everything = ids(model.recommend("ua0", k=100, exclude_seen=False))
        assert self.seen("ua0") <= set(everything)

    def test_k_larger_than_catalogue(self, model: Recommender) -> None:
        recs = ids(model.recommend("ub3", k=10_000))
        assert len(recs) == len(set(recs)) == model.n_items - len(self.seen("ub3"))
        assert model.recommend("ub3", k=0) == []

    def test_scores_sorted_best_first(self, model: Recommender) -> None:
        scores = [s for _, s in model.recommend("uc1", k=20)]
        assert scores == sorted(scores, reverse=True)

    def test_cold_item_is_handled(self, model: Recommender) -> None:
        assert COLD not in ids(model.similar_items(COLD))
        everything = ids(model.recommend("ua1", k=100, exclude_seen=False))
        assert COLD in everything  # ranked (maybe last) rather than crashing or vanishing

    def test_filters(self, model: Recommender) -> None:
        only_b = model.recommend("ua2", k=50, filter=RecFilter(categories=frozenset({"b"})))
        assert only_b and {cluster_of(i) for i in ids(only_b)} == {"b"}
        allowed = frozenset({"a-1", "b-1", "c-1", "zzz"})
        assert set(ids(model.recommend("ua2", k=50, filter=RecFilter(allowed_items=allowed))))
        assert set(ids(model.recommend("ua2", k=50, filter=RecFilter(allowed_items=allowed)))) <= (
            allowed - self.seen("ua2")
        )
        top = ids(model.recommend("ua2", k=3))
        without = model.recommend("ua2", k=50, filter=RecFilter(exclude_items=frozenset(top)))
        assert not set(top) & set(ids(without))
        no_a = model.recommend("ua2", k=50, filter=RecFilter(exclude_categories=frozenset({"a"})))
        assert no_a and "a" not in {cluster_of(i) for i in ids(no_a)}
        only_b = RecFilter(categories=frozenset({"a", "b"}), exclude_categories=frozenset({"a"}))
        assert {cluster_of(i) for i in ids(model.recommend("ua2", k=50, filter=only_b))} == {"b"}

    def test_recommendations_favour_the_users_cluster(self, model: Recommender) -> None:
        if not self.personalised:
            pytest.skip("not a personalised engine")
        users = [f"u{c}{n}" for c in CLUSTERS for n in range(USERS_PER_CLUSTER)]
        lists = model.recommend_many(users, k=3)
        pairs = zip(users, lists, strict=True)
        own = [np.mean([cluster_of(i) == user[1] for i in ids(recs)]) for user, recs in pairs]
        assert np.mean(own) >= 0.8

    def test_history_folds_in(self, model: Recommender) -> None:
        history = ["c-0", "c-1", "c-2", "c-3"]
        recs = ids(model.recommend("newcomer", k=3, history=history))
        if not self.folds_in:
            assert recs == []
            return
        assert recs and not set(recs) & set(history)
        if self.personalised:
            assert all(cluster_of(i) == "c" for i in recs)

    def test_recommend_many_matches_recommend(self, model: Recommender) -> None:
        users = ["ua0", "nobody", "ub5", "uc9"]
        for user, recs in zip(users, model.recommend_many(users, k=5), strict=True):
            assert ids(recs) == ids(model.recommend(user, k=5))
            assert np.allclose([s for _, s in recs], [s for _, s in model.recommend(user, k=5)])

    def test_similar_items(self, model: Recommender) -> None:
        similar = ids(model.similar_items("b-4", k=5))
        assert similar and "b-4" not in similar
        assert model.similar_items("no-such-item") == []
        if self.personalised:
            assert cluster_of(similar[0]) == "b"

    def test_pair_scores_are_the_item_scores_of_those_pairs(self, model: Recommender) -> None:
        """MMR and explanations ask for pairs only; engines may compute them their own way."""
        rows, cols = np.array([0, 4, 17]), np.array([3, 0, 25, 9])
        expected = np.stack(
            [np.asarray(model.item_scores(r), dtype=np.float64)[cols] for r in rows]
        )
        assert np.allclose(model.pair_scores(rows, cols), expected, equal_nan=True)
        assert model.pair_scores(rows[:0], cols).shape == (0, 4)

    def test_deterministic_under_a_seed(self) -> None:
        users = ["ua0", "ub1", "uc2"]
        first = self.make_model().fit(planted()).recommend_many(users, k=8)
        second = self.make_model().fit(planted()).recommend_many(users, k=8)
        assert [ids(r) for r in first] == [ids(r) for r in second]

    def test_save_load_round_trip(self, model: Recommender, tmp_path: Path) -> None:
        model.save(tmp_path / "artifact")
        restored = load(tmp_path / "artifact")
        assert type(restored) is type(model) and restored.config == model.config
        users = ["ua0", "ub1", "uc2", "nobody"]
        assert restored.recommend_many(users, k=8) == model.recommend_many(users, k=8)
        history = ["a-1", "a-2"]
        assert restored.recommend("x", history=history) == model.recommend("x", history=history)
        assert restored.similar_items("a-3") == model.similar_items("a-3")

    def test_a_memory_mapped_load_serves_the_same(self, model: Recommender, tmp_path: Path) -> None:
        """Replicas map artifacts read-only (shared pages): serving must never write to them."""
        model.save(tmp_path / "artifact")
        mapped = load(tmp_path / "artifact", mmap=True)
        assert _mapped(mapped.user_items.data)  # the largest part of most models
        assert mapped.nbytes == model.nbytes > 0
        users = ["ua0", "ub1", "uc2", "nobody"]
        assert mapped.recommend_many(users, k=8) == model.recommend_many(users, k=8)
        history = ["a-1", "a-2"]
        assert mapped.recommend("x", history=history) == model.recommend("x", history=history)
        assert mapped.similar_items("a-3") == model.similar_items("a-3")


class TestPopularity(RecommenderContract):
    personalised = False

    def make_model(self) -> Recommender:
        return create("popularity")


class TestTrending(RecommenderContract):
    personalised = False

    def make_model(self) -> Recommender:
        return create("trending", {"half_life_days": 1.0})


class TestItemKNN(RecommenderContract):
    def make_model(self) -> Recommender:
        return create("item_knn", {"neighbours": 10})


class TestUserKNN(RecommenderContract):
    def make_model(self) -> Recommender:
        return create("user_knn", {"neighbours": 10})


class TestALS(RecommenderContract):
    def make_model(self) -> Recommender:
        return create("als", {"factors": 4, "iterations": 10, "regularization": 1.0}, seed=3)


class TestBPR(RecommenderContract):
    def make_model(self) -> Recommender:
        return create("bpr", {"factors": 8, "iterations": 60, "learning_rate": 0.05}, seed=3)


class TestEASE(RecommenderContract):
    def make_model(self) -> Recommender:
        return create("ease", {"regularization": 5.0})


class TestSVD(RecommenderContract):
    folds_in = False  # an explicit-rating model cannot place a user from item ids alone

    def make_model(self) -> Recommender:
        return create("svd", {"factors": 4, "epochs": 40, "batch_size": 64}, seed=3)


class TestContent(RecommenderContract):
    def make_model(self) -> Recommender:
        return create("content")


def test_every_algorithm_has_a_contract_suite() -> None:
    covered = {
        cls.__name__.removeprefix("Test").lower() for cls in RecommenderContract.__subclasses__()
    }
    assert {name.replace("_", "") for name in ALGORITHMS} == covered


def test_importing_the_algorithms_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, training.algorithms; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
