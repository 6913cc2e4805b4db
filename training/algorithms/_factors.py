"""Shared pieces of the latent-factor models: dot-product scoring and factor persistence."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from training.algorithms._persist import State
from training.algorithms.base import Recommender

if TYPE_CHECKING:
    from training.fit_budget import Shape


class FactorModel(Recommender):
    """Scores are ``user_factors · item_factorsᵀ``; similar items by cosine of item factors."""

    user_factors: np.ndarray
    item_factors: np.ndarray

    @classmethod
    def estimated_bytes(cls, shape: Shape, config: BaseModel) -> int:
        """Besides the matrix: user and item factors in float64 with two more copies (solves,
        optimiser moments)."""
        factors = int(getattr(config, "factors", 64))
        return super().estimated_bytes(shape, config) + 24 * factors * (shape.users + shape.items)

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self.user_factors[rows] @ self.item_factors.T

    def item_scores(self, item: int) -> np.ndarray:
        unit = self._unit_factors()
        return unit @ unit[item]

    def pair_scores(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        unit = self._unit_factors()
        return unit[rows] @ unit[cols].T

    def _unit_factors(self) -> np.ndarray:
        """The item factors scaled to unit length (float64), made once per model: computing
        every item's norm on each call made MMR over ALS alone cost 740 ms a request at 50,000
        items."""
        unit = getattr(self, "_unit", None)
        if unit is None or len(unit) != len(self.item_factors):
            factors = self.item_factors.astype(np.float64)
            norms = np.linalg.norm(factors, axis=1)
            norms[norms == 0] = 1.0
            unit = self._unit = factors / norms[:, None]
        return unit

    def item_vectors(self) -> np.ndarray:
        return np.asarray(self.item_factors, dtype=np.float32)

    def _state(self) -> State:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def _restore(self, state: State) -> None:
        self.user_factors = np.asarray(state["user_factors"], dtype=np.float32)
        self.item_factors = np.asarray(state["item_factors"], dtype=np.float32)
        self._unit = None


def ridge_fold_in(item_factors: np.ndarray, items: np.ndarray, regularization: float) -> np.ndarray:
    """The user vector whose scores best reach 1 on ``items``: (YᵀY + λI)⁻¹ Yᵀ1 over them."""
    chosen = item_factors[items].astype(np.float64)
    gram = chosen.T @ chosen + regularization * np.eye(item_factors.shape[1])
    return np.linalg.solve(gram, chosen.sum(axis=0))
