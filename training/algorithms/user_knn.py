"""User-based k-NN: score items by what the most similar users (shrunk cosine) interacted with.

Neighbours are found at query time against the training matrix, so a fresh history is scored
exactly like a training user and the artifact is just the matrix. Queries are scored a few at a
time (``QUERY_BYTES`` of dense similarity rows over all users at once), so scoring a block of
users holds a bounded slice of the user × user similarity, never all of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._neighbours import (
    CELL_BYTES,
    cosine_block,
    keep_top_k,
    row_norms,
    sharpen,
)
from training.algorithms._persist import State
from training.algorithms.base import SCORING_BLOCK, Recommender
from training.data import InteractionMatrix, ItemInfo

if TYPE_CHECKING:
    from training.fit_budget import Shape

# dense similarity rows (query x all users, ``CELL_BYTES`` a cell) held at once while scoring
QUERY_BYTES = 256 * 2**20


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

    @classmethod
    def estimated_bytes(cls, shape: Shape, config: BaseModel) -> int:
        """The matrix and its user-major copy, plus scoring a block of users (evaluation): the
        similarity rows of a few queries at a time and the block's dense scores (three
        copies)."""
        rows = min(SCORING_BLOCK, _query_rows(shape.users))
        similarity = CELL_BYTES * rows * shape.users
        scores = 3 * 8 * SCORING_BLOCK * shape.items
        matrix = super().estimated_bytes(shape, config) + 8 * shape.nnz
        return matrix + similarity + scores

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        self._prepare()

    def _prepare(self) -> None:
        self._x = self._inputs(self.user_items)
        self._xt = self._x.T.tocsr()
        self._norms = row_norms(self._x)
        self._item_norms = row_norms(self._xt)

    def _inputs(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        if not self.config.binary:
            return rows
        binary = rows.copy()
        binary.data = np.sign(binary.data).astype(np.float32)
        return binary

    def _score(self, queries: sp.csr_matrix, self_rows: np.ndarray | None) -> np.ndarray:
        cfg = self.config
        scores = np.empty((queries.shape[0], self.n_items), dtype=np.float64)
        step = _query_rows(self.n_users)
        for start in range(0, queries.shape[0], step):
            part = queries[start : start + step]
            dots = (part @ self._xt).toarray().astype(np.float64)
            sims = cosine_block(dots, row_norms(part), self._norms, cfg.shrinkage)
            del dots
            if self_rows is not None:
                own = self_rows[start : start + step]
                sims[np.arange(len(own)), own] = 0.0
            kept = sp.csr_matrix(keep_top_k(sims, cfg.neighbours))
            del sims
            kept.data = sharpen(kept.data, cfg.alpha)
            scores[start : start + step] = (kept @ self._x).toarray()
        return scores

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._score(self._x[rows], rows)

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return self._score(self._inputs(history), None)[0]

    def item_scores(self, item: int) -> np.ndarray:
        # items co-consumed by the users of ``item``, cosine-normalised like the user side
        column = self._xt[item]
        co = (column @ self._x).toarray().ravel().astype(np.float64)
        norms = self._item_norms
        return cosine_block(co[None, :], norms[[item]], norms, self.config.shrinkage)[0]

    def _state(self) -> State:
        return {}

    def _restore(self, state: State) -> None:
        self._prepare()


def _query_rows(users: int) -> int:
    """Queries scored at once: ``QUERY_BYTES`` of dense similarity rows over ``users``."""
    return max(1, QUERY_BYTES // (CELL_BYTES * max(users, 1)))
