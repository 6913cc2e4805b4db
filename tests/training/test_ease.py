"""EASE's closed form, checked against a hand-built solve, including the user weighting."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp

from tests.training.test_algorithms_contract import planted
from training.algorithms import create
from training.algorithms import ease as ease_module
from training.data import InteractionMatrix


def uneven() -> InteractionMatrix:
    """The planted data with every other user's history cut to its first four entries."""
    data = planted()
    dense = data.matrix.toarray()
    for row in range(0, data.n_users, 2):
        dense[row, np.flatnonzero(dense[row])[4:]] = 0.0
    return InteractionMatrix(sp.csr_matrix(dense), data.user_ids, data.item_ids)


def reference_weights(x: np.ndarray, lam: float, dropout: float, user_weighting: float):
    counts = np.maximum((x != 0).sum(axis=1), 1).astype(float)
    weighted = x * (counts ** (-user_weighting / 2))[:, None]
    gram = weighted.T @ weighted
    ridge = lam * np.trace(gram) / float((x**2).sum())  # λ in units of one binary interaction
    gram[np.diag_indices_from(gram)] += ridge + dropout * np.diag(gram)
    precision = np.linalg.inv(gram)
    weights = precision / -np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights


@pytest.mark.parametrize("user_weighting", [0.0, 0.5, 1.0])
def test_weights_match_the_closed_form(user_weighting: float) -> None:
    data = uneven()
    config = {"regularization": 5.0, "dropout": 0.5, "user_weighting": user_weighting}
    model = create("ease", {**config, "weighting": "binary"}).fit(data)
    x = np.sign(data.matrix.toarray())  # "binary" keeps the sign of a dislike
    expected = reference_weights(x, 5.0, 0.5, user_weighting)
    assert np.allclose(model.weights, expected, atol=1e-5)


def test_user_weighting_changes_the_model_but_not_its_scoring_rule() -> None:
    data = uneven()
    plain = create("ease", {"user_weighting": 0.0}).fit(data)
    weighted = create("ease", {"user_weighting": 1.0}).fit(data)
    assert not np.allclose(plain.weights, weighted.weights)
    row = np.array([data.user_index("ua0")])
    raw = data.matrix[row].toarray()
    history = np.sign(raw) * np.sqrt(np.abs(raw))  # the default "sqrt" input weighting
    assert np.allclose(weighted.score_rows(row), history @ weighted.weights, atol=1e-5)


def test_user_weighting_must_be_non_negative() -> None:
    with pytest.raises(ValueError):
        create("ease", {"user_weighting": -0.5})


def test_blocks_and_the_in_place_inverse_match_the_closed_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ease_module, "BLOCK_ITEMS", 7)  # many blocks, one ragged
    data = uneven()
    config = {"regularization": 5.0, "dropout": 0.5, "user_weighting": 0.5}
    model = create("ease", {**config, "weighting": "binary"}).fit(data)
    expected = reference_weights(np.sign(data.matrix.toarray()), 5.0, 0.5, 0.5)
    assert model.weights.dtype == np.float32
    assert np.allclose(model.weights, expected, atol=1e-5)


def test_the_inverse_overwrites_the_gram_and_refuses_an_indefinite_one() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 30))
    spd = a @ a.T + 30 * np.eye(30)
    gram = spd.copy()
    lower = ease_module._invert_in_place(gram)
    assert lower is gram
    assert np.allclose(np.tril(lower), np.tril(np.linalg.inv(spd)))
    with pytest.raises(ValueError, match="not positive definite"):
        ease_module._invert_in_place(-spd.copy())


def test_the_fit_peaks_near_twelve_bytes_per_pair_of_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One float64 and one float32 item × item matrix: building the Gram from one sparse product
    and inverting with numpy.linalg.inv peaked at over 20 bytes per pair."""
    monkeypatch.setattr(ease_module, "BLOCK_ITEMS", 64)  # blocks small beside 1,500 items
    users, items = 3000, 1500
    matrix = sp.random(users, items, density=0.02, format="csr", dtype=np.float32, rng=3)
    matrix.data[:] = 1.0
    ids = np.array([f"u{i}" for i in range(users)], dtype=object)
    data = InteractionMatrix(matrix, ids, np.array([f"i{j}" for j in range(items)], dtype=object))
    tracemalloc.start()
    try:
        create("ease").fit(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 14 * items**2


def test_a_large_inverse_runs_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBLAS 0.3.30's threaded potrf crashes from about 22,700 items: above the limit the
    inverse takes one thread (and still computes the same inverse)."""
    asked: list[int | None] = []
    real = ease_module.threadpool_limits

    def spy(limits: int | None = None, user_api: str | None = None):  # type: ignore[no-untyped-def]
        asked.append(limits)
        return real(limits=limits, user_api=user_api)

    monkeypatch.setattr(ease_module, "threadpool_limits", spy)
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 40))
    spd = a @ a.T + 40 * np.eye(40)
    ease_module._invert_in_place(spd.copy())
    monkeypatch.setattr(ease_module, "THREADED_INVERSE_ITEMS", 39)
    lower = ease_module._invert_in_place(spd.copy())
    assert asked == [None, 1]
    assert np.allclose(np.tril(lower), np.tril(np.linalg.inv(spd)))
