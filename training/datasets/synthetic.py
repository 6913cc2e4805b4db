"""A synthetic shop catalogue with planted taste clusters, for the demo, tests and ingest.

Every cluster is a themed department with its own vocabulary, so titles and descriptions read
like real products and content models can find the clusters from text alone. Each user mostly
shops in one home cluster (a planted signal any decent recommender should recover) and moves
through a view -> click -> add_to_cart -> purchase funnel with timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from training.data import EventColumns, ItemInfo, unix_microseconds

Event = tuple[str, str, str, float | None, float]

# (category, brands, adjectives, nouns, tags) per department
THEMES: tuple[
    tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...
] = (
    (
        "Outdoor",
        ("Northwind", "Summit", "Ridgeline"),
        ("Waterproof", "Ultralight", "Insulated", "Trail"),
        ("Tent", "Backpack", "Sleeping Bag", "Headlamp", "Rain Jacket"),
        ("camping", "hiking", "outdoor", "travel"),
    ),
    (
        "Kitchen",
        ("Copperpot", "Hearth", "Saltbox"),
        ("Cast-Iron", "Non-Stick", "Stainless", "Artisan"),
        ("Skillet", "Chef Knife", "Dutch Oven", "Espresso Maker", "Cutting Board"),
        ("cooking", "baking", "kitchen", "coffee"),
    ),
    (
        "Electronics",
        ("Voltix", "Lumen", "Quanta"),
        ("Wireless", "Noise-Cancelling", "4K", "Smart"),
        ("Headphones", "Speaker", "Monitor", "Keyboard", "Webcam"),
        ("audio", "gadgets", "computing", "home-office"),
    ),
    (
        "Fitness",
        ("Ironclad", "Pulse", "Stride"),
        ("Adjustable", "Foldable", "Heavy-Duty", "Compact"),
        ("Dumbbell Set", "Yoga Mat", "Rowing Machine", "Kettlebell", "Running Shoes"),
        ("training", "yoga", "strength", "running"),
    ),
    (
        "Books",
        ("Penrose Press", "Inkwell", "Lantern House"),
        ("Illustrated", "Collected", "Annotated", "Bestselling"),
        ("Mystery Novel", "Cookbook", "Field Guide", "Biography", "Sci-Fi Anthology"),
        ("reading", "fiction", "non-fiction", "gifts"),
    ),
    (
        "Garden",
        ("Greenleaf", "Bramble", "Meadowlark"),
        ("Raised", "Self-Watering", "Organic", "Ergonomic"),
        ("Planter", "Pruning Shears", "Seed Kit", "Hose Reel", "Compost Bin"),
        ("gardening", "plants", "outdoor", "organic"),
    ),
    (
        "Toys",
        ("Kiddo", "Brightblock", "Tumble"),
        ("Wooden", "Interactive", "Educational", "Plush"),
        ("Puzzle", "Building Set", "Robot Kit", "Board Game", "Teddy Bear"),
        ("kids", "games", "learning", "gifts"),
    ),
    (
        "Beauty",
        ("Lumiere", "Petal & Co", "Aurum"),
        ("Hydrating", "Fragrance-Free", "Vegan", "Overnight"),
        ("Face Serum", "Lip Balm", "Hair Oil", "Sunscreen", "Night Cream"),
        ("skincare", "haircare", "wellness", "gifts"),
    ),
)
_FUNNEL = (("click", 0.45), ("add_to_cart", 0.35), ("purchase", 0.5))
_START = 1_767_225_600.0  # 2026-01-01 UTC: a fixed origin keeps generated data reproducible
_SPAN_SECONDS = 90 * 86_400.0


@dataclass
class SyntheticCatalogue:
    items: list[ItemInfo]
    interactions: list[Event]  # (user, item, type, value, unix time), time-ordered per user
    user_cluster: dict[str, int]
    item_cluster: dict[str, int]


def _theme(cluster: int) -> tuple:
    category, brands, adjectives, nouns, tags = THEMES[cluster % len(THEMES)]
    edition = cluster // len(THEMES)
    # More clusters than themes: reuse a theme as a distinct sub-department
    return (f"{category} {edition + 1}" if edition else category), brands, adjectives, nouns, tags


def _make_item(index: int, cluster: int, rng: np.random.Generator) -> ItemInfo:
    category, brands, adjectives, nouns, tags = _theme(cluster)
    brand, adjective, noun = rng.choice(brands), rng.choice(adjectives), rng.choice(nouns)
    chosen = tuple(sorted(str(t) for t in rng.choice(tags, size=2, replace=False)))
    description = (
        f"The {brand} {adjective.lower()} {noun.lower()} is made for {chosen[0]} and {chosen[1]}. "
        f"One of our {category.lower()} favourites, model {index:05d}."
    )
    return ItemInfo(
        f"item-{index:05d}", f"{brand} {adjective} {noun}", description, category, chosen
    )


def _funnel(user: str, item: str, ts: float, rng: np.random.Generator) -> list[Event]:
    events: list[Event] = [(user, item, "view", None, ts)]
    for kind, probability in _FUNNEL:
        if rng.random() >= probability:
            break
        ts += float(rng.uniform(5, 600))
        events.append((user, item, kind, None, ts))
    return events


def generate_catalogue(
    n_users: int = 200,
    n_items: int = 300,
    n_clusters: int = 6,
    interactions_per_user: int = 20,
    seed: int = 42,
    *,
    in_cluster_share: float = 0.85,
) -> SyntheticCatalogue:
    """Deterministic for a seed. ``interactions_per_user`` counts items engaged with, each
    producing a view and possibly a click, cart add and purchase."""
    if min(n_users, n_items, n_clusters, interactions_per_user) < 1:
        raise ValueError("all sizes must be positive")
    n_clusters = min(n_clusters, n_items)  # every cluster holds an item
    rng = np.random.default_rng(seed)
    clusters = np.arange(n_items) % n_clusters
    items = [_make_item(i, int(clusters[i]), rng) for i in range(n_items)]
    members = [np.flatnonzero(clusters == c) for c in range(n_clusters)]
    # Zipf-like popularity inside each cluster: a few hits, a long tail
    popularity = [1.0 / np.arange(1, len(m) + 1) ** 0.8 for m in members]
    interactions: list[Event] = []
    user_cluster: dict[str, int] = {}
    for u in range(n_users):
        user, home = f"user-{u:05d}", int(rng.integers(n_clusters))
        user_cluster[user] = home
        times = np.sort(rng.uniform(_START, _START + _SPAN_SECONDS, interactions_per_user))
        for ts in times:
            if rng.random() < in_cluster_share:
                weights = popularity[home] / popularity[home].sum()
                index = int(rng.choice(members[home], p=weights))
            else:
                index = int(rng.integers(n_items))
            interactions.extend(_funnel(user, items[index].id, float(ts), rng))
    item_cluster = {items[i].id: int(clusters[i]) for i in range(n_items)}
    return SyntheticCatalogue(items, interactions, user_cluster, item_cluster)


# ---------------------------------------------------------------- large tenants, streamed

# Event types of a generated large tenant and their shares (the funnel narrows as it goes).
_STREAM_TYPES = ("view", "click", "add_to_cart", "purchase")
_STREAM_SHARES = (0.70, 0.18, 0.08, 0.04)


@dataclass(frozen=True)
class StreamSpec:
    """A generated tenant of ``interactions`` events by ``users`` users over ``items`` items.

    Popularity is long-tailed twice over: items inside each cluster follow a Zipf-like curve,
    and users' activity is log-normal (a few heavy users, many light ones). Each user mostly
    shops in a home cluster, so the planted signal of ``generate_catalogue`` is kept.
    """

    users: int
    items: int
    interactions: int
    clusters: int = 8
    seed: int = 42
    in_cluster_share: float = 0.85

    def __post_init__(self) -> None:
        if min(self.users, self.items, self.clusters, self.interactions) < 1:
            raise ValueError("all sizes must be positive")


def stream_items(spec: StreamSpec) -> list[ItemInfo]:
    """The catalogue (``items`` is small beside the events: 50,000 items are a few MB)."""
    rng = np.random.default_rng([spec.seed, 1])
    return [_make_item(i, i % spec.clusters, rng) for i in range(spec.items)]


def _events_per_user(spec: StreamSpec) -> np.ndarray:
    """Each user's event count: log-normal shares of the total, summing to it exactly."""
    rng = np.random.default_rng([spec.seed, 2])
    shares = rng.lognormal(0.0, 1.0, spec.users)
    counts = np.floor(shares / shares.sum() * spec.interactions).astype(np.int64)
    short = spec.interactions - int(counts.sum())
    counts[rng.choice(spec.users, size=short, replace=short > spec.users)] += 1
    return counts


