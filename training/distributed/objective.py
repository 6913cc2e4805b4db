"""The implicit-feedback ALS objective, with the confidence convention of ``implicit``.

``implicit`` scales the matrix by ``alpha`` and reads each stored entry ``c = alpha·r`` as
the *whole* confidence of that pair (preference 1 when ``c > 0``; preference 0 with confidence
``|c|`` when negative); every pair not stored has confidence 1 and preference 0. So on the
normal equations the stored pairs add ``(|c| - 1)·y yᵀ`` to ``YᵀY + λI`` — the same ``Yᵀ(Cu - I)Y``
term as Hu et al., with ``Cu`` holding ``alpha·r`` rather than ``1 + alpha·r`` on stored pairs.
The distributed solver uses this convention so both forms minimise one and the same function.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def confidence_parts(values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per stored pair: confidence ``|alpha·r|`` and preference (1 if positive, else 0)."""
    scaled = alpha * np.asarray(values, dtype=np.float64)
    return np.abs(scaled), (scaled > 0).astype(np.float64)


def factor_objective(
    matrix: sp.csr_matrix,
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    alpha: float,
    regularization: float,
) -> float:
    """Σ_ui c_ui (p_ui - x_u·y_i)² + λ(‖X‖² + ‖Y‖²), without forming the dense score matrix.

    Over all pairs Σ (x_u·y_i)² = tr(XᵀX · YᵀY); the stored pairs then swap their
    ``(0 - s)²`` term for ``c (p - s)²``.
    """
    users = np.asarray(user_factors, dtype=np.float64)
    items = np.asarray(item_factors, dtype=np.float64)
    scaled = sp.csr_matrix(matrix, dtype=np.float64) * alpha
    everywhere = float(np.sum((users.T @ users) * (items.T @ items)))
    stored = stored_loss(scaled, users, items)
    penalty = regularization * float(np.sum(users**2) + np.sum(items**2))
    return everywhere + stored + penalty


def stored_loss(
    scaled: sp.csr_matrix, users: np.ndarray, items: np.ndarray, chunk: int = 1 << 16
) -> float:
    """Σ over the stored pairs of ``c (p - s)² - s²``, ``scaled`` holding ``alpha·r`` (rows:
    ``users``' rows, columns: ``items``' rows); ``chunk`` pairs at a time bound the memory."""
    scaled = sp.csr_matrix(scaled)
    rows = np.repeat(np.arange(scaled.shape[0]), np.diff(scaled.indptr))
    confidence, preference = confidence_parts(scaled.data, 1.0)
    total = 0.0
    for start in range(0, scaled.nnz, chunk):
        end = min(start + chunk, scaled.nnz)
        pairs = users[rows[start:end]] * items[scaled.indices[start:end]]
        scores = pairs.sum(axis=1, dtype=np.float64)
        c, p = confidence[start:end], preference[start:end]
        total += float(np.sum(c * (p - scores) ** 2 - scores**2))
    return total


def als_objective(model: object, matrix: sp.csr_matrix, alpha: float, reg: float) -> float:
    """Objective of a fitted ALS model (anything with user/item factors) on ``matrix``."""
    return factor_objective(
        matrix,
        model.user_factors,  # type: ignore[attr-defined]
        model.item_factors,  # type: ignore[attr-defined]
        alpha,
        reg,
    )
