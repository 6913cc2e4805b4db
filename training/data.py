"""Interaction matrices: external ids <-> CSR rows/columns, implicit weights, explicit ratings.

Every algorithm trains on an :class:`InteractionMatrix`; it is the single place where raw
interaction events become numbers, so per-tenant weighting and time decay live here.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from storage.errors import InvalidData

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


def unix_microseconds(seconds: np.ndarray) -> np.ndarray:
    """Unix seconds (float) as int64 microseconds, rounded as ``datetime.fromtimestamp``
    rounds them (the fraction alone, half to even), so both forms of an event agree."""
    fraction, whole = np.modf(np.asarray(seconds, dtype=np.float64))
    return whole.astype(np.int64) * 1_000_000 + np.rint(fraction * 1e6).astype(np.int64)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class EventColumns:
    """Interaction events as columns, made without a Python object per event (a generator's
    or a file reader's batch): event i is user ``users[user_codes[i]]`` with item
    ``items[item_codes[i]]``, of type ``types[type_codes[i]]``, value ``values[i]`` (NaN for
    none) at ``times[i]`` (int64 microseconds since the unix epoch, UTC)."""

    users: Sequence[str]
    user_codes: np.ndarray
    items: Sequence[str]
    item_codes: np.ndarray
    types: Sequence[str]
    type_codes: np.ndarray
    values: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def from_events(
        cls, events: Sequence[tuple[str, str, str, float | None, float | datetime]]
    ) -> EventColumns:
        """From (user, item, type, value or None, unix seconds or datetime) tuples."""
        codes: tuple[dict[str, int], dict[str, int], dict[str, int]] = ({}, {}, {})
        columns: tuple[list[int], list[int], list[int]] = ([], [], [])
        values, times = [], []
        for event in events:
            for index in range(3):
                names = codes[index]
                columns[index].append(names.setdefault(event[index], len(names)))
            values.append(math.nan if event[3] is None else float(event[3]))
            at = event[4]
            if isinstance(at, datetime):
                at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
                times.append((at - _EPOCH) // timedelta(microseconds=1))
            else:
                times.append(int(unix_microseconds(np.asarray([at]))[0]))
        users, items, types = (list(names) for names in codes)
        user_codes, item_codes, type_codes = (np.asarray(c, dtype=np.int64) for c in columns)
        return cls(
            users,
            user_codes,
            items,
            item_codes,
            types,
            type_codes,
            np.asarray(values, dtype=np.float64),
            np.asarray(times, dtype=np.int64),
        )

    def events(self) -> list[tuple[str, str, str, float | None, datetime]]:
        """Back to tuples (times as aware datetimes)."""
        return [
            (
                self.users[u],
                self.items[i],
                self.types[k],
                None if v != v else v,
                _EPOCH + timedelta(microseconds=t),
            )
            for u, i, k, v, t in zip(
                self.user_codes.tolist(),
                self.item_codes.tolist(),
                self.type_codes.tolist(),
                self.values.tolist(),
                self.times.tolist(),
                strict=True,
            )
        ]


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
    return _id_array(index), index


class _Coder:
    """Codes keys (a numpy array per chunk) in order of first appearance with array operations
    only: a chunk's distinct keys are looked up among the sorted keys seen so far and the new
    ones appended, so no Python step is taken per row, nor per distinct key of a chunk."""

    def __init__(self) -> None:
        self._sorted: np.ndarray | None = None  # every key seen, sorted
        self._sorted_codes = np.empty(0, dtype=np.int32)
        self._keys: list[np.ndarray] = []  # in code order
        self.size = 0

    def codes(self, keys: np.ndarray) -> np.ndarray:
        distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        seen = self._sorted if self._sorted is not None else distinct[:0]
        if seen.dtype != distinct.dtype:  # e.g. a longer string: widen, never truncate
            seen = seen.astype(np.result_type(seen, distinct))
        at = np.searchsorted(seen, distinct)
        known = np.zeros(len(distinct), dtype=bool)
        inside = np.flatnonzero(at < len(seen))
        known[inside] = seen[at[inside]] == distinct[inside]
        local = np.empty(len(distinct), dtype=np.int32)
        local[known] = self._sorted_codes[at[known]]
        fresh = np.flatnonzero(~known)
        in_order = fresh[np.argsort(first[fresh], kind="stable")]
        local[in_order] = np.arange(self.size, self.size + len(fresh), dtype=np.int32)
        self.size += len(fresh)
        self._keys.append(distinct[in_order])
        self._sorted = np.insert(seen, at[fresh], distinct[fresh])
        self._sorted_codes = np.insert(self._sorted_codes, at[fresh], local[fresh])
        return local[inverse.ravel()]

    def distinct(self) -> list[Any]:
        """The distinct keys in code order, as Python values."""
        return [key for part in self._keys for key in part.tolist()]


def hex_keys(ids: Sequence[str]) -> np.ndarray:
    """Ids given as 32 hex digits (``storage`` reads UUIDs so) as one fixed-width array."""
    joined = "".join(ids).encode("ascii")
    if len(joined) != 32 * len(ids):
        raise InvalidData("ids must be 32 hex digits each")
    return np.frombuffer(joined, dtype="S32")


def uuid_from_hex(key: bytes) -> str:
    return str(uuid.UUID(hex=key.decode("ascii")))


class EventsBuilder:
    """Collects events chunk by chunk into columns: ids are coded by array operations
    (``_Coder``), so memory grows by a few bytes an event, never by a tuple per event.

    ``decode_ids`` turns a distinct id key into the id (``uuid_from_hex`` for ``hex_keys``);
    keys are the ids themselves without it."""

    def __init__(self, decode_ids: Callable[[Any], str] | None = None) -> None:
        self._users, self._items, self._kinds = _Coder(), _Coder(), _Coder()
        self._decode = decode_ids or str
        self._chunks: list[tuple[np.ndarray, ...]] = []

    def add(
        self,
        users: Sequence[Hashable],
        items: Sequence[Hashable],
        kinds: Sequence[str],
        values: Sequence[float | None],
        times: Sequence[Timestamp],
    ) -> None:
        """One chunk of parallel columns; ids may be any hashable (coded by ``str``)."""
        n = len(users)
        self.add_columns(
            _str_keys(users),
            _str_keys(items),
            _str_keys(kinds),
            np.fromiter((np.nan if v is None else v for v in values), np.float32, n),
            np.fromiter(map(to_unix, times), np.float64, n),
        )

    def add_columns(
        self,
        users: np.ndarray,
        items: np.ndarray,
        kinds: np.ndarray,
        values: np.ndarray,
        times: np.ndarray,
    ) -> None:
        """One chunk as arrays: id keys, kind names, values (NaN: none), unix seconds."""
        n = len(users)
        if not len(items) == len(kinds) == len(values) == len(times) == n:
            raise InvalidData("event columns must have one entry per event")
        self._chunks.append(
            (
                self._users.codes(users),
                self._items.codes(items),
                self._kinds.codes(kinds),
                np.asarray(values, dtype=np.float32),
                np.asarray(times, dtype=np.float64),
            )
        )

    def build(self) -> Events:
        columns = [np.concatenate(parts) for parts in zip(*self._chunks, strict=True)]
        if not columns:
            columns = [np.empty(0, t) for t in (np.int32, np.int32, np.int32, np.float32, float)]
        kinds = columns[2].astype(np.min_scalar_type(max(self._kinds.size - 1, 0)))
        return Events(
            columns[0],
            columns[1],
            kinds,
            columns[3],
            columns[4],
            _object_array([self._decode(key) for key in self._users.distinct()]),
            _object_array([self._decode(key) for key in self._items.distinct()]),
            tuple(str(kind) for kind in self._kinds.distinct()),
        )


def _str_keys(ids: Sequence[Hashable]) -> np.ndarray:
    return np.array([str(i) for i in ids], dtype=str) if len(ids) else np.empty(0, dtype=str)


def _object_array(values: list[str]) -> np.ndarray:
    ids = np.empty(len(values), dtype=object)
    ids[:] = values
    return ids


def _id_array(index: dict[Any, int]) -> np.ndarray:
    return _object_array([str(i) for i in index])


@dataclass(frozen=True)
class Events:
    """Interaction events as columns (codes into id vocabularies): 21 bytes an event where a
    tuple per event took about 0.7 KB, so a 10M-event tenant loads in a few hundred MB."""

    users: np.ndarray  # int32 codes into user_ids
    items: np.ndarray  # int32 codes into item_ids
    kinds: np.ndarray  # small int codes into kind_names
    values: np.ndarray  # float32, NaN when the event has none
    times: np.ndarray  # float64 unix seconds, NaN when unknown
    user_ids: np.ndarray  # str, object dtype
    item_ids: np.ndarray
    kind_names: tuple[str, ...]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Any, Any, str, float | None, Timestamp]]) -> Events:
        """Events from ``(user, item, type, value, time)`` tuples (tests, files, benchmarks)."""
        builder = EventsBuilder()
        columns = list(zip(*rows, strict=True))
        if columns:
            builder.add(*columns)
        return builder.build()

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray) -> Events:
        """The events at ``index`` (positions or a mask), over the same vocabularies."""
        return replace(
            self,
            users=self.users[index],
            items=self.items[index],
            kinds=self.kinds[index],
            values=self.values[index],
            times=self.times[index],
        )

    def is_kind(self, kind: str) -> np.ndarray:
        if kind not in self.kind_names:
            return np.zeros(len(self), dtype=bool)
        return self.kinds == self.kind_names.index(kind)

    def weights(self, weights: InteractionWeights) -> np.ndarray:
        """Each event's implicit weight (float64), as ``weights.weight(type, value)``."""
        per_kind = np.array([weights.weight(k, 0.0) for k in self.kind_names], dtype=np.float64)
        found = per_kind[self.kinds] if len(per_kind) else np.zeros(len(self))
        rating = self.is_kind("rating")
        if rating.any():
            values = self.values[rating].astype(np.float64)
            scaled = (values - weights.rating_offset) / weights.rating_scale
            found[rating] = np.where(np.isnan(values), 0.0, scaled)  # no value weighs nothing
        return found

    def pairs(self) -> Iterator[tuple[str, str]]:
        """``(user_id, item_id)`` per event, in order."""
        return zip(self.user_ids[self.users], self.item_ids[self.items], strict=True)


def _first_seen(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Recode ``codes`` (into a vocabulary of ``size``) by order of first appearance: the new
    code of each old one (-1 when absent) and the old codes in their new order."""
    present, first = np.unique(codes, return_index=True)
    order = present[np.argsort(first, kind="stable")]
    remap = np.full(size, -1, dtype=np.int32)
    remap[order] = np.arange(len(order), dtype=np.int32)
    return remap, order


def _item_vocabulary(
    events: Events, items: Sequence[ItemInfo] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue ids first (in catalogue order), then the other event items as first seen."""
    index: dict[str, int] = {}
    for item in items or ():
        index.setdefault(item.id, len(index))
    _, order = _first_seen(events.items, len(events.item_ids))
    remap = np.full(len(events.item_ids), -1, dtype=np.int32)
    for code in order.tolist():
        remap[code] = index.setdefault(str(events.item_ids[code]), len(index))
    return remap[events.items], _id_array(index)


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
        """``from_events`` over ``(user, item, type, value, time)`` tuples."""
        return cls.from_events(
            Events.from_rows(rows),
            weights=weights,
            items=items,
            time_decay_half_life_days=time_decay_half_life_days,
            now=now,
        )

    @classmethod
    def from_events(
        cls,
        events: Events,
        *,
        weights: InteractionWeights = DEFAULT_WEIGHTS,
        items: Sequence[ItemInfo] | None = None,
        time_decay_half_life_days: float | None = None,
        now: float | None = None,
    ) -> InteractionMatrix:
        """Sum per-event weights per (user, item); optionally decay each event by its age.

        Users are rows in order of their first event, items columns after the catalogue's in
        order of theirs. Ratings (type ``rating``) additionally fill the explicit ``ratings``
        matrix (last wins).
        """
        user_remap, user_order = _first_seen(events.users, len(events.user_ids))
        r = user_remap[events.users]
        c, item_ids = _item_vocabulary(events, items)
        user_ids = events.user_ids[user_order]
        w = events.weights(weights)
        ts = events.times
        if time_decay_half_life_days is not None and len(events):
            reference = now if now is not None else float(np.nanmax(ts, initial=0.0))
            age_days = np.clip(reference - np.nan_to_num(ts, nan=reference), 0, None)
            w = w * np.exp2(-age_days / SECONDS_PER_DAY / time_decay_half_life_days)
        shape = (len(user_ids), len(item_ids))
        matrix = sp.csr_matrix((w.astype(np.float32), (r, c)), shape=shape)
        matrix.sum_duplicates()
        del w
        is_rating = events.is_kind("rating")
        rating_values = np.nan_to_num(events.values[is_rating], nan=0.0)
        ratings = (
            _last_value(r[is_rating], c[is_rating], rating_values, ts[is_rating], shape)
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
