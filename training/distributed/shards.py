"""Contiguous row shards of a CSR matrix, and (for GPU workers) padded blocks of them.

A worker owns rows ``[lo, hi)`` of the user-item matrix (its users) and of the item-user matrix
(its items); the driver cuts them once (``als_shards``) and ships each rank only its own. For
torch solves the rows are sorted by length and cut into blocks so each block pads to nearly its
longest row: one ``bmm`` then builds every ``Yᵀ(Cu - I)Y`` of the block at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from training.distributed.objective import confidence_parts

# cells (rows x padded length) per block: small blocks keep the gathered factors in cache
_CELLS = 4_096
_MAX_ROWS = 512


def shard_bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous slice of ``n`` rows; sizes differ by at most one."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


@dataclass
class ALSShard:
    """One rank's part of ``C = alpha·R``: its users' rows of C and its items' rows of Cᵀ."""

    users: sp.csr_matrix  # rows [user_lo, user_lo + len) of C
    items: sp.csr_matrix  # rows [item_lo, item_lo + len) of Cᵀ
    user_lo: int
    item_lo: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.items.shape[1], self.users.shape[1]


def als_shards(scaled: sp.csr_matrix, world: int) -> list[ALSShard]:
    """``world`` shards of ``scaled`` (``alpha·R``, users x items), rank order."""
    scaled = sp.csr_matrix(scaled, dtype=np.float32)
    transposed = scaled.T.tocsr()
    shards = []
    for rank in range(world):
        user_lo, user_hi = shard_bounds(scaled.shape[0], world, rank)
        item_lo, item_hi = shard_bounds(scaled.shape[1], world, rank)
        shards.append(
            ALSShard(scaled[user_lo:user_hi], transposed[item_lo:item_hi], user_lo, item_lo)
        )
    return shards


@dataclass
class Block:
    """Padded rows of one shard; padding points at index ``n_other`` (a zero factor row)."""

    rows: Any  # (B,) row offsets inside the shard
    cols: Any  # (B, L) other-side indices
    gram_weight: Any  # (B, L) |c| - 1 on stored pairs, 0 on padding
    rhs_weight: Any  # (B, L) c·p on stored pairs, 0 on padding
    confidence: Any  # (B, L) |c|, 0 on padding
    preference: Any  # (B, L)
    stored: Any  # (B, L) 1 on stored pairs


def _blocks_of(order: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    blocks, start = [], 0
    while start < len(order):
        end = start + 1
        # rows are sorted by length, so the last row of a block sets its padded width
        while end < len(order) and end - start < _MAX_ROWS:
            if (end - start + 1) * max(int(lengths[order[end]]), 1) > _CELLS:
                break
            end += 1
        blocks.append(order[start:end])
        start = end
    return blocks


def build_blocks(
    torch: Any, matrix: sp.csr_matrix, lo: int, hi: int, alpha: float, device: Any
) -> list[Block]:
    """Blocks covering rows ``[lo, hi)`` of ``matrix``; every row appears in exactly one."""
    shard = matrix[lo:hi]
    n_other = matrix.shape[1]
    lengths = np.diff(shard.indptr)
    order = np.argsort(lengths, kind="stable")
    blocks = []
    for rows in _blocks_of(order, lengths):
        width = max(int(lengths[rows].max()), 1)
        cols = np.full((len(rows), width), n_other, dtype=np.int64)
        values = np.zeros((len(rows), width), dtype=np.float64)
        stored = np.zeros((len(rows), width), dtype=np.float64)
        for slot, row in enumerate(rows):
            start, end = shard.indptr[row], shard.indptr[row + 1]
            cols[slot, : end - start] = shard.indices[start:end]
            values[slot, : end - start] = shard.data[start:end]
            stored[slot, : end - start] = 1.0
        confidence, preference = confidence_parts(values, alpha)
        confidence, preference = confidence * stored, preference * stored

        def tensor(array: np.ndarray, dtype: Any = torch.float32) -> Any:
            return torch.as_tensor(array, dtype=dtype, device=device)

        blocks.append(
            Block(
                rows=tensor(rows, torch.int64),
                cols=tensor(cols, torch.int64),
                gram_weight=tensor((confidence - 1.0) * stored),
                rhs_weight=tensor(confidence * preference),
                confidence=tensor(confidence),
                preference=tensor(preference),
                stored=tensor(stored),
            )
        )
    return blocks
