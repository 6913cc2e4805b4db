"""Ingest a generated catalogue into a tenant, train from the database, publish for serving."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from ingest.writer import imported_email, ingest_dataset
from storage import repositories as repo
from storage.artifacts import create_artifact_store
from storage.db import Database, migrate
from storage.errors import InvalidData
from storage.metrics import PrometheusBackend, use_backend
from storage.settings import Settings
from storage.vectors import QdrantServerStore, create_vector_store
from tests.storage.sql_support import BACKENDS, migrated_database
from training.algorithms import ALGORITHMS, Popularity, load
from training.algorithms import svd as svd_module
from training.data import InteractionMatrix, ItemInfo
from training.datasets.synthetic import generate_catalogue
from training.hybrid import HYBRID
from training.pipeline import STORED_DIMS, train_tenant_async

TRAINED = ["popularity", "item_knn", "ease", "content", "als"]


@pytest.fixture(scope="module")
def catalogue():
    return generate_catalogue(n_users=60, n_items=80, n_clusters=4, interactions_per_user=12)


async def _tenant(settings: Settings, domain: str) -> tuple[Database, uuid.UUID]:
    assert settings.database_url
    await migrate(settings.database_url)
    database = Database.from_settings(settings)
    async with database.session() as session:
        tenant = await repo.create_tenant(session=session, name=domain, domain=domain)
    return database, tenant.id


async def test_ingest_then_train_publishes_every_model(tmp_path: Path, catalogue) -> None:
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "shop.example")
    other_db, other_tenant = await _tenant(settings, "other.example")
    counts = await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions
    )
    assert counts.items == 80 and counts.users == 60
    assert counts.interactions == len(catalogue.interactions)
    # A second tenant with its own copy must not leak into the first tenant's models.
    await ingest_dataset(other_db, other_tenant, items=catalogue.items[:10], interactions=[])

    result = await train_tenant_async(settings, str(tenant_id), TRAINED)
    assert sorted(result.versions) == sorted(TRAINED)
    assert result.counts["users"] == 60 and result.counts["items"] == 80
    assert result.metrics["ease"]["ndcg@10"] > result.metrics["popularity"]["ndcg@10"] * 0.9

    artifacts = create_artifact_store(settings)
    async with database.session() as session:
        user = await repo.get_user_by_email(
            session=session, tenant_id=tenant_id, email=imported_email("user-00000")
        )
        items = await repo.catalogue_items(session=session, tenant_id=tenant_id)
    home = catalogue.user_cluster["user-00000"]
    by_external = {str(item.id): item.external_id for item in items}
    for name in TRAINED:
        version = artifacts.current(str(tenant_id), name)
        assert version == result.versions[name]
        target = tmp_path / "restored" / name
        artifacts.load(str(tenant_id), name, version, target)
        recs = load(target).recommend(str(user.id), k=5)
        assert len(recs) == 5
        # EASE must find the planted taste cluster even on this small set; the neighbourhood
        # and factor models carry ML-100K-tuned defaults and are checked by their own suites.
        if name == "ease":
            clusters = [catalogue.item_cluster[by_external[item]] for item, _ in recs]
            assert clusters.count(home) >= 3, (name, clusters, home)

    # The tenant's own hybrid: tuned on its holdout, promoted beside the engines.
    assert result.blend and set(result.blend) <= set(TRAINED)
    blend_version = artifacts.current(str(tenant_id), HYBRID)
    assert blend_version is not None
    meta = artifacts.metadata(str(tenant_id), HYBRID, blend_version)
    assert meta["weights"] == result.blend and meta["validation_users"] == 60
    leader = max(meta["validation_single_engine_ndcg@10"].items(), key=lambda kv: kv[1])[0]
    assert result.blend.get(leader, 0) > 0  # tuning starts from the tenant's best engine
    assert meta["validation_ndcg@10"] >= meta["validation_single_engine_ndcg@10"][leader]

    vectors = create_vector_store(settings)
    try:
        assert await vectors.count("items_content", str(tenant_id)) == 80
        assert await vectors.count("items_content", str(other_tenant)) == 0
        # The hashed content vectors of the whole catalogue, marked as in the models.
        assert await vectors.count("items_text", str(tenant_id)) == 80
        hits = await vectors.search("items_text", [1.0] * 256, 80, str(tenant_id))
        assert {hit.payload["stage"] for hit in hits} == {"trained"}
    finally:
        await vectors.close()
    await database.dispose()
    await other_db.dispose()


async def test_training_twice_promotes_a_newer_version(tmp_path: Path, catalogue) -> None:
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "twice.example")
    await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions[:400]
    )
    first = await train_tenant_async(settings, str(tenant_id), ["popularity"], evaluate=False)
    second = await train_tenant_async(settings, str(tenant_id), ["popularity"], evaluate=False)
    assert second.versions["popularity"] > first.versions["popularity"]
    # Without a holdout nothing is tuned: the default hybrid serves this tenant.
    assert second.blend is None
    store = create_artifact_store(settings)
    assert store.current(str(tenant_id), "popularity") == second.versions["popularity"]
    await database.dispose()


async def test_training_refuses_unknown_algorithms_and_empty_tenants(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "empty.example")
    with pytest.raises(InvalidData, match="unknown algorithms"):
        await train_tenant_async(settings, str(tenant_id), ["nope"])
    with pytest.raises(InvalidData, match="no interactions"):
        await train_tenant_async(settings, str(tenant_id), ["popularity"])
    await database.dispose()


async def _content_vectors(settings: Settings, tenant: str) -> int:
    store = create_vector_store(settings)  # closed again: the embedded store allows one opener
    try:
        return await store.count("items_content", tenant)
    finally:
        await store.close()


class _Exploding(Popularity):  # no ``name`` in the body: it never registers by itself
    def _fit(self, data: InteractionMatrix, items: list[ItemInfo]) -> None:
        raise RuntimeError("engine exploded on this data")


class _Unsaveable(Popularity):
    def _state(self) -> dict:
        raise OSError("disk full")


@pytest.fixture
def failing_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two engines that cannot train, known to the registry for this test only."""
    for name, cls in (("exploding", _Exploding), ("unsaveable", _Unsaveable)):
        monkeypatch.setattr(cls, "name", name, raising=False)
        monkeypatch.setitem(ALGORITHMS, name, cls)


