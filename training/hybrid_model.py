"""HybridRecommender: several engines fitted on the same data, blended over the full catalogue.

Unlike the combiner (which only sees each engine's top-k), the model blends dense score rows, so
an item ranked 15th by two engines can still beat one ranked 3rd by a single engine. Each
engine's row is normalised over the items the user has *not* seen (seen items are excluded from
the answer anyway, and their huge scores would distort the scale), then weighted and summed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms import create
from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo

RowNormalisation = Literal["zscore", "rrf", "minmax"]
RRF_OFFSET = 60.0


class HybridConfig(BaseModel):
    # chosen by benchmarks/quality.py: mean NDCG@10 over three validation splits carved from the
    # ML-100K training rows (seeds 7, 123, 2024), the test rows never seen
    weights: dict[str, float] = Field(default_factory=lambda: {"ease": 1.0, "als": 0.5})
    normalisation: RowNormalisation = "rrf"
    engine_configs: dict[str, dict] = Field(default_factory=dict)


def normalise_rows(
    scores: np.ndarray, seen: sp.csr_matrix | None, method: RowNormalisation
) -> np.ndarray:
    """Each row on a common scale, statistics taken over unseen items only."""
    scores = np.array(scores, dtype=np.float64)
    scores[~np.isfinite(scores)] = np.nan
    masked = scores.copy()
    if seen is not None and seen.nnz:
        rows, cols = seen.nonzero()
        masked[rows, cols] = np.nan
    if method == "zscore":
        mean = np.nanmean(masked, axis=1, keepdims=True)
        std = np.nanstd(masked, axis=1, keepdims=True)
        out = (scores - mean) / np.where(std > 0, std, 1.0)
    elif method == "minmax":
        low = np.nanmin(masked, axis=1, keepdims=True)
        span = np.nanmax(masked, axis=1, keepdims=True) - low
        out = (scores - low) / np.where(span > 0, span, 1.0)
    else:
        order = np.argsort(-np.nan_to_num(masked, nan=-np.inf), axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
        out = 1.0 / (RRF_OFFSET + 1.0 + ranks)
    # an engine that cannot score an item contributes nothing for it, rather than poisoning the sum
    return np.nan_to_num(out, nan=0.0)


class HybridRecommender(Recommender):
    name = "hybrid"
    Config = HybridConfig
    needs_interactions = False

    engines: dict[str, Recommender]

    def __init__(self, config: BaseModel | dict | None = None, *, seed: int = 42):
        super().__init__(config, seed=seed)
        self.engines = {}

    @property
    def weights(self) -> dict[str, float]:
        return {e: w for e, w in self.config.weights.items() if w > 0}

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        self.engines = {}
        for engine in self.weights:
            model = create(engine, self.config.engine_configs.get(engine), seed=self.seed)
            self.engines[engine] = model.fit(data, items)

    def use_engines(self, engines: Mapping[str, Recommender]) -> HybridRecommender:
        """Adopt already-fitted engines (same data) instead of refitting them, e.g. after tuning."""
        first = next(iter(engines.values()))
        self.user_ids, self.item_ids = first.user_ids, first.item_ids
        self.user_items, self.categories = first.user_items, first.categories
        self._set_vocabularies()
        self.engines = {e: engines[e] for e in self.weights}
        return self

    def _blend(
        self, parts: Sequence[tuple[str, np.ndarray]], seen: sp.csr_matrix | None
    ) -> np.ndarray:
        method = self.config.normalisation
        total = np.zeros((parts[0][1].shape[0], self.n_items)) if parts else np.zeros((0, 0))
        for engine, scores in parts:
            total += self.weights[engine] * normalise_rows(np.atleast_2d(scores), seen, method)
        return total

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        parts = [(e, model.score_rows(rows)) for e, model in self.engines.items()]
        return self._blend(parts, self.user_items[rows])

    def score_history(self, history: sp.csr_matrix) -> np.ndarray | None:
        parts = []
        for engine, model in self.engines.items():
            scores = model.score_history(history)
            if scores is not None:
                parts.append((engine, scores))
        return self._blend(parts, history)[0] if parts else None

    def item_scores(self, item: int) -> np.ndarray:
        parts = [(e, model.item_scores(item)) for e, model in self.engines.items()]
        return self._blend(parts, None)[0]

    def _state(self) -> State:
        # Engines share the hybrid's vocabularies and interactions; only their own arrays go in
        return {
            f"{engine}.{key}": value
            for engine, model in self.engines.items()
            for key, value in model._state().items()
        }

    def _restore(self, state: State) -> None:
        self.engines = {}
        for engine in self.weights:
            model = create(engine, self.config.engine_configs.get(engine), seed=self.seed)
            model.user_ids, model.item_ids = self.user_ids, self.item_ids
            model.user_items, model.categories = self.user_items, self.categories
            model._set_vocabularies()
            prefix = f"{engine}."
            model._restore(
                {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            )
            self.engines[engine] = model
