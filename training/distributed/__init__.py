"""Ray Train forms of ALS and SVD: same models and artifacts as the single-node engines.

Ray and torch are imported by the entry point only, and the names below load on first use:
a Ray Train worker importing ``training.distributed.als`` pulls in neither the algorithm
registry nor the storage layer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DISTRIBUTED_ALGORITHMS", "als_objective", "fit_distributed", "train_distributed"]


def __getattr__(name: str) -> Any:
    if name == "als_objective":
        from training.distributed.objective import als_objective

        return als_objective
    if name in ("DISTRIBUTED_ALGORITHMS", "fit_distributed", "train_distributed"):
        from training.distributed import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
