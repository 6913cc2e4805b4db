"""EASE (Steck 2019): a closed-form item-item linear model, B = I - P / diag(P).

P = (XᵀX + λI)⁻¹. Scores are X·B, so any history scores with no refit (fold-in is free).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo


class EASEConfig(BaseModel):
    # tuned on a validation split of ML-100K training data (see benchmarks/tune_algorithms.py)
    # λ in units of one binary interaction: it is scaled by the mean squared entry of X, so
    # the same value fits 0/1 data and rating-weighted data
    regularization: float = Field(default=300.0, gt=0)
    # extra L2 proportional to item popularity (the dropout term of Steck's EDLAE, 2020):
    # popular items otherwise dominate every list
    dropout: float = Field(default=2.5, ge=0)
    # each user's row enters the Gram matrix scaled by n_u ** (-user_weighting / 2), so heavy
    # raters stop dictating the item-item weights (scoring still uses the plain history)
    user_weighting: float = Field(default=0.5, ge=0)
    # how interaction strength enters X: square-rooted weights beat both 0/1 and raw values
    weighting: Literal["binary", "raw", "sqrt"] = "sqrt"


class EASE(Recommender):
    name = "ease"
    similarity_order = 1
    hybrid_weight = 1.0
    switch_at = 10
    Config = EASEConfig

    weights: np.ndarray

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        x = self._inputs(self.user_items)
        weighted = self._user_weighted(x)
        gram = (weighted.T @ weighted).toarray().astype(np.float64)
        diagonal = np.diag_indices_from(gram)
        # λ keeps its meaning whatever the weighting: the mean squared entry of the unweighted X,
        # times the share of the Gram's mass the user weighting leaves
        scale = float(np.mean(x.data**2)) if x.nnz else 1.0
        unweighted_trace = float(x.multiply(x).sum())
        if unweighted_trace > 0:
            scale *= float(np.trace(gram)) / unweighted_trace
        ridge = self.config.regularization * scale
        gram[diagonal] += ridge + self.config.dropout * gram[diagonal]
        precision = np.linalg.inv(gram)
        weights = precision / -np.diag(precision)
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)

    def _user_weighted(self, x: sp.csr_matrix) -> sp.csr_matrix:
        if self.config.user_weighting == 0:
            return x
        counts = np.maximum(np.diff(x.indptr), 1).astype(np.float64)
        return sp.csr_matrix(sp.diags(counts ** (-self.config.user_weighting / 2)) @ x)

    def _inputs(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        if self.config.weighting == "raw":
            return rows
        scaled = rows.copy()
        # the sign survives: a dislike stays a negative signal
        magnitude = np.abs(scaled.data) if self.config.weighting == "sqrt" else 1.0
        scaled.data = (np.sign(scaled.data) * np.sqrt(magnitude)).astype(np.float32)
        return scaled

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._inputs(self.user_items[rows]) @ self.weights)

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray(self._inputs(history) @ self.weights)[0]

    def item_scores(self, item: int) -> np.ndarray:
        return self.weights[item].astype(np.float64)

    def _state(self) -> State:
        return {"weights": self.weights}

    def _restore(self, state: State) -> None:
        self.weights = np.asarray(state["weights"])
