"""Recommendation algorithms: one module each, one shared base class, one registry.

``create("ease", {"regularization": 300})`` builds an unfitted model; ``load(path)`` restores a
saved one of any kind. Nothing here imports torch at import time (svd imports it in ``fit``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from storage.errors import InvalidData
from training.algorithms.als import ALS
from training.algorithms.base import RecFilter, Recommendation, Recommender, registry
from training.algorithms.bpr import BPR
from training.algorithms.content import Content
from training.algorithms.ease import EASE
from training.algorithms.item_knn import ItemKNN
from training.algorithms.popularity import Popularity
from training.algorithms.svd import SVD
from training.algorithms.trending import Trending
from training.algorithms.user_knn import UserKNN

REGISTRY: dict[str, type[Recommender]] = registry()
# Every engine name, in a stable order: the one list the rest of the project derives from.
ALGORITHMS: tuple[str, ...] = tuple(sorted(REGISTRY))
# A request's other names for engines (the seed API's): alias -> the engines it blends.
ALIASES: dict[str, tuple[str, ...]] = {
    alias: tuple(name for name in ALGORITHMS if alias in REGISTRY[name].aliases)
    for alias in sorted({a for cls in REGISTRY.values() for a in cls.aliases})
}
DEFAULT_ALGORITHMS: tuple[str, ...] = tuple(n for n in ALGORITHMS if REGISTRY[n].trained_by_default)


def similarity_engines(names: Iterable[str] = ALGORITHMS) -> tuple[str, ...]:
    """The engines among ``names`` that answer item-item similarity, best first."""
    ranked = [n for n in names if n in REGISTRY and REGISTRY[n].similarity_order is not None]
    return tuple(sorted(ranked, key=lambda n: REGISTRY[n].similarity_order or 0))


def non_personal(names: Iterable[str] = ALGORITHMS) -> tuple[str, ...]:
    """The engines among ``names`` whose ranking is the same for everybody."""
    return tuple(n for n in names if n in REGISTRY and not REGISTRY[n].personal)


def create(
    name: str, config: BaseModel | dict[str, Any] | None = None, *, seed: int = 42
) -> Recommender:
    """An unfitted model of algorithm ``name`` with typed hyperparameters."""
    algorithm = REGISTRY.get(name)
    if algorithm is None:
        raise InvalidData(f"unknown algorithm {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return algorithm(config, seed=seed)


def load(directory: str | Path, *, mmap: bool = False) -> Recommender:
    """Restore a model saved with ``Recommender.save``, whatever its algorithm (``mmap``: its
    arrays mapped read-only from the files, see ``training.algorithms._persist``)."""
    return Recommender.load(directory, mmap=mmap)


__all__ = [
    "ALGORITHMS",
    "ALIASES",
    "ALS",
    "BPR",
    "DEFAULT_ALGORITHMS",
    "EASE",
    "REGISTRY",
    "SVD",
    "Content",
    "ItemKNN",
    "Popularity",
    "RecFilter",
    "Recommendation",
    "Recommender",
    "Trending",
    "UserKNN",
    "create",
    "load",
    "non_personal",
    "similarity_engines",
]
