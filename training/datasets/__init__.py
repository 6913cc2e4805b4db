"""Datasets: MovieLens loaders (100K, 1M, latest-small) and the synthetic demo catalogue."""

from training.datasets import movielens
from training.datasets.movielens import (
    URLS,
    DatasetUnavailable,
    MovieLens,
    load_movielens,
    read_ml100k_items,
    read_ml100k_ratings,
)
from training.datasets.synthetic import SyntheticCatalogue, generate_catalogue

__all__ = [
    "URLS",
    "DatasetUnavailable",
    "MovieLens",
    "SyntheticCatalogue",
    "generate_catalogue",
    "load_movielens",
    "movielens",
    "read_ml100k_items",
    "read_ml100k_ratings",
]
