"""Recommendation algorithms: one module each, one shared base class, one registry.

``create("ease", {"regularization": 300})`` builds an unfitted model; ``load(path)`` restores a
saved one of any kind. Nothing here imports torch at import time (svd imports it in ``fit``).
"""

from __future__ import annotations

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


def create(
    name: str, config: BaseModel | dict[str, Any] | None = None, *, seed: int = 42
) -> Recommender:
    """An unfitted model of algorithm ``name`` with typed hyperparameters."""
    algorithm = REGISTRY.get(name)
    if algorithm is None:
        raise InvalidData(f"unknown algorithm {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return algorithm(config, seed=seed)


def load(directory: str | Path) -> Recommender:
    """Restore a model saved with ``Recommender.save``, whatever its algorithm."""
    return Recommender.load(directory)


__all__ = [
    "ALS",
    "BPR",
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
]
