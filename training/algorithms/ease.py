"""EASE (Steck 2019): a closed-form item-item linear model, B = I - P / diag(P).

P = (XᵀX + λI)⁻¹. Scores are X·B, so any history scores with no refit (fold-in is free).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo


class EASEConfig(BaseModel):
    # tuned on a validation split of ML-100K training data (see benchmarks/tune_algorithms.py)
    regularization: float = Field(default=400.0, gt=0)
    # train on who interacted rather than how strongly: confidence weights hurt EASE on ML-100K
    binary: bool = True


class EASE(Recommender):
    name = "ease"
    Config = EASEConfig

    weights: np.ndarray

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        x = self._inputs(self.user_items)
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.regularization
        precision = np.linalg.inv(gram)
        weights = precision / -np.diag(precision)
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)

    def _inputs(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        if not self.config.binary:
            return rows
        binary = rows.copy()
        # a dislike stays a negative signal; everything else counts once
        binary.data = np.sign(binary.data).astype(np.float32)
        return binary

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
