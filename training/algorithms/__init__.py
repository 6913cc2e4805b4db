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
from training.algorithms.base import RecFilter, Recommendation, Recommender, registered_algorithms
from training.algorithms.bpr import BPR
from training.algorithms.content import Content
from training.algorithms.ease import EASE
from training.algorithms.item_knn import ItemKNN
from training.algorithms.popularity import Popularity
from training.algorithms.svd import SVD
from training.algorithms.trending import Trending
from training.algorithms.user_knn import UserKNN

# The algorithm registry: every engine's name, in a stable order, and its class (whose traits
# say how it is trained and served): the one list the rest of the project derives from.
ALGORITHMS: dict[str, type[Recommender]] = dict(sorted(registered_algorithms().items()))
# A request's other names for engines (the seed API's): alias -> the engines it blends.
ALIASES: dict[str, tuple[str, ...]] = {
    alias: tuple(name for name in ALGORITHMS if alias in ALGORITHMS[name].aliases)
    for alias in sorted({a for cls in ALGORITHMS.values() for a in cls.aliases})
}
DEFAULT_ALGORITHMS: tuple[str, ...] = tuple(
    n for n in ALGORITHMS if ALGORITHMS[n].trained_by_default
)


def similarity_engines(names: Iterable[str] = ALGORITHMS) -> tuple[str, ...]:
    """The engines among ``names`` that answer item-item similarity, best first."""
    ranked = [n for n in names if n in ALGORITHMS and ALGORITHMS[n].similarity_order is not None]
    return tuple(sorted(ranked, key=lambda n: ALGORITHMS[n].similarity_order or 0))


def non_personal(names: Iterable[str] = ALGORITHMS) -> tuple[str, ...]:
    """The engines among ``names`` whose ranking is the same for everybody."""
    return tuple(n for n in names if n in ALGORITHMS and not ALGORITHMS[n].personal)


def create(
    name: str, config: BaseModel | dict[str, Any] | None = None, *, seed: int = 42
) -> Recommender:
    """An unfitted model of algorithm ``name`` with typed hyperparameters."""
    algorithm = ALGORITHMS.get(name)
    if algorithm is None:
        raise InvalidData(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")
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
