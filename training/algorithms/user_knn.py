"""User-based k-NN: score items by what the most similar users (shrunk cosine) interacted with.

Neighbours are found at query time against the training matrix, so a fresh history is scored
exactly like a training user and the artifact is just the matrix. Only users who share an item
with the query are candidates (``_neighbours.top_k_rows`` on the sparse product): a query
costs its co-occurrences, never a dense row over all users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._neighbours import (
    BLOCK_ENTRY_BYTES,
    cosine_block,
    row_norms,
    sharpen,
    sparse_cosine,
    top_k_rows,
)
from training.algorithms._persist import State
from training.algorithms.base import SCORING_BLOCK, Recommender
from training.data import InteractionMatrix, ItemInfo

if TYPE_CHECKING:
    from training.limits import Shape


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
        """The matrix and its user-major copy, plus scoring a block of users (evaluation): their
        neighbour candidates (each may share an item with every user; no more than the item
        co-occurrences) and the block's dense scores (three copies)."""
        candidates = min(SCORING_BLOCK * shape.users, shape.item_pairs)
        scores = 3 * 8 * SCORING_BLOCK * shape.items
        matrix = super().estimated_bytes(shape, config) + 8 * shape.nnz
        return matrix + BLOCK_ENTRY_BYTES * candidates + scores

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
        dots = sp.csr_matrix(queries @ self._xt, dtype=np.float64)
        if self_rows is not None:
            rows = np.repeat(np.arange(dots.shape[0]), np.diff(dots.indptr))
            dots.data[dots.indices == np.asarray(self_rows)[rows]] = 0.0
        sims = sparse_cosine(dots, row_norms(queries), self._norms, cfg.shrinkage)
        sims = top_k_rows(sims, cfg.neighbours)
        sims.data = sharpen(sims.data, cfg.alpha)
        return (sims @ self._x).toarray()

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
