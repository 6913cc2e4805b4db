"""Oversized, non-finite and too-deep input is BAD_USER_INPUT (or a 4xx), stores nothing, and
never answers INTERNAL or 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph_api import bounds
from graph_api.http import BodySizeLimit
from tests.graph_api.conftest import Api, make_settings, running_api

CREATE = "mutation($input: ItemInput!) { createItem(input: $input) { id } }"
RATE = "mutation($i: UUID!, $r: Float!) { rateItem(itemId: $i, rating: $r) { rating } }"
RECOMMEND = "query($o: RecommendationOptions) { recommendations(options: $o) { totalCount } }"
ITEMS = "query($n: Int!) { items(limit: $n) { id } }"
STATE = "{ me { ratings { rating } } items(limit: 100) { id title metadata } }"


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.fixture
async def admin(api: Api) -> AsyncIterator[dict[str, Any]]:
    token, _ = await api.register("bounds@a.example", "a.example")
    created = await api.ok(CREATE, {"input": {"title": "Kept", "externalId": "kept"}}, token)
    yield {"token": token, "item": created["createItem"]["id"]}


async def _raw(api: Api, text: str, token: str, **headers: str) -> httpx.Response:
    sent = {"content-type": "application/json", "authorization": f"Bearer {token}", **headers}
    return await api.client.post("/graphql", content=text.encode(), headers=sent)


def _code(payload: dict[str, Any]) -> str:
    return payload["errors"][0]["extensions"]["code"]


async def test_non_finite_numbers_are_refused_everywhere(api: Api, admin: dict[str, Any]) -> None:
    token, item = admin["token"], admin["item"]
    before = await api.ok(STATE, token=token)
    variables_text = [
        (ITEMS, '{"n": Infinity}'),
        (RATE, '{"i": "ITEM", "r": NaN}'),
        (RATE, '{"i": "ITEM", "r": 1e999}'),
        (CREATE, '{"input": {"title": "n", "metadata": {"a": [1, {"b": NaN}]}}}'),
        (RECOMMEND, '{"o": {"weights": {"als": -Infinity}}}'),
    ]
    for query, variables in variables_text:
        variables = variables.replace("ITEM", item)
        body = '{"query": ' + json.dumps(query) + ', "variables": ' + variables + "}"
        response = await _raw(api, body, token)
        assert response.status_code == 400, (variables, response.text)
        assert _code(response.json()) == "BAD_USER_INPUT"
    literals = [
        'mutation { rateItem(itemId: "ITEM", rating: 1e999) { rating } }',
        'mutation { createItem(input: {title: "l", metadata: {a: {b: [1e999]}}}) { id } }',
        'mutation { recordInteraction(input: {itemId: "ITEM", interactionType: "view",'
        " interactionValue: -1e999}) { id } }",
        "{ recommendations(options: {weights: {als: 1e999}}) { totalCount } }",
    ]
    for query in literals:
        payload = await api.gql(query.replace("ITEM", item), token=token)
        assert _code(payload) == "BAD_USER_INPUT", (query, payload)
    # A finite number that is simply wrong for its type is the client's fault as well.
    payload = await api.gql(ITEMS, {"n": 2.5}, token)
    assert _code(payload) == "BAD_USER_INPUT"
    payload = await api.gql("query($i: UUID!) { item(id: $i) { id } }", {"i": "nope"}, token)
    assert _code(payload) == "BAD_USER_INPUT"
    assert await api.ok(STATE, token=token) == before


async def test_oversized_inputs_are_refused(api: Api, admin: dict[str, Any]) -> None:
    token = admin["token"]
    before = await api.ok(STATE, token=token)
    too_big = [
        (CREATE, {"input": {"title": "t" * (bounds.TITLE_CHARS + 1)}}),
        (CREATE, {"input": {"title": "d", "description": "x" * 100_000}}),
        (CREATE, {"input": {"title": "m", "metadata": {"blob": "x" * 100_000}}}),
        (CREATE, {"input": {"title": "g", "tags": [f"t{i}" for i in range(2000)]}}),
        (CREATE, {"input": {"title": "c", "category": "c" * (bounds.CATEGORY_CHARS + 1)}}),
        (CREATE, {"input": {"title": "e", "externalId": "e" * 300}}),
        (CREATE, {"input": {"title": "deep", "metadata": nested(300)}}),
        (CREATE, {"input": {"title": "deep", "metadata": nested(bounds.JSON_DEPTH + 1)}}),
        (RECOMMEND, {"o": {"filters": {"excludeItemIds": [admin["item"]] * 5000}}}),
        (RECOMMEND, {"o": {"filters": {"categories": [f"c{i}" for i in range(2000)]}}}),
        (RECOMMEND, {"o": {"algorithm": "a" * 10_000}}),
        ("query($s: String) { items(search: $s) { id } }", {"s": "s" * 10_000}),
        ("mutation($a: [String!]) { trainModel(algorithms: $a) { jobId } }", {"a": ["als"] * 99}),
    ]
    for query, variables in too_big:
        payload = await api.gql(query, variables, token)
        assert _code(payload) == "BAD_USER_INPUT", (query, str(variables)[:80], payload)
    assert await api.ok(STATE, token=token) == before
    assert api.recommender.trained == []


async def test_inputs_at_the_bounds_are_stored(api: Api, admin: dict[str, Any]) -> None:
    item = {
        "title": "t" * bounds.TITLE_CHARS,
        "tags": ["x" * bounds.TAG_CHARS] * bounds.TAGS,
        "metadata": nested(bounds.JSON_DEPTH),
    }
    created = await api.ok(CREATE, {"input": item}, admin["token"])
    query = "query($i: UUID!) { item(id: $i) { title metadata } }"
    read = await api.ok(query, {"i": created["createItem"]["id"]}, admin["token"])
    assert read["item"] == {"title": item["title"], "metadata": item["metadata"]}


async def test_login_with_a_huge_password_is_refused_before_hashing(api: Api) -> None:
    login = "mutation($i: LoginInput!) { login(input: $i) { accessToken } }"
    variables = {"i": {"email": "a@b.example", "password": "p" * 100_000, "tenantDomain": "b"}}
    assert _code(await api.gql(login, variables)) == "BAD_USER_INPUT"


async def test_json_nested_beyond_the_parser_is_a_400_not_a_500(
    api: Api, admin: dict[str, Any]
) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    body = '{"query": "{ me { id } }", "variables": {"x": ' + deep + "}}"
    response = await _raw(api, body, admin["token"])
    assert response.status_code == 400 and _code(response.json()) == "BAD_USER_INPUT"


@pytest.fixture
async def small_api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path, max_body_bytes=4096)
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/small.db", settings) as running:
        yield running


async def test_request_bodies_over_the_cap_get_413(small_api: Api) -> None:
    big = json.dumps({"query": "{ me { id } }", "variables": {"pad": "x" * 5000}})
    response = await small_api.client.post(
        "/graphql", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert _code(response.json()) == "BAD_USER_INPUT"
    assert response.json()["errors"][0]["extensions"]["maxBodyBytes"] == 4096
    small = await small_api.client.post("/graphql", json={"query": "{ __typename }"})
    assert small.status_code == 200 and small.json()["data"] == {"__typename": "Query"}


async def test_the_cap_holds_for_chunked_bodies_without_content_length() -> None:
    reached: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        reached.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def chunks(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield b"x" * 1000

    transport = httpx.ASGITransport(app=BodySizeLimit(app, max_bytes=4096))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post("/graphql", content=chunks(10))
        assert "content-length" not in refused.request.headers
        assert refused.status_code == 413 and reached == []
        accepted = await client.post("/graphql", content=chunks(4))
        assert accepted.status_code == 200 and reached == [b"x" * 4000]
