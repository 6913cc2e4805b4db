"""Authentication and tenant isolation, tested as security defects: refused, and nothing leaks."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import pytest

from graph_api.auth import ISSUER, Principal, TokenService
from tests.graph_api.conftest import Api

ITEM = "00000000-0000-4000-8000-000000000001"
OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("me", "{ me { id email } }", {}),
    ("user", "query($id: UUID!) { user(id: $id) { id } }", {"id": ITEM}),
    ("users", "{ users { id } }", {}),
    ("item", "query($id: UUID!) { item(id: $id) { id } }", {"id": ITEM}),
    ("items", "{ items { id } }", {}),
    ("recommendations", "{ recommendations { totalCount } }", {}),
    ("similarItems", "query($id: UUID!) { similarItems(itemId: $id) { score } }", {"id": ITEM}),
    ("trendingItems", "{ trendingItems { score } }", {}),
    ("rateLimitStatus", "{ rateLimitStatus { remaining } }", {}),
    ("performanceMetrics", "{ performanceMetrics { totalRequests } }", {}),
    (
        "recordInteraction",
        'mutation($id: UUID!) { recordInteraction(input: {itemId: $id, interactionType: "view"})'
        " { id } }",
        {"id": ITEM},
    ),
    (
        "rateItem",
        "mutation($id: UUID!) { rateItem(input: {itemId: $id, rating: 4}) { rating } }",
        {"id": ITEM},
    ),
    (
        "updatePreferences",
        'mutation { updatePreferences(input: {favoriteCategories: ["x"]}) { id } }',
        {},
    ),
    ("createItem", 'mutation { createItem(input: {title: "x"}) { id } }', {}),
    (
        "updateItem",
        'mutation($id: UUID!) { updateItem(id: $id, input: {title: "x"}) { id } }',
        {"id": ITEM},
    ),
    ("deleteItem", "mutation($id: UUID!) { deleteItem(id: $id) }", {"id": ITEM}),
    ("importItems", 'mutation { importItems(items: [{title: "x"}]) { imported } }', {}),
    (
        "importInteractions",
        "mutation($id: UUID!) { importInteractions(input: [{userId: $id, itemId: $id,"
        ' interactionType: "view", occurredAt: "2025-01-01T00:00:00Z"}]) { imported } }',
        {"id": ITEM},
    ),
    ("trainModel", "mutation { trainModel { jobId } }", {}),
]


def _claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims = {
        "sub": str(uuid.uuid4()),
        "tid": str(uuid.uuid4()),
        "role": "admin",
        "tier": "basic",
        "type": "access",
        "iss": ISSUER,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    return claims | overrides


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bad_token(kind: str, secret: str) -> str | None:
    if kind == "none":
        return None
    if kind == "expired":
        past = datetime.now(UTC) - timedelta(hours=2)
        return jwt.encode(_claims(iat=past, exp=past + timedelta(minutes=1)), secret, "HS256")
    if kind == "other_key":
        return jwt.encode(_claims(), "another-secret-0123456789-abcdefghij", "HS256")
    if kind == "alg_none":
        header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
        payload = _claims(iat=int(datetime.now(UTC).timestamp()), exp=int(2e9))
        return f"{header}.{_b64(orjson.dumps(payload))}."
    if kind == "other_alg":
        return jwt.encode(_claims(), secret, "HS512")
    if kind == "refresh_as_access":
        return jwt.encode(_claims(type="refresh"), secret, "HS256")
    if kind == "missing_exp":
        claims = _claims()
        del claims["exp"]
        return jwt.encode(claims, secret, "HS256")
    return "not.a.jwt"


TOKEN_KINDS = [
    "none",
    "expired",
    "other_key",
    "alg_none",
    "other_alg",
    "refresh_as_access",
    "missing_exp",
    "garbage",
]


@pytest.mark.parametrize("kind", TOKEN_KINDS)
async def test_every_operation_refuses_a_missing_or_bad_token(api: Api, kind: str) -> None:
    token = bad_token(kind, api.settings.jwt_secret.get_secret_value())
    for name, query, variables in OPERATIONS:
        response = await api.post(query, variables, token)
        assert response.status_code == 200, (name, response.text)
        payload = response.json()
        assert payload["data"] is None, name
        assert [e["extensions"]["code"] for e in payload["errors"]] == ["UNAUTHENTICATED"], name
        assert "Traceback" not in response.text
    assert api.recommender.requests == [] and api.recommender.trained == []


async def test_valid_token_passes_the_same_checks(api: Api) -> None:
    """The refusals above are about the token: a good one of a real user gets through."""
    token, _ = await api.register("ok@a.example", "a.example")
    data = await api.ok("{ me { email role } rateLimitStatus { remaining } }", token=token)
    assert data["me"] == {"email": "ok@a.example", "role": "admin"}


@pytest.fixture
async def two_tenants(api: Api) -> dict[str, Any]:
    token_a, user_a = await api.register("alice@a.example", "a.example")
    member_a, member_id = await api.register("mallory@a.example", "a.example")
    token_b, user_b = await api.register("bob@b.example", "b.example")
    item = await api.ok(
        'mutation { createItem(input: {title: "Secret A item", category: "a-only"}) { id } }',
        token=token_a,
    )
    item_a = item["createItem"]["id"]
    await api.ok(
        'mutation($id: UUID!) { recordInteraction(input: {itemId: $id, interactionType: "view"})'
        " { id } }",
        {"id": item_a},
        token_a,
    )
    return {
        "token_a": token_a,
        "user_a": user_a,
        "token_b": token_b,
        "user_b": user_b,
        "member_a": member_a,
        "member_id": member_id,
        "item_a": item_a,
    }


async def test_tenant_b_cannot_reach_tenant_a(api: Api, two_tenants: dict[str, Any]) -> None:
    t = two_tenants
    secrets = [t["item_a"], t["user_a"], "Secret A item", "alice@a.example", "a.example"]
    refused = {
        "user": {"id": t["user_a"]},
        "item": {"id": t["item_a"]},
        "similarItems": {"id": t["item_a"]},
        "recordInteraction": {"id": t["item_a"]},
        "rateItem": {"id": t["item_a"]},
        "updateItem": {"id": t["item_a"]},
        "deleteItem": {"id": t["item_a"]},
    }
    queries = {name: query for name, query, _ in OPERATIONS}
    for name, variables in refused.items():
        response = await api.post(queries[name], variables, t["token_b"])
        payload = response.json()
        assert payload["errors"][0]["extensions"]["code"] == "NOT_FOUND", (name, payload)
        body = response.text.replace(t["item_a"], "").replace(t["user_a"], "")
        assert not any(secret in body for secret in secrets[2:]), (name, body)
    listing = await api.post(
        "{ users { id email tenant { domain } } items { id title tenant { domain } }"
        " recommendations { items { item { id tenant { domain } } } }"
        " trendingItems { item { id } } }",
        token=t["token_b"],
    )
    assert not any(secret in listing.text for secret in secrets), listing.text
    # Tenant A's data is untouched by B's attempts.
    item = await api.ok(
        "query($id: UUID!) { item(id: $id) { title averageRating } }",
        {"id": t["item_a"]},
        t["token_a"],
    )
    assert item["item"] == {"title": "Secret A item", "averageRating": None}
    me = await api.ok("{ me { interactions { interactionType } } }", token=t["token_a"])
    assert len(me["me"]["interactions"]) == 1


async def test_a_forged_tenant_claim_sees_nothing(api: Api, two_tenants: dict[str, Any]) -> None:
    """Even a validly signed token for an unknown tenant/user reaches no data: the account
    check finds no such user in that tenant and refuses the token outright."""
    forged = TokenService(api.settings).issue(
        Principal(uuid.uuid4(), uuid.UUID(two_tenants["user_a"]), "admin"), "access"
    )
    response = await api.post(
        "query($id: UUID!) { item(id: $id) { id } }", {"id": two_tenants["item_a"]}, forged
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert response.json()["data"] is None
    me = await api.gql("{ me { id } }", token=forged)
    assert me["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_plain_users_cannot_administer(api: Api, two_tenants: dict[str, Any]) -> None:
    member = two_tenants["member_a"]
    admin_only = [
        "users",
        "performanceMetrics",
        "createItem",
        "updateItem",
        "deleteItem",
        "importItems",
        "importInteractions",
        "trainModel",
    ]
    for name, query, variables in OPERATIONS:
        if name in admin_only:
            variables = {"id": two_tenants["item_a"]} if "id" in variables else variables
            payload = await api.gql(query, variables, member)
            assert payload["errors"][0]["extensions"]["code"] == "FORBIDDEN", name
    other = await api.gql(
        "query($id: UUID!) { user(id: $id) { email } }", {"id": two_tenants["user_a"]}, member
    )
    assert other["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "alice" not in str(other)
    assert api.recommender.trained == []
