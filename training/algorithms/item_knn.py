"""Item-based k-NN: shrunk cosine between item columns, the top neighbours of each item kept.

The neighbours are computed ``block_items`` items at a time (``_neighbours.item_similarity``),
so fitting holds one block of the item-item product, never all of it; the training budget
chooses the block (see ``training.fit_budget``).

Scores are X·S, which makes explanations exact: the contribution of a history item i to the
score of item j is x_i · S[i, j], so :meth:`ItemKNN.because` names the largest one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._neighbours import CELL_BYTES, MAX_BLOCK, item_similarity
from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo

if TYPE_CHECKING:
    from training.fit_budget import Shape


class ItemKNNConfig(BaseModel):
    # tuned on a validation split of ML-100K training data (see benchmarks/tune_algorithms.py)
    neighbours: int = Field(default=400, ge=1)
    shrinkage: float = Field(default=50.0, ge=0)
    alpha: float = Field(default=4.0, gt=0)
    binary: bool = True
    # RP3beta-style: divide similarities towards item j by popularity_j ** beta, so a hit
    # that co-occurs with everything stops topping every list
    popularity_penalty: float = Field(default=0.0, ge=0)
    # L1-normalise each item's neighbour row: every history item then casts one unit of vote
    normalize: bool = True
    # items whose rows of the item-item product are held at once while fitting
    block_items: int = Field(default=MAX_BLOCK, ge=1)


class ItemKNN(Recommender):
    name = "item_knn"
    similarity_order = 0
    aliases = ("collaborative",)
    Config = ItemKNNConfig

    similarity: sp.csr_matrix

    @classmethod
    def estimated_bytes(cls, shape: Shape, config: BaseModel) -> int:
        """The item-major copy of the matrix, one block of the item-item product (its rows
        over every item, while they are pruned) and the kept neighbours (12 bytes each, three
        copies while they are weighted)."""
        block = min(int(getattr(config, "block_items", MAX_BLOCK)), max(shape.items, 1))
        neighbours = min(int(getattr(config, "neighbours", 400)), shape.items)
        kept = 3 * 12 * shape.items * neighbours
        matrix = super().estimated_bytes(shape, config) + 8 * shape.nnz
        return matrix + CELL_BYTES * block * shape.items + kept

    @classmethod
    def planned_config(cls, shape: Shape, config: BaseModel, budget: int) -> tuple[BaseModel, str]:
        """The largest block (up to the configured one) that fits ``budget``; one item when
        none does (the plan then skips the engine)."""
        largest = max(1, min(int(getattr(config, "block_items", MAX_BLOCK)), shape.items))
        fixed = cls.estimated_bytes(shape, config.model_copy(update={"block_items": 1}))
        per_item = CELL_BYTES * max(shape.items, 1)
        block = max(1, min(largest, 1 + (budget - fixed) // per_item))
        note = f"neighbours computed {block:,} of {shape.items:,} items at a time"
        return config.model_copy(update={"block_items": int(block)}), note

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        x = self._inputs(self.user_items)
        cfg = self.config
        similarity = item_similarity(
            x, cfg.neighbours, cfg.shrinkage, cfg.alpha, block=cfg.block_items
        )
        if cfg.popularity_penalty > 0:
            popularity = np.maximum(np.diff(x.tocsc().indptr), 1).astype(np.float64)
            similarity = similarity @ sp.diags(popularity**-cfg.popularity_penalty)
        if cfg.normalize:
            totals = np.asarray(abs(similarity).sum(axis=1)).ravel()
            scale = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
            similarity = sp.diags(scale) @ similarity
        self.similarity = sp.csr_matrix(similarity, dtype=np.float32)

    def _inputs(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        if not self.config.binary:
            return rows
        binary = rows.copy()
        binary.data = np.sign(binary.data).astype(np.float32)
        return binary

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return (self._inputs(self.user_items[rows]) @ self.similarity).toarray()

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return (self._inputs(history) @ self.similarity).toarray()[0]

    def item_scores(self, item: int) -> np.ndarray:
        return self.similarity[item].toarray()[0].astype(np.float64)

    def pair_scores(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The asked pairs only: a whole catalogue row per candidate made MMR's 30 x 30 cost
        1.6 ms at ML-100K."""
        return self.similarity[rows][:, cols].toarray().astype(np.float64)

    def because(self, user_or_history: str | Sequence[str], item: str) -> str | None:
        """The interacted item that contributed most to ``item``'s score, or None."""
        target = self.item_index(item)
        if target is None:
            return None
        if isinstance(user_or_history, str):
            row = self.user_index(user_or_history)
            if row is None:
                return None
            history = self.user_items[row]
        else:
            history = self.history_row(user_or_history)
            if history is None:
                return None
        history = self._inputs(history)
        column = self.similarity[:, target].toarray().ravel()
        contributions = history.data * column[history.indices]
        if not len(contributions) or contributions.max() <= 0:
            return None
        return str(self.item_ids[history.indices[int(np.argmax(contributions))]])

    def _state(self) -> State:
        return {"similarity": self.similarity}

    def _restore(self, state: State) -> None:
        self.similarity = sp.csr_matrix(state["similarity"], dtype=np.float32)
