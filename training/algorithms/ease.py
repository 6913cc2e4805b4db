"""EASE (Steck 2019): a closed-form item-item linear model, B = I - P / diag(P).

P = (XᵀX + λI)⁻¹. Scores are X·B, so any history scores with no refit (fold-in is free).

Its cost is dense in the catalogue: fitting holds three float64 item × item matrices (50,000
items: 60 GB). ``max_items`` fits B on the most interacted-with items only (the training budget
sets it, see ``training.limits``); the other items are never recommended by this engine, and
still count in the histories that score the kept ones only through their kept neighbours.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo

if TYPE_CHECKING:
    from training.limits import Shape

# Below this many items a scaled EASE is not worth serving: the engine is skipped instead.
MIN_SCALED_ITEMS = 1000


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
    # fit on this many of the most popular items only (None: all); see the module docstring
    max_items: int | None = Field(default=None, ge=1)


class EASE(Recommender):
    name = "ease"
    similarity_order = 1
    hybrid_weight = 1.0
    switch_at = 10
    Config = EASEConfig

    weights: np.ndarray
    # the item columns B covers (None: all of them)
    kept: np.ndarray | None = None

    @classmethod
    def estimated_bytes(cls, shape: Shape, config: BaseModel) -> int:
        covered = min(shape.items, getattr(config, "max_items", None) or shape.items)
        return super().estimated_bytes(shape, config) + 3 * 8 * covered * covered

    @classmethod
    def scaled_config(
        cls, shape: Shape, config: BaseModel, budget: int
    ) -> tuple[BaseModel, str] | None:
        spare = budget - super().estimated_bytes(shape, config)
        covered = math.isqrt(max(spare, 0) // 24)
        if covered < MIN_SCALED_ITEMS:
            return None
        scaled = config.model_copy(update={"max_items": covered})
        return scaled, f"top {covered:,} of {shape.items:,} items by popularity"

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        x = self._inputs(self.user_items)
        self.kept = None
        limit = self.config.max_items
        if limit is not None and limit < x.shape[1]:
            popularity = np.diff(x.tocsc().indptr)
            self.kept = np.sort(np.argsort(-popularity, kind="stable")[:limit])
            x = sp.csr_matrix(x[:, self.kept])
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
        return self._scores(self._inputs(self.user_items[rows]))

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return self._scores(self._inputs(history))[0]

    def _scores(self, x: sp.csr_matrix) -> np.ndarray:
        if self.kept is None:
            return np.asarray(x @ self.weights)
        # items outside B are never this engine's answer (-inf: dropped by the top-k)
        scores = np.full((x.shape[0], self.n_items), -np.inf, dtype=np.float32)
        scores[:, self.kept] = np.asarray(x[:, self.kept] @ self.weights)
        return scores

    def item_scores(self, item: int) -> np.ndarray:
        if self.kept is None:
            return self.weights[item].astype(np.float64)
        scores = np.full(self.n_items, -np.inf)
        position = np.searchsorted(self.kept, item)
        if position < len(self.kept) and self.kept[position] == item:
            scores[self.kept] = self.weights[position]
        return scores

    def _state(self) -> State:
        state: State = {"weights": self.weights}
        if self.kept is not None:
            state["kept"] = self.kept
        return state

    def _restore(self, state: State) -> None:
        self.weights = np.asarray(state["weights"])
        kept = state.get("kept")
        self.kept = np.asarray(kept, dtype=np.int64) if kept is not None else None
