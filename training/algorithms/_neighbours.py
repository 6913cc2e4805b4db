"""Cosine similarity with shrinkage and top-k pruning, shared by the two k-NN models.

Both work a block of rows at a time: item-item similarity takes the block's rows of XᵀX from
a sparse product of the block's item columns with X, keeps their top k and drops the block, so
no item × item product is ever held whole; user-kNN scores its queries a few at a time, so a
dense row over all users is held for those few only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# items per block of the item-item product (``ItemKNNConfig.block_items`` may lower it)
MAX_BLOCK = 512
# bytes a block holds per cell (row x item or user) while it is pruned: its sparse product
# (float32 and index), the float64 dense row, the cosine's denominator and result, the
# negated copy and int64 order of the top-k partition
CELL_BYTES = 48


def cosine_block(
    dots: np.ndarray, row_norms: np.ndarray, col_norms: np.ndarray, shrinkage: float
) -> np.ndarray:
    """Shrunk cosine: pairs supported by few co-occurrences are pulled towards zero."""
    denominator = np.outer(row_norms, col_norms) + shrinkage
    return np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)


def keep_top_k(block: np.ndarray, k: int) -> np.ndarray:
    """Zero all but the ``k`` largest entries of every row (in place, returned)."""
    if k >= block.shape[1]:
        return block
    drop = np.argpartition(-block, k, axis=1)[:, k:]
    np.put_along_axis(block, drop, 0.0, axis=1)
    return block


def sharpen(values: np.ndarray, alpha: float) -> np.ndarray:
    """Similarity exponent: alpha > 1 lets the strongest neighbours dominate."""
    if alpha == 1.0:
        return values
    return np.sign(values) * np.abs(values) ** alpha


def item_similarity(
    matrix: sp.csr_matrix,
    neighbours: int,
    shrinkage: float,
    alpha: float,
    block: int = MAX_BLOCK,
) -> sp.csr_matrix:
    """Row i holds the ``neighbours`` most similar items of item i (self excluded), computed
    ``block`` items at a time."""
    if block < 1:
        raise ValueError(f"block must be at least 1 item, not {block}")
    columns = matrix.T.tocsr()
    # the diagonal of XᵀX, summed as the product sums it (float32, in user order)
    squares = np.asarray(columns.multiply(columns).sum(axis=1)).ravel()
    norms = np.sqrt(np.clip(squares.astype(np.float64), 0.0, None))
    n_items = matrix.shape[1]
    parts = []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        dots = (columns[start:stop] @ matrix).toarray().astype(np.float64)
        dense = cosine_block(dots, norms[start:stop], norms, shrinkage)
        del dots
        dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
        kept = sp.csr_matrix(keep_top_k(dense, neighbours))
        del dense
        kept.data = sharpen(kept.data, alpha)  # on the kept entries only: zeros stay zeros
        parts.append(kept)
    if not parts:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    similarity = sp.vstack(parts, format="csr", dtype=np.float32)
    similarity.eliminate_zeros()
    return similarity


def row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    return np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
