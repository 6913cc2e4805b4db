"""MovieLens loaders on small fixture files (and the real ML-100K when present); synthetic data."""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from training.datasets import (
    DatasetUnavailable,
    generate_catalogue,
    load_movielens,
    movielens,
)

ML100K = Path(
    os.environ.get("RECSERVE_ML100K", Path(__file__).parents[2] / "../shared/data/ml-100k")
)


def _write_ml100k(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n", encoding="latin-1")
    (root / "u.item").write_text(
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1\n"
        "2|Café Noir (1997)|01-Jan-1997||http://y|0|1|1\n",
        encoding="latin-1",
    )
    (root / "u.data").write_text("7\t1\t4\t881250949\n8\t2\t2.5\t881250950\n")
    return root


def test_ml100k_rows_items_genres_and_year(tmp_path: Path) -> None:
    data = load_movielens(_write_ml100k(tmp_path / "ml-100k"))
    assert data.name == "ml-100k"
    assert data.rows == [("7", "1", 4.0, 881250949.0), ("8", "2", 2.5, 881250950.0)]
    toy, cafe = data.items
    assert (toy.id, toy.category, toy.tags) == ("1", "Comedy", ("Comedy",))
    assert cafe.title == "Café Noir (1997)"  # latin-1 decoded
    assert (cafe.category, cafe.tags) == ("Action", ("Action", "Comedy"))
    assert data.years == {"1": 1995, "2": 1997}
    assert "1997" in cafe.description


def test_ml1m_double_colon_format(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (tmp_path / "movies.dat").write_text(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James (1996)::Animation|Musical\n",
        encoding="latin-1",
    )
    data = load_movielens(tmp_path)
    assert data.name == "ml-1m"
    assert data.rows[0] == ("1", "1193", 5.0, 978300760.0)
    assert data.items[1].tags == ("Animation", "Musical")
    assert data.years["1193"] == 1975


def test_latest_small_csv_format(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Untitled,(no genres listed)\n"
    )
    data = load_movielens(tmp_path)
    assert data.name == "ml-latest-small"
    assert data.rows == [("1", "1", 4.0, 964982703.0)]
    assert data.items[0].title == "American President, The (1995)"
    assert data.items[0].category == "Comedy"
    assert data.items[1].category is None and data.years["2"] is None


def test_named_dataset_is_downloaded_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _write_ml100k(tmp_path / "src" / "ml-100k")
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in source.iterdir():
            bundle.write(path, f"ml-100k/{path.name}")
    # a file:// URL exercises the real urllib + unzip path without a network
    monkeypatch.setitem(movielens.URLS, "ml-100k", archive.as_uri())
    cache = tmp_path / "cache"
    assert len(load_movielens("ml-100k", cache_dir=cache).rows) == 2
    assert (cache / "ml-100k" / "u.data").exists()
    archive.unlink()  # the second load must come from the cache
    assert len(load_movielens("ml-100k", cache_dir=cache).items) == 2


def test_offline_download_raises_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(movielens.URLS, "ml-1m", (tmp_path / "missing.zip").as_uri())
    with pytest.raises(DatasetUnavailable, match="could not download"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "ml-1m").exists()
    with pytest.raises(DatasetUnavailable, match="downloading is disabled"):
        load_movielens("ml-1m", cache_dir=tmp_path / "cache", download_missing=False)
    with pytest.raises(DatasetUnavailable):
        load_movielens("ml-999k", cache_dir=tmp_path)


@pytest.mark.skipif(not (ML100K / "u.data").exists(), reason=f"ML-100K not found at {ML100K}")
def test_real_ml100k_shape() -> None:
    data = load_movielens(ML100K)
    assert len(data.rows) == 100_000
    assert len(data.items) == 1682
    assert len({r[0] for r in data.rows}) == 943
    assert data.items[0].title == "Toy Story (1995)"
    assert data.items[0].tags == ("Animation", "Children's", "Comedy")


def test_synthetic_catalogue_is_deterministic_and_shaped() -> None:
    first = generate_catalogue(50, 60, 4, 10, seed=7)
    assert first == generate_catalogue(50, 60, 4, 10, seed=7)
    assert first.interactions != generate_catalogue(50, 60, 4, 10, seed=8).interactions
    assert len(first.items) == 60 and len({it.id for it in first.items}) == 60
    assert all(it.title and it.description and it.category and it.tags for it in first.items)
    views = [e for e in first.interactions if e[2] == "view"]
    assert len(views) == 50 * 10
    assert {e[2] for e in first.interactions} <= {"view", "click", "add_to_cart", "purchase"}


def test_synthetic_funnel_is_ordered_in_time() -> None:
    catalogue = generate_catalogue(80, 40, 4, 15, seed=3)
    kinds = Counter(e[2] for e in catalogue.interactions)
    assert kinds["view"] > kinds["click"] > kinds["add_to_cart"] > kinds["purchase"] > 0
    steps = {"view": 0, "click": 1, "add_to_cart": 2, "purchase": 3}
    previous = None
    for event in catalogue.interactions:
        if event[2] != "view":
            assert previous is not None and previous[:2] == event[:2]
            assert steps[event[2]] == steps[previous[2]] + 1 and event[4] > previous[4]
        previous = event


def test_synthetic_users_mostly_shop_in_their_planted_cluster() -> None:
    catalogue = generate_catalogue(100, 120, 5, 20, seed=11)
    views = [e for e in catalogue.interactions if e[2] == "view"]
    home = sum(catalogue.item_cluster[i] == catalogue.user_cluster[u] for u, i, *_ in views)
    assert home / len(views) > 0.8
    # the clusters are visible in the text too: one category per cluster
    categories = {catalogue.item_cluster[it.id]: set() for it in catalogue.items}
    for item in catalogue.items:
        categories[catalogue.item_cluster[item.id]].add(item.category)
    assert all(len(names) == 1 for names in categories.values())
    assert len({next(iter(n)) for n in categories.values()}) == 5


def test_a_streamed_tenant_is_long_tailed_and_shops_in_home_clusters() -> None:
    from collections import Counter

    from training.datasets.synthetic import StreamSpec, stream_events, stream_items

    spec = StreamSpec(users=300, items=400, interactions=20_000, clusters=4, seed=9)
    events = [event for chunk in stream_events(spec, chunk_rows=5_000) for event in chunk]
    items = {item.id: item for item in stream_items(spec)}
    assert len(events) == 20_000 and {e[1] for e in events} <= set(items)
    assert all(items[i].title and items[i].category for i in items)
    per_item = sorted(Counter(e[1] for e in events).values(), reverse=True)
    assert sum(per_item[:40]) > 0.4 * len(events)  # the top 10% of items: a large share
    per_user = Counter(e[0] for e in events)
    assert max(per_user.values()) > 4 * (20_000 / 300)  # heavy users beside light ones
    category = Counter(items[e[1]].category for e in events if e[0] == "user-000007")
    assert category.most_common(1)[0][1] > 0.6 * sum(category.values())


def test_streamed_columns_are_the_streamed_events() -> None:
    """The generator's columns (what ``recserve ingest synthetic`` writes) hold the same events
    as its tuples, times rounded to the microsecond as ``datetime.fromtimestamp`` rounds."""
    from datetime import UTC, datetime

    from training.datasets.synthetic import StreamSpec, stream_event_columns, stream_events

    spec = StreamSpec(users=120, items=90, interactions=3_000, clusters=3, seed=5)
    tuples = [e for chunk in stream_events(spec, chunk_rows=700) for e in chunk]
    columns = list(stream_event_columns(spec, chunk_rows=700))
    assert len(columns) > 1
    from_columns = [e for chunk in columns for e in chunk.events()]
    assert from_columns == [
        (u, i, k, v, datetime.fromtimestamp(t, tz=UTC)) for u, i, k, v, t in tuples
    ]


def test_event_columns_round_trip_and_round_times_like_datetime() -> None:
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from training.data import EventColumns, unix_microseconds

    seconds = np.random.default_rng(3).uniform(-1e9, 2e9, 20_000)
    seconds[:4] = [0.0000005, 1.0000015, -0.0000005, 1_700_000_000.1234565]
    expected = [datetime.fromtimestamp(float(t), tz=UTC) for t in seconds]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert [epoch + timedelta(microseconds=int(m)) for m in unix_microseconds(seconds)] == expected
    at = datetime(2026, 3, 1, 12, 0, 0, 250, tzinfo=UTC)
    events = [("u1", "i1", "view", None, at), ("u2", "i1", "buy", 2.5, 1_700_000_000.5)]
    columns = EventColumns.from_events(events)
    assert columns.users == ["u1", "u2"] and columns.items == ["i1"]
    assert columns.events() == [
        ("u1", "i1", "view", None, at),
        ("u2", "i1", "buy", 2.5, datetime.fromtimestamp(1_700_000_000.5, tz=UTC)),
    ]


def test_a_catalogue_smaller_than_its_clusters_is_still_generated() -> None:
    """``recserve ingest synthetic --users 5 --items 5`` (six clusters by default) crashed with
    numpy's "a cannot be empty": a cluster had no item to choose."""
    catalogue = generate_catalogue(5, 5, 6, 4, seed=1)
    assert len(catalogue.items) == 5
    assert {event[1] for event in catalogue.interactions} <= {item.id for item in catalogue.items}
    assert len(set(catalogue.item_cluster.values())) == 5
