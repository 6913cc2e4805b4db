"""Similar items from the vector store: exact cosine, tenant-checked, models as the fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient

from recommend.inprocess import InProcessService
from recommend.model_cache import MemoryModelSource
from recommend.vector_similar import VectorSimilar
from storage.settings import Settings
from storage.vectors import EdgeVectorStore, QdrantServerStore, VectorStore
from tests.deployments.fakes import synthetic_matrix
from training.algorithms import create

TENANT = "acme"

DIM = 8


@pytest.fixture(params=["server", "edge"])
async def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "server":
        vectors: VectorStore = QdrantServerStore(client=AsyncQdrantClient(":memory:"))
    else:
        vectors = EdgeVectorStore(tmp_path / "qdrant")
    yield vectors
    await vectors.close()


async def _fill(store: VectorStore, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.normal(size=(30, DIM)).astype(np.float32)
    await store.ensure_collection("items_content", DIM)
    points = [(f"i{n}", vectors[n].tolist(), {"tenant_id": TENANT}) for n in range(30)]
    points += [("other-item", vectors[0].tolist(), {"tenant_id": "other"})]
    await store.upsert("items_content", points)
    return vectors


def _exact(vectors: np.ndarray, row: int, k: int) -> list[str]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    order = [int(i) for i in np.argsort(-(unit @ unit[row]), kind="stable") if i != row]
    return [f"i{i}" for i in order[:k]]


async def test_vector_neighbours_are_exact_and_stay_in_the_tenant(store, rng, tmp_path) -> None:
    vectors = await _fill(store, rng)
    similar = VectorSimilar(Settings(data_dir=tmp_path), store)
    found = await similar.similar(TENANT, "i5", 4)
    assert found is not None and [item for item, _ in found] == _exact(vectors, 5, 4)
    # Another tenant's item has no vector for this tenant: the models answer instead.
    assert await similar.similar(TENANT, "other-item", 4) is None


async def test_without_a_vector_server_the_models_answer(tmp_path: Path) -> None:
    assert not VectorSimilar(Settings(data_dir=tmp_path)).enabled
    assert VectorSimilar(Settings(data_dir=tmp_path, qdrant_url="http://qdrant:6333")).enabled


async def test_local_recommender_prefers_vectors_then_falls_back(store, rng, tmp_path) -> None:
    vectors = await _fill(store, rng)
    matrix = synthetic_matrix(hot=5)
    models = {name: create(name).fit(matrix) for name in ("popularity", "item_knn", "ease")}
    source = MemoryModelSource(TENANT, models)
    settings = Settings(data_dir=tmp_path)
    local = InProcessService(
        settings, ["item_knn", "ease"], source=source, vectors=VectorSimilar(settings, store)
    )
    from_vectors = await local.similar_items(tenant_id=TENANT, item_id="i2", k=3)
    assert [item for item, _ in from_vectors] == _exact(vectors, 2, 3)
    plain = InProcessService(settings, ["item_knn", "ease"], source=source)
    from_models = await plain.similar_items(tenant_id=TENANT, item_id="i2", k=3)
    assert from_models and "i2" not in [item for item, _ in from_models]


async def test_content_candidates_search_around_the_users_recent_items(store, rng, tmp_path):
    vectors = await _fill(store, rng)
    similar = VectorSimilar(Settings(data_dir=tmp_path), store)
    found = await similar.content_candidates(TENANT, ["i1", "i2"], 5, exclude=["i9"])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    profile = (unit[1] + unit[2]) / 2
    ranked = [f"i{i}" for i in np.argsort(-(unit @ profile), kind="stable")]
    expected = [item for item in ranked if item not in ("i1", "i2", "i9")][:5]
    assert found is not None and [item for item, _ in found] == expected
    # Items of another tenant or without vectors make no profile: the model answers instead.
    assert await similar.content_candidates(TENANT, ["other-item", "nope"], 5) is None
    assert await similar.content_candidates(TENANT, [], 5) is None
    assert (
        await VectorSimilar(Settings(data_dir=tmp_path)).content_candidates(TENANT, ["i1"], 5)
        is None
    )


async def test_the_embedded_store_keeps_new_items_while_the_models_answer(tmp_path: Path) -> None:
    """The Serve app's vectors replica and the single-process server hold the embedded store
    for new items' content vectors (``local``); trained engines answer for themselves there,
    so both servers give the same lists. A Qdrant server answers for the engines too."""
    store = EdgeVectorStore(tmp_path / "qdrant")
    try:
        local = VectorSimilar(Settings(data_dir=tmp_path), store, local=True)
        assert local.text_enabled and not local.enabled
        assert await local.content_candidates(TENANT, ["i1"], 5) is None
        server = Settings(data_dir=tmp_path, qdrant_url="http://qdrant:6333")
        assert VectorSimilar(server, store, local=True).enabled
    finally:
        await store.close()
