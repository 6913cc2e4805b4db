"""Distributed biased MF (the model of ``training.algorithms.svd``): data-parallel Adam, lazy
Adam or SGD, one Ray Train worker's part (called by ``loop.train_loop``). Dense gradients are
averaged by DDP; lazy Adam's sparse ones by ``_sum_sparse_gradients``.

Every rank draws the same initial factors and the same epoch permutation, then takes every
``world``-th rating of each global batch. Its loss is scaled by ``world / len(batch)`` so DDP's
gradient average equals the gradient of the global batch mean: one step matches one
single-node step on the same batch.
"""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from typing import Any

import numpy as np


def _module(torch: Any, n_users: int, n_items: int, cfg: Any, generator: Any) -> Any:
    sparse = cfg.optimizer == "sparse_adam"

    class BiasedMF(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # the single-node trainer's draw order: user factors, then item factors
            self.p = torch.nn.Parameter(torch.randn(n_users, cfg.factors, generator=generator))
            self.q = torch.nn.Parameter(torch.randn(n_items, cfg.factors, generator=generator))
            with torch.no_grad():
                self.p.mul_(cfg.init_std)
                self.q.mul_(cfg.init_std)
            # lazy Adam reads the biases as one-wide embeddings, as the single-node trainer does
            wide = (1,) if sparse else ()
            self.bu = torch.nn.Parameter(torch.zeros(n_users, *wide))
            self.bi = torch.nn.Parameter(torch.zeros(n_items, *wide))

        def forward(self, users: Any, items: Any, targets: Any, mean: float) -> Any:
            if sparse:  # sparse gradients: each step updates only the rows of its batch
                embed = torch.nn.functional.embedding
                pu, qi = embed(users, self.p, sparse=True), embed(items, self.q, sparse=True)
                b_u = embed(users, self.bu, sparse=True)[:, 0]
                b_i = embed(items, self.bi, sparse=True)[:, 0]
            else:
                pu, qi, b_u, b_i = self.p[users], self.q[items], self.bu[users], self.bi[items]
            error = targets - (mean + b_u + b_i + (pu * qi).sum(dim=1))
            penalty = cfg.regularization * ((pu**2).sum(1) + (qi**2).sum(1))
            penalty = penalty + cfg.bias_regularization * (b_u**2 + b_i**2)
            return (error**2 + penalty).sum()

    return BiasedMF()


def _epoch(torch: Any, state: dict[str, Any], order: Any, rank: int, world: int) -> float:
    model, optimizer, batch_size = state["model"], state["optimizer"], state["batch_size"]
    users, items, targets, mean = state["users"], state["items"], state["targets"], state["mean"]
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        local = batch[rank::world]
        summed = model(users[local], items[local], targets[local], mean)
        optimizer.zero_grad()
        if state["sparse"]:
            (summed / len(batch)).backward()
            _sum_sparse_gradients(torch, model, users[batch], items[batch])
        else:
            (summed * (world / len(batch))).backward()
        optimizer.step()
        total += float(summed.detach())
    return total


def _sum_sparse_gradients(torch: Any, model: Any, users: Any, items: Any) -> None:
    """Lazy Adam's all-reduce (DDP cannot bucket sparse gradients): every rank knows the global
    batch, so each sums its gradient rows into the batch's sorted distinct rows, one dense
    all-reduce of those rows adds the ranks' parts, and the sum becomes the sparse gradient."""
    import torch.distributed as dist

    for name, index in (("p", users), ("q", items), ("bu", users), ("bi", items)):
        param = getattr(model, name)
        rows = torch.unique(index)
        grad = param.grad.coalesce()
        dense = torch.zeros((len(rows), *param.shape[1:]), dtype=param.dtype)
        dense.index_add_(0, torch.searchsorted(rows, grad.indices()[0]), grad.values())
        if dist.is_initialized():
            dist.all_reduce(dense)
        param.grad = torch.sparse_coo_tensor(rows.unsqueeze(0), dense, param.shape)


def fit_svd(
    config: dict[str, Any],
    ratings: tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]],
    *,
    rank: int,
    world: int,
    device: Any,
    report: Callable[[dict[str, Any]], None],
) -> dict[str, np.ndarray]:
    """This rank's part of the fit: one report per epoch; returns the parameters."""
    import torch
    import torch.distributed as dist
    from ray.train.torch import prepare_model

    rows, cols, values, shape = ratings
    cfg = types.SimpleNamespace(**config["model_config"])  # an SVDConfig the driver checked
    generator = torch.Generator().manual_seed(int(config["seed"]))
    module = _module(torch, shape[0], shape[1], cfg, generator)
    sparse = cfg.optimizer == "sparse_adam"
    # DDP (gloo on CPU, NCCL on GPU) when world > 1; lazy Adam sums its sparse rows itself
    model = module if sparse else prepare_model(module)
    optimizer_class = {
        "adam": torch.optim.Adam,
        "sgd": torch.optim.SGD,
        "sparse_adam": torch.optim.SparseAdam,
    }[cfg.optimizer]
    state = {
        "model": model,
        "optimizer": optimizer_class(model.parameters(), lr=cfg.learning_rate),
        "batch_size": cfg.batch_size,
        "sparse": sparse,
        "users": torch.from_numpy(rows.astype(np.int64)).to(device),
        "items": torch.from_numpy(cols.astype(np.int64)).to(device),
        "targets": torch.from_numpy(values.astype(np.float32)).to(device),
        "mean": float(values.mean()) if len(values) else 0.0,
    }
    elapsed = 0.0
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(values), generator=generator).to(device)
        loss = _epoch(torch, state, order, rank, world)
        elapsed += time.perf_counter() - started
        summed = torch.tensor(loss, dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(summed)
        report(
            {"epoch": epoch, "loss": float(summed) / max(len(values), 1), "train_seconds": elapsed}
        )
    arrays = {
        name: getattr(module, attr)
        .detach()
        .cpu()
        .numpy()
        .astype(np.float32)
        .reshape((-1, cfg.factors) if attr in ("p", "q") else (-1,))
        for name, attr in (
            ("user_factors", "p"),
            ("item_factors", "q"),
            ("user_bias", "bu"),
            ("item_bias", "bi"),
        )
    }
    return {"mean": np.array([state["mean"]]), **arrays}
