"""Ray Train forms of ALS and SVD: same models and artifacts as the single-node engines.

Ray and torch are imported by the entry point only, so importing this package stays cheap.
"""

from training.distributed.objective import als_objective
from training.distributed.runner import DISTRIBUTED_ALGORITHMS, train_distributed

__all__ = ["DISTRIBUTED_ALGORITHMS", "als_objective", "train_distributed"]