def _stream_draws(
    spec: StreamSpec, chunk_rows: int
) -> Iterator[tuple[range, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per chunk of whole users: its user range and the (user, item, type index, unix time)
    of each event."""
    counts = _events_per_user(spec)
    clusters = np.arange(spec.items) % spec.clusters
    members = [np.flatnonzero(clusters == c) for c in range(spec.clusters)]
    in_cluster = [np.cumsum(1.0 / np.arange(1, len(m) + 1) ** 0.8) for m in members]
    global_rank = np.cumsum(1.0 / np.arange(1, spec.items + 1) ** 0.9)
    global_order = np.random.default_rng([spec.seed, 3]).permutation(spec.items)
    type_edges = np.cumsum(_STREAM_SHARES)
    start = 0
    while start < spec.users:
        stop = start + 1
        total = int(counts[start])
        while stop < spec.users and total + counts[stop] <= chunk_rows:
            total += int(counts[stop])
            stop += 1
        rng = np.random.default_rng([spec.seed, 4, start])
        users = np.repeat(np.arange(start, stop), counts[start:stop])
        homes = rng.integers(spec.clusters, size=stop - start)[users - start]
        picks = np.empty(total, dtype=np.int64)
        local = rng.random(total) < spec.in_cluster_share
        for cluster in range(spec.clusters):
            chosen = np.flatnonzero(local & (homes == cluster))
            weights = in_cluster[cluster]
            drawn = np.searchsorted(weights, rng.random(len(chosen)) * weights[-1])
            picks[chosen] = members[cluster][np.minimum(drawn, len(weights) - 1)]
        roaming = np.flatnonzero(~local)
        ranks = np.searchsorted(global_rank, rng.random(len(roaming)) * global_rank[-1])
        picks[roaming] = global_order[np.minimum(ranks, spec.items - 1)]
        kinds = np.searchsorted(type_edges, rng.random(total) * type_edges[-1])
        times = _START + rng.random(total) * _SPAN_SECONDS
        yield range(start, stop), users, picks, kinds, times
        start = stop


def _item_id(index: int) -> str:
    return f"item-{index:05d}"


def _user_id(index: int) -> str:
    return f"user-{index:06d}"


def stream_events(spec: StreamSpec, chunk_rows: int = 100_000) -> Iterator[list[Event]]:
    """The tenant's events as (user, item external id, type, None, unix time) tuples, in
    chunks of about ``chunk_rows`` (whole users per chunk), deterministic for the seed.

    Only one chunk exists at a time: 10M events never sit in memory together.
    """
    ids = [_item_id(i) for i in range(spec.items)]
    for _users, users, picks, kinds, times in _stream_draws(spec, chunk_rows):
        yield [
            (_user_id(u), ids[i], _STREAM_TYPES[k], None, t)
            for u, i, k, t in zip(
                users.tolist(), picks.tolist(), kinds.tolist(), times.tolist(), strict=True
            )
        ]


def stream_event_columns(spec: StreamSpec, chunk_rows: int = 100_000) -> Iterator[EventColumns]:
    """``stream_events`` as columns (``EventColumns``, times rounded to microseconds as the
    tuples' are when written): the same events without a Python object per event."""
    ids = [_item_id(i) for i in range(spec.items)]
    for span, users, picks, kinds, times in _stream_draws(spec, chunk_rows):
        yield EventColumns(
            users=[_user_id(u) for u in span],
            user_codes=users - span.start,
            items=ids,
            item_codes=picks,
            types=_STREAM_TYPES,
            type_codes=kinds,
            values=np.full(len(users), np.nan),
            times=unix_microseconds(times),
        )
