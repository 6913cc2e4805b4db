"""The one base class every algorithm implements.

A subclass supplies ``_fit`` and ``score_rows`` (dense scores for training users); the base
class owns id mapping, seen-item exclusion, filters, top-k, history fold-in dispatch and
persistence, so every engine behaves the same at the edges (unknown users, cold items, large k).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel

from storage.errors import InvalidData
from training.algorithms import _persist
from training.data import InteractionMatrix, ItemInfo

if TYPE_CHECKING:
    from training.fit_budget import Shape

Recommendation = tuple[str, float]

_REGISTRY: dict[str, type[Recommender]] = {}
# rows scored per dense block in recommend_many: bounds memory at BLOCK x n_items floats
SCORING_BLOCK = 256


@dataclass(frozen=True)
class RecFilter:
    categories: frozenset[str] | None = None
    exclude_items: frozenset[str] = frozenset()
    allowed_items: frozenset[str] | None = None
    exclude_categories: frozenset[str] = frozenset()

    def category_mask(self, categories: Sequence[str | None]) -> np.ndarray | None:
        """Which of the items with these ``categories`` the filter's categories let through
        (None: all of them)."""
        if self.categories is None and not self.exclude_categories:
            return None
        wanted, unwanted = self.categories, self.exclude_categories
        return np.fromiter(
            ((wanted is None or c in wanted) and c not in unwanted for c in categories),
            bool,
            len(categories),
        )


class Recommender(ABC):
    """One algorithm. Its traits below are the project's only list of what each engine is."""

    name: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    # collaborative models know nothing about an item nobody interacted with
    needs_interactions: ClassVar[bool] = True
    # False: the ranking is the same for everybody (it answers unknown users too)
    personal: ClassVar[bool] = True
    # the vector-store collection its item vectors go to (``item_vectors()``), if any
    vector_collection: ClassVar[str | None] = None
    # the order in which engines are asked for item-item similarity (lower first; None: never)
    similarity_order: ClassVar[int | None] = None
    # other names a request may use for it (the seed API's vocabulary)
    aliases: ClassVar[tuple[str, ...]] = ()
    # trained by ``recserve train`` when no algorithms are named
    trained_by_default: ClassVar[bool] = True
    # non-personal engines: ranks by recent activity (the trending list asks these first)
    ranks_by_recency: ClassVar[bool] = False
    # its user profile is the mean of item vectors, so the vector store can find its candidates
    candidates_from_vectors: ClassVar[bool] = False
    # has a Ray Train form (training.distributed) for ``recserve train --distributed``
    distributed: ClassVar[bool] = False
    # its share of the default hybrid (training.hybrid.HybridConfig) for warm users, for users
    # with no history, and the interaction count from which the switching strategy serves it;
    # chosen by ``benchmarks/quality.py --tune`` on validation splits of ML-100K's training part
    hybrid_weight: ClassVar[float] = 0.0
    cold_start_weight: ClassVar[float] = 0.0
    switch_at: ClassVar[int | None] = None

    def __init__(self, config: BaseModel | dict[str, Any] | None = None, *, seed: int = 42):
        if isinstance(config, BaseModel):
            config = config.model_dump()
        self.config: Any = self.Config.model_validate(config or {})
        self.seed = seed
        self.user_items = sp.csr_matrix((0, 0), dtype=np.float32)
        self.user_ids = np.empty(0, dtype=object)
        self.item_ids = np.empty(0, dtype=object)
        self.categories: list[str | None] = []
        self._set_vocabularies()

    # ---- limits (training.fit_budget plans a fit before it runs) ------------------------
    @classmethod
    def estimated_bytes(cls, shape: Shape, config: BaseModel) -> int:
        """Peak memory of fitting ``shape``. The base: the interaction matrix's copies a fit
        holds (CSR, 8 bytes per entry: value and index; four copies) and the id vocabularies."""
        return 32 * shape.nnz + 64 * (shape.users + shape.items)

    @classmethod
    def planned_config(cls, shape: Shape, config: BaseModel, budget: int) -> tuple[BaseModel, str]:
        """``config`` with its working sizes chosen for ``shape`` and ``budget`` bytes, and a
        note saying what was chosen ("": nothing). Unlike ``scaled_config`` it gives nothing
        up: the fitted model is the same."""
        return config, ""

    @classmethod
    def faster_config(cls, shape: Shape, config: BaseModel) -> tuple[BaseModel, str] | None:
        """A form whose fitting time grows with the data rather than with the model, and a
        note saying why, when ``config``'s form would spend most of its time on rows the data
        does not touch (SVD's dense Adam step updates every user and item row); None: keep it."""
        return None

    @classmethod
    def scaled_config(
        cls, shape: Shape, config: BaseModel, budget: int
    ) -> tuple[BaseModel, str] | None:
        """A configuration that fits ``budget`` bytes and a note saying what it gives up, or
        None when the algorithm has no scalable form."""
        return None

    @classmethod
    def predicts_ratings(cls) -> bool:
        return callable(getattr(cls, "predict", None))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    # ---- training -------------------------------------------------------------------------
    def fit(self, data: InteractionMatrix, items: Sequence[ItemInfo] | None = None) -> Self:
        self.user_ids = np.asarray(data.user_ids, dtype=object)
        self.item_ids = np.asarray(data.item_ids, dtype=object)
        self.user_items = sp.csr_matrix(data.matrix, dtype=np.float32)
        metadata = _align(items if items is not None else data.items, self.item_ids)
        self.categories = [info.category for info in metadata]
        self._set_vocabularies()
        self._fit(data, metadata)
        return self

    @abstractmethod
    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None: ...

    @abstractmethod
    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        """Dense ``len(rows) x n_items`` scores for internal user rows (higher is better)."""

    def score_history(self, history: sp.csr_matrix) -> np.ndarray | None:
        """Scores for a user described only by a ``1 x n_items`` row; None if unsupported."""
        return None

    @abstractmethod
    def item_scores(self, item: int) -> np.ndarray:
        """Similarity of every item to internal item ``item``."""

    def pair_scores(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``len(rows) x len(cols)`` similarities of internal items: what MMR and explanations
        ask for. Engines whose ``item_scores`` computes against the whole catalogue override
        it to compute only these pairs."""
        if not len(rows):
            return np.zeros((0, len(cols)), dtype=np.float64)
        return np.stack(
            [np.asarray(self.item_scores(int(row)), dtype=np.float64)[cols] for row in rows]
        )

    def item_vectors(self) -> np.ndarray | None:
        """Dense ``n_items x d`` vectors for ``vector_collection``; None for engines without."""
        return None

    # ---- serving --------------------------------------------------------------------------
    def recommend(
        self,
        user: str,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter: RecFilter | None = None,
        history: Sequence[str] | None = None,
    ) -> list[Recommendation]:
        """Top-k for ``user``; ``history`` (newest first) folds in items newer than the model."""
        row = self._user_index.get(user)
        history_row = self.fold_in_row(user, history)
        if history_row is not None:
            scores = self.score_history(history_row)
            if scores is not None:
                seen = [history_row.indices] if exclude_seen else None
                return self._top_k(np.atleast_2d(scores), seen, k, filter)[0]
        if row is None:
            return []
        return self.recommend_many([user], k, exclude_seen=exclude_seen, filter=filter)[0]

    def fold_in_row(self, user: str, history: Sequence[str] | None) -> sp.csr_matrix | None:
        """The user's trained row plus the history items it lacks, when there are any.

        None when the trained row already holds every known history item: the trained row is
        then the better input (it carries the training weights), and batches with other users.
        """
        if not history:
            return None
        row = self._user_index.get(user)
        known = {self._item_index[i] for i in history if i in self._item_index}
        seen = self._seen(row)
        new = sorted(known.difference(seen.tolist()))
        if not new:
            return None
        cols = np.concatenate([seen, np.array(new, dtype=seen.dtype)])
        if row is not None:
            start, end = self.user_items.indptr[row], self.user_items.indptr[row + 1]
            trained = self.user_items.data[start:end]
        else:
            trained = np.empty(0, dtype=np.float32)
        # The history does not say what kind of event each item was: a new item weighs as
        # much as this user's typical trained interaction.
        typical = float(np.abs(trained).mean()) if len(trained) else 1.0
        data = np.concatenate([trained, np.full(len(new), typical, dtype=np.float32)])
        order = np.argsort(cols, kind="stable")
        return sp.csr_matrix(
            (data[order], cols[order], np.array([0, len(cols)])), shape=(1, self.n_items)
        )

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter: RecFilter | None = None,
    ) -> list[list[Recommendation]]:
        results: list[list[Recommendation]] = [[] for _ in users]
        known = [(pos, self._user_index[u]) for pos, u in enumerate(users) if u in self._user_index]
        for start in range(0, len(known), SCORING_BLOCK):
            block = known[start : start + SCORING_BLOCK]
            rows = np.array([row for _, row in block], dtype=np.int64)
            seen = [self._seen(row) for row in rows] if exclude_seen else None
            ranked = self._top_k(self.score_rows(rows), seen, k, filter)
            for (pos, _), recs in zip(block, ranked, strict=True):
                results[pos] = recs
        return results

    def similar_items(self, item: str, k: int = 10) -> list[Recommendation]:
        index = self._item_index.get(item)
        if index is None:
            return []
        if self.needs_interactions and self.user_items.getcol(index).nnz == 0:
            return []
        return self._top_k(np.atleast_2d(self.item_scores(index)), [np.array([index])], k, None)[0]

    def history_row(self, history: Sequence[str] | None) -> sp.csr_matrix | None:
        """Items of a fresh history as a binary row; ids the model does not know are skipped."""
        if not history:
            return None
        cols = sorted({self._item_index[i] for i in history if i in self._item_index})
        data = np.ones(len(cols), dtype=np.float32)
        return sp.csr_matrix((data, ([0] * len(cols), cols)), shape=(1, self.n_items))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user: str) -> int | None:
        return self._user_index.get(user)

    def item_index(self, item: str) -> int | None:
        return self._item_index.get(item)

    # ---- ranking --------------------------------------------------------------------------
    def _seen(self, row: int | None) -> np.ndarray:
        if row is None:
            return np.empty(0, dtype=np.int32)
        start, end = self.user_items.indptr[row], self.user_items.indptr[row + 1]
        return self.user_items.indices[start:end]

    def _eligible(self, filter: RecFilter | None) -> np.ndarray | None:
        if filter is None:
            return None
        mask = np.ones(self.n_items, dtype=bool)
        by_category = filter.category_mask(self.categories)
        if by_category is not None:
            mask &= by_category
        if filter.allowed_items is not None:
            allowed = np.zeros(self.n_items, dtype=bool)
            allowed[self._indices(filter.allowed_items)] = True
            mask &= allowed
        mask[self._indices(filter.exclude_items)] = False
        return mask

    def _indices(self, ids: frozenset[str]) -> np.ndarray:
        return np.array([self._item_index[i] for i in ids if i in self._item_index], dtype=np.int64)

    def _top_k(
        self,
        scores: np.ndarray,
        seen: list[np.ndarray] | None,
        k: int,
        filter: RecFilter | None,
    ) -> list[list[Recommendation]]:
        if k <= 0 or self.n_items == 0:
            return [[] for _ in range(len(scores))]
        scores = np.array(scores, dtype=np.float64)  # a copy: masking must not touch the model
        mask = self._eligible(filter)
        if mask is not None:
            scores[:, ~mask] = -np.inf
        for i, cols in enumerate(seen or ()):
            scores[i, cols] = -np.inf
        scores[np.isnan(scores)] = -np.inf
        size = min(k, self.n_items)
        top = np.argpartition(-scores, size - 1, axis=1)[:, :size]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        top_scores = np.take_along_axis(top_scores, order, axis=1)
        return [
            [(str(self.item_ids[j]), float(s)) for j, s in zip(r, sc, strict=True) if s > -np.inf]
            for r, sc in zip(top, top_scores, strict=True)
        ]

    # ---- persistence ----------------------------------------------------------------------
    @abstractmethod
    def _state(self) -> _persist.State:
        """Fitted arrays of the subclass (numpy or CSR) to persist."""

    @abstractmethod
    def _restore(self, state: _persist.State) -> None:
        """Rebuild fitted attributes from ``_state`` output."""

    def save(self, directory: str | Path) -> None:
        meta = {
            "algorithm": self.name,
            "config": self.config.model_dump(mode="json"),
            "seed": self.seed,
            "user_ids": [str(u) for u in self.user_ids],
            "item_ids": [str(i) for i in self.item_ids],
            "categories": self.categories,
        }
        model_state = {f"model.{key}": value for key, value in self._state().items()}
        _persist.write(directory, meta, {"user_items": self.user_items, **model_state})

    @property
    def nbytes(self) -> int:
        """Bytes of the fitted arrays and the interaction matrix this model serves from."""
        return _persist.nbytes({"user_items": self.user_items, **self._state()})

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = False) -> Recommender:
        """``mmap``: the arrays stay in the files, mapped read-only (see ``_persist``)."""
        meta, state = _persist.read(directory, mmap=mmap)
        import training.algorithms  # noqa: F401  (fills the registry)

        algorithm = _REGISTRY.get(meta["algorithm"])
        if algorithm is None or not issubclass(algorithm, cls):
            raise InvalidData(f"artifact holds {meta['algorithm']!r}, not a {cls.__name__}")
        model = algorithm(meta["config"], seed=int(meta["seed"]))
        model.user_ids = np.array(meta["user_ids"], dtype=object)
        model.item_ids = np.array(meta["item_ids"], dtype=object)
        model.categories = list(meta["categories"])
        model.user_items = sp.csr_matrix(state["user_items"], dtype=np.float32)
        model._set_vocabularies()
        own = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        model._restore(own)
        return model

    def _set_vocabularies(self) -> None:
        self._user_index = {str(u): i for i, u in enumerate(self.user_ids)}
        self._item_index = {str(v): i for i, v in enumerate(self.item_ids)}


def registered_algorithms() -> dict[str, type[Recommender]]:
    return dict(_REGISTRY)


def _align(items: Sequence[ItemInfo] | None, item_ids: np.ndarray) -> list[ItemInfo]:
    by_id = {info.id: info for info in items or ()}
    return [by_id.get(str(i), ItemInfo(id=str(i))) for i in item_ids]
