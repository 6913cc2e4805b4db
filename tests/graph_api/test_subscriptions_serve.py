"""Subscriptions through the real Serve app: a websocket through the Serve proxy to the ingress.

The tenant is trained first, so the pushed update comes from real engines folding in the new
interaction (item-kNN, EASE, content use the request's history), not from a fake.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.graph_api.test_flow import CREATE_ITEM, RECORD
from tests.graph_api.test_serve_e2e import ENGINES, Client, deployed_app
from tests.graph_api.test_subscriptions_ws import ACTIVITY, ITEM_EVENTS
from tests.graph_api.ws_client import graphql_socket, refused_close_code
from training.pipeline import train_tenant_async

pytestmark = [pytest.mark.ray, pytest.mark.slow]

UPDATES = """subscription {
  recommendationUpdates(algorithm: "item_knn", numRecommendations: 3) { score item { id } }
}"""


async def _seed(client: Client, settings: Any) -> tuple[str, str, list[str]]:
    """Ada (tenant A) with a trained catalogue of 6 items, and Bob alone in tenant B."""
    ada, _ = await client.register("ada@live-serve.example", "live-serve.example")
    items = []
    for n in range(6):
        data = await client.ok(CREATE_ITEM, {"input": {"title": f"Film {n}"}}, ada)
        items.append(data["createItem"]["id"])
    cy, _ = await client.register("cy@live-serve.example", "live-serve.example")
    # Cy links 0 with 1..3 and 4 with 5: Ada's history decides which of them she is offered.
    for item_id in items:
        await client.ok(RECORD, {"input": {"itemId": item_id, "interactionType": "view"}}, cy)
    await client.ok(RECORD, {"input": {"itemId": items[0], "interactionType": "view"}}, ada)
    tenant = (await client.ok("{ me { tenant { id } } }", token=ada))["me"]["tenant"]["id"]
    await train_tenant_async(settings, tenant, ENGINES, evaluate=False)
    bob, _ = await client.register("bob@other-serve.example", "other-serve.example")
    return ada, bob, items


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["item"]["id"] for entry in entries]


async def test_subscriptions_through_serve(
    serve_instance: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("serve-live")
    async with deployed_app(serve_instance, "live-sqlite", data_dir) as (client, settings):
        ada, bob, items = await _seed(client, settings)
        url = f"ws://127.0.0.1:{serve_instance}/live-sqlite/graphql"
        assert await refused_close_code(url, "forged.token.value") == 4403
        async with (
            graphql_socket(url, ada) as ws,
            graphql_socket(url, bob) as outsider,
            graphql_socket(url, bob) as prober,
        ):
            await ws.subscribe(UPDATES)
            await outsider.subscribe(ACTIVITY)
            await outsider.subscribe("subscription { tenantEvents(onlyMine: false) }")
            await prober.subscribe(ITEM_EVENTS, {"id": items[0]})
            refused = await prober.receive(wait_s=30)
            assert refused["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            first = _ids((await ws.next_data(wait_s=30))["recommendationUpdates"])
            assert first and items[0] not in first
            target = first[0]
            await client.ok(RECORD, {"input": {"itemId": target, "interactionType": "click"}}, ada)
            pushed = _ids((await ws.next_data(wait_s=10))["recommendationUpdates"])
            assert target not in pushed and pushed != first
            assert await outsider.nothing_within(1.0)
