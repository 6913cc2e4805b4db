"""Cosine similarity with shrinkage and top-k pruning, shared by the two k-NN models.

Everything stays sparse: a pair that never co-occurs has similarity zero, so only co-occurring
pairs are stored, and item-item similarity is built a block of items at a time (the block's
rows of XᵀX, pruned to their top k, the block then discarded): no item × item product is ever
held whole, and no dense block of it at all.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# items per block of the item-item product (``ItemKNNConfig.block_items`` may lower it)
MAX_BLOCK = 512
# bytes a block holds per stored pair while it is pruned: the float32 product and its indices,
# the float64 copy, the row of each entry, the cosine's denominator, the sort's keys and order
BLOCK_ENTRY_BYTES = 64


def cosine_block(
    dots: np.ndarray, row_norms: np.ndarray, col_norms: np.ndarray, shrinkage: float
) -> np.ndarray:
    """Shrunk cosine: pairs supported by few co-occurrences are pulled towards zero."""
    denominator = np.outer(row_norms, col_norms) + shrinkage
    return np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)


def sparse_cosine(
    dots: sp.csr_matrix, row_norms: np.ndarray, col_norms: np.ndarray, shrinkage: float
) -> sp.csr_matrix:
    """``cosine_block`` on the stored entries of ``dots`` only (a float64 CSR, changed in place)."""
    rows = np.repeat(np.arange(dots.shape[0]), np.diff(dots.indptr))
    denominator = row_norms[rows] * col_norms[dots.indices] + shrinkage
    dots.data = np.divide(
        dots.data, denominator, out=np.zeros_like(dots.data), where=denominator > 0
    )
    return dots


def top_k_rows(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The ``k`` largest entries of every row of ``matrix``, ranked as if the row were dense
    (an absent entry is a zero, which outranks a negative one); equal values keep the lower
    column. Zeros are dropped (from ``matrix`` too); indices stay sorted."""
    matrix = sp.csr_matrix(matrix)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    n_rows, n_cols = matrix.shape
    counts = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(n_rows), counts)
    # only rows holding more than k entries, or a negative one, can lose any
    negative = np.bincount(rows[matrix.data < 0], minlength=n_rows) > 0
    crowded = (counts > k) | negative
    if not crowded.any():
        return matrix
    keep = np.ones(matrix.nnz, dtype=bool)
    candidates = np.flatnonzero(crowded[rows])
    values, owners = matrix.data[candidates], rows[candidates]
    # stable: within a row, equal values stay in column order
    order = np.lexsort((-values, owners))
    # every entry of a crowded row is a candidate: the row starts where its first one sits
    starts = np.searchsorted(candidates, matrix.indptr[:-1])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - starts[owners[order]]
    absent = (n_cols - counts)[owners]
    keep[candidates] = np.where(values > 0, rank < k, rank + absent < k)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[keep], minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


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
    squares = np.asarray(columns.multiply(columns).sum(axis=1)).ravel()
    norms = np.sqrt(np.clip(squares.astype(np.float64), 0.0, None))
    n_items = matrix.shape[1]
    parts = []
    for start in range(0, n_items, block):
        stop = min(start + block, n_items)
        dots = sp.csr_matrix(columns[start:stop] @ matrix, dtype=np.float64)
        rows = np.repeat(np.arange(stop - start), np.diff(dots.indptr))
        dots.data[dots.indices == rows + start] = 0.0
        kept = top_k_rows(sparse_cosine(dots, norms[start:stop], norms, shrinkage), neighbours)
        kept.data = sharpen(kept.data, alpha)
        parts.append(sp.csr_matrix(kept, dtype=np.float32))
    if not parts:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    similarity = sp.vstack(parts, format="csr", dtype=np.float32)
    similarity.eliminate_zeros()
    return similarity


def row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    return np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
