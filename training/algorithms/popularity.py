"""Most popular items: the cold-start answer and the engine that never fails."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo


class PopularityConfig(BaseModel):
    # "count": distinct users per item; "weight": summed positive implicit weights
    mode: Literal["count", "weight"] = "count"
    # a disliked item should not climb the chart on the strength of its dislikes
    positive_only: bool = True
    min_users: int = Field(default=1, ge=0)


class Popularity(Recommender):
    name = "popularity"
    Config = PopularityConfig
    needs_interactions = False
    personal = False
    cold_start_weight = 1.0
    switch_at = 0

    scores: np.ndarray

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        self.scores = self._item_popularity(data).astype(np.float32)

    def _item_popularity(self, data: InteractionMatrix) -> np.ndarray:
        matrix = data.matrix.tocsr(copy=True).astype(np.float64)
        if self.config.positive_only:
            matrix.data = np.clip(matrix.data, 0.0, None)
        if self.config.mode == "count":
            matrix.data = (matrix.data != 0).astype(np.float64)
        per_item = np.asarray(matrix.sum(axis=0)).ravel()
        users = np.diff(data.matrix.tocsc().indptr)
        return np.where(users >= self.config.min_users, per_item, 0.0)

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(rows), self.n_items))

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return self.scores

    def item_scores(self, item: int) -> np.ndarray:
        # "similar" to anything: what everyone else likes
        return self.scores

    def _state(self) -> State:
        return {"scores": self.scores}

    def _restore(self, state: State) -> None:
        self.scores = np.asarray(state["scores"])
