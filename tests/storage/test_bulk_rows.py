"""The bulk write step's row helpers: distinct rows, first occurrence wins, whatever the hash."""

from __future__ import annotations

import numpy as np
import pytest

from storage.repositories import _bulk


def _reference(keys: np.ndarray) -> np.ndarray:
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
    return np.sort(order[starts])


@pytest.mark.parametrize("width", [1, 2, 6])
def test_first_of_each_row_keeps_the_first_occurrence(width: int) -> None:
    rng = np.random.default_rng(width)
    distinct = rng.integers(0, 2**63, size=(300, width), dtype=np.int64).view(np.uint64)
    keys = distinct[rng.integers(0, 300, size=5000)]
    firsts = _bulk.first_of_each_row(keys)
    assert np.array_equal(firsts, _reference(keys))
    assert len(firsts) == len(np.unique(keys, axis=0))


def test_rows_sharing_a_hash_are_still_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a multiplier of zero every row hashes alike: the exact fallback must answer."""
    monkeypatch.setattr(_bulk, "_MIX", np.uint64(0))
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 50, size=(2000, 3), dtype=np.int64).view(np.uint64)
    assert np.array_equal(_bulk.first_of_each_row(keys), _reference(keys))


def test_unique_uuids_in_first_seen_order() -> None:
    ids = np.frombuffer(bytes(range(48)), dtype=np.uint8).reshape(3, 16)
    doubled = ids[[2, 0, 2, 1, 0]]
    assert np.array_equal(_bulk.unique_uuids(doubled), ids[[2, 0, 1]])
    assert _bulk.unique_uuids(ids[:0]).shape == (0, 16)


def test_moment_set_answers_like_a_set() -> None:
    from storage.repositories.interaction_loads import MomentSet

    rng = np.random.default_rng(3)
    moments, seen = MomentSet(), set()
    for size in [1, 5, 3, 40, 7, 200, 1, 64]:
        chunk = np.unique(rng.integers(0, 500, size=size).astype(np.uint64))
        assert moments.any_of(chunk) == bool(seen & set(chunk.tolist()))
        moments.add(chunk)
        seen |= set(chunk.tolist())
    assert all(len(a) > len(b) for a, b in zip(moments.runs, moments.runs[1:], strict=False))
    assert set(np.concatenate(moments.runs).tolist()) == seen
