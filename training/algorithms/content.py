"""Content-based: TF-IDF of title, description and tags plus a one-hot category.

Items carry their own features, so an item nobody has touched yet is recommendable and has
similar items; a user is the weighted mean of the items they interacted with.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo


class ContentConfig(BaseModel):
    max_features: int = Field(default=20_000, ge=1)
    ngram_max: int = Field(default=2, ge=1, le=3)
    # relative weight of the category block against the (unit-length) text block
    category_weight: float = Field(default=1.0, ge=0)
    vector_dims: int = Field(default=64, ge=1)


class Content(Recommender):
    name = "content"
    Config = ContentConfig
    needs_interactions = False

    features: sp.csr_matrix

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        text = normalize(self._text_features(items))
        categories = self._category_features(items) * self.config.category_weight
        self.features = sp.csr_matrix(normalize(sp.hstack([text, categories]).tocsr()))

    def _text_features(self, items: list[ItemInfo]) -> sp.csr_matrix:
        documents = [" ".join([i.title, i.description, *i.tags]) for i in items]
        if not any(doc.strip() for doc in documents):
            return sp.csr_matrix((len(items), 0), dtype=np.float32)
        vectorizer = TfidfVectorizer(
            max_features=self.config.max_features,
            ngram_range=(1, self.config.ngram_max),
            sublinear_tf=True,
            dtype=np.float32,
        )
        return vectorizer.fit_transform(documents)

    @staticmethod
    def _category_features(items: list[ItemInfo]) -> sp.csr_matrix:
        names = sorted({i.category for i in items if i.category is not None})
        column = {name: j for j, name in enumerate(names)}
        rows = [r for r, i in enumerate(items) if i.category is not None]
        cols = [column[items[r].category] for r in rows]  # type: ignore[index]
        ones = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((ones, (rows, cols)), shape=(len(items), len(names)))

    def _profiles(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        totals = np.asarray(abs(rows).sum(axis=1)).ravel()
        scale = np.divide(1.0, totals, out=np.zeros(len(totals)), where=totals > 0)
        return sp.diags(scale) @ rows @ self.features

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return (self._profiles(self.user_items[rows]) @ self.features.T).toarray()

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return (self._profiles(history) @ self.features.T).toarray()[0]

    def item_scores(self, item: int) -> np.ndarray:
        return (self.features @ self.features[item].T).toarray().ravel()

    def item_vectors(self) -> np.ndarray:
        """Dense L2-normalised ``n_items x d`` float32 vectors (d <= vector_dims) to upload."""
        n_items, n_features = self.features.shape
        dims = min(self.config.vector_dims, n_features - 1, n_items - 1)
        if dims < 1:
            return normalize(self.features.toarray()).astype(np.float32)
        reducer = TruncatedSVD(n_components=dims, random_state=self.seed)
        return normalize(reducer.fit_transform(self.features)).astype(np.float32)

    def _state(self) -> State:
        return {"features": self.features}

    def _restore(self, state: State) -> None:
        self.features = sp.csr_matrix(state["features"], dtype=np.float32)
