"""The k-NN models' sparse, blocked neighbours equal the dense computation they replaced."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training.algorithms import create
from training.algorithms._neighbours import item_similarity, sharpen, top_k_rows
from training.data import InteractionMatrix


def _dense_cosine(dots: np.ndarray, rows: np.ndarray, cols: np.ndarray, shrinkage: float):
    denominator = np.outer(rows, cols) + shrinkage
    return np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)


def _dense_top_k(block: np.ndarray, k: int) -> np.ndarray:
    if k >= block.shape[1]:
        return block
    drop = np.argpartition(-block, k, axis=1)[:, k:]
    np.put_along_axis(block, drop, 0.0, axis=1)
    return block


def _unblocked_similarity(matrix: sp.csr_matrix, k: int, shrinkage: float, alpha: float):
    """The item-item similarity as it was computed before blocking: the whole product."""
    gram = (matrix.T @ matrix).toarray().astype(np.float64)
    norms = np.sqrt(np.clip(gram.diagonal(), 0.0, None))
    dense = _dense_cosine(gram, norms, norms, shrinkage)
    np.fill_diagonal(dense, 0.0)
    return sp.csr_matrix(sharpen(_dense_top_k(dense, k), alpha).astype(np.float32))


def _dense_user_scores(x: sp.csr_matrix, k: int, shrinkage: float, alpha: float) -> np.ndarray:
    """user-kNN scores of every training user as they were computed with dense neighbour rows."""
    dots = (x @ x.T).toarray().astype(np.float64)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    sims = _dense_cosine(dots, norms, norms, shrinkage)
    np.fill_diagonal(sims, 0.0)
    sims = sharpen(_dense_top_k(sims, k), alpha)
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


@pytest.mark.parametrize("block", [1, 7, 64, 512])
def test_blocked_item_neighbours_equal_the_whole_product(
    rng: np.random.Generator, block: int
) -> None:
    x = _weighted(rng)
    expected = _unblocked_similarity(x, 12, 5.0, 2.0)
    found = item_similarity(x, 12, 5.0, 2.0, block=block)
    assert found.shape == expected.shape
    # the same neighbours (negative similarities included) with the same values
    assert np.array_equal(found.indptr, expected.indptr)
    assert np.array_equal(found.indices, expected.indices)
    np.testing.assert_allclose(found.data, expected.data, rtol=1e-6)
    assert (np.diff(found.indptr) <= 12).all() and found.diagonal().sum() == 0


def test_blocked_item_neighbours_on_binary_data_keep_the_same_values(
    rng: np.random.Generator,
) -> None:
    x = _binary(rng)
    expected = _unblocked_similarity(x, 10, 20.0, 4.0)
    found = item_similarity(x, 10, 20.0, 4.0, block=16)
    # ties at the k-th value may keep another of the equal items: each row keeps the same values
    for row in range(x.shape[1]):
        want = np.sort(expected[row].data)
        got = np.sort(found[row].data)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        # below the k-th value there is no tie: those neighbours are the same items
        if len(want):
            strict = expected[row].indices[expected[row].data > want[0]]
            assert set(strict) <= set(found[row].indices)


def test_the_block_size_does_not_change_the_model(rng: np.random.Generator) -> None:
    x = _binary(rng)
    data = InteractionMatrix(
        x,
        np.array([f"u{i}" for i in range(x.shape[0])], dtype=object),
        np.array([f"i{j}" for j in range(x.shape[1])], dtype=object),
    )
    whole = create("item_knn", {"neighbours": 15}).fit(data)
    blocked = create("item_knn", {"neighbours": 15, "block_items": 4}).fit(data)
    assert (whole.similarity != blocked.similarity).nnz == 0
    assert whole.recommend("u3", 10) == blocked.recommend("u3", 10)


def test_top_k_rows_ranks_like_a_dense_row(rng: np.random.Generator) -> None:
    dense = rng.normal(size=(40, 30)) * (rng.random((40, 30)) < 0.3)
    dense[:5] = np.abs(dense[:5])  # rows with no negative value
    dense[5, :] = -np.abs(rng.normal(size=30))  # a row with no zero: negatives are kept
    for k in (1, 3, 8, 29, 30, 45):
        found = top_k_rows(sp.csr_matrix(dense), k).toarray()
        np.testing.assert_array_equal(found, _dense_top_k(dense.copy(), k))
    # equal values keep the lower column
    tied = sp.csr_matrix(np.array([[0.5, 0.5, 0.5, 0.1]]))
    assert top_k_rows(tied, 2).indices.tolist() == [0, 1]


def test_sparse_user_neighbours_score_like_dense_rows(rng: np.random.Generator) -> None:
    x = _weighted(rng, users=120, items=70)
    data = InteractionMatrix(
        x,
        np.array([f"u{i}" for i in range(x.shape[0])], dtype=object),
        np.array([f"i{j}" for j in range(x.shape[1])], dtype=object),
    )
    config = {"neighbours": 9, "shrinkage": 3.0, "alpha": 2.0, "binary": False}
    model = create("user_knn", config).fit(data)
    expected = _dense_user_scores(x, 9, 3.0, 2.0)
    found = model.score_rows(np.arange(x.shape[0]))
    np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-9)
    # a fresh history scores like the training user it copies, minus that user as neighbour
    history = model.score_history(x[[4]])
    assert history.shape == (70,) and np.abs(history).sum() > 0
