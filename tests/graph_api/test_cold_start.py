"""A tenant with no trained model answers, and new items are recommendable at once.

The app is the single-process one (``create_app`` over ``InProcessService``: the real
recommendation step, the embedded vector store, the database cold source), driven through
GraphQL as a client would, with no CLI step.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from graph_api.app import create_app
from recommend.cold import EXPLORE, exploration_slots
from recommend.inprocess import InProcessService
from recommend.options import ServingOptions
from recommend.vector_similar import VectorSimilar
from storage import repositories as repo
from storage.cache import create_cache
from storage.db import Database
from storage.errors import Unavailable
from storage.vectors import EdgeVectorStore
from tests.graph_api.conftest import Api, make_settings
from training.algorithms.content import hashed_vectors
from training.data import ItemInfo

CREATE_ITEM = """
mutation($input: ItemInput!) { createItem(input: $input) { id } }"""
UPDATE_ITEM = """
mutation($id: UUID!, $input: ItemUpdateInput!) { updateItem(id: $id, input: $input) { id } }"""
DELETE_ITEM = "mutation($id: UUID!) { deleteItem(id: $id) }"
IMPORT = """
mutation($items: [ItemInput!]!) { importItems(items: $items) { imported itemIds } }"""
RECORD = """
mutation($input: InteractionInput!) { recordInteraction(input: $input) { id } }"""
RECOMMEND = """
query($options: RecommendationOptions) {
  recommendations(options: $options) {
    totalCount explanation { strategy enginesUsed modelVersion cached } items { score item { id } }
  }
}"""
SIMILAR = """
query($id: UUID!) { similarItems(itemId: $id, topK: 5) { score item { id } } }"""
TRENDING = "query { trendingItems(limit: 5) { score item { id } } }"

# Two clear topics, so content neighbours are unambiguous.
CATALOGUE = [
    ("Red running shoe", "shoes", "light trail running shoe"),
    ("Blue running shoe", "shoes", "road running shoe with cushioning"),
    ("Green running shoe", "shoes", "running shoe for wet trails"),
    ("Garden hose", "garden", "long garden hose with spray nozzle"),
    ("Garden rake", "garden", "steel garden rake for leaves"),
    ("Garden shovel", "garden", "sturdy garden shovel"),
    ("Running socks", "shoes", "socks for running"),
    ("Watering can", "garden", "garden watering can"),
]


class DownStore(EdgeVectorStore):
    """A vector store that is unreachable for every call."""

    async def _shard(self, collection: str) -> Any:
        raise Unavailable("vector store down")

    async def ensure_collection(self, name: str, dim: int, distance: Any = "cosine") -> None:
        raise Unavailable("vector store down")


@asynccontextmanager
async def single_process_api(
    tmp_path: Path, vectors: VectorSimilar | None = None, **overrides: Any
) -> AsyncIterator[tuple[Api, InProcessService]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/api.db"
    settings = make_settings(tmp_path, database_url=url, **overrides)
    database = Database(url)
    cache = create_cache(settings)
    recommender = InProcessService(
        settings,
        ["popularity"],
        options=ServingOptions(version_ttl_s=0.0),
        vectors=vectors,
        database=database,
        cache=cache,
    )
    app = create_app(recommender=recommender, settings=settings, database=database, cache=cache)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Api(client, app, database, cache, recommender, settings), recommender  # type: ignore[arg-type]
    finally:
        await cache.close()
        await database.dispose()


async def _catalogue(api: Api, token: str) -> list[str]:
    ids = []
    for title, category, description in CATALOGUE:
        variables = {"input": {"title": title, "category": category, "description": description}}
        ids.append((await api.ok(CREATE_ITEM, variables, token))["createItem"]["id"])
    return ids


async def _interact(api: Api, token: str, item_ids: list[str]) -> None:
    for item_id in item_ids:
        await api.ok(RECORD, {"input": {"itemId": item_id, "interactionType": "view"}}, token)


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["item"]["id"] for entry in entries]


async def test_the_seed_flow_answers_without_a_trained_model(tmp_path: Path) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _catalogue(api, token)
        await _interact(api, token, ids[:3])  # three running shoes

        result = (await api.ok(RECOMMEND, {"options": {"numRecommendations": 4}}, token))[
            "recommendations"
        ]
        assert result["totalCount"] >= 1
        recommended = _ids(result["items"])
        assert not set(recommended) & set(ids[:3])  # the history is never recommended
        used = result["explanation"]["enginesUsed"]
        assert set(used) == {"cold:content", "cold:popular-db"}, used
        assert result["explanation"]["modelVersion"] is None
        # The content neighbour of three running shoes is the running socks.
        assert recommended[0] == ids[6], recommended

        similar = _ids((await api.ok(SIMILAR, {"id": ids[3]}, token))["similarItems"])
        assert similar and set(similar[:2]) <= {ids[4], ids[5], ids[7]}, similar
        trending = _ids((await api.ok(TRENDING, None, token))["trendingItems"])
        assert set(trending[:3]) == set(ids[:3]), trending  # the interacted ones lead


async def test_a_cold_tenant_with_no_interactions_gets_the_newest_items(tmp_path: Path) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _catalogue(api, token)
        result = (await api.ok(RECOMMEND, {"options": {"numRecommendations": 3}}, token))[
            "recommendations"
        ]
        assert _ids(result["items"]) == ids[::-1][:3]
        assert result["explanation"]["enginesUsed"] == ["cold:popular-db"]


async def test_item_writes_place_the_item_among_its_neighbours_at_once(tmp_path: Path) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _catalogue(api, token)
        variables = {"input": {"title": "Garden hose reel", "category": "garden"}}
        new = (await api.ok(CREATE_ITEM, variables, token))["createItem"]["id"]
        assert new in _ids((await api.ok(SIMILAR, {"id": ids[3]}, token))["similarItems"])
        assert ids[3] in _ids((await api.ok(SIMILAR, {"id": new}, token))["similarItems"])

        # Updated to another topic: its vector moves with it.
        changed = {"title": "Trail running shoe", "category": "shoes"}
        await api.ok(UPDATE_ITEM, {"id": new, "input": changed}, token)
        assert new not in _ids((await api.ok(SIMILAR, {"id": ids[3]}, token))["similarItems"])
        assert new in _ids((await api.ok(SIMILAR, {"id": ids[0]}, token))["similarItems"])

        await api.ok(DELETE_ITEM, {"id": new}, token)
        assert new not in _ids((await api.ok(SIMILAR, {"id": ids[0]}, token))["similarItems"])

        items = [{"title": "Hose nozzle", "category": "garden", "externalId": "nozzle"}]
        imported = (await api.ok(IMPORT, {"items": items}, token))["importItems"]["itemIds"]
        assert imported[0] in _ids((await api.ok(SIMILAR, {"id": ids[3]}, token))["similarItems"])


TRAIN = """mutation { trainModel(algorithms: ["popularity"]) { status } }"""


async def _trained_tenant(api: Api, token: str) -> list[str]:
    """A catalogue, some interactions, and a training run (the in-process one, to its end)."""
    ids = await _catalogue(api, token)
    await _interact(api, token, ids[:2])
    assert (await api.ok(TRAIN, None, token))["trainModel"]["status"] == "succeeded"
    return ids


async def test_exploration_reserves_a_slot_for_items_newer_than_the_training(
    tmp_path: Path,
) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _trained_tenant(api, token)
        # Only trained items: the trained engine answers alone, nothing is explored.
        result = (await api.ok(RECOMMEND, {"options": {"numRecommendations": 4}}, token))[
            "recommendations"
        ]
        assert result["explanation"]["enginesUsed"] == ["popularity"]
        before = _ids(result["items"])

        variables = {"input": {"title": "Yellow running shoe", "category": "shoes"}}
        new = (await api.ok(CREATE_ITEM, variables, token))["createItem"]["id"]
        result = (await api.ok(RECOMMEND, {"options": {"numRecommendations": 4}}, token))[
            "recommendations"
        ]
        assert result["explanation"]["enginesUsed"] == ["popularity", EXPLORE]
        # One slot of four (share 0.05): the trained list keeps its first three.
        assert _ids(result["items"]) == [*before[:3], new]
        # The trained engine knows nothing similar to the new item; the content vectors do,
        # and a trained item's similar list explores it too.
        assert ids[0] in _ids((await api.ok(SIMILAR, {"id": new}, token))["similarItems"])
        assert new in _ids((await api.ok(SIMILAR, {"id": ids[0]}, token))["similarItems"])

        # The next training takes the item in: exploration stops.
        assert (await api.ok(TRAIN, None, token))["trainModel"]["status"] == "succeeded"
        result = (await api.ok(RECOMMEND, {"options": {"numRecommendations": 4}}, token))[
            "recommendations"
        ]
        assert result["explanation"]["enginesUsed"] == ["popularity"]


async def test_exploration_share_zero_turns_it_off(tmp_path: Path) -> None:
    async with single_process_api(tmp_path, exploration_share=0.0) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        await _trained_tenant(api, token)
        variables = {"input": {"title": "Yellow running shoe", "category": "shoes"}}
        new = (await api.ok(CREATE_ITEM, variables, token))["createItem"]["id"]
        result = (await api.ok(RECOMMEND, {"options": {"numRecommendations": 4}}, token))[
            "recommendations"
        ]
        assert result["explanation"]["enginesUsed"] == ["popularity"]
        assert new not in _ids(result["items"])


async def _tenant_of(api: Api, domain: str) -> uuid.UUID:
    async with api.database.session() as session:
        return (await repo.get_tenant_by_domain(session=session, domain=domain)).id


async def test_a_vector_store_outage_keeps_item_writes_and_cold_lists_working(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    down = VectorSimilar(settings, DownStore(tmp_path / "down"))
    async with single_process_api(tmp_path, down) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _catalogue(api, token)  # committed and answered although no vector is kept
        await _interact(api, token, ids[:3])
        result = (await api.ok(RECOMMEND, {"options": {"numRecommendations": 3}}, token))[
            "recommendations"
        ]
        assert result["explanation"]["enginesUsed"] == ["cold:popular-db"]
        assert result["totalCount"] == 3
        assert (await api.ok(DELETE_ITEM, {"id": ids[7]}, token))["deleteItem"] is True
        assert (await api.ok(SIMILAR, {"id": ids[0]}, token))["similarItems"] == []


def test_exploration_slots() -> None:
    assert exploration_slots(10, 0.05) == 1
    assert exploration_slots(10, 0.0) == 0
    assert exploration_slots(20, 0.1) == 2
    assert exploration_slots(1, 0.5) == 0


def test_hashed_vectors_need_no_fitting() -> None:
    items = [ItemInfo("a", "red shoe", category="shoes"), ItemInfo("b", "garden hose")]
    alone = hashed_vectors(items[:1])
    together = hashed_vectors(items)
    assert np.allclose(alone[0], together[0])  # an item's vector never depends on the others
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert not hashed_vectors([ItemInfo("blank")]).any()


async def test_the_embedded_store_is_released_when_the_app_stops(tmp_path: Path) -> None:
    """The folder may be opened by one holder at a time: the next process to serve or train on
    this data dir (``recserve serve`` after a benchmark, say) must be able to open it."""
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        await _catalogue(api, token)  # the item writes opened the store
        folder = api.settings.qdrant_path
    store = EdgeVectorStore(folder)
    try:
        assert await store.count("items_text", str(uuid.uuid4())) == 0  # opens the shard
    finally:
        await store.close()
