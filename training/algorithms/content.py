"""Content-based: TF-IDF of title, description and tags plus a one-hot category.

Items carry their own features, so an item nobody has touched yet is recommendable and has
similar items; a user is the weighted mean of the items they interacted with. An item with no
text and no category has no features: it is neither recommended nor similar to anything, and a
user whose items all lack features gets nothing from this engine (other engines still answer).

``hashed_vectors`` maps items into a FIXED space that needs no fitting: the same words and the
same category as the engine reads, but feature-hashed (signed, ``TEXT_DIMS`` buckets, unigrams
and bigrams) instead of a TF-IDF vocabulary fitted on the catalogue. A fitted vocabulary cannot
place an item created after training (its new words have no column, and the SVD reduction is
fitted too); hashed vectors can, so ``createItem`` writes an item's vector into the
``TEXT_COLLECTION`` at once and it is comparable with every other item's, trained or not. The
engine's own scoring keeps its TF-IDF features: trained quality does not change.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, Field

from training.algorithms._persist import State
from training.algorithms.base import Recommender
from training.data import InteractionMatrix, ItemInfo

# The collection of hashed content vectors (every item, trained or new) and its width: signed
# hashing keeps dot products unbiased, and 256 buckets keep collisions rare for short texts.
TEXT_COLLECTION = "items_text"
TEXT_DIMS = 256
# The category's share against the text block, as the engine's default ``category_weight``.
_CATEGORY_WEIGHT = 1.0


def hashed_vectors(items: list[ItemInfo]) -> np.ndarray:
    """Unit-length ``len(items) x TEXT_DIMS`` float32 vectors of title, description, tags and
    category; all-zero rows for items with no words and no category. Stateless: an item gets
    the same vector whenever and wherever it is computed."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.preprocessing import normalize

    documents = [" ".join([i.title, i.description, *i.tags]) for i in items]
    words = HashingVectorizer(
        n_features=TEXT_DIMS, ngram_range=(1, 2), alternate_sign=True, norm="l2"
    ).transform(documents)
    categories = HashingVectorizer(
        n_features=TEXT_DIMS, analyzer=lambda c: [c] if c else [], alternate_sign=True, norm="l2"
    ).transform([f"category={i.category}" if i.category is not None else "" for i in items])
    both = sp.csr_matrix(words + categories * _CATEGORY_WEIGHT)
    return normalize(both).toarray().astype(np.float32)


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
    vector_collection = "items_content"
    similarity_order = 3
    aliases = ("content_based",)
    candidates_from_vectors = True
    cold_start_weight = 0.5
    switch_at = 3

    features: sp.csr_matrix
    _blank: np.ndarray  # items without any feature

    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        text = _unit_rows(self._text_features(items))
        categories = self._category_features(items) * self.config.category_weight
        self.features = _unit_rows(sp.hstack([text, categories], format="csr"))
        self.features.eliminate_zeros()
        self._find_blank()

    def _find_blank(self) -> None:
        self._blank = np.asarray(abs(self.features).sum(axis=1)).ravel() == 0

    def _text_features(self, items: list[ItemInfo]) -> sp.csr_matrix:
        from sklearn.feature_extraction.text import TfidfVectorizer

        documents = [" ".join([i.title, i.description, *i.tags]) for i in items]
        if not any(doc.strip() for doc in documents):
            return sp.csr_matrix((len(items), 0), dtype=np.float32)
        vectorizer = TfidfVectorizer(
            max_features=self.config.max_features,
            ngram_range=(1, self.config.ngram_max),
            sublinear_tf=True,
            dtype=np.float32,
        )
        try:
            return vectorizer.fit_transform(documents)
        except ValueError:  # "empty vocabulary": only one-letter words, digits or punctuation
            return sp.csr_matrix((len(items), 0), dtype=np.float32)

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

    def _scores(self, profiles: sp.csr_matrix) -> np.ndarray:
        """Profile . item features; -inf for items without features and for empty profiles."""
        scores = (profiles @ self.features.T).toarray()
        scores[:, self._blank] = -np.inf
        scores[np.asarray(abs(profiles).sum(axis=1)).ravel() == 0] = -np.inf
        return scores

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        return self._scores(self._profiles(self.user_items[rows]))

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        return self._scores(self._profiles(history))[0]

    def item_scores(self, item: int) -> np.ndarray:
        return self._scores(self.features[item])[0]

    def pair_scores(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``item_scores`` of these pairs only: each row against ``cols``, not the catalogue."""
        scores = (self.features[rows] @ self.features[cols].T).toarray().astype(np.float64)
        scores[:, self._blank[cols]] = -np.inf
        scores[self._blank[rows]] = -np.inf
        return scores

    def item_vectors(self) -> np.ndarray:
        """Dense L2-normalised ``n_items x d`` float32 vectors (d <= vector_dims) to upload."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.preprocessing import normalize

        n_items, n_features = self.features.shape
        if self._blank.all():  # nothing to embed: zero-width vectors, none of them worth storing
            return np.zeros((n_items, 0), dtype=np.float32)
        if min(n_items, n_features) <= self.config.vector_dims:
            # Small enough to embed exactly (a cut SVD here could zero whole items): the
            # features, or their rotation onto the row space, which keeps every dot product.
            dense = self.features.toarray()
            if n_features > n_items:
                u, s, _ = np.linalg.svd(dense, full_matrices=False)
                dense = u * s
            return normalize(dense).astype(np.float32)
        reducer = TruncatedSVD(n_components=self.config.vector_dims, random_state=self.seed)
        return normalize(reducer.fit_transform(self.features)).astype(np.float32)

    def _state(self) -> State:
        return {"features": self.features}

    def _restore(self, state: State) -> None:
        self.features = sp.csr_matrix(state["features"], dtype=np.float32)
        self._find_blank()


def _unit_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Rows scaled to unit length (zero rows stay zero); a matrix without columns as it is."""
    from sklearn.preprocessing import normalize

    matrix = sp.csr_matrix(matrix)
    return sp.csr_matrix(normalize(matrix)) if matrix.shape[1] else matrix
