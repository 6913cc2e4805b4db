"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` library.

Confidence is ``1 + alpha·weight``; a fresh history folds in with the library's exact
least-squares user solve against the fixed item factors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

from training.algorithms._factors import FactorModel
from training.algorithms._persist import State
from training.data import InteractionMatrix, ItemInfo


class ALSConfig(BaseModel):
    # tuned on a validation split of ML-100K training data (see benchmarks/tune_algorithms.py)
    # validation NDCG follows regularization / alpha: 30 / 4 with 64 factors won the grid
    factors: int = Field(default=64, ge=1)
    regularization: float = Field(default=30.0, ge=0)
    alpha: float = Field(default=4.0, gt=0)
    iterations: int = Field(default=15, ge=1)
    # the distributed form's solver: conjugate-gradient steps per row and half-iteration, warm
    # started (implicit's CPU solver also takes 3); 0 solves each row exactly
    cg_steps: int = Field(default=3, ge=0)
    binary: bool = False
    num_threads: int = Field(default=0, ge=0)


class ALS(FactorModel):
    name = "als"
    vector_collection = "items_als"
    similarity_order = 2
    aliases = ("matrix_factorization",)
    distributed = True
    hybrid_weight = 0.35
    Config = ALSConfig

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        # implicit parallelises over users itself; a second BLAS thread pool only contends
        with threadpool_limits(1, "blas"):
            model = self._solver()
            model.fit(self._inputs(self.user_items), show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)

    def _solver(self) -> AlternatingLeastSquares:
        cfg = self.config
        return AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=cfg.alpha,
            iterations=cfg.iterations,
            num_threads=cfg.num_threads,
            random_state=self.seed,
        )

    def _inputs(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        if not self.config.binary:
            return rows
        binary = rows.copy()
        binary.data = np.sign(binary.data).astype(np.float32)
        return binary

    def _restore(self, state: State) -> None:
        super()._restore(state)
        # implicit's fold-in solver takes writable buffers: a mapped (read-only) artifact's
        # item factors are copied; the user factors, the larger part, stay mapped
        self.item_factors = np.array(self.item_factors, dtype=np.float32)

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        with threadpool_limits(1, "blas"):
            solver = self._solver()
        solver.item_factors = self.item_factors
        solver.user_factors = self.user_factors
        user = solver.recalculate_user(0, self._inputs(history))
        return self.item_factors @ np.asarray(user, dtype=np.float32)