async def test_a_failing_algorithm_is_skipped_and_the_others_published(
    tmp_path: Path, catalogue, failing_algorithms, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "failing.example")
    await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions[:400]
    )
    tenant = str(tenant_id)
    meters = PrometheusBackend()
    previous = use_backend(meters)
    try:
        with caplog.at_level(logging.WARNING, logger="training.pipeline"):
            names = ["popularity", "exploding", "content", "unsaveable"]
            result = await train_tenant_async(settings, tenant, names)
    finally:
        use_backend(previous)

    assert sorted(result.versions) == ["content", "popularity"]
    assert result.skipped == {
        "exploding": "RuntimeError: engine exploded on this data",
        "unsaveable": "OSError: disk full",
    }
    artifacts = create_artifact_store(settings)
    assert artifacts.current(tenant, "content") == result.versions["content"]
    assert artifacts.current(tenant, "exploding") is None
    assert artifacts.current(tenant, "unsaveable") is None
    for name, status in [
        ("exploding", "skipped"),
        ("unsaveable", "skipped"),
        ("content", "succeeded"),
    ]:
        labels = {"algorithm": name, "status": status}
        assert meters.registry.get_sample_value("training_runs_total", labels) == 1.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        f"tenant {tenant}: exploding skipped: RuntimeError: engine exploded on this data",
        f"tenant {tenant}: unsaveable skipped: OSError: disk full",
    ]
    assert all(r.exc_info is None for r in warnings)  # the traceback only at debug level
    assert await _content_vectors(settings, tenant) == len(catalogue.items)

    with pytest.raises(InvalidData, match=r"no algorithm could be trained.*exploding: Runtime"):
        await train_tenant_async(settings, tenant, ["exploding"], evaluate=False)
    await database.dispose()


