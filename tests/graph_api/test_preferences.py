"""User preferences: set with updatePreferences, shown on User, and used by recommendations
(favourite categories start a cold user's list; excluded categories never appear).

Where preferences change what is recommended, the app is the single-process one with the real
recommendation step (``test_cold_start.single_process_api``), untrained and trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.graph_api.conftest import Api
from tests.graph_api.test_cold_start import (
    CATALOGUE,
    RECOMMEND,
    _catalogue,
    _ids,
    _interact,
    _trained_tenant,
    single_process_api,
)

UPDATE = """
mutation($input: PreferencesInput!) {
  updatePreferences(input: $input) {
    id preferences { favoriteCategories excludedCategories data }
  }
}"""
MINE = "{ me { preferences { favoriteCategories excludedCategories data } } }"
ITEM_TENANT = "query($id: UUID!) { item(id: $id) { tenant { id name domain } } }"
CATEGORY_OF = {title: category for title, category, _ in CATALOGUE}


def _code(payload: dict[str, Any]) -> str:
    return payload["errors"][0]["extensions"]["code"]


async def _recommended(api: Api, token: str, k: int = 8, **options: Any) -> list[str]:
    variables = {"options": {"numRecommendations": k, **options}}
    return _ids((await api.ok(RECOMMEND, variables, token))["recommendations"]["items"])


def _categories(ids: list[str], catalogue: list[str]) -> list[str]:
    return [CATALOGUE[catalogue.index(item)][1] for item in ids]


async def test_preferences_are_set_partly_and_read_back(api: Api) -> None:
    token, _ = await api.register("pref@p.example", "p.example")
    assert (await api.ok(MINE, token=token))["me"]["preferences"] == {
        "favoriteCategories": [],
        "excludedCategories": [],
        "data": {},
    }
    first = {"favoriteCategories": ["books", "film", "books"], "data": {"theme": {"dark": True}}}
    shown = (await api.ok(UPDATE, {"input": first}, token))["updatePreferences"]["preferences"]
    assert shown == {
        "favoriteCategories": ["books", "film"],  # repeats kept once
        "excludedCategories": [],
        "data": {"theme": {"dark": True}},
    }
    # Fields left out keep their value; an empty list clears one.
    await api.ok(UPDATE, {"input": {"excludedCategories": ["horror"]}}, token)
    await api.ok(UPDATE, {"input": {"favoriteCategories": []}}, token)
    assert (await api.ok(MINE, token=token))["me"]["preferences"] == {
        "favoriteCategories": [],
        "excludedCategories": ["horror"],
        "data": {"theme": {"dark": True}},
    }


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    "changes",
    [
        {"favoriteCategories": ["a"], "excludedCategories": ["a"]},
        {"favoriteCategories": [f"c{i}" for i in range(51)]},
        {"excludedCategories": ["x" * 101]},
        {"excludedCategories": [" "]},
        {"data": [1, 2]},
        {"data": _nested(17)},
        {"data": {"blob": "x" * 17_000}},
    ],
)
async def test_bad_preferences_are_refused_and_nothing_changes(
    api: Api, changes: dict[str, Any]
) -> None:
    token, _ = await api.register("pref@p.example", "p.example")
    await api.ok(UPDATE, {"input": {"excludedCategories": ["b"], "data": {"k": 1}}}, token)
    before = await api.ok(MINE, token=token)
    payload = await api.gql(UPDATE, {"input": changes}, token)
    assert _code(payload) == "BAD_USER_INPUT", payload
    assert await api.ok(MINE, token=token) == before


async def test_preferences_are_the_users_own(api: Api) -> None:
    admin, _ = await api.register("boss@p.example", "p.example")
    token, user_id = await api.register("pref@p.example", "p.example")
    other, _ = await api.register("nosy@p.example", "p.example")
    await api.ok(UPDATE, {"input": {"favoriteCategories": ["tea"]}}, token)
    query = "query($id: UUID!) { user(id: $id) { preferences { favoriteCategories } } }"
    shown = await api.ok(query, {"id": user_id}, admin)
    assert shown["user"]["preferences"]["favoriteCategories"] == ["tea"]
    assert _code(await api.gql(query, {"id": user_id}, other)) == "FORBIDDEN"
    assert (await api.ok(MINE, token=other))["me"]["preferences"]["favoriteCategories"] == []


async def test_item_tenant_is_the_callers_tenant(api: Api) -> None:
    token, _ = await api.register("shop@t.example", "t.example")
    created = await api.ok('mutation { createItem(input: {title: "Kettle"}) { id } }', token=token)
    item = created["createItem"]["id"]
    tenant = (await api.ok(ITEM_TENANT, {"id": item}, token))["item"]["tenant"]
    assert tenant["domain"] == "t.example"
    me = await api.ok("{ me { tenant { id } } }", token=token)
    assert tenant["id"] == me["me"]["tenant"]["id"]
    stranger, _ = await api.register("shop@u.example", "u.example")
    assert _code(await api.gql(ITEM_TENANT, {"id": item}, stranger)) == "NOT_FOUND"


async def test_a_cold_user_starts_from_their_favourite_categories(tmp_path: Path) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _catalogue(api, token)
        # No history: the newest items, garden and shoes mixed.
        assert _categories(await _recommended(api, token, 4), ids) != ["shoes"] * 4
        await api.ok(UPDATE, {"input": {"favoriteCategories": ["shoes"]}}, token)
        listed = _categories(await _recommended(api, token), ids)
        assert listed == ["shoes"] * 4 + ["garden"] * 4  # the favourites first, then the rest


async def test_a_trained_tenants_cold_user_starts_from_their_favourites(tmp_path: Path) -> None:
    async with single_process_api(tmp_path) as (api, _):
        admin, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _trained_tenant(api, admin)  # popularity: the two running shoes lead
        token, _ = await api.register("bob@shop.example", "shop.example")
        assert _categories(await _recommended(api, token, 2), ids) == ["shoes", "shoes"]
        await api.ok(UPDATE, {"input": {"favoriteCategories": ["garden"]}}, token)
        listed = _categories(await _recommended(api, token), ids)
        assert listed[:4] == ["garden"] * 4 and listed.count("garden") == 4


@pytest.mark.parametrize(
    "options",
    [{}, {"strategy": "switching"}, {"algorithm": "popularity"}, {"diversify": True}],
)
async def test_excluded_categories_never_appear_trained(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _trained_tenant(api, token)
        assert "shoes" in _categories(await _recommended(api, token, **options), ids)
        await api.ok(UPDATE, {"input": {"excludedCategories": ["shoes"]}}, token)
        # Filtered by the engines, not after them: the list is still full.
        assert _categories(await _recommended(api, token, 4, **options), ids) == ["garden"] * 4


async def test_excluded_categories_never_appear_cold(tmp_path: Path) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _catalogue(api, token)
        await _interact(api, token, ids[3:5])  # garden history: content and popular sources
        assert "garden" in _categories(await _recommended(api, token), ids)
        await api.ok(UPDATE, {"input": {"excludedCategories": ["garden"]}}, token)
        # Filtered by the cold sources, not after them: the list is still full.
        assert _categories(await _recommended(api, token, 4), ids) == ["shoes"] * 4
        # Asking for an excluded category explicitly still gets none of it.
        only = await _recommended(api, token, filters={"categories": ["garden", "shoes"]})
        assert set(_categories(only, ids)) == {"shoes"}


async def test_a_preferences_change_retires_cached_lists_at_once(tmp_path: Path) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _catalogue(api, token)
        variables = {"options": {"numRecommendations": 8}}
        await api.ok(RECOMMEND, variables, token)
        again = (await api.ok(RECOMMEND, variables, token))["recommendations"]
        assert again["explanation"]["cached"] is True
        await api.ok(UPDATE, {"input": {"excludedCategories": ["shoes"]}}, token)
        fresh = (await api.ok(RECOMMEND, variables, token))["recommendations"]
        assert fresh["explanation"]["cached"] is False
        assert set(_categories(_ids(fresh["items"]), ids)) == {"garden"}


async def test_an_item_moved_into_an_excluded_category_since_training_is_left_out(
    tmp_path: Path,
) -> None:
    async with single_process_api(tmp_path) as (api, _):
        token, _ = await api.register("ada@shop.example", "shop.example")
        ids = await _trained_tenant(api, token)
        await api.ok(UPDATE, {"input": {"excludedCategories": ["garden"]}}, token)
        moved = ids[2]  # a running shoe the model was trained to know as "shoes"
        assert moved in await _recommended(api, token)
        update = 'mutation($id: UUID!) { updateItem(id: $id, input: {category: "garden"}) { id } }'
        await api.ok(update, {"id": moved}, token)
        assert moved not in await _recommended(api, token)
