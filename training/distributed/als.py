"""Distributed implicit ALS: one Ray Train worker's part (called by ``runner.train_loop``).

Each worker owns a contiguous shard of users and of items (``shards.ALSShard``: its rows of
``C = alpha·R`` and of ``Cᵀ``). A half-iteration solves the shard's rows of
``(YᵀY + λI + Yᵀ(Cu - I)Y) x_u = YᵀCu p_u`` in place, then one collective (``all_gather_single``)
hands every worker the other shards' new rows. On CPU the rows go through ``implicit``'s own
solver (its conjugate-gradient kernel, ``cg_steps`` warm-started steps per row; exact
Cholesky solves with ``cg_steps=0``), so a shard costs what the same rows cost in ``implicit``
and, from the same start, the factors equal the single-node fit's. On a GPU the rows are solved
in padded torch blocks: ``_cg_shard`` (the same CG steps) or ``_solve_shard`` (exact).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from training.distributed.objective import stored_loss
from training.distributed.shards import ALSShard, Block, build_blocks, shard_bounds

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


def initial_factors(seed: int, n_users: int, n_items: int, factors: int) -> tuple[Any, Any]:
    """``implicit``'s start for ``random_state=seed``: users' draws, then items', times 0.01."""
    rng = np.random.default_rng(seed)
    users = rng.random((n_users, factors), dtype=np.float32) * 0.01
    items = rng.random((n_items, factors), dtype=np.float32) * 0.01
    return users, items


def cpu_solver(cg_steps: int) -> Callable[..., None]:
    """``implicit``'s native row solver: ``solve(C_rows, X_rows, Y, reg, num_threads=n)``
    updates ``X_rows`` in place (CG steps from the current rows, or exact when 0)."""
    from implicit.cpu.als import AlternatingLeastSquares

    solver = AlternatingLeastSquares(use_cg=cg_steps > 0)
    solver.cg_steps = cg_steps
    return solver.solver


class _Exchange:
    """Every rank's solved rows of one factor matrix reach every rank, in one collective.

    ``all_gather_single`` needs equal parts: each rank's rows go in a slot of the widest
    shard's height, and the slots are copied out to the full matrix.
    """

    def __init__(self, dist: Any, full: Any, bounds: list[tuple[int, int]], rank: int) -> None:
        self.dist, self.full, self.bounds, self.rank = dist, full, bounds, rank
        self.widest = max(hi - lo for lo, hi in bounds)
        self.slots = full.new_zeros(len(bounds) * self.widest, full.shape[1])
        self.own = full.new_zeros(self.widest, full.shape[1])

    def __call__(self) -> None:
        if len(self.bounds) == 1:
            return
        lo, hi = self.bounds[self.rank]
        self.own[: hi - lo] = self.full[lo:hi]
        self.dist.all_gather_single(self.slots, self.own)
        for rank, (lo, hi) in enumerate(self.bounds):
            if rank != self.rank:
                start = rank * self.widest
                self.full[lo:hi] = self.slots[start : start + hi - lo]


def _objective(
    torch: Any, dist: Any, shard: ALSShard, x: np.ndarray, y: np.ndarray, reg: float
) -> float:
    """The ALS objective (``objective.factor_objective``) from every rank's shard: the stored
    pairs of its users, and its rows' share of XᵀX, YᵀY and the penalty, summed in one
    all-reduce."""
    users = x[shard.user_lo : shard.user_lo + shard.users.shape[0]]
    items = y[shard.item_lo : shard.item_lo + shard.items.shape[0]]
    users64, items64 = users.astype(np.float64), items.astype(np.float64)
    parts = np.concatenate(
        [
            [stored_loss(shard.users, users, y), float((users64**2).sum() + (items64**2).sum())],
            (users64.T @ users64).ravel(),
            (items64.T @ items64).ravel(),
        ]
    )
    summed = torch.from_numpy(parts)
    if dist.is_initialized():
        dist.all_reduce(summed)
    parts = summed.numpy()
    f = x.shape[1]
    gram_x, gram_y = parts[2 : 2 + f * f], parts[2 + f * f :]
    return float(parts[0] + reg * parts[1] + np.dot(gram_x, gram_y))


def fit_als(
    config: dict[str, Any],
    shard: ALSShard,
    *,
    rank: int,
    world: int,
    device: Any,
    report: Callable[[dict[str, Any]], None],
) -> dict[str, np.ndarray]:
    """This rank's part of the fit; returns the full factors (every rank holds them)."""
    import torch
    import torch.distributed as dist

    n_users, n_items = shard.shape
    factors, reg = int(config["factors"]), float(config["regularization"])
    steps, threads = int(config["cg_steps"]), int(config["threads"])
    user_bounds = [shard_bounds(n_users, world, r) for r in range(world)]
    item_bounds = [shard_bounds(n_items, world, r) for r in range(world)]
    (user_lo, user_hi), (item_lo, item_hi) = user_bounds[rank], item_bounds[rank]
    x, y = initial_factors(int(config["seed"]), n_users, n_items, factors)
    if device.type == "cpu":
        solve = cpu_solver(steps)
        # arrays from the object store are read-only; implicit's kernel takes writable ones
        users, items = shard.users.copy(), shard.items.copy()

        def solve_users() -> None:
            solve(users, x[user_lo:user_hi], y, reg, num_threads=threads)

        def solve_items() -> None:
            solve(items, y[item_lo:item_hi], x, reg, num_threads=threads)

        x_full, y_full = torch.from_numpy(x), torch.from_numpy(y)  # share memory with x, y
    else:
        x_full = torch.as_tensor(x, device=device)
        y_full = torch.as_tensor(y, device=device)
        user_blocks = build_blocks(torch, shard.users, 0, user_hi - user_lo, 1.0, device)
        item_blocks = build_blocks(torch, shard.items, 0, item_hi - item_lo, 1.0, device)

        def rows(blocks: list[Block], other: Any, own: Any) -> Any:
            if steps:
                return _cg_shard(torch, blocks, other, own, reg, steps)
            return _solve_shard(torch, blocks, other, own.shape[0], reg)

        def solve_users() -> None:
            x_full[user_lo:user_hi] = rows(user_blocks, y_full, x_full[user_lo:user_hi])

        def solve_items() -> None:
            y_full[item_lo:item_hi] = rows(item_blocks, x_full, y_full[item_lo:item_hi])

    exchange_users = _Exchange(dist, x_full, user_bounds, rank)
    exchange_items = _Exchange(dist, y_full, item_bounds, rank)
    solving = exchanging = 0.0
    for iteration in range(1, int(config["iterations"]) + 1):
        started = time.perf_counter()
        solve_users()
        solved = time.perf_counter()
        exchange_users()
        exchanged = time.perf_counter()
        solve_items()
        solved_items = time.perf_counter()
        exchange_items()
        done = time.perf_counter()
        solving += (solved - started) + (solved_items - exchanged)
        exchanging += (exchanged - solved) + (done - solved_items)
        metrics = {
            "iteration": iteration,
            "train_seconds": solving + exchanging,
            "solve_seconds": solving,
            "exchange_seconds": exchanging,
        }
        if iteration == int(config["iterations"]):  # a pass over every pair: at the end only
            if device.type != "cpu":
                x, y = x_full.cpu().numpy(), y_full.cpu().numpy()
            metrics["objective"] = _objective(torch, dist, shard, x, y, reg)
            metrics["objective_seconds"] = time.perf_counter() - done
        report(metrics)
    return {"user": x, "item": y}
