"""The k-NN models' blocked neighbours equal the whole computation they replaced."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training.algorithms import create
from training.algorithms import user_knn as user_knn_module
from training.algorithms._neighbours import CELL_BYTES, item_similarity, keep_top_k, sharpen
from training.data import InteractionMatrix


def _dense_cosine(dots: np.ndarray, rows: np.ndarray, cols: np.ndarray, shrinkage: float):
    denominator = np.outer(rows, cols) + shrinkage
    return np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)


def _unblocked_similarity(matrix: sp.csr_matrix, k: int, shrinkage: float, alpha: float):
    """The item-item similarity as it was computed before blocking: the whole product."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    norms = np.sqrt(np.clip(gram.diagonal(), 0.0, None))
    dense = _dense_cosine(gram, norms, norms, shrinkage)
    np.fill_diagonal(dense, 0.0)
    return sp.csr_matrix(sharpen(keep_top_k(dense, k), alpha).astype(np.float32))


def _dense_user_scores(x: sp.csr_matrix, k: int, shrinkage: float, alpha: float) -> np.ndarray:
    """user-kNN scores of every training user as they were computed with dense neighbour rows."""
    dots = (x @ x.T).toarray().astype(np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    sims = _dense_cosine(dots, norms, norms, shrinkage)
    np.fill_diagonal(sims, 0.0)
    sims = sharpen(keep_top_k(sims, k), alpha)
    return (sp.csr_matrix(sims) @ x).toarray()


def _binary(rng: np.random.Generator, users: int = 150, items: int = 90) -> sp.csr_matrix:
    popularity = np.linspace(4.0, 0.2, items)
    return sp.csr_matrix((rng.random((users, items)) < popularity / items * 10).astype(np.float32))


def _weighted(rng: np.random.Generator, users: int = 150, items: int = 90) -> sp.csr_matrix:
    """Continuous weights, some negative (dislikes): no two similarities tie."""
    mask = rng.random((users, items)) < 0.15
    values = rng.uniform(0.2, 3.0, (users, items)) * np.where(
        rng.random((users, items)) < 0.2, -1, 1
    )
    return sp.csr_matrix((mask * values).astype(np.float32))


def _data(x: sp.csr_matrix) -> InteractionMatrix:
    return InteractionMatrix(
        x,
        np.array([f"u{i}" for i in range(x.shape[0])], dtype=object),
        np.array([f"i{j}" for j in range(x.shape[1])], dtype=object),
    )


@pytest.mark.parametrize("block", [1, 7, 64, 512])
@pytest.mark.parametrize("weighted", [False, True])
def test_blocked_item_neighbours_equal_the_whole_product(
    rng: np.random.Generator, block: int, weighted: bool
) -> None:
    x = _weighted(rng) if weighted else _binary(rng)
    expected = _unblocked_similarity(x, 12, 5.0, 2.0)
    found = item_similarity(x, 12, 5.0, 2.0, block=block)
    # the same neighbours (negative similarities included, ties broken alike), the same values:
    # exactly on 0/1 data; to the last float32 bit or so on weighted data (the summation order
    # of the norms differs)
    assert found.shape == expected.shape and found.nnz > 0
    assert np.array_equal(found.indptr, expected.indptr)
    assert np.array_equal(found.indices, expected.indices)
    if weighted:
        np.testing.assert_allclose(found.data, expected.data, rtol=1e-6)
    else:
        assert np.array_equal(found.data, expected.data)
    assert (np.diff(found.indptr) <= 12).all() and found.diagonal().sum() == 0


def test_the_block_size_does_not_change_the_model(rng: np.random.Generator) -> None:
    data = _data(_binary(rng))
    whole = create("item_knn", {"neighbours": 15}).fit(data)
    blocked = create("item_knn", {"neighbours": 15, "block_items": 4}).fit(data)
    assert (whole.similarity != blocked.similarity).nnz == 0
    assert whole.recommend("u3", 10) == blocked.recommend("u3", 10)
    assert blocked.config.block_items == 4


@pytest.mark.parametrize("binary", [True, False])
def test_user_neighbours_scored_a_few_queries_at_a_time_equal_whole_rows(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, binary: bool
) -> None:
    x = _binary(rng, 120, 70) if binary else _weighted(rng, 120, 70)
    config = {"neighbours": 9, "shrinkage": 3.0, "alpha": 2.0, "binary": binary}
    # room for 7 similarity rows over the 120 users at once
    monkeypatch.setattr(user_knn_module, "QUERY_BYTES", 7 * CELL_BYTES * 120)
    assert user_knn_module._query_rows(120) == 7
    model = create("user_knn", config).fit(_data(x))
    inputs = sp.csr_matrix(np.sign(x.toarray())) if binary else x
    expected = _dense_user_scores(inputs, 9, 3.0, 2.0)
    found = model.score_rows(np.arange(x.shape[0]))
    np.testing.assert_array_equal(found, expected)
    # a fresh history is one query: its neighbours may include the user it copies
    assert model.score_history(inputs[[4]]).shape == (70,)
