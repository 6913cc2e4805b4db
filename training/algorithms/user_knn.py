"""User-based k-NN: score items by what the most similar users (shrunk cosine) interacted with.

Neighbours are found at query time against the training matrix, so a fresh history is scored
exactly like a training user and the artifact is just the matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._neighbours import cosine_block, keep_top_k, row_norms, sharpen
from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo


class UserKNNConfig(BaseModel):
    # tuned on a validation split of ML-100K training data (see benchmarks/tune_algorithms.py)
    neighbours: int = Field(default=150, ge=1)
    shrinkage: float = Field(default=10.0, ge=0)
    alpha: float = Field(default=2.0, gt=0)
    binary: bool = True


class UserKNN(Recommender):
    name = "user_knn"
    aliases = ("collaborative",)
    Config = UserKNNConfig

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        self._prepare()

    def _prepare(self) -> None:
        self._x = self._inputs(self.user_items)
        self._xt = self._x.T.tocsr()
        self._norms = row_norms(self._x)

    def _inputs(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        if not self.config.binary:
            return rows
        binary = rows.copy()
        binary.data = np.sign(binary.data).astype(np.float32)
        return binary

    def _score(self, queries: sp.csr_matrix, self_rows: np.ndarray | None) -> np.ndarray:
        cfg = self.config
        dots = (queries @ self._xt).toarray().astype(np.float64)
        sims = cosine_block(dots, row_norms(queries), self._norms, cfg.shrinkage)
        if self_rows is not None:
            sims[np.arange(len(self_rows)), self_rows] = 0.0
        sims = sharpen(keep_top_k(sims, cfg.neighbours), cfg.alpha)
        return (sp.csr_matrix(sims) @ self._x).toarray()

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._score(self._x[rows], rows)

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return self._score(self._inputs(history), None)[0]

    def item_scores(self, item: int) -> np.ndarray:
        # items co-consumed by the users of ``item``, cosine-normalised like the user side
        column = self._xt[item]
        co = (column @ self._x).toarray().ravel().astype(np.float64)
        item_norms = row_norms(self._xt)
        return cosine_block(co[None, :], item_norms[[item]], item_norms, self.config.shrinkage)[0]

    def _state(self) -> State:
        return {}

    def _restore(self, state: State) -> None:
        self._prepare()
