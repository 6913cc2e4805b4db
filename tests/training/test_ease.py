"""EASE's closed form, checked against a hand-built solve, including the user weighting."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from tests.training.test_algorithms_contract import planted
from training.algorithms import create
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
