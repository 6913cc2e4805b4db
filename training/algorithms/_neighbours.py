"""Cosine similarity with shrinkage and top-k pruning, shared by the two k-NN models."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

BLOCK = 512


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


def sharpen(block: np.ndarray, alpha: float) -> np.ndarray:
    """Similarity exponent: alpha > 1 lets the strongest neighbours dominate."""
    if alpha == 1.0:
        return block
    return np.sign(block) * np.abs(block) ** alpha


def item_similarity(
    matrix: sp.csr_matrix, neighbours: int, shrinkage: float, alpha: float
) -> sp.csr_matrix:
    """Row i holds the ``neighbours`` most similar items of item i (self excluded)."""
    gram = (matrix.T @ matrix).tocsr().astype(np.float64)
    norms = np.sqrt(np.clip(gram.diagonal(), 0.0, None))
    n_items = matrix.shape[1]
    blocks = []
    for start in range(0, n_items, BLOCK):
        stop = min(start + BLOCK, n_items)
        dense = cosine_block(gram[start:stop].toarray(), norms[start:stop], norms, shrinkage)
        dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
        blocks.append(sp.csr_matrix(sharpen(keep_top_k(dense, neighbours), alpha)))
    if not blocks:
        return sp.csr_matrix((0, 0), dtype=np.float32)
    similarity = sp.vstack(blocks).tocsr().astype(np.float32)
    similarity.eliminate_zeros()
    return similarity


def row_norms(matrix: sp.csr_matrix) -> np.ndarray:
    return np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