async def test_catalogue_without_usable_text_trains_content_and_clears_its_vectors(
    tmp_path: Path, catalogue
) -> None:
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "bare.example")
    tenant = str(tenant_id)
    items, interactions = catalogue.items[:20], catalogue.interactions[:300]
    interactions = [row for row in interactions if row[1] in {item.id for item in items}]
    await ingest_dataset(database, tenant_id, items=items, interactions=interactions)
    await train_tenant_async(settings, tenant, ["content"], evaluate=False)
    assert await _content_vectors(settings, tenant) == len(items)
    # The same items re-imported with one-letter titles and nothing else: no features.
    bare = [ItemInfo(id=item.id, title="ABCDEFGHIJKLMNOPQRST"[n]) for n, item in enumerate(items)]
    await ingest_dataset(database, tenant_id, items=bare)
    result = await train_tenant_async(settings, tenant, ["popularity", "content"])
    assert sorted(result.versions) == ["content", "popularity"] and not result.skipped
    assert await _content_vectors(settings, tenant) == 0  # the stale ones are gone
    artifacts = create_artifact_store(settings)
    artifacts.load(tenant, "content", result.versions["content"], tmp_path / "content")
    model = load(tmp_path / "content")
    user = str(model.user_ids[0])
    assert model.recommend(user, k=5) == [] and model.similar_items(str(model.item_ids[0])) == []
    await database.dispose()


async def test_ingest_is_all_or_nothing(tmp_path: Path, catalogue) -> None:
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "atomic.example")
    broken = [*catalogue.interactions[:50], ("user-x", "no-such-item", "view", 1.0, 0.0)]
    with pytest.raises(KeyError):
        await ingest_dataset(database, tenant_id, items=catalogue.items, interactions=broken)
    async with database.session() as session:
        assert await repo.catalogue_items(session=session, tenant_id=tenant_id) == []
    await database.dispose()
    await asyncio.sleep(0)


def test_the_training_matrix_does_not_depend_on_the_row_order(catalogue) -> None:
    """Two databases return rows in different orders; the models must not differ for it."""
    import random

    from training.data import InteractionWeights
    from training.pipeline import TenantData

    events = list(catalogue.interactions)
    shuffled = random.Random(3).sample(events, len(events))
    items = list(catalogue.items)
    first = TenantData.from_rows(events, items, InteractionWeights()).matrix()
    second = TenantData.from_rows(shuffled, items, InteractionWeights()).matrix()
    assert list(first.user_ids) == list(second.user_ids)
    assert list(first.item_ids) == list(second.item_ids)
    assert (first.matrix != second.matrix).nnz == 0


async def test_tenant_data_streams_into_columns(tmp_path: Path, catalogue) -> None:
    """Interactions and ratings are read in chunks straight into id-coded columns: whatever
    the chunk size, the same events, and the same matrix as the events' tuples give."""
    from training.data import InteractionWeights
    from training.pipeline import TenantData, load_tenant_data

    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "columns.example")
    await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions
    )
    async with database.session() as session:
        user = (await repo.list_users(session=session, tenant_id=tenant_id))[0]
        item = (await repo.catalogue_items(session=session, tenant_id=tenant_id))[0]
        await repo.rate_item(
            session=session, tenant_id=tenant_id, user_id=user.id, item_id=item.id, rating=4.5
        )
    whole = await load_tenant_data(database, tenant_id)
    chunked = await load_tenant_data(database, tenant_id, chunk_size=7)
    await database.dispose()

    events = chunked.events
    assert len(events) == len(catalogue.interactions) + 1
    assert events.users.dtype == np.int32 and events.items.dtype == np.int32
    assert events.kinds.itemsize == 1 and events.values.dtype == np.float32
    assert events.times.dtype == np.float64 and events.user_ids.dtype == object
    rating = events.is_kind("rating")
    assert rating.sum() == 1 and events.values[rating][0] == 4.5
    assert list(events.pairs())[np.flatnonzero(rating)[0]] == (str(user.id), str(item.id))
    assert list(chunked.events.pairs()) == list(whole.events.pairs())
    np.testing.assert_array_equal(chunked.events.times, whole.events.times)
    rows = [
        (u, i, events.kind_names[k], float(v), t)
        for (u, i), k, v, t in zip(
            events.pairs(), events.kinds, events.values, events.times, strict=True
        )
    ]
    expected = TenantData.from_rows(rows, chunked.items, InteractionWeights()).matrix()
    found = chunked.matrix()
    assert list(found.user_ids) == list(expected.user_ids)
    assert list(found.item_ids) == list(expected.item_ids)
    assert (found.matrix != expected.matrix).nnz == 0


