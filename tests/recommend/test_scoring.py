"""Engine-side logic without Ray: batching into recommend_many, cold-start lists, similarity."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recommend.scoring import (
    EngineQuery,
    make_filter,
    non_personal_top,
    run_queries,
    similarity_matrix,
)
from tests.deployments.fakes import synthetic_matrix
from training.algorithms import Recommender, create


class Counting:
    """Wraps a model and counts the calls the engine makes on it."""

    def __init__(self, model: Recommender) -> None:
        self.model = model
        self.many_calls: list[int] = []
        self.single_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def recommend_many(self, users, k=10, **kwargs):
        self.many_calls.append(len(users))
        return self.model.recommend_many(users, k, **kwargs)

    def recommend(self, user, k=10, **kwargs):
        self.single_calls += 1
        return self.model.recommend(user, k, **kwargs)


@pytest.fixture(scope="module")
def ease() -> Recommender:
    return create("ease").fit(synthetic_matrix())


@pytest.fixture(scope="module")
def popularity() -> Recommender:
    return create("popularity").fit(synthetic_matrix(hot=5))


def test_compatible_queries_share_one_vectorised_call(ease: Recommender) -> None:
    counting = Counting(ease)
    queries = [EngineQuery("u1", 5), EngineQuery("u40", 3), EngineQuery("nobody", 4)]
    answers = run_queries(counting, queries)  # type: ignore[arg-type]
    assert counting.many_calls == [2] and counting.single_calls == 0
    assert answers[0] == ease.recommend("u1", 5)
    assert answers[1] == ease.recommend("u40", 3)
    assert answers[2] == []


def test_a_history_the_model_already_holds_is_answered_from_the_trained_row(
    ease: Recommender,
) -> None:
    """The API sends a user's whole recent history: what training saw adds nothing, so the
    trained row (with its weights) answers, batched with everyone else's."""
    counting = Counting(ease)

    def own(user: str) -> tuple[str, ...]:
        return tuple(str(ease.item_ids[j]) for j in ease.user_items[ease.user_index(user)].indices)

    queries = [EngineQuery(u, 5, history=own(u)) for u in ("u1", "u2", "u40")]
    answers = run_queries(counting, queries)  # type: ignore[arg-type]
    assert counting.many_calls == [3] and counting.single_calls == 0
    assert answers == [ease.recommend(u, 5) for u in ("u1", "u2", "u40")]


def test_history_and_filters_are_kept_apart(ease: Recommender) -> None:
    counting = Counting(ease)
    only_b = EngineQuery("u1", 5, filter=make_filter(["b"]))
    fresh = EngineQuery("new", 5, history=("i21", "i22"))
    plain = EngineQuery("u1", 5)
    answers = run_queries(counting, [only_b, fresh, plain])  # type: ignore[arg-type]
    assert counting.single_calls == 1 and sorted(counting.many_calls) == [1, 1]
    assert answers[0] and all(int(item[1:]) >= 20 for item, _ in answers[0])
    assert answers[1] and {"i21", "i22"}.isdisjoint(item for item, _ in answers[1])
    assert answers[2] == ease.recommend("u1", 5)


def test_cold_users_get_the_popular_items(popularity: Recommender) -> None:
    query = EngineQuery("stranger", 3)
    [answer] = run_queries(popularity, [query])
    assert answer[0][0] == "i5" and len(answer) == 3
    scores = [s for _, s in answer]
    assert scores == sorted(scores, reverse=True)


def test_non_personal_top_applies_the_filter(popularity: Recommender) -> None:
    query = EngineQuery(k=50, filter=make_filter(["a"], ["i5", "i6"]))
    answer = non_personal_top(popularity, query)
    ids = {item for item, _ in answer}
    assert ids and "i5" not in ids and "i6" not in ids
    assert all(int(item[1:]) < 20 for item in ids)


def test_non_personal_top_leaves_out_excluded_categories(popularity: Recommender) -> None:
    query = EngineQuery(k=50, filter=make_filter(exclude_categories=["a"]))
    ids = {item for item, _ in non_personal_top(popularity, query)}
    assert ids and all(int(item[1:]) >= 20 for item in ids)


def test_non_personal_top_refuses_personal_models(ease: Recommender) -> None:
    assert non_personal_top(ease, EngineQuery("", 5)) == []


def test_similarity_matrix_is_scaled_and_tolerates_unknown_items() -> None:
    knn = create("item_knn").fit(synthetic_matrix())
    matrix = similarity_matrix(knn, ["i1", "i30", "ghost"], ["i2", "i31", "ghost"])
    assert matrix.shape == (3, 3)
    assert matrix.min() >= 0.0 and matrix.max() == pytest.approx(1.0)
    assert np.all(matrix[2] == 0) and np.all(matrix[:, 2] == 0)
    # Same cluster is more alike than across clusters.
    assert matrix[0, 0] > matrix[0, 1] and matrix[1, 1] > matrix[1, 0]
