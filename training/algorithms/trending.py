"""Trending: popularity where every interaction fades with a configurable half-life."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms.popularity import Popularity
from training.data import SECONDS_PER_DAY, InteractionMatrix


class TrendingConfig(BaseModel):
    half_life_days: float = Field(default=7.0, gt=0)
    # None: measure ages from the newest interaction in the data, so old datasets still trend
    now: float | None = None
    positive_only: bool = True


class Trending(Popularity):
    name = "trending"
    Config = TrendingConfig
    ranks_by_recency = True
    # Popularity's hybrid roles are its own, not its subclass's.
    cold_start_weight = 0.0
    switch_at = None

    def _item_popularity(self, data: InteractionMatrix) -> np.ndarray:
        matrix = data.matrix.tocsr(copy=True).astype(np.float64)
        if self.config.positive_only:
            matrix.data = np.clip(matrix.data, 0.0, None)
        matrix.data = np.sign(matrix.data)
        if data.timestamps is not None and data.timestamps.nnz:
            matrix = matrix.multiply(self._decay(data)).tocsr()
        return np.asarray(matrix.sum(axis=0)).ravel()

    def _decay(self, data: InteractionMatrix) -> sp.csr_matrix:
        """Decay factor aligned with ``data.matrix``; pairs without a timestamp count as new."""
        stamps = data.timestamps.tocsr()  # type: ignore[union-attr]
        reference = self.config.now if self.config.now is not None else float(stamps.data.max())
        decay = stamps.copy()
        age_days = np.clip(reference - stamps.data, 0.0, None) / SECONDS_PER_DAY
        decay.data = np.exp2(-age_days / self.config.half_life_days)
        undated = (data.matrix != 0).astype(np.float64) - (stamps != 0).astype(np.float64)
        return decay + undated.maximum(0)