async def test_distributed_fits_use_the_shared_train_storage(
    tmp_path: Path, catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a multi-node cluster the Ray Train run lives where every node reaches it:
    RECSERVE_TRAIN_STORAGE_URI (``recserve train --storage``) reaches the trainer. ALS and SVD
    fit in one run (workers start once); the other algorithms fit in process."""
    import training.distributed as distributed

    calls: list[dict] = []

    def fake(names, data, **options):  # type: ignore[no-untyped-def]
        calls.append({"names": names, **options})
        return {
            name: ALGORITHMS[name]({"iterations": 2, "epochs": 2}, seed=options["seed"]).fit(
                data, options["items"]
            )
            for name in names
        }

    monkeypatch.setattr(distributed, "fit_distributed", fake)
    # the plan's form reaches the Ray run: here SVD's lazy Adam, as on a large tenant
    monkeypatch.setattr(svd_module, "LAZY_ADAM_RATIO", 0)
    shared = str(tmp_path / "shared-ray-train")
    settings = Settings(data_dir=tmp_path, train_storage_uri=shared)
    database, tenant_id = await _tenant(settings, "shared.example")
    await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions[:400]
    )
    await database.dispose()
    result = await train_tenant_async(
        settings, str(tenant_id), ["als", "popularity", "svd"], evaluate=False, distributed=True
    )
    assert sorted(result.versions) == ["als", "popularity", "svd"]
    assert [(c["names"], c["storage_path"], c["workers"]) for c in calls] == [
        (["als", "svd"], shared, 2)
    ]
    assert calls[0]["configs"]["svd"].optimizer == "sparse_adam"
    assert calls[0]["configs"]["als"] == ALGORITHMS["als"].Config()


async def test_a_failed_ray_run_skips_its_algorithms_and_the_rest_publish(
    tmp_path: Path, catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.distributed as distributed

    calls: list[list[str]] = []

    def failing(names, data, **options):  # type: ignore[no-untyped-def]
        calls.append(names)
        raise RuntimeError("worker group did not start")

    monkeypatch.setattr(distributed, "fit_distributed", failing)
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "failed-ray.example")
    await ingest_dataset(
        database, tenant_id, items=catalogue.items, interactions=catalogue.interactions[:400]
    )
    await database.dispose()
    result = await train_tenant_async(
        settings, str(tenant_id), ["als", "popularity", "svd"], evaluate=False, distributed=True
    )
    assert calls == [["als", "svd"]]  # tried once for both
    assert sorted(result.versions) == ["popularity"]
    assert result.skipped == {
        "als": "RuntimeError: worker group did not start",
        "svd": "RuntimeError: worker group did not start",
    }


async def test_item_vectors_go_to_the_store_given_and_it_stays_open(
    tmp_path: Path, catalogue
) -> None:
    """What a Serve training task does without a Qdrant server: the app's vectors replica holds
    the embedded store, and the run writes through the store it is given, never opening one."""
    settings = Settings(data_dir=tmp_path)
    database, tenant_id = await _tenant(settings, "given.example")
    tenant = str(tenant_id)
    items, interactions = catalogue.items[:30], catalogue.interactions[:400]
    interactions = [row for row in interactions if row[1] in {item.id for item in items}]
    await ingest_dataset(database, tenant_id, items=items, interactions=interactions)
    # A second tenant whose catalogue has far fewer features: narrower content vectors.
    small_db, small_id = await _tenant(settings, "small.example")
    few = [ItemInfo(id=f"s{n}", title=("red", "blue")[n % 2]) for n in range(6)]
    events = [(f"u{n % 3}", f"s{n}", "view", 1.0, 1_700_000_000 + n) for n in range(6)]
    await ingest_dataset(small_db, small_id, items=few, interactions=events)
    given = QdrantServerStore(AsyncQdrantClient(":memory:"))
    try:
        await train_tenant_async(settings, tenant, ["content"], evaluate=False, vector_store=given)
        assert await given.count("items_content", tenant) == len(items)  # still open
        assert await given.count("items_text", tenant) == len(items)
        # Both tenants' vectors live in the one shared collection, whatever their width.
        small = str(small_id)
        await train_tenant_async(settings, small, ["content"], evaluate=False, vector_store=given)
        assert await given.count("items_content", small) == len(few)
        assert await given.count("items_content", tenant) == len(items)
        hits = await given.search("items_content", [1.0] * STORED_DIMS, 10, small)
        assert len(hits) == len(few)
        assert len(await given.get_vector("items_content", hits[0].id, small)) == STORED_DIMS
    finally:
        await small_db.dispose()
        await given.close()
    assert not settings.qdrant_path.exists()  # the settings' embedded store was never opened
    await database.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_loading_codes_ids_in_the_database_form_as_rows_did(
    backend: str, request: pytest.FixtureRequest, catalogue
) -> None:
    """The columnar load (ids as hex, times as seconds, coded by arrays) gives exactly the
    events that coding each row's UUID and datetime in Python gave."""
    from training.data import to_unix
    from training.pipeline import load_tenant_data

    async with migrated_database(backend, request) as database:
        async with database.session() as session:
            tenant = await repo.create_tenant(session=session, name="rows", domain="rows.test")
        await ingest_dataset(
            database, tenant.id, items=catalogue.items, interactions=catalogue.interactions
        )
        async with database.session() as session:
            users = await repo.list_users(session=session, tenant_id=tenant.id)
            items = await repo.catalogue_items(session=session, tenant_id=tenant.id)
            for user, item, rating in ((users[0], items[0], 4.5), (users[3], items[5], 1.0)):
                await repo.rate_item(
                    session=session,
                    tenant_id=tenant.id,
                    user_id=user.id,
                    item_id=item.id,
                    rating=rating,
                )
            rows = [
                (r.user_id, r.item_id, r.interaction_type, r.value, r.created_at)
                async for chunk in repo.iter_interactions(session=session, tenant_id=tenant.id)
                for r in chunk
            ]
            rows += [
                (u, i, "rating", v, t)
                async for chunk in repo.iter_ratings(session=session, tenant_id=tenant.id)
                for u, i, v, t in chunk
            ]
        found = (await load_tenant_data(database, tenant.id, chunk_size=13)).events

    vocabularies: list[dict] = [{}, {}, {}]
    codes = [[index.setdefault(row[c], len(index)) for row in rows] for c, index in
             zip(range(3), vocabularies, strict=True)]  # fmt: skip
    assert found.users.tolist() == codes[0] and found.items.tolist() == codes[1]
    assert found.kinds.tolist() == codes[2]
    assert list(found.user_ids) == [str(u) for u in vocabularies[0]]
    assert list(found.item_ids) == [str(i) for i in vocabularies[1]]
    assert found.kind_names == tuple(vocabularies[2])
    assert found.values.tolist() == [np.float32(row[3]) for row in rows]
    assert found.times.tolist() == [to_unix(row[4]) for row in rows]
    assert len(found) == len(catalogue.interactions) + 2


class _RecordingStore:
    """Just what ``_replace_vectors`` calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    async def ensure_collection(self, name: str, dim: int) -> None:
        self.calls.append(("ensure", dim))

    async def delete_by_filter(self, name: str, tenant: str) -> None:
        self.calls.append(("delete", tenant))

    async def upsert(self, name: str, points: list) -> None:
        self.calls.append(("upsert", len(points)))


async def test_item_vectors_are_built_and_upserted_a_batch_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each batch is padded and upserted before the next is built; all-zero rows stay out."""
    from training import pipeline

    monkeypatch.setattr(pipeline, "VECTOR_BATCH", 4)
    ids = np.array([f"i{n}" for n in range(10)], dtype=object)
    found = np.arange(30, dtype=np.float32).reshape(10, 3) + 1
    found[5] = 0
    batches = pipeline._vector_batches("t1", ids, found, {"i1": "shoes"})
    first = next(batches)
    assert [point[0] for point in first] == ["i0", "i1", "i2", "i3"]
    assert len(first[1][1]) == STORED_DIMS and first[1][1][:4] == [4.0, 5.0, 6.0, 0.0]
    assert first[1][2] == {"tenant_id": "t1", "category": "shoes"}
    assert [[point[0] for point in batch] for batch in batches] == [
        ["i4", "i6", "i7"],
        ["i8", "i9"],
    ]
    store = _RecordingStore()
    await pipeline._replace_vectors(
        store, "items_als", "t1", STORED_DIMS, pipeline._vector_batches("t1", ids, found, {})
    )
    assert store.calls == [
        ("ensure", STORED_DIMS),
        ("delete", "t1"),
        ("upsert", 4),
        ("upsert", 3),
        ("upsert", 2),
    ]
    cleared = _RecordingStore()
    await pipeline._replace_vectors(cleared, "items_als", "t1", STORED_DIMS, iter([]))
    assert cleared.calls == [("delete", "t1")]
