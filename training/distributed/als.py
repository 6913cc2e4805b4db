"""Distributed implicit ALS: the Ray Train worker loop (runs inside each TorchTrainer worker).

Each worker owns a contiguous shard of users and of items. A half-iteration solves the shard's
rows of ``(YᵀY + λI + Yᵀ(Cu - I)Y) x_u = YᵀCu p_u`` — by default with a few conjugate-gradient
steps warm-started from the previous iteration's row (as implicit does: O(n·f) per step, never
forming a per-row f × f matrix), or exactly (``cg_steps=0``: one batched ``torch.linalg.solve``
per block, O(n·f² + f³) per row) — then ``all_gather`` gives every worker the full factors.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.distributed.shards import Block, build_blocks, shard_bounds

FACTORS_FILE = "factors.npz"


def _solve_shard(torch: Any, blocks: list[Block], other: Any, size: int, reg: float) -> Any:
    factors = other.shape[1]
    padded = torch.cat([other, other.new_zeros(1, factors)])
    base = other.T @ other + reg * torch.eye(factors, dtype=other.dtype, device=other.device)
    solved = other.new_zeros(size, factors)
    for block in blocks:
        gathered = padded[block.cols]  # (B, L, f)
        weighted = gathered.transpose(1, 2) * block.gram_weight[:, None, :]
        gram = base + torch.bmm(weighted, gathered)
        rhs = (gathered * block.rhs_weight[..., None]).sum(dim=1)
        solved[block.rows] = torch.linalg.solve(gram, rhs)
    return solved


def _cg_shard(
    torch: Any, blocks: list[Block], other: Any, current: Any, reg: float, steps: int
) -> Any:
    """``steps`` conjugate-gradient steps per row from ``current`` (the shard's rows now).

    A·v = (OᵀO + λI)v + Σ_i (c_i - 1)(o_i·v) o_i over the row's stored pairs: two batched
    products over the gathered factors, no per-row Gram matrix.
    """
    factors = other.shape[1]
    padded = torch.cat([other, other.new_zeros(1, factors)])
    base = other.T @ other + reg * torch.eye(factors, dtype=other.dtype, device=other.device)
    solved = current.clone()
    for block in blocks:
        gathered = padded[block.cols]  # (B, L, f)

        def apply(v: Any, gathered: Any = gathered, block: Block = block) -> Any:
            along = (gathered * v[:, None, :]).sum(dim=-1) * block.gram_weight
            return v @ base + (gathered * along[..., None]).sum(dim=1)

        x = current[block.rows]
        rhs = (gathered * block.rhs_weight[..., None]).sum(dim=1)
        residual = rhs - apply(x)
        direction = residual.clone()
        before = (residual * residual).sum(dim=1)
        for _ in range(steps):
            product = apply(direction)
            curvature = (direction * product).sum(dim=1)
            step = torch.where(curvature > 0, before / curvature.clamp_min(1e-30), 0.0)
            x = x + step[:, None] * direction
            residual = residual - step[:, None] * product
            after = (residual * residual).sum(dim=1)
            if bool((after < 1e-20).all()):
                break
            ratio = torch.where(before > 0, after / before.clamp_min(1e-30), 0.0)
            direction = residual + ratio[:, None] * direction
            before = after
        solved[block.rows] = x
    return solved


def _all_gather(torch: Any, dist: Any, shard: Any, sizes: list[int]) -> Any:
    """Concatenate every rank's shard in rank order (gloo needs equal shapes: pad, then trim)."""
    if len(sizes) == 1:
        return shard
    widest = max(sizes)
    padded = shard.new_zeros(widest, shard.shape[1])
    padded[: shard.shape[0]] = shard
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def _stored_loss(torch: Any, blocks: list[Block], own: Any, other: Any) -> Any:
    """Σ over the shard's stored pairs of c(p - s)² - s² (see objective.factor_objective)."""
    padded = torch.cat([other, other.new_zeros(1, other.shape[1])])
    total = own.new_zeros((), dtype=torch.float64)
    for block in blocks:
        scores = (padded[block.cols] * own[block.rows][:, None, :]).sum(dim=-1)
        terms = block.confidence * (block.preference - scores) ** 2 - scores**2
        total += (terms * block.stored).sum().double()
    return total


def _objective(
    torch: Any, dist: Any, blocks: list[Block], x: Any, y: Any, lo: int, reg: float
) -> float:
    own = x[lo : lo + _rows_of(blocks)]
    stored = _stored_loss(torch, blocks, own, y)
    if dist.is_initialized():
        dist.all_reduce(stored)
    x64, y64 = x.double(), y.double()
    everywhere = ((x64.T @ x64) * (y64.T @ y64)).sum()
    penalty = reg * ((x64**2).sum() + (y64**2).sum())
    return float(everywhere + stored + penalty)


def _sizes(n: int, world: int) -> list[int]:
    return [hi - lo for lo, hi in (shard_bounds(n, world, rank) for rank in range(world))]


def _rows_of(blocks: list[Block]) -> int:
    return sum(int(block.rows.numel()) for block in blocks)


def als_worker(config: dict[str, Any]) -> None:
    """TorchTrainer ``train_loop_per_worker``: fit, report each iteration, checkpoint the end."""
    import ray
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import get_device

    torch.set_num_threads(int(config["threads"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device()
    user_items = ray.get(config["matrix"])
    item_users = user_items.T.tocsr()
    n_users, n_items = user_items.shape
    alpha, reg, factors = config["alpha"], config["regularization"], config["factors"]
    steps = int(config.get("cg_steps", 0))
    user_lo, user_hi = shard_bounds(n_users, world, rank)
    item_lo, item_hi = shard_bounds(n_items, world, rank)
    user_blocks = build_blocks(torch, user_items, user_lo, user_hi, alpha, device)
    item_blocks = build_blocks(torch, item_users, item_lo, item_hi, alpha, device)
    user_sizes, item_sizes = _sizes(n_users, world), _sizes(n_items, world)
    rng = np.random.default_rng(config["seed"])  # every rank draws the same start
    y = torch.as_tensor(rng.random((n_items, factors)) * 0.01, dtype=torch.float32, device=device)
    x = y.new_zeros(n_users, factors)
    elapsed = 0.0
    for iteration in range(1, config["iterations"] + 1):
        started = time.perf_counter()
        if steps:
            x_shard = _cg_shard(torch, user_blocks, y, x[user_lo:user_hi], reg, steps)
        else:
            x_shard = _solve_shard(torch, user_blocks, y, user_hi - user_lo, reg)
        x = _all_gather(torch, dist, x_shard, user_sizes)
        if steps:
            y_shard = _cg_shard(torch, item_blocks, x, y[item_lo:item_hi], reg, steps)
        else:
            y_shard = _solve_shard(torch, item_blocks, x, item_hi - item_lo, reg)
        y = _all_gather(torch, dist, y_shard, item_sizes)
        elapsed += time.perf_counter() - started
        metrics = {
            "iteration": iteration,
            "objective": _objective(torch, dist, user_blocks, x, y, user_lo, reg),
            "train_seconds": elapsed,
        }
        _report(metrics, x, y, final=iteration == config["iterations"], rank=rank)


def _report(metrics: dict[str, Any], x: Any, y: Any, *, final: bool, rank: int) -> None:
    import ray.train

    if not (final and rank == 0):
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="recserve-als-") as directory:
        np.savez(Path(directory) / FACTORS_FILE, user=x.cpu().numpy(), item=y.cpu().numpy())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
