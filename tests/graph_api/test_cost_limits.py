"""What an operation costs and who pays: nested engine fields, invalid requests, websockets,
subscriptions, client addresses behind proxies, and the bounded metrics labels."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.serving import serve_environment
from graph_api.clients import ClientAddresses
from graph_api.ratelimit import RateLimiter, TierLimits
from graph_api.request_metrics import MAX_NAMES_PER_TENANT, OTHER, MetricsRecorder
from tests.graph_api.conftest import Api, make_settings, running_api
from tests.graph_api.test_flow import CREATE_ITEM, RECORD
from tests.graph_api.ws_client import graphql_socket, live_server

NESTED_SIMILAR = """query($i: UUID!) {
  similarItems(itemId: $i, topK: 10) { item { similarItems(topK: 10) {
    item { similarItems(topK: 10) { score } } } } }
}"""
STATUS = "{ rateLimitStatus { used remaining } }"


def _limit(api: Api, per_user: int, per_tenant: int = 100_000, ip: int = 1_000) -> None:
    tiers = {"basic": TierLimits(per_user=per_user, per_tenant=per_tenant)}
    api.app.state.services.rate_limiter = RateLimiter(
        api.cache, window_seconds=60, tier_limits=tiers, ip_limit=ip
    )


async def _admin_with_item(api: Api) -> tuple[str, str]:
    domain = f"{uuid.uuid4().hex[:8]}.example"
    token, _ = await api.register(f"admin@{domain}", domain)
    item = (await api.ok(CREATE_ITEM, {"input": {"title": "Lamp"}}, token))["createItem"]["id"]
    return token, item


async def _used(api: Api, token: str) -> int:
    return int((await api.ok(STATUS, token=token))["rateLimitStatus"]["used"])


# --- 3. nested engine-backed fields are priced per parent; every list has a bounded limit --


async def test_nested_similar_items_are_priced_per_parent(api: Api) -> None:
    token, item = await _admin_with_item(api)
    _limit(api, per_user=10_000)
    before = await _used(api, token)
    await api.ok(NESTED_SIMILAR, {"i": item}, token)
    # 3 at the root, 3 x 10 one level down, 3 x 100 two levels down (it used to cost 3).
    assert await _used(api, token) == before + 1 + 3 + 30 + 300


async def test_a_nested_engine_field_beyond_the_budget_is_refused_unexecuted(api: Api) -> None:
    token, _item = await _admin_with_item(api)
    _limit(api, per_user=300)
    asked = len(api.recommender.requests)
    refused = await api.post("{ items(limit: 100) { similarItems { score } } }", token=token)
    assert refused.status_code == 429  # 1 + 100 x 3 > 300
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert len(api.recommender.requests) == asked


async def test_user_interactions_and_ratings_take_a_bounded_limit(api: Api) -> None:
    token, item = await _admin_with_item(api)
    for _ in range(25):
        await api.ok(RECORD, {"input": {"itemId": item, "interactionType": "view"}}, token)
    await api.ok(RECORD, {"input": {"itemId": item, "interactionType": "like"}}, token)
    data = await api.ok(
        """{ me { all: interactions { id } two: interactions(limit: 2) { interactionType }
          likes: interactions(type: "like", limit: 5) { id } ratings(limit: 1) { rating } } }""",
        token=token,
    )
    me = data["me"]
    assert len(me["all"]) == 20  # the default page, not the whole history
    assert [row["interactionType"] for row in me["two"]] == ["like", "view"]
    assert len(me["likes"]) == 1 and me["ratings"] == []
    for bad in ("interactions(limit: 0) { id }", "ratings(limit: 101) { rating }"):
        payload = await api.gql(f"{{ me {{ {bad} }} }}", token=token)
        assert payload["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# --- 4. invalid requests are charged; only server faults count against health -------------


async def test_invalid_requests_are_charged_the_base_price(api: Api) -> None:
    token, _ = await _admin_with_item(api)
    before = await _used(api, token)
    await api.gql("{ nope }", token=token)  # fails validation
    await api.gql("{ items(", token=token)  # does not parse
    spent = await _used(api, token)
    assert spent == before + 1 + 2
    _limit(api, per_user=spent + 3, ip=3)  # registering spent 1 of the address's 3
    codes = [(await api.post("{ nope }", token=token)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    anonymous = [(await api.post("{ nope }")).status_code for _ in range(3)]
    assert anonymous == [200, 200, 429]


# --- 5. X-Forwarded-For is believed from trusted proxies only -----------------------------


def test_forwarded_for_is_read_from_trusted_proxies_only() -> None:
    nobody = ClientAddresses()
    assert nobody.resolve("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    proxies = ClientAddresses(["10.0.0.0/8", "127.0.0.1"])
    assert proxies.resolve("10.1.2.3", ["198.51.100.1, 127.0.0.1"]) == "198.51.100.1"
    # The client's own prefix is not believed: the first hop our proxies did not add wins.
    assert proxies.resolve("10.1.2.3", ["6.6.6.6, 198.51.100.1"]) == "198.51.100.1"
    for garbage in ("{}", "{{", "", "a, {b}", "::zz"):
        assert proxies.resolve("10.1.2.3", [garbage]) == "10.1.2.3"
    assert proxies.resolve("203.0.113.9", ["198.51.100.1"]) == "203.0.113.9"
    assert proxies.resolve(None, ["198.51.100.1"]) == "unknown"


@pytest.fixture
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Api, httpx.AsyncClient, str]]:
    """The app behind uvicorn, started with the environment ``recserve serve`` gives Serve."""
    settings = make_settings(tmp_path, rate_limit_ip=3)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", serve_environment(settings)["FORWARDED_ALLOW_IPS"])
    async with (
        running_api(f"sqlite+aiosqlite:///{tmp_path}/s.db", settings) as api,
        live_server(api.app) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        yield api, http, address


async def test_a_forged_forwarded_for_gets_no_fresh_bucket_and_no_500(
    served: tuple[Api, httpx.AsyncClient, str],
) -> None:
    _api, http, _address = served
    codes = []
    for forged in ["1.1.1.1", "2.2.2.2", "{}", "{{", "3.3.3.3", "9.9.9.9"]:
        reply = await http.post(
            "/graphql", json={"query": "{ nope }"}, headers={"X-Forwarded-For": forged}
        )
        codes.append(reply.status_code)
    assert 500 not in codes
    assert codes == [200, 200, 200, 429, 429, 429]  # one bucket: the socket peer's


async def test_trusted_proxies_name_the_client(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limit_ip=2, trusted_proxies="127.0.0.1")
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/t.db", settings) as api:
        # httpx's ASGI transport connects from 127.0.0.1: a trusted proxy here.
        def post(forwarded: str) -> Any:
            return api.client.post(
                "/graphql", json={"query": "{ nope }"}, headers={"X-Forwarded-For": forwarded}
            )

        assert [(await post("198.51.100.7")).status_code for _ in range(3)] == [200, 200, 429]
        assert (await post("198.51.100.8")).status_code == 200  # another client
        assert (await post("{}")).status_code in (200, 429)  # garbage: the proxy's, no 500


# --- 6. operation names cannot grow the metrics without bound -----------------------------


async def test_operation_names_are_bounded(api: Api) -> None:
    token, _ = await _admin_with_item(api)
    long_name = "Q" * 3_000
    await api.gql(f"query {long_name} {{ rateLimitStatus {{ used }} }}", token=token)
    for n in range(MAX_NAMES_PER_TENANT + 5):
        await api.gql(f"query Name{n} {{ rateLimitStatus {{ used }} }}", token=token)
    operations = api.app.state.services.metrics.snapshot().operations
    assert not any(long_name in label for label in operations)
    assert len(operations) <= MAX_NAMES_PER_TENANT + 3  # + other, mutations, the admin's own
    assert operations[f"query:{OTHER}"] >= 5 + 1


def test_the_label_set_is_bounded_across_tenants() -> None:
    recorder = MetricsRecorder()
    recorder.names.total = 10
    labels = {recorder.names.label(f"t{n}", f"Op{n}") for n in range(50)}
    assert len(labels) == 11 and OTHER in labels
    assert recorder.names.label("t0", "Op0") == "Op0"  # admitted names stay


# --- 1 and 2. websockets: every operation pays; subscriptions capped and complexity-checked --


@pytest.fixture
async def ws(api: Api) -> AsyncIterator[str]:
    async with live_server(api.app) as address:
        yield f"ws://{address}/graphql"


async def test_every_operation_on_a_websocket_is_charged(api: Api, ws: str) -> None:
    token, _ = await _admin_with_item(api)
    spent = await _used(api, token)
    _limit(api, per_user=spent + 10)
    codes = []
    async with graphql_socket(ws, token) as socket:
        for _ in range(12):  # 25 used to cost one unit in all
            await socket.subscribe("{ rateLimitStatus { used } }")
            message = await socket.receive()
            payload = message["payload"]
            if "errors" in payload:
                codes.append(payload["errors"][0]["extensions"]["code"])
            else:
                codes.append(payload["data"]["rateLimitStatus"]["used"])
            assert (await socket.receive())["type"] == "complete"
    assert codes == [*range(spent + 1, spent + 11), "RATE_LIMITED", "RATE_LIMITED"]


async def test_open_subscriptions_are_capped_per_connection_and_user(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, max_subscriptions_per_connection=2, max_subscriptions_per_user=3
    )
    activity = "subscription { userActivity { kind } }"
    async with (
        running_api(f"sqlite+aiosqlite:///{tmp_path}/w.db", settings) as api,
        live_server(api.app) as address,
    ):
        url = f"ws://{address}/graphql"
        token, _ = await api.register("ada@w.example", "w.example")
        async with graphql_socket(url, token) as first, graphql_socket(url, token) as second:
            one = await first.subscribe(activity)
            await first.subscribe(activity)
            await first.subscribe(activity)  # a third on this connection
            refused = await first.receive()
            assert refused["payload"]["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert (await first.receive())["type"] == "complete"
            await second.subscribe(activity)  # the user's third
            await second.subscribe(activity)  # a fourth for the user
            refused = await second.receive()
            error = refused["payload"]["errors"][0]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert error["extensions"]["scope"] == "subscriptions"
            assert (await second.receive())["type"] == "complete"
            await first.complete(one)  # a slot comes free
            await asyncio.sleep(0.2)  # the server ends that stream
            await second.subscribe(activity)
            assert await second.nothing_within(0.5)  # accepted: nothing to say yet


async def test_subscriptions_pass_the_complexity_check(api: Api, ws: str) -> None:
    token, _ = await _admin_with_item(api)
    deep = """subscription { recommendationUpdates(numRecommendations: 100) {
      item { similarItems(topK: 100) { item { similarItems(topK: 100) { score } } } } } }"""
    query = (
        deep.replace("subscription", "query", 1)
        .replace(
            "recommendationUpdates(numRecommendations: 100)",
            "recommendations(options: {numRecommendations: 100}) { items",
        )
        .rstrip()
        + " }"
    )
    refused_query = await api.gql(query, token=token)
    assert refused_query["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    asked = len(api.recommender.requests)
    async with graphql_socket(ws, token) as socket:
        await socket.subscribe(deep)
        message = await socket.receive()
        error = message["payload"]["errors"][0]
        assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert error["extensions"]["complexity"] > error["extensions"]["maxComplexity"]
    assert len(api.recommender.requests) == asked  # never computed
