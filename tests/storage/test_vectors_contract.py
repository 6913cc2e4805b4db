"""One contract suite for every vector store backend, checked against numpy brute force."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from deployments.vector_store import RemoteVectorStore, VectorStoreServer
from storage.errors import InvalidData, NotFound, Unavailable
from storage.settings import Settings
from storage.vectors import (
    EdgeVectorStore,
    NoneOf,
    QdrantServerStore,
    SharedEdgeStore,
    VectorStore,
    create_vector_store,
)

# Local-mode Qdrant warns that payload indexes are a no-op there; the server path still runs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    # The garbage collector also "calls" the replica's async __del__, which the fixture awaited.
    pytest.mark.filterwarnings("ignore:coroutine 'VectorStoreServer.__del__':RuntimeWarning"),
]

DIM = 16
CATEGORIES = ("books", "music", "film")
_names = itertools.count()


class _Method:
    def __init__(self, replica: object, name: str) -> None:
        self._bound = getattr(replica, name)

    async def _answer(self, args: tuple) -> object:
        # Arguments and answers cross the hop pickled, as between Serve replicas.
        return pickle.loads(pickle.dumps(await self._bound(*pickle.loads(pickle.dumps(args)))))

    def remote(self, *args: object) -> object:
        return self._answer(args)


class LocalHandle:
    """A deployment handle whose calls run on a local instance of the deployment's class."""

    def __init__(self, replica: object) -> None:
        self._replica = replica

    def __getattr__(self, name: str) -> _Method:
        return _Method(self._replica, name)


