"""GraphQL-over-HTTP edge: bad requests are 4xx or GraphQL errors, never a 500 or a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from storage.errors import Unavailable
from tests.graph_api.conftest import Api, make_settings, running_api


async def test_malformed_json_is_400(api: Api) -> None:
    response = await api.client.post(
        "/graphql", content=b'{"query": "{ me { id } ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text


async def test_missing_query_is_400(api: Api) -> None:
    response = await api.client.post("/graphql", json={"variables": {}})
    assert response.status_code == 400


async def test_mutation_over_get_is_refused(api: Api) -> None:
    response = await api.client.get(
        "/graphql", params={"query": "mutation { trainModel { jobId } }"}
    )
    assert 400 <= response.status_code < 500


async def test_syntax_error_is_a_graphql_error(api: Api) -> None:
    payload = await api.gql("{ me { id ")
    assert payload["data"] is None
    assert payload["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Syntax Error" in payload["errors"][0]["message"]


async def test_unknown_field_and_bad_variable_are_graphql_errors(api: Api) -> None:
    unknown = await api.gql("{ nope }")
    assert "Cannot query field 'nope'" in unknown["errors"][0]["message"]
    bad_var = await api.gql("query($id: UUID!) { item(id: $id) { id } }", {"id": "not-a-uuid"})
    assert bad_var["data"] is None and bad_var["errors"]


DEEP = "{ me { " + "ratings { item { similarItems { item { " * 3 + "id" + " } } } }" * 3 + " } }"


async def test_query_depth_is_limited(api: Api) -> None:
    payload = await api.gql(DEEP)
    assert "exceeds maximum operation depth" in payload["errors"][0]["message"]


async def test_unexpected_resolver_error_is_masked(api: Api) -> None:
    token, _ = await api.register("mask@a.example", "a.example")
    api.recommender.fail_with = RuntimeError("password=hunter2 at /srv/secret.py line 7")
    response = await api.post("{ recommendations { totalCount } }", token=token)
    assert response.status_code == 200
    error = response.json()["errors"][0]
    # Only the code and the trace id (for the operator's tracing UI) reach the client.
    assert set(error["extensions"]) == {"code", "traceId"}
    assert error["extensions"]["code"] == "INTERNAL"
    assert len(error["extensions"]["traceId"]) == 32
    assert error["message"] == "Internal server error."
    assert "hunter2" not in response.text and "Traceback" not in response.text


async def test_unavailable_backend_is_unavailable_with_a_safe_message(api: Api) -> None:
    token, _ = await api.register("down@a.example", "a.example")
    api.recommender.fail_with = Unavailable("connect to 10.0.0.7:6379 refused")
    response = await api.post("{ recommendations { totalCount } }", token=token)
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert error["message"] == "Service temporarily unavailable, retry later."
    assert "10.0.0.7" not in response.text


async def test_health_reports_database_and_cache(api: Api) -> None:
    response = await api.client.get("/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["checks"] == {"database": "ok", "cache": "ok", "vector_store": "ok"}
    assert report["rules"] == {}
    assert (await api.client.get("/health/ready")).status_code == 200
    assert (await api.client.get("/health/live")).json() == {"status": "alive"}


async def test_health_is_degraded_when_the_cache_is_down(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/h.db", settings) as api:
        report = (await api.client.get("/health")).json()
        assert report["status"] == "degraded"
        assert report["checks"] == {"database": "ok", "cache": "unavailable", "vector_store": "ok"}
        # Degraded still serves (uncached): only "unhealthy" takes the replica out of rotation.
        assert (await api.client.get("/health/ready")).status_code == 200


async def test_graphiql_is_served(api: Api) -> None:
    response = await api.client.get("/graphql", headers={"accept": "text/html"})
    assert response.status_code == 200 and "graphiql" in response.text.lower()


PERFORMANCE = (
    "{ performanceMetrics { totalRequests totalErrors totalClientErrors p50LatencyMs"
    " p95LatencyMs errorRate cacheHitRate operations queryCount } }"
)


async def test_metrics_count_requests_and_errors_of_the_callers_tenant(api: Api) -> None:
    token, _ = await api.register("ops@a.example", "a.example")
    other, _ = await api.register("ops@b.example", "b.example")
    for _ in range(3):
        await api.ok("query Listing { items { id } }", token=token)
    await api.gql("{ nope }", token=token)
    api.recommender.fail_with = RuntimeError("engine down")
    await api.gql("{ recommendations { totalCount } }", token=token)
    metrics = (await api.ok(PERFORMANCE, token=token))["performanceMetrics"]
    # the 3 lists, the invalid query and the failed recommendation, all tenant a's
    assert metrics["totalRequests"] == 5
    # The server's fault is an error; the client's invalid query is counted apart.
    assert (metrics["totalErrors"], metrics["totalClientErrors"]) == (1, 1)
    assert 0 < metrics["p50LatencyMs"] <= metrics["p95LatencyMs"]
    assert metrics["errorRate"] == 1 / 5
    assert metrics["operations"]["query:Listing"] == 3
    # Served queries: the 3 lists; the refused and the failed ones were not served.
    assert metrics["queryCount"] == 3
    # Another tenant's admin sees none of it, not even the names of tenant a's operations.
    theirs = (await api.ok(PERFORMANCE, token=other))["performanceMetrics"]
    assert "query:Listing" not in theirs["operations"] and theirs["totalErrors"] == 0
    assert theirs["queryCount"] == 0  # tenant a's queries are not counted for tenant b


async def test_a_repeated_document_is_parsed_and_validated_once(api: Api) -> None:
    from strawberry.extensions.parser_cache import _get_parse_cache
    from strawberry.extensions.validation_cache import _get_validate_cache

    from graph_api.schema import DOCUMENT_CACHE_SIZE

    parse, validate = (
        _get_parse_cache(DOCUMENT_CACHE_SIZE),
        _get_validate_cache(DOCUMENT_CACHE_SIZE),
    )
    query = "{ __typename repeatedDocumentProbe: __typename }"
    await api.gql(query)
    before = (parse.cache_info().hits, validate.cache_info().hits)
    for _ in range(3):
        assert (await api.gql(query))["data"]["repeatedDocumentProbe"] == "Query"
    assert parse.cache_info().hits - before[0] == 3
    assert validate.cache_info().hits - before[1] == 3
    # the limits still hold for a cached document: a too-deep query is refused every time
    for _ in range(2):
        payload = await api.gql(DEEP)
        assert "exceeds maximum operation depth" in payload["errors"][0]["message"]


INTROSPECT = "{ __schema { queryType { name } } }"


async def test_introspection_and_graphiql_are_off_in_production(tmp_path) -> None:
    production = make_settings(tmp_path, env="production")
    assert not production.introspection_enabled
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/prod.db", production) as api:
        refused = await api.gql(INTROSPECT)
        assert refused["data"] is None and "introspection" in refused["errors"][0]["message"]
        page = await api.client.get("/graphql", headers={"Accept": "text/html"})
        assert "graphiql" not in page.text.lower()
        assert (await api.gql("{ __typename }"))["data"] == {"__typename": "Query"}
    # on elsewhere, and an operator can turn it on in production too
    assert make_settings(tmp_path).introspection_enabled
    assert make_settings(
        tmp_path, env="production", graphql_introspection=True
    ).introspection_enabled


async def test_introspection_and_graphiql_are_on_in_development(api: Api) -> None:
    assert (await api.gql(INTROSPECT))["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    page = await api.client.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


GRAPHQL_RESPONSE = "application/graphql-response+json"


async def _post_accepting(api: Api, accept: str, body: dict[str, Any]) -> httpx.Response:
    return await api.client.post("/graphql", json=body, headers={"accept": accept})


async def test_graphql_response_json_is_negotiated_with_its_status_codes(api: Api) -> None:
    ok = await _post_accepting(api, GRAPHQL_RESPONSE, {"query": "{ __typename }"})
    assert ok.status_code == 200
    assert ok.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert ok.json() == {"data": {"__typename": "Query"}}
    # Request errors (parse, validation, variable coercion) have no data entry and a 400.
    for body in (
        {"query": "{ me { id "},
        {"query": "{ nope }"},
        {"query": "query($id: UUID!) { item(id: $id) { id } }", "variables": {"id": "x"}},
    ):
        refused = await _post_accepting(api, f"{GRAPHQL_RESPONSE}, application/json;q=0.9", body)
        assert refused.status_code == 400, body
        assert refused.headers["content-type"].startswith(GRAPHQL_RESPONSE)
        assert "data" not in refused.json() and refused.json()["errors"]
    # A field error is still a 200 with data, as the spec asks.
    field_error = await _post_accepting(api, GRAPHQL_RESPONSE, {"query": "{ me { id } }"})
    assert field_error.status_code == 200
    assert field_error.json()["data"] is None
    assert field_error.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_application_json_keeps_its_behaviour(api: Api) -> None:
    for accept in ("application/json", "*/*", f"application/json, {GRAPHQL_RESPONSE};q=0.5"):
        response = await _post_accepting(api, accept, {"query": "{ nope }"})
        assert response.status_code == 200, accept
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["data"] is None


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_cors_allows_the_configured_origins_only(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, cors_origins="https://shop.example, https://admin.shop.example"
    )
    assert settings.cors_origins == ["https://shop.example", "https://admin.shop.example"]
    async with running_api(f"sqlite+aiosqlite:///{tmp_path}/cors.db", settings) as api:
        allowed = await api.client.options("/graphql", headers=_preflight("https://shop.example"))
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "POST" in allowed.headers["access-control-allow-methods"]
        refused = await api.client.options("/graphql", headers=_preflight("https://evil.example"))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        answer = await api.client.post(
            "/graphql",
            json={"query": "{ __typename }"},
            headers={"Origin": "https://admin.shop.example"},
        )
        assert answer.headers["access-control-allow-origin"] == "https://admin.shop.example"


async def test_cors_is_off_by_default(api: Api) -> None:
    assert api.settings.cors_origins == []
    preflight = await api.client.options("/graphql", headers=_preflight("https://shop.example"))
    assert "access-control-allow-origin" not in preflight.headers
    answer = await api.client.post(
        "/graphql", json={"query": "{ __typename }"}, headers={"Origin": "https://shop.example"}
    )
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
