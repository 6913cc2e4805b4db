"""The end-to-end flow a client goes through, on SQLite and (when available) on PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from storage.db import create_database, drop_database
from tests.graph_api.conftest import Api, make_settings, running_api

CREATE_ITEM = """
mutation($input: ItemInput!) { createItem(input: $input) { id title category } }"""
RECORD = """
mutation($input: InteractionInput!) {
  recordInteraction(input: $input) { id interactionType item { id title } }
}"""
RECOMMEND = """
query($options: RecommendationOptions) {
  recommendations(options: $options) {
    algorithm generatedAt responseTimeMs totalCount
    explanation { strategy enginesUsed enginesFailed modelVersion cached }
    items { score reason engineScores item { id title averageRating } }
  }
}"""
SIMILAR = """
query($id: UUID!) { similarItems(itemId: $id, topK: 3) { score item { id title } } }"""


async def run_flow(api: Api) -> None:
    token, user_id = await api.register("ada@shop.example", "shop.example")
    item_ids = []
    for n in range(5):
        data = await api.ok(
            CREATE_ITEM,
            {"input": {"title": f"Book {n}", "category": "books" if n % 2 else "films"}},
            token,
        )
        item_ids.append(data["createItem"]["id"])
    for item_id, kind in zip(item_ids[:3], ["view", "click", "purchase"], strict=True):
        data = await api.ok(RECORD, {"input": {"itemId": item_id, "interactionType": kind}}, token)
        assert data["recordInteraction"]["item"]["id"] == item_id

    data = await api.ok(RECOMMEND, {"options": {"numRecommendations": 5, "explain": True}}, token)
    result = data["recommendations"]
    assert result["totalCount"] == len(result["items"]) > 0
    assert all(entry["score"] > 0 for entry in result["items"])
    assert result["responseTimeMs"] > 0
    assert result["explanation"]["enginesUsed"] == ["popularity"]
    # Items the user already interacted with are passed as history, hence not recommended.
    recommended = {entry["item"]["id"] for entry in result["items"]}
    assert recommended == set(item_ids[3:])
    # "because you interacted with X" names the item by its title, not its id.
    reasons = [entry["reason"] for entry in result["items"]]
    assert all("because you interacted with Book " in r for r in reasons), reasons
    assert not any(item_id in r for r in reasons for item_id in item_ids), reasons
    assert api.recommender.requests[-1].user_id == user_id

    data = await api.ok(SIMILAR, {"id": item_ids[0]}, token)
    similar = data["similarItems"]
    assert similar and all(entry["score"] > 0 for entry in similar)
    assert item_ids[0] not in {entry["item"]["id"] for entry in similar}


async def test_full_flow_on_sqlite(api: Api) -> None:
    await run_flow(api)


@pytest.mark.services
async def test_full_flow_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    url = postgres_url.rsplit("/", 1)[0] + f"/recserve_gql_{uuid.uuid4().hex[:10]}"
    await create_database(url)
    try:
        async with running_api(url, make_settings(tmp_path)) as api:
            await run_flow(api)
    finally:
        await drop_database(url)


EXPLAINED = """
query($options: RecommendationOptions) {
  recommendations(options: $options) {
    items {
      score item { id }
      explanation {
        itemId strategy contributions { engine share score } becauseOf { id title }
      }
    }
    explanation { strategy cached items { itemId } }
  }
}"""


async def test_each_item_is_explained_by_engines_history_and_strategy(api: Api) -> None:
    token, _ = await api.register("eve@shop.example", "shop.example")
    ids = [
        (await api.ok(CREATE_ITEM, {"input": {"title": f"Book {n}"}}, token))["createItem"]["id"]
        for n in range(4)
    ]
    explain = {"options": {"numRecommendations": 3, "explain": True}}
    cold = (await api.ok(EXPLAINED, explain, token))["recommendations"]
    assert cold["explanation"]["strategy"] == "COLD_START"
    assert all(entry["explanation"]["becauseOf"] == [] for entry in cold["items"])

    for item_id in ids[:2]:
        await api.ok(RECORD, {"input": {"itemId": item_id, "interactionType": "view"}}, token)
    for cached in (False, True):  # the cached payload carries the explanations whole
        result = (await api.ok(EXPLAINED, explain, token))["recommendations"]
        assert result["explanation"]["cached"] is cached
        assert result["explanation"]["strategy"] == "WEIGHTED"
        listed = [entry["item"]["id"] for entry in result["items"]]
        assert [e["itemId"] for e in result["explanation"]["items"]] == listed
        for entry in result["items"]:
            why = entry["explanation"]
            assert why["itemId"] == entry["item"]["id"] and why["strategy"] == "WEIGHTED"
            share = {"engine": "popularity", "share": 1.0, "score": entry["score"]}
            assert why["contributions"] == [share]
            # the fake names the newest history item, as the core names the most similar
            assert why["becauseOf"] == [{"id": ids[1], "title": "Book 1"}]

    plain = await api.ok(EXPLAINED, {"options": {"numRecommendations": 3}}, token)
    entries = plain["recommendations"]["items"]
    assert entries and all(e["explanation"]["becauseOf"] == [] for e in entries)
    assert all(e["explanation"]["contributions"] for e in entries)


async def test_lists_are_diversified_unless_asked_not_to(api: Api) -> None:
    token, _ = await api.register("div@shop.example", "shop.example")
    await api.ok(CREATE_ITEM, {"input": {"title": "Lamp"}}, token)
    await api.ok(RECOMMEND, {"options": {"numRecommendations": 3}}, token)
    assert api.recommender.requests[-1].diversify is True
    await api.ok(RECOMMEND, {"options": {"numRecommendations": 3, "diversify": False}}, token)
    assert api.recommender.requests[-1].diversify is False


async def test_interactions_are_committed_and_idempotent(api: Api) -> None:
    token, _ = await api.register("bob@shop.example", "shop.example")
    item = (await api.ok(CREATE_ITEM, {"input": {"title": "Lamp"}}, token))["createItem"]
    payload = {"itemId": item["id"], "interactionType": "like", "idempotencyKey": "k-1"}
    first = await api.ok(RECORD, {"input": payload}, token)
    again = await api.ok(RECORD, {"input": payload}, token)
    assert first["recordInteraction"]["id"] == again["recordInteraction"]["id"]
    data = await api.ok("{ me { interactions { interactionType } } }", token=token)
    assert data["me"]["interactions"] == [{"interactionType": "like"}]


async def test_recommendations_are_cached_and_invalidated_by_interactions(api: Api) -> None:
    token, _ = await api.register("cy@shop.example", "shop.example")
    ids = [
        (await api.ok(CREATE_ITEM, {"input": {"title": f"T{n}"}}, token))["createItem"]["id"]
        for n in range(3)
    ]
    options = {"options": {"numRecommendations": 3}}
    await api.ok(RECOMMEND, options, token)
    cached = await api.ok(RECOMMEND, options, token)
    assert cached["recommendations"]["explanation"]["cached"] is True
    assert len(api.recommender.requests) == 1
    await api.ok(RECORD, {"input": {"itemId": ids[0], "interactionType": "view"}}, token)
    fresh = await api.ok(RECOMMEND, options, token)
    assert fresh["recommendations"]["explanation"]["cached"] is False
    assert ids[0] not in {e["item"]["id"] for e in fresh["recommendations"]["items"]}


async def test_min_rating_filters_on_average_rating(api: Api) -> None:
    token, _ = await api.register("di@shop.example", "shop.example")
    ids = [
        (await api.ok(CREATE_ITEM, {"input": {"title": f"R{n}"}}, token))["createItem"]["id"]
        for n in range(4)
    ]
    # Another shopper rates: items one rates well join one's own history, so are not offered.
    rater, _ = await api.register("ed@shop.example", "shop.example")
    for item_id, stars in zip(ids[:3], [4.5, 2.0, 5.0], strict=True):
        await api.ok(
            "mutation($i: UUID!, $r: Float!) { rateItem(itemId: $i, rating: $r) { rating } }",
            {"i": item_id, "r": stars},
            rater,
        )
    options = {"numRecommendations": 5, "filters": {"minRating": 4.0}}
    data = await api.ok(RECOMMEND, {"options": options}, token)
    got = {e["item"]["id"]: e["item"]["averageRating"] for e in data["recommendations"]["items"]}
    assert got == {ids[0]: 4.5, ids[2]: 5.0}
    assert api.recommender.requests[-1].k > 5  # over-fetched to survive the filter


async def test_admin_operations_and_bulk_import(api: Api) -> None:
    token, _ = await api.register("eve@shop.example", "shop.example")
    imported = await api.ok(
        "mutation($items: [ItemInput!]!) { importItems(items: $items) { imported itemIds } }",
        {
            "items": [
                {"externalId": f"sku-{n}", "title": f"P{n}", "category": "c"} for n in range(20)
            ]
        },
        token,
    )
    assert imported["importItems"]["imported"] == 20
    first = imported["importItems"]["itemIds"][0]
    await api.ok(
        'mutation($id: UUID!) { updateItem(id: $id, input: {title: "Renamed"}) { title } }',
        {"id": first},
        token,
    )
    listed = await api.ok('{ items(search: "renamed", limit: 5) { id title } }', token=token)
    assert listed["items"] == [{"id": first, "title": "Renamed"}]
    await api.ok("mutation($id: UUID!) { deleteItem(id: $id) }", {"id": first}, token)
    gone = await api.gql("query($id: UUID!) { item(id: $id) { id } }", {"id": first}, token)
    assert gone["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    job = await api.ok('mutation { trainModel(algorithms: ["als"]) { jobId status } }', token=token)
    assert job["trainModel"]["status"] == "queued"
    assert api.recommender.trained[-1][1] == ["als"]


async def test_login_and_refresh(api: Api) -> None:
    await api.register("fay@shop.example", "shop.example")
    login = "mutation($i: LoginInput!) { login(input: $i) { accessToken refreshToken } }"
    credentials = {
        "email": "FAY@shop.example",
        "password": "correct horse battery",
        "tenantDomain": "shop.example",
    }
    data = await api.ok(login, {"i": credentials})
    refresh = data["login"]["refreshToken"]
    renewed = await api.ok(
        "mutation($t: String!) { refreshToken(token: $t) { accessToken user { email } } }",
        {"t": refresh},
    )
    me = await api.ok(
        "{ me { email tenant { domain } } }", token=renewed["refreshToken"]["accessToken"]
    )
    assert me["me"] == {"email": "fay@shop.example", "tenant": {"domain": "shop.example"}}
    wrong = await api.gql(login, {"i": credentials | {"password": "wrong password!"}})
    assert wrong["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert wrong["data"] is None


async def test_subscription_pushes_committed_interactions(api: Api) -> None:
    from graph_api.context import RequestContext
    from graph_api.schema import build_schema

    token, user_id = await api.register("sub@shop.example", "shop.example")
    item = (await api.ok(CREATE_ITEM, {"input": {"title": "Live"}}, token))["createItem"]["id"]
    services = api.app.state.services
    context = RequestContext(services, f"Bearer {token}")
    stream = await build_schema(services.metrics).subscribe(
        "subscription { tenantEvents }", context_value=context
    )

    async def first_event() -> dict:
        try:  # closed by the task that iterated it: extensions reset context variables
            async for result in stream:
                assert result.errors is None, result.errors
                return result.data["tenantEvents"]
        finally:
            await stream.aclose()
        raise AssertionError("subscription ended")

    reader = asyncio.create_task(first_event())
    await asyncio.sleep(0.05)  # let the subscription start listening
    await api.ok(RECORD, {"input": {"itemId": item, "interactionType": "click"}}, token)
    event = await asyncio.wait_for(reader, timeout=5)
    assert event.items() >= {"kind": "interaction", "user_id": user_id, "item_id": item}.items()
    assert event["interaction_type"] == "click" and event["value"] == 1.0


async def test_subscription_refuses_anonymous_clients(api: Api) -> None:
    from graph_api.context import RequestContext
    from graph_api.schema import build_schema

    services = api.app.state.services
    stream = await build_schema(services.metrics).subscribe(
        "subscription { tenantEvents }", context_value=RequestContext(services, None)
    )
    result = await anext(stream)
    assert result.errors and result.errors[0].extensions["code"] == "UNAUTHENTICATED"


async def test_algorithm_names_aliases_and_strategy_are_checked_at_the_edge(api: Api) -> None:
    token, _ = await api.register("vocab@flow.example", "flow.example")
    ask = lambda **options: api.gql(RECOMMEND, {"options": options}, token)  # noqa: E731
    alias = await ask(algorithm="matrix_factorization", numRecommendations=3)
    assert "errors" not in alias, alias
    assert api.recommender.requests[-1].algorithm == "matrix_factorization"
    switching = await ask(strategy="switching")
    assert "errors" not in switching and api.recommender.requests[-1].strategy == "switching"
    for bad, field in (
        (dict(algorithm="deep_magic"), "algorithm"),
        (dict(strategy="x"), "strategy"),
    ):
        refused = await ask(**bad)
        error = refused["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT", refused
        assert field in error["message"].lower()
    unknown = (await ask(algorithm="deep_magic"))["errors"][0]["message"]
    assert "collaborative" in unknown and "content_based" in unknown  # the names it does know