@pytest.fixture(params=["edge", "server", "remote"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[VectorStore]:
    backend: VectorStore
    replica = None
    if request.param == "edge":
        backend = EdgeVectorStore(tmp_path / "qdrant")
    elif request.param == "server":
        backend = QdrantServerStore(AsyncQdrantClient(":memory:"))
    else:  # the Serve app's store without a Qdrant server: one replica holds the embedded one
        monkeypatch.setenv("RECSERVE_DATA_DIR", str(tmp_path))
        replica = VectorStoreServer.func_or_class()
        backend = RemoteVectorStore(LocalHandle(replica))  # type: ignore[arg-type]
    yield backend
    await backend.close()
    if replica is not None:
        await replica.__del__()


@pytest.fixture
async def collection(store: VectorStore) -> str:
    name = f"items_{next(_names)}"
    await store.ensure_collection(name, DIM)
    return name


def _catalogue(rng: np.random.Generator, tenant: str, n: int) -> tuple[list[str], np.ndarray, list]:
    ids = [f"{tenant}-item-{i}" for i in range(n)]
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    points = [
        (
            item_id,
            vectors[i].tolist(),
            {"tenant_id": tenant, "category": CATEGORIES[i % 3], "lang": "en" if i % 2 else "fr"},
        )
        for i, item_id in enumerate(ids)
    ]
    return ids, vectors, points


def _brute_force(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = normed @ (query / np.linalg.norm(query))
    order = np.argsort(-scores, kind="stable")[:k]
    return order.tolist(), scores[order]


@pytest.fixture
def loaded_b() -> list:
    """Tenant B's points, filled by ``loaded``."""
    return []


@pytest.fixture
async def loaded(
    store: VectorStore, collection: str, rng: np.random.Generator, loaded_b: list
) -> tuple[list[str], np.ndarray]:
    ids, vectors, points = _catalogue(rng, "tenant-a", 200)
    await store.upsert(collection, points)
    _, _, other = _catalogue(rng, "tenant-b", 60)
    await store.upsert(collection, other)
    loaded_b.extend(other)
    return ids, vectors


async def test_search_is_exact_cosine_top_k(store, collection, loaded, rng) -> None:
    ids, vectors = loaded
    for query in rng.normal(size=(5, DIM)):
        hits = await store.search(collection, query.tolist(), 10, tenant_id="tenant-a")
        expected, scores = _brute_force(vectors, query, 10)
        assert [h.id for h in hits] == [ids[i] for i in expected]
        np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-4)
        assert all(h.payload["tenant_id"] == "tenant-a" for h in hits)


async def test_payload_round_trips_without_internal_keys(store, collection, loaded) -> None:
    ids, vectors = loaded
    [hit] = await store.search(collection, vectors[7].tolist(), 1, tenant_id="tenant-a")
    assert hit.id == ids[7]
    assert hit.payload == {"tenant_id": "tenant-a", "category": CATEGORIES[7 % 3], "lang": "en"}


async def test_tenant_never_sees_another_tenants_points(
    store, collection, loaded, loaded_b
) -> None:
    # Probe with one of tenant B's own vectors: B's point is its perfect match.
    b_vector = loaded_b[0][1]
    hits = await store.search(collection, b_vector, 300, tenant_id="tenant-a")
    assert len(hits) == 200
    assert all(h.id.startswith("tenant-a-") for h in hits)
    hits_b = await store.search(collection, b_vector, 300, tenant_id="tenant-b")
    assert hits_b[0].id == loaded_b[0][0]
    assert len(hits_b) == 60 and all(h.id.startswith("tenant-b-") for h in hits_b)
    assert await store.search(collection, b_vector, 5, tenant_id="tenant-c") == []


async def test_filter_by_category_list_and_exact_field(store, collection, loaded, rng) -> None:
    ids, vectors = loaded
    query = rng.normal(size=DIM)
    allowed = [i for i in range(200) if CATEGORIES[i % 3] in ("books", "film") and i % 2]
    hits = await store.search(
        collection,
        query.tolist(),
        8,
        tenant_id="tenant-a",
        filter={"category": ["books", "film"], "lang": "en"},
    )
    expected, _ = _brute_force(vectors[allowed], query, 8)
    assert [h.id for h in hits] == [ids[allowed[i]] for i in expected]
    assert {h.payload["category"] for h in hits} <= {"books", "film"}


async def test_none_of_leaves_out_those_values(store, collection, loaded, rng) -> None:
    ids, vectors = loaded
    query = rng.normal(size=DIM)
    allowed = [i for i in range(200) if CATEGORIES[i % 3] != "books" and i % 2]
    hits = await store.search(
        collection,
        query.tolist(),
        8,
        tenant_id="tenant-a",
        filter={"category": NoneOf(("books",)), "lang": "en"},
    )
    expected, _ = _brute_force(vectors[allowed], query, 8)
    assert [h.id for h in hits] == [ids[allowed[i]] for i in expected]


async def test_exclude_ids_skips_exactly_those(store, collection, loaded, rng) -> None:
    ids, vectors = loaded
    query = rng.normal(size=DIM)
    expected, _ = _brute_force(vectors, query, 8)
    excluded = [ids[i] for i in expected[:3]]
    hits = await store.search(collection, query.tolist(), 5, "tenant-a", exclude_ids=excluded)
    assert [h.id for h in hits] == [ids[i] for i in expected[3:8]]


async def test_count_delete_and_delete_by_filter(store, collection, loaded) -> None:
    ids, vectors = loaded
    assert await store.count(collection, "tenant-a") == 200
    assert await store.count(collection, "tenant-b") == 60
    await store.delete(collection, [*ids[:10], "never-existed"])
    assert await store.count(collection, "tenant-a") == 190
    hits = await store.search(collection, vectors[0].tolist(), 3, tenant_id="tenant-a")
    assert ids[0] not in {h.id for h in hits}
    await store.delete_by_filter(collection, "tenant-a")
    assert await store.count(collection, "tenant-a") == 0
    assert await store.count(collection, "tenant-b") == 60


async def test_reupsert_overwrites_vector_and_payload(store, collection, loaded, rng) -> None:
    ids, _ = loaded
    fresh = rng.normal(size=DIM).tolist()
    await store.upsert(collection, [(ids[5], fresh, {"tenant_id": "tenant-a", "category": "new"})])
    assert await store.count(collection, "tenant-a") == 200
    [hit] = await store.search(collection, fresh, 1, tenant_id="tenant-a")
    assert hit.id == ids[5]
    assert hit.payload == {"tenant_id": "tenant-a", "category": "new"}
    assert hit.score == pytest.approx(1.0, abs=1e-4)


async def test_errors_map_to_storage_errors(store, collection) -> None:
    with pytest.raises(NotFound):
        await store.search("no_such_collection", [0.0] * DIM, 3, tenant_id="t")
    with pytest.raises(NotFound):
        await store.upsert("no_such_collection", [("x", [1.0] * DIM, {"tenant_id": "t"})])
    with pytest.raises(InvalidData):
        await store.upsert(collection, [("x", [1.0] * (DIM + 1), {"tenant_id": "t"})])
    with pytest.raises(InvalidData):
        await store.search(collection, [1.0] * (DIM - 1), 3, tenant_id="t")
    with pytest.raises(InvalidData):
        await store.upsert(collection, [("x", [1.0] * DIM, {"category": "no tenant"})])
    with pytest.raises(InvalidData):
        await store.ensure_collection(collection, DIM * 2)
    with pytest.raises(InvalidData):
        await store.search(collection, [1.0] * DIM, 3, "t", filter={"tenant_id": "other"})
    with pytest.raises(InvalidData):
        await store.ensure_collection("../escape", DIM)


async def test_ensure_collection_is_idempotent(store, collection, loaded) -> None:
    await store.ensure_collection(collection, DIM)
    assert await store.count(collection, "tenant-a") == 200


async def test_edge_store_persists_across_reopen(tmp_path: Path, rng) -> None:
    _, _, points = _catalogue(rng, "tenant-a", 20)
    first = EdgeVectorStore(tmp_path)
    await first.ensure_collection("persisted", DIM)
    await first.upsert("persisted", points)
    await first.close()
    second = EdgeVectorStore(tmp_path)
    assert await second.count("persisted", "tenant-a") == 20
    with pytest.raises(InvalidData):
        await second.upsert("persisted", [("x", [1.0] * 3, {"tenant_id": "tenant-a"})])
    await second.close()


async def test_factory_picks_backend_from_settings(tmp_path: Path) -> None:
    embedded = create_vector_store(Settings(data_dir=tmp_path))
    assert isinstance(embedded, SharedEdgeStore)  # a handle on this process's EdgeVectorStore
    await embedded.close()
    server = create_vector_store(Settings(data_dir=tmp_path, qdrant_url="http://127.0.0.1:1"))
    assert isinstance(server, QdrantServerStore)


async def test_embedded_stores_of_one_folder_share_one_engine(tmp_path: Path) -> None:
    """The single-process server holds the store while its training runs write to it: a second
    ``EdgeVectorStore`` on the same folder could not open the shard (its WAL is locked)."""
    settings = Settings(data_dir=tmp_path)
    serving, training = create_vector_store(settings), create_vector_store(settings)
    await serving.ensure_collection("shared", 3)
    await serving.upsert("shared", [("a", [1.0, 0.0, 0.0], {"tenant_id": "t"})])
    await training.upsert("shared", [("b", [0.0, 1.0, 0.0], {"tenant_id": "t"})])
    await training.close()  # the serving handle keeps the engine open
    assert await serving.count("shared", "t") == 2
    await serving.close()
    reopened = create_vector_store(settings)  # the last close flushed: a new engine reads it
    assert await reopened.count("shared", "t") == 2
    await reopened.close()


async def test_similar_to_a_stored_point_is_exact_cosine_without_itself(
    store, collection, loaded, loaded_b
) -> None:
    ids, vectors = loaded
    hits = await store.similar_to(collection, ids[3], 5, tenant_id="tenant-a")
    expected, scores = _brute_force(vectors, vectors[3], 6)
    assert expected[0] == 3  # the point itself, which similar_to leaves out
    assert [h.id for h in hits] == [ids[i] for i in expected[1:]]
    np.testing.assert_allclose([h.score for h in hits], scores[1:], atol=1e-4)
    stored = await store.get_vector(collection, ids[3], tenant_id="tenant-a")
    np.testing.assert_allclose(
        np.asarray(stored) / np.linalg.norm(stored),
        vectors[3] / np.linalg.norm(vectors[3]),
        atol=1e-5,
    )
    # Another tenant's point, or an unknown one, does not exist for tenant A.
    with pytest.raises(NotFound):
        await store.similar_to(collection, loaded_b[0][0], 5, tenant_id="tenant-a")
    with pytest.raises(NotFound):
        await store.get_vector(collection, "no-such-point", tenant_id="tenant-a")
    # Many at once: the tenant's own points only, unknown and foreign ones left out.
    many = await store.get_vectors(
        collection, [ids[3], "no-such-point", loaded_b[0][0], ids[5]], tenant_id="tenant-a"
    )
    assert list(many) == [ids[3], ids[5]]
    np.testing.assert_allclose(many[ids[3]], stored, atol=1e-6)
    assert await store.get_vectors("no_such_collection", [ids[3]], tenant_id="tenant-a") == {}


ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import asyncio, sys
from storage.vectors import EdgeVectorStore

async def hold() -> None:
    store = EdgeVectorStore(sys.argv[1])
    await store.ensure_collection("items", 4)
    print("holding", flush=True)
    sys.stdin.readline()
    await store.close()

asyncio.run(hold())
"""


async def _open_held(path: Path) -> None:
    store = EdgeVectorStore(path)
    try:
        with pytest.raises(Unavailable, match=r"held open elsewhere.*RECSERVE_QDRANT_URL"):
            await store.ensure_collection("items", 4)
    finally:
        await store.close()


def test_an_embedded_store_held_by_another_process_is_refused_with_the_way_out(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "qdrant")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        asyncio.run(_open_held(tmp_path / "qdrant"))
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)


RESIDENT_AFTER_LOAD = """
import asyncio, sys, uuid
from pathlib import Path
from storage.vectors import EdgeVectorStore

def file_backed_mib():
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_File:"):
            return int(line.split()[1]) / 1024

async def main(root):
    tenant, names = str(uuid.uuid4()), ["items_a", "items_b", "items_c"]
    store = EdgeVectorStore(root)
    for name in names:
        await store.ensure_collection(name, 64)
        await store.upsert(name, [(str(uuid.uuid4()), [float(n % 7), 1.0] + [0.5] * 62,
                                   {"tenant_id": tenant}) for n in range(300)])
    await store.close()
    before = file_backed_mib()
    store = EdgeVectorStore(root)  # a replica opening the stored collections
    for name in names:
        await store.search(name, [1.0] * 64, 10, tenant)
    print(file_backed_mib() - before)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="reads Linux's smaps")
def test_opening_stored_collections_maps_what_they_hold_not_whole_chunks(tmp_path: Path) -> None:
    """Qdrant's default placement read each collection's preallocated 32 MiB vector chunk into
    memory on load (~43 MiB per collection of 300 points); the store's collections are created
    Cold, so a replica opening three of them maps only the pages it reads."""
    done = subprocess.run(
        [sys.executable, "-c", RESIDENT_AFTER_LOAD, str(tmp_path / "qdrant")],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Cached: 128 MiB here; Cold: 32 (the payload indexes' pages, 4 MiB each)
    assert float(done.stdout) < 48, f"{float(done.stdout):.0f} MiB mapped for three collections"


def _disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_blocks * 512 for path in folder.rglob("*") if path.is_file())


async def test_rewriting_a_catalogues_vectors_does_not_grow_the_store(tmp_path: Path) -> None:
    """Each training re-writes every item's vectors. A write-ahead log (which edge shards
    never truncate) grew by every such write; the collections keep none, so ten rewrites
    leave the store the size it was."""
    store = EdgeVectorStore(tmp_path / "qdrant")
    try:
        await store.ensure_collection("items_x", 64)
        ids = [str(uuid.UUID(int=n + 1)) for n in range(300)]
        rng = np.random.default_rng(3)

        async def rewrite() -> None:
            vectors = rng.random((len(ids), 64))
            await store.upsert("items_x", [(i, list(v), {"tenant_id": "t"}) for i, v in
                                           zip(ids, vectors, strict=True)])  # fmt: skip

        await rewrite()
        before = _disk_bytes(tmp_path / "qdrant")
        for _ in range(10):
            await rewrite()
        grown = _disk_bytes(tmp_path / "qdrant") - before
        assert grown < 256 * 1024, f"{grown / 2**20:.1f} MiB more after ten rewrites"
        assert await store.count("items_x", "t") == len(ids)
    finally:
        await store.close()
