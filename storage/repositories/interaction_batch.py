"""The columns of an interaction import (``InteractionBatch``), and the conversions of UUIDs
to and from their ``(n, 16)`` uint8 byte arrays that it and the import write step use."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from storage.errors import InvalidData


@dataclass
class InteractionBatch:
    """Interactions to import as columns, the form the import write step takes: row i is user
    ``user_ids[i]`` and item ``item_ids[i]`` (UUID bytes, ``(n, 16)`` uint8), type
    ``types[type_codes[i]]``, ``values[i]`` and ``times[i]`` (microseconds since the unix
    epoch, UTC)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    types: Sequence[str]
    type_codes: np.ndarray
    values: np.ndarray
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def take(self, rows: np.ndarray) -> InteractionBatch:
        return InteractionBatch(
            self.user_ids[rows],
            self.item_ids[rows],
            self.types,
            self.type_codes[rows],
            self.values[rows],
            self.times[rows],
        )

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> InteractionBatch:
        """Rows as ``import_interactions`` takes them (each needs ``created_at``)."""
        types: dict[str, int] = {}
        codes, values, times = [], [], []
        for row in rows:
            created_at = row.get("created_at")
            if created_at is None:
                raise InvalidData("an imported interaction needs its time (created_at)")
            codes.append(types.setdefault(row["interaction_type"], len(types)))
            values.append(float(row.get("value", 1.0)))
            times.append(_microseconds(created_at))
        return cls(
            uuid_array([row["user_id"] for row in rows]),
            uuid_array([row["item_id"] for row in rows]),
            list(types),
            np.asarray(codes, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
            np.asarray(times, dtype=np.int64),
        )

    def to_rows(self) -> list[dict[str, Any]]:
        users, items = uuid_list(self.user_ids), uuid_list(self.item_ids)
        return [
            {
                "user_id": user,
                "item_id": item,
                "interaction_type": self.types[code],
                "value": value,
                "created_at": _EPOCH + timedelta(microseconds=at),
            }
            for user, item, code, value, at in zip(
                users,
                items,
                self.type_codes.tolist(),
                self.values.tolist(),
                self.times.tolist(),
                strict=True,
            )
        ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _microseconds(when: datetime) -> int:
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


def uuid_array(ids: Sequence[uuid.UUID]) -> np.ndarray:
    """``ids`` as a ``(n, 16)`` uint8 array of their bytes."""
    raw = b"".join(value.bytes for value in ids)
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(ids), 16)


def uuid_hex(ids: np.ndarray) -> list[str]:
    """``ids`` (``(n, 16)`` uint8) as 32-digit hex, which asyncpg takes for a uuid."""
    digits = np.ascontiguousarray(ids).tobytes().hex()
    return [digits[start : start + 32] for start in range(0, len(digits), 32)]


def uuid_list(ids: np.ndarray) -> list[uuid.UUID]:
    raw = np.ascontiguousarray(ids).tobytes()
    return [uuid.UUID(bytes=raw[start : start + 16]) for start in range(0, len(raw), 16)]
