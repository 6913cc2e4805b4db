"""Interaction matrices: vocabularies, per-type weights, negative feedback, decay, ratings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from storage.errors import InvalidData
from training.data import (
    SECONDS_PER_DAY,
    Events,
    EventsBuilder,
    InteractionMatrix,
    InteractionWeights,
    ItemInfo,
    hex_keys,
    uuid_from_hex,
)

NOW = 1_700_000_000.0


def cell(data: InteractionMatrix, user: str, item: str) -> float:
    return float(data.matrix[data.user_index(user), data.item_index(item)])


def test_weights_follow_the_funnel_and_dislike_is_negative() -> None:
    w = InteractionWeights()
    assert w.weight("view") < w.weight("click") < w.weight("add_to_cart") < w.weight("purchase")
    assert w.weight("dislike") < 0 < w.weight("like")
    assert w.weight("something-new") == 1.0
    # a rating is a consumption, stronger the higher it is; centred, low ratings turn negative
    assert w.weight("rating", 5.0) == pytest.approx(1.0)
    assert 0 < w.weight("rating", 1.0) < w.weight("rating", 3.0) < w.weight("rating", 5.0)
    centred = InteractionWeights(rating_offset=2.5, rating_scale=1.0)
    assert centred.weight("rating", 5.0) == pytest.approx(2.5)
    assert centred.weight("rating", 1.0) == pytest.approx(-1.5)
    assert InteractionWeights(purchase=20).weight("purchase") == 20


def test_events_sum_per_pair_and_build_vocabularies() -> None:
    rows = [
        ("u1", "i1", "view", None, NOW),
        ("u1", "i1", "purchase", None, NOW),
        ("u1", "i2", "dislike", None, NOW),
        ("u2", "i2", "click", None, NOW),
        ("u2", "i3", "mystery", None, NOW),
    ]
    data = InteractionMatrix.from_interactions(rows)
    assert (data.n_users, data.n_items) == (2, 3)
    assert data.matrix.dtype == np.float32
    assert cell(data, "u1", "i1") == 9.0
    assert cell(data, "u1", "i2") == -4.0
    assert cell(data, "u2", "i3") == 1.0
    assert data.user_index("ghost") is None and data.item_index("ghost") is None
    assert data.ratings is None
    assert list(data.user_ids) == ["u1", "u2"] and data.user_ids.dtype == object


def test_catalogue_items_are_columns_even_without_interactions() -> None:
    items = [ItemInfo(id="cold", category="x"), ItemInfo(id="i1", title="hot")]
    data = InteractionMatrix.from_interactions([("u", "i1", "view", None, NOW)], items=items)
    assert list(data.item_ids) == ["cold", "i1"]
    assert data.matrix[:, data.item_index("cold")].nnz == 0
    assert data.items is not None and [i.id for i in data.items] == ["cold", "i1"]
    assert data.items[0].category == "x"


def test_time_decay_halves_weight_per_half_life() -> None:
    rows = [
        ("u", "fresh", "purchase", None, NOW),
        ("u", "old", "purchase", None, NOW - 10 * SECONDS_PER_DAY),
        ("u", "dated", "purchase", None, datetime.fromtimestamp(NOW - 20 * SECONDS_PER_DAY, UTC)),
    ]
    data = InteractionMatrix.from_interactions(rows, time_decay_half_life_days=10.0, now=NOW)
    assert cell(data, "u", "fresh") == pytest.approx(8.0)
    assert cell(data, "u", "old") == pytest.approx(4.0)
    assert cell(data, "u", "dated") == pytest.approx(2.0)


def test_rating_events_fill_the_explicit_matrix_latest_wins() -> None:
    rows = [
        ("u", "i", "rating", 2.0, NOW - 100),
        ("u", "i", "rating", 4.5, NOW),
        ("u", "j", "view", None, NOW - 5),
    ]
    data = InteractionMatrix.from_interactions(rows)
    assert data.ratings is not None and data.ratings.shape == data.matrix.shape
    assert float(data.ratings[0, data.item_index("i")]) == 4.5
    assert data.ratings[0, data.item_index("j")] == 0
    assert data.timestamps is not None
    assert float(data.timestamps[0, data.item_index("i")]) == NOW  # float64 keeps the second


def test_from_ratings_binary_and_rating_modes() -> None:
    rows = [("u1", "a", 4.0, NOW), ("u1", "b", 1.0, NOW), ("u2", "a", 5.0, None)]
    binary = InteractionMatrix.from_ratings(rows)
    assert sorted(binary.matrix.data.tolist()) == [1.0, 1.0, 1.0]
    assert binary.ratings is not None
    assert float(binary.ratings[binary.user_index("u1"), binary.item_index("b")]) == 1.0
    weighted = InteractionMatrix.from_ratings(rows, implicit="rating")
    assert cell(weighted, "u2", "a") == 5.0


def test_shape_mismatch_is_refused() -> None:
    data = InteractionMatrix.from_ratings([("u", "a", 3.0, NOW)])
    with pytest.raises(ValueError, match="shape"):
        InteractionMatrix(data.matrix, data.user_ids, np.array(["a", "b"], dtype=object))


def test_events_are_coded_columns_built_chunk_by_chunk() -> None:
    """Any hashable ids (the database's UUIDs) are coded once; the vocabularies hold strings."""
    a, b = uuid.uuid4(), uuid.uuid4()
    builder = EventsBuilder()
    builder.add([a, b], ["x", "y"], ["view", "rating"], [None, 4.0], [NOW, NOW + 1])
    builder.add([b], ["x"], ["view"], [1.0], [datetime.fromtimestamp(NOW + 2, UTC)])
    events = builder.build()
    assert events.users.tolist() == [0, 1, 1] and events.items.tolist() == [0, 1, 0]
    assert list(events.user_ids) == [str(a), str(b)] and events.kind_names == ("view", "rating")
    assert events.kinds.dtype == np.uint8 and events.times.tolist() == [NOW, NOW + 1, NOW + 2]
    assert np.isnan(events.values[0]) and events.values[1] == 4.0
    assert events.weights(InteractionWeights()).tolist() == [1.0, 0.8, 1.0]
    assert list(events.take(np.array([2])).pairs()) == [(str(b), "x")]
    assert len(EventsBuilder().build()) == 0


def test_matrix_from_events_recodes_users_and_items_by_first_appearance() -> None:
    rows = [
        ("u2", "i2", "click", None, NOW),
        ("u1", "i1", "view", None, NOW + 1),
        ("u2", "i1", "rating", 3.0, NOW + 2),
    ]
    events = Events.from_rows(rows)
    later_first = events.take(np.array([1, 2, 0]))
    data = InteractionMatrix.from_events(later_first, items=[ItemInfo(id="cold")])
    assert list(data.user_ids) == ["u1", "u2"]
    assert list(data.item_ids) == ["cold", "i1", "i2"]
    assert cell(data, "u2", "i1") == pytest.approx(0.6) and cell(data, "u2", "i2") == 2.0
    assert data.ratings is not None and float(data.ratings[1, 1]) == 3.0


def test_ids_are_coded_by_first_appearance_across_chunks(rng: np.random.Generator) -> None:
    """Array coding gives the codes one dictionary over every row gave; hex keys decode to the
    UUIDs' strings, and a longer kind name in a later chunk is not cut."""
    pool = [uuid.UUID(int=int(v)) for v in rng.integers(0, 2**63, 40)]
    users = [pool[i] for i in rng.integers(0, 40, 500)]
    items = [pool[i] for i in rng.integers(0, 25, 500)]
    kinds = ["view"] * 300 + ["add_to_cart"] * 150 + ["view"] * 50
    builder = EventsBuilder(decode_ids=uuid_from_hex)
    for start in range(0, 500, 60):
        part = slice(start, start + 60)
        builder.add_columns(
            hex_keys([u.hex for u in users[part]]),
            hex_keys([i.hex for i in items[part]]),
            np.array(kinds[part], dtype=str),
            np.ones(len(users[part]), dtype=np.float32),
            np.arange(start, start + len(users[part]), dtype=np.float64),
        )
    events = builder.build()
    for codes, ids, column in (
        (events.users, events.user_ids, users),
        (events.items, events.item_ids, items),
    ):
        index: dict[uuid.UUID, int] = {}
        expected = [index.setdefault(value, len(index)) for value in column]
        assert codes.tolist() == expected
        assert list(ids) == [str(value) for value in index]
    assert events.kind_names == ("view", "add_to_cart")
    assert events.kinds.tolist() == [0] * 300 + [1] * 150 + [0] * 50
    with pytest.raises(InvalidData, match="32 hex digits"):
        hex_keys(["abc"])
