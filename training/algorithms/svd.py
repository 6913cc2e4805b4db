"""Biased matrix factorisation for explicit ratings (Koren 2009), trained with torch.

r̂(u, i) = μ + b_u + b_i + p_u·q_i. Torch is imported inside ``fit`` only: serving replicas
load the numpy factors and never import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._factors import FactorModel
from training.algorithms._persist import State
from training.data import InteractionMatrix, ItemInfo

if TYPE_CHECKING:
    from training.fit_budget import Shape

# the plan switches dense Adam to lazy Adam beyond this many rows updated per row learnt from
LAZY_ADAM_RATIO = 32


class SVDConfig(BaseModel):
    # tuned on a validation split carved from ML-100K u1.base (see benchmarks/tune_algorithms.py)
    factors: int = Field(default=50, ge=1)
    epochs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=512, ge=1)
    # "sparse_adam": lazy Adam, each step updates only the rows its batch touches (a step of
    # "adam" or "sgd" updates every row); the form the plan switches to for large tenants
    optimizer: Literal["adam", "sgd", "sparse_adam"] = "adam"
    learning_rate: float = Field(default=0.005, gt=0)
    # L2 on the factors and biases of each sampled rating (per-example weight decay)
    regularization: float = Field(default=0.12, ge=0)
    bias_regularization: float = Field(default=0.005, ge=0)
    init_std: float = Field(default=0.01, gt=0)
    # small tensors: intra-op threads cost more than they save
    num_threads: int = Field(default=1, ge=1)
    min_rating: float = 0.5
    max_rating: float = 5.0


class SVD(FactorModel):
    name = "svd"
    distributed = True
    Config = SVDConfig

    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray

    @classmethod
    def faster_config(cls, shape: Shape, config: BaseModel) -> tuple[BaseModel, str] | None:
        """Lazy Adam when a dense Adam step would update far more rows than its batch touches:
        200k users and 50k items in batches of 512 make each step update 244× the rows it
        learns from, about 4.6 hours of steps at 10M ratings on one core. On ML-100K folds the
        lazy form's RMSE equals the dense one's (0.918 / 0.919), so nothing is given up there."""
        if getattr(config, "optimizer", None) != "adam":
            return None
        touched = 2 * int(getattr(config, "batch_size", 512))
        ratio = (shape.users + shape.items) / touched
        if ratio <= LAZY_ADAM_RATIO:
            return None
        lazy = config.model_copy(update={"optimizer": "sparse_adam"})
        return lazy, f"lazy Adam: a dense step would update {ratio:,.0f}× the rows of its batch"

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        # without explicit ratings the implicit weights are the regression target
        source = data.ratings if data.ratings is not None else data.matrix
        ratings = sp.coo_matrix(source)
        params = _train(
            ratings.row, ratings.col, ratings.data.astype(np.float32), source.shape,
            self.config, self.seed,
        )  # fmt: skip
        self.global_mean = float(params["mean"])
        self.user_bias, self.item_bias = params["user_bias"], params["item_bias"]
        self.user_factors, self.item_factors = params["user_factors"], params["item_factors"]

    def predict(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """Predicted ratings, clipped to the rating scale; unknown ids fall back to biases."""
        users = np.array([self._user_index.get(u, -1) for u in user_ids], dtype=np.int64)
        items = np.array([self._item_index.get(i, -1) for i in item_ids], dtype=np.int64)
        known_u, known_i = users >= 0, items >= 0
        pred = np.full(len(users), self.global_mean, dtype=np.float64)
        pred[known_u] += self.user_bias[users[known_u]]
        pred[known_i] += self.item_bias[items[known_i]]
        both = known_u & known_i
        dots = self.user_factors[users[both]] * self.item_factors[items[both]]
        pred[both] += dots.sum(axis=1)
        return np.clip(pred, self.config.min_rating, self.config.max_rating)

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        # unclipped: clipping would tie every item predicted above the top of the scale
        base = self.global_mean + self.user_bias[rows, None] + self.item_bias[None, :]
        return base + super().score_rows(rows)

    def _state(self) -> State:
        return {
            **super()._state(),
            "global_mean": np.array([self.global_mean]),
            "user_bias": self.user_bias,
            "item_bias": self.item_bias,
        }

    def _restore(self, state: State) -> None:
        super()._restore(state)
        self.global_mean = float(np.asarray(state["global_mean"])[0])
        self.user_bias = np.asarray(state["user_bias"], dtype=np.float32)
        self.item_bias = np.asarray(state["item_bias"], dtype=np.float32)


def _train(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    cfg: SVDConfig,
    seed: int,
) -> dict[str, Any]:
    import torch  # lazily: only training processes pay for (and need) torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        return _optimise(torch, rows, cols, values, shape, cfg, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _optimise(
    torch: Any,
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    cfg: SVDConfig,
    seed: int,
) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    users, items = torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))
    targets = torch.from_numpy(values)
    mean = float(values.mean()) if len(values) else 0.0

    def factors(n: int) -> Any:
        init = torch.randn(n, cfg.factors, generator=generator) * cfg.init_std
        return init.requires_grad_()

    p, q = factors(shape[0]), factors(shape[1])
    sparse = cfg.optimizer == "sparse_adam"
    # lazy Adam reads the biases as one-wide embeddings so their gradients are sparse too
    bias_shape: Any = (lambda n: (n, 1)) if sparse else (lambda n: (n,))
    bu = torch.zeros(bias_shape(shape[0]), requires_grad=True)
    bi = torch.zeros(bias_shape(shape[1]), requires_grad=True)
    optimizer_class = {
        "adam": torch.optim.Adam,
        "sgd": torch.optim.SGD,
        "sparse_adam": torch.optim.SparseAdam,
    }[cfg.optimizer]
    optimizer = optimizer_class([p, q, bu, bi], lr=cfg.learning_rate)
    embed = torch.nn.functional.embedding
    for _ in range(cfg.epochs):
        order = torch.randperm(len(values), generator=generator)
        for start in range(0, len(values), cfg.batch_size):
            batch = order[start : start + cfg.batch_size]
            u, i = users[batch], items[batch]
            if sparse:
                pu, qi = embed(u, p, sparse=True), embed(i, q, sparse=True)
                b_u, b_i = embed(u, bu, sparse=True)[:, 0], embed(i, bi, sparse=True)[:, 0]
            else:
                pu, qi, b_u, b_i = p[u], q[i], bu[u], bi[i]
            error = targets[batch] - (mean + b_u + b_i + (pu * qi).sum(dim=1))
            penalty = cfg.regularization * ((pu**2).sum(1) + (qi**2).sum(1))
            penalty = penalty + cfg.bias_regularization * (b_u**2 + b_i**2)
            loss = (error**2 + penalty).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    bu, bi = bu.reshape(-1), bi.reshape(-1)
    as_numpy = {"user_factors": p, "item_factors": q, "user_bias": bu, "item_bias": bi}
    return {"mean": mean, **{k: v.detach().numpy().astype(np.float32) for k, v in as_numpy.items()}}
