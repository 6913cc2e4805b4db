"""EASE (Steck 2019): a closed-form item-item linear model, B = I - P / diag(P).

P = (XᵀX + λI)⁻¹. Scores are X·B, so any history scores with no refit (fold-in is free).

Its cost is dense in the catalogue. The fit holds one float64 item × item matrix, in which the
Gram matrix is built a block of item columns at a time and then inverted in place (Cholesky,
LAPACK ``potrf``/``potri``), and the float32 weights built from it a block of rows at a time:
12 bytes per pair of items (50,000 items: 30 GB), where building the Gram from one sparse
product and inverting it with ``numpy.linalg.inv`` held 20-24. ``max_items`` fits B on the most
interacted-with items only (the training budget sets it, see ``training.fit_budget``); the other
items are never recommended by this engine, and still count in the histories that score the
kept ones only through their kept neighbours.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field
from threadpoolctl import threadpool_limits

from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo

if TYPE_CHECKING:
    from training.fit_budget import Shape

# Below this many items a scaled EASE is not worth serving: the engine is skipped instead.
MIN_SCALED_ITEMS = 1000
# item columns (Gram) or rows (weights) handled at a time: a block costs 16 bytes x items
BLOCK_ITEMS = 512
# peak bytes per pair of covered items: the float64 Gram / precision and the float32 weights
BYTES_PER_PAIR = 12
# above this many items the in-place inverse runs on one BLAS thread (see _invert_in_place)
THREADED_INVERSE_ITEMS = 16_384


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
        blocks = 2 * 8 * min(BLOCK_ITEMS, covered) * covered  # a dense block, its product
        return super().estimated_bytes(shape, config) + BYTES_PER_PAIR * covered**2 + blocks

    @classmethod
    def scaled_config(
        cls, shape: Shape, config: BaseModel, budget: int
    ) -> tuple[BaseModel, str] | None:
        spare = budget - super().estimated_bytes(shape, config)
        covered = math.isqrt(max(spare, 0) // BYTES_PER_PAIR)
        while (
            covered > 0
            and cls.estimated_bytes(shape, config.model_copy(update={"max_items": covered}))
            > budget
        ):
            covered -= max(1, covered // 200)
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
        gram = _gram(weighted)
        diagonal = np.diag_indices_from(gram)
        # λ keeps its meaning whatever the weighting: the mean squared entry of the unweighted X,
        # times the share of the Gram's mass the user weighting leaves
        scale = float(np.mean(x.data**2)) if x.nnz else 1.0
        unweighted_trace = float(x.multiply(x).sum())
        if unweighted_trace > 0:
            scale *= float(np.trace(gram)) / unweighted_trace
        ridge = self.config.regularization * scale
        gram[diagonal] += ridge + self.config.dropout * gram[diagonal]
        self.weights = _weights(_invert_in_place(gram))

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


def _gram(x: sp.csr_matrix) -> np.ndarray:
    """XᵀX as a dense float64 array, filled a block of item columns at a time: the product of
    the whole matrix, made dense and then float64, would have held it three times over."""
    n = x.shape[1]
    gram = np.empty((n, n), dtype=np.float64)
    transposed, columns = sp.csr_matrix(x.T), sp.csc_matrix(x)
    for start in range(0, n, BLOCK_ITEMS):
        stop = min(n, start + BLOCK_ITEMS)
        gram[:, start:stop] = (transposed @ columns[:, start:stop]).toarray()
    return gram


def _invert_in_place(gram: np.ndarray) -> np.ndarray:
    """The inverse of the symmetric positive definite ``gram``, in its own memory: Cholesky
    (``potrf``) then the inverse from the factor (``potri``). LAPACK works on the Fortran view
    (the transpose, the same matrix), so the C array holds the inverse's lower triangle; the
    rest is left as it was."""
    from scipy.linalg import lapack

    view = gram.T  # Fortran-ordered: LAPACK writes into gram's own buffer
    # scipy 1.17.1's OpenBLAS (0.3.30) crashes at once in its threaded potrf from about 22,700
    # items (a segmentation fault, seen at 22,900 here; 22,600 ran); one thread computes it
    threads = 1 if len(gram) > THREADED_INVERSE_ITEMS else None
    with threadpool_limits(limits=threads, user_api="blas"):
        factor, info = lapack.dpotrf(view, lower=0, clean=0, overwrite_a=1)
        if info == 0:
            factor, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise ValueError(f"EASE: the regularised Gram matrix is not positive definite ({info})")
    if not np.shares_memory(factor, gram):  # the wrapper copied: keep what it computed
        gram[...] = factor.T
    return gram


def _weights(lower: np.ndarray) -> np.ndarray:
    """B = -P / diag(P) with a zero diagonal, as float32, from P's lower triangle (``lower``'s
    other entries are ignored), a block of rows at a time."""
    n = lower.shape[0]
    diagonal = np.diagonal(lower).copy()
    weights = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, BLOCK_ITEMS):
        stop = min(n, start + BLOCK_ITEMS)
        rows = np.empty((stop - start, n), dtype=np.float64)
        rows[:, :start] = lower[start:stop, :start]
        rows[:, stop:] = lower[stop:, start:stop].T
        square = lower[start:stop, start:stop]
        rows[:, start:stop] = np.tril(square) + np.tril(square, -1).T
        weights[start:stop] = rows / -diagonal
    np.fill_diagonal(weights, 0.0)
    return weights
