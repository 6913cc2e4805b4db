"""Bayesian Personalized Ranking (Rendle et al. 2009) through the ``implicit`` library.

Trained single-threaded: implicit's multi-threaded SGD is lock-free (Hogwild), so only one
thread makes two fits with the same seed give the same model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.bpr import BayesianPersonalizedRanking
from pydantic import BaseModel, Field

from training.algorithms._factors import FactorModel, ridge_fold_in
from training.data import InteractionMatrix, ItemInfo


class BPRConfig(BaseModel):
    # tuned on a validation split of ML-100K training data (see benchmarks/tune_algorithms.py)
    factors: int = Field(default=128, ge=1)
    learning_rate: float = Field(default=0.01, gt=0)
    regularization: float = Field(default=0.001, ge=0)
    # more epochs overfit ML-100K: validation NDCG peaks near 50
    iterations: int = Field(default=50, ge=1)
    fold_in_regularization: float = Field(default=1.0, gt=0)


class BPR(FactorModel):
    name = "bpr"
    Config = BPRConfig

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        cfg = self.config
        model = BayesianPersonalizedRanking(
            factors=cfg.factors,
            learning_rate=cfg.learning_rate,
            regularization=cfg.regularization,
            iterations=cfg.iterations,
            num_threads=1,
            random_state=self.seed,
        )
        model.fit(self._positives(self.user_items), show_progress=False)
        # implicit appends an item-bias column (and a constant 1 on the user side)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    @staticmethod
    def _positives(rows: sp.csr_matrix) -> sp.csr_matrix:
        # BPR samples "liked vs not": a dislike must not be sampled as liked
        positive = rows.copy()
        positive.data = (positive.data > 0).astype(np.float32)
        positive.eliminate_zeros()
        return positive

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        liked = self._positives(history).indices
        if not len(liked):
            return np.zeros(self.n_items)
        user = ridge_fold_in(self.item_factors, liked, self.config.fold_in_regularization)
        return self.item_factors @ user.astype(np.float32)
