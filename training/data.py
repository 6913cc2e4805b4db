"""Interaction matrices: external ids <-> CSR rows/columns, implicit weights, explicit ratings.

Every algorithm trains on an :class:`InteractionMatrix`; it is the single place where raw
interaction events become numbers, so per-tenant weighting and time decay live here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

SECONDS_PER_DAY = 86_400.0

Timestamp = float | int | datetime | None


@dataclass(frozen=True)
class ItemInfo:
    """Item metadata used by content models and category filters."""

    id: str
    title: str = ""
    description: str = ""
    category: str | None = None
    tags: tuple[str, ...] = ()


class InteractionWeights(BaseModel):
    """Implicit weight per interaction type; a tenant may override any of them.

    ``rating`` events are explicit: a rating says the user consumed the item, more strongly the
    higher it is, so its implicit weight is ``(value - rating_offset) / rating_scale`` (1.0 for
    a 5 of 5). On validation splits of ML-100K this beat both binary weights and centring on
    the midpoint (``rating_offset`` 2.5 makes low ratings negative, and cost about 0.03 NDCG@10);
    a tenant whose low ratings mean "not for me" can still set the offset. Types not listed
    weigh ``unknown``.
    """

    model_config = ConfigDict(frozen=True)

    view: float = 1.0
    click: float = 2.0
    add_to_cart: float = 4.0
    purchase: float = 8.0
    like: float = 4.0
    dislike: float = -4.0
    unknown: float = 1.0
    rating_offset: float = 0.0
    rating_scale: float = Field(default=5.0, gt=0)

    def weight(self, kind: str, value: float | None = None) -> float:
        if kind == "rating":
            return 0.0 if value is None else (float(value) - self.rating_offset) / self.rating_scale
        if kind in _EVENT_TYPES:
            return float(getattr(self, kind))
        return self.unknown


_EVENT_TYPES = frozenset({"view", "click", "add_to_cart", "purchase", "like", "dislike"})
DEFAULT_WEIGHTS = InteractionWeights()


def to_unix(ts: Timestamp) -> float:
    if ts is None:
        return float("nan")
    if isinstance(ts, datetime):
        return ts.timestamp()
    return float(ts)


def _vocabulary(ids: Iterable[str]) -> tuple[np.ndarray, dict[str, int]]:
    index: dict[str, int] = {}
    for value in ids:
        index.setdefault(value, len(index))
    vocab = np.empty(len(index), dtype=object)
    vocab[:] = list(index)
    return vocab, index


@dataclass
class InteractionMatrix:
    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: sp.csr_matrix | None = None
    timestamps: sp.csr_matrix | None = None
    items: list[ItemInfo] | None = None
    _user_index: dict[str, int] = field(default_factory=dict, repr=False)
    _item_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._user_index = {str(u): i for i, u in enumerate(self.user_ids)}
        self._item_index = {str(v): i for i, v in enumerate(self.item_ids)}
        if self.matrix.shape != (len(self.user_ids), len(self.item_ids)):
            raise ValueError(f"matrix shape {self.matrix.shape} does not match the id vocabularies")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_id: str) -> int | None:
        return self._user_index.get(user_id)

    def item_index(self, item_id: str) -> int | None:
        return self._item_index.get(item_id)

    @classmethod
    def from_interactions(
        cls,
        rows: Iterable[tuple[str, str, str, float | None, Timestamp]],
        *,
        weights: InteractionWeights = DEFAULT_WEIGHTS,
        items: Sequence[ItemInfo] | None = None,
        time_decay_half_life_days: float | None = None,
        now: float | None = None,
    ) -> InteractionMatrix:
        """Sum per-event weights per (user, item); optionally decay each event by its age.

        Ratings (type ``rating``) additionally fill the explicit ``ratings`` matrix (last wins).
        """
        events = [(str(u), str(i), kind, value, to_unix(ts)) for u, i, kind, value, ts in rows]
        user_ids, uidx = _vocabulary(e[0] for e in events)
        item_ids, iidx = _vocabulary([*(it.id for it in items or ()), *(e[1] for e in events)])
        r = np.fromiter((uidx[e[0]] for e in events), dtype=np.int64, count=len(events))
        c = np.fromiter((iidx[e[1]] for e in events), dtype=np.int64, count=len(events))
        w = np.fromiter((weights.weight(e[2], e[3]) for e in events), np.float64, len(events))
        ts = np.fromiter((e[4] for e in events), dtype=np.float64, count=len(events))
        if time_decay_half_life_days is not None and len(events):
            reference = now if now is not None else float(np.nanmax(ts, initial=0.0))
            age_days = np.clip(reference - np.nan_to_num(ts, nan=reference), 0, None)
            w = w * np.exp2(-age_days / SECONDS_PER_DAY / time_decay_half_life_days)
        shape = (len(user_ids), len(item_ids))
        matrix = sp.csr_matrix((w.astype(np.float32), (r, c)), shape=shape)
        matrix.sum_duplicates()
        is_rating = np.fromiter((e[2] == "rating" for e in events), dtype=bool, count=len(events))
        rating_values = np.array([float(e[3] or 0.0) for e in events], dtype=np.float32)
        ratings = (
            _last_value(r[is_rating], c[is_rating], rating_values[is_rating], ts[is_rating], shape)
            if is_rating.any()
            else None
        )
        stamps = _latest_timestamps(r, c, ts, shape)
        return cls(matrix, user_ids, item_ids, ratings, stamps, _aligned(items, item_ids))

    @classmethod
    def from_ratings(
        cls,
        rows: Iterable[tuple[str, str, float, Timestamp]],
        *,
        items: Sequence[ItemInfo] | None = None,
        implicit: Literal["binary", "rating"] = "binary",
    ) -> InteractionMatrix:
        """Explicit ratings; the implicit matrix holds 1.0 (binary) or the rating per pair."""
        events = [(str(u), str(i), float(v), to_unix(ts)) for u, i, v, ts in rows]
        user_ids, uidx = _vocabulary(e[0] for e in events)
        item_ids, iidx = _vocabulary([*(it.id for it in items or ()), *(e[1] for e in events)])
        r = np.fromiter((uidx[e[0]] for e in events), dtype=np.int64, count=len(events))
        c = np.fromiter((iidx[e[1]] for e in events), dtype=np.int64, count=len(events))
        values = np.fromiter((e[2] for e in events), dtype=np.float32, count=len(events))
        ts = np.fromiter((e[3] for e in events), dtype=np.float64, count=len(events))
        shape = (len(user_ids), len(item_ids))
        ratings = _last_value(r, c, values, ts, shape)
        matrix = ratings.copy()
        if implicit == "binary":
            matrix.data[:] = 1.0
        stamps = _latest_timestamps(r, c, ts, shape)
        return cls(matrix, user_ids, item_ids, ratings, stamps, _aligned(items, item_ids))


def _last_value(
    r: np.ndarray, c: np.ndarray, v: np.ndarray, ts: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """One value per pair: the most recent (stable order breaks ties, so later rows win)."""
    order = np.lexsort((np.nan_to_num(ts, nan=-np.inf), c, r))
    r, c, v = r[order], c[order], v[order]
    last = np.ones(len(r), dtype=bool)
    if len(r) > 1:
        last[:-1] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    return sp.csr_matrix((v[last], (r[last], c[last])), shape=shape)


def _latest_timestamps(
    r: np.ndarray, c: np.ndarray, ts: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix | None:
    known = ~np.isnan(ts)
    if not known.any():
        return None
    # float64: unix seconds do not fit float32 precisely enough for decay arithmetic
    return _last_value(r[known], c[known], ts[known], ts[known], shape)


def _aligned(items: Sequence[ItemInfo] | None, item_ids: np.ndarray) -> list[ItemInfo] | None:
    if items is None:
        return None
    by_id = {it.id: it for it in items}
    return [by_id.get(str(i), ItemInfo(id=str(i))) for i in item_ids]
