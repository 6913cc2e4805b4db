"""What fitting an engine will cost, decided before it runs.

Each algorithm class declares how its peak fitting memory grows with the tenant's data
(``Recommender.estimated_bytes(shape, config)``) and, when it has one, a scalable form for data
beyond a budget (``Recommender.scaled_config``: EASE keeps the most popular items it can afford).
``plan_fit`` compares the estimate with what is left of the training budget
(``RECSERVE_TRAIN_MEMORY_GB``, default half of this machine's memory: the budget of the whole
training process, so the pipeline plans each engine just before its fit against the budget less
what the process holds then, ``available_budget``) and answers one of three actions:

- ``fit``: the engine fits as configured, its working sizes chosen from the budget
  (``Recommender.planned_config``: item-kNN's block of items, e.g. "neighbours computed 512 of
  50,000 items at a time");
- ``scaled``: the engine fits in its scalable form (the note says which, e.g. "top 22,000 of
  50,000 items"), for memory or for time (``Recommender.faster_config``: SVD's lazy Adam when
  a dense step would update hundreds of times the rows its batch touches);
- ``skipped``: nothing fits; the note says how much it would need.

The plan is logged, written into the model version's metadata (``limits``) and shown by
``recserve models list``, so an operator sees why a tenant has no EASE model, or a partial one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from training.algorithms import ALGORITHMS
from training.data import InteractionMatrix

GIB = 2**30
Action = Literal["fit", "scaled", "skipped"]


@dataclass(frozen=True)
class Shape:
    """The sizes fitting memory depends on. ``user_pairs`` is Σ over users of their item count
    squared (the item co-occurrences an item-item product creates); ``item_pairs`` likewise."""

    users: int
    items: int
    nnz: int
    user_pairs: int
    item_pairs: int

    @classmethod
    def of(cls, data: InteractionMatrix) -> Shape:
        matrix = data.matrix.tocsr()
        per_user = np.diff(matrix.indptr).astype(np.int64)
        per_item = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.int64)
        return cls(
            users=int(matrix.shape[0]),
            items=int(matrix.shape[1]),
            nnz=int(matrix.nnz),
            user_pairs=int(np.sum(per_user**2)),
            item_pairs=int(np.sum(per_item**2)),
        )


@dataclass(frozen=True)
class FitPlan:
    algorithm: str
    action: Action
    estimated_bytes: int
    budget_bytes: int
    config: BaseModel | None = None
    note: str = ""

    def metadata(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "estimated_bytes": self.estimated_bytes,
            "budget_bytes": self.budget_bytes,
            "note": self.note,
        }


def budget_bytes(memory_gb: float | None) -> int:
    """The training budget: ``memory_gb`` when set, else half of the machine's memory."""
    if memory_gb is not None:
        return int(memory_gb * GIB)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a small machine
        total = 8 * GIB
    return int(total // 2)


def held_bytes() -> int:
    """The memory this process holds now (its resident set; 0 where /proc cannot tell): what a
    training job already uses (the loaded tenant, the engines fitted before) before the next
    engine's fit adds its own."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def available_budget(budget: int) -> int:
    """What of ``budget`` (the training process's memory) is left for the next fit."""
    return max(budget - held_bytes(), 0)


def plan_fit(name: str, shape: Shape, budget: int, config: BaseModel | None = None) -> FitPlan:
    """How ``name`` fits ``shape`` within ``budget`` bytes (see the module docstring)."""
    algorithm = ALGORITHMS[name]
    config = config if config is not None else algorithm.Config()
    planned, planned_note = algorithm.planned_config(shape, config, budget)
    action: Action = "fit"
    faster = algorithm.faster_config(shape, planned)
    if faster is not None:
        planned, faster_note = faster
        planned_note = "; ".join(note for note in (planned_note, faster_note) if note)
        action = "scaled"
    estimate = algorithm.estimated_bytes(shape, planned)
    if estimate <= budget:
        return FitPlan(name, action, estimate, budget, planned, planned_note)
    scaled = algorithm.scaled_config(shape, config, budget)
    if scaled is not None:
        smaller, note = scaled
        return FitPlan(
            name, "scaled", algorithm.estimated_bytes(shape, smaller), budget, smaller, note
        )
    note = f"would need {estimate / GIB:.1f} GiB, budget {budget / GIB:.1f} GiB"
    return FitPlan(name, "skipped", estimate, budget, None, note)
