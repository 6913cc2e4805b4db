"""Interaction-to-pushed-update latency: ``recordInteraction`` over HTTP until the subscriber's
``recommendationUpdates`` push arrives over a real graphql-transport-ws websocket.

One synthetic tenant (the serving benchmark's: 500 users x 400 items) is ingested and trained
once. Variants:

- ``single``: uvicorn running ``create_app`` over ``InProcessService``, in this process;
- ``serve``: the full Serve app (ingress, combiner, engines) in a child process, as
  ``benchmarks.serve`` starts it.

A few users each hold one subscription; interactions rotate over them, one at a time, on items
the user has not seen, so every push is a fresh fold-in (the user's cached results were just
dropped). Prints one table: p50 / p99 / max of the push latency and of the mutation alone.

Then new items (``--new-items``): an admin creates an item like an existing one X (X's title,
description, category and tags: the same product listed again), after a new user viewed X; the
clock runs from sending ``createItem`` until the new item is listed by ``similarItems(X)`` and
until it is in that user's ``recommendations`` (the exploration slot for items newer than the
last training). Second table: p50 / p99 / max of
both, and the share within 1 s. In the ``serve`` variant without ``RECSERVE_QDRANT_URL`` the
new items' vectors go through the app's one ``vectors`` replica, which holds the embedded store.

    python -m benchmarks.realtime [--interactions 50] [--subscribers 5] [--new-items 20]
        [--variants single,serve]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.serve import READY_TIMEOUT_S, _child_environment, _free_port, _start, _stop
from benchmarks.serve_load import DOMAIN, prepare_tenant, wait_ready
from tests.graph_api.ws_client import GraphQLSocket, graphql_socket, live_server

ENGINES = ["popularity", "item_knn", "ease", "als"]
UPDATES = "subscription { recommendationUpdates(numRecommendations: 10) { score item { id } } }"
RECORD = """mutation($input: InteractionInput!) { recordInteraction(input: $input) { id } }"""
ITEMS = "query($offset: Int!) { items(limit: 100, offset: $offset) { id } }"
PUSH_TIMEOUT_S = 30.0
CREATE_ITEM = "mutation($input: ItemInput!) { createItem(input: $input) { id } }"
ITEM_TEXT = """
query($offset: Int!) {
  items(limit: 100, offset: $offset) { id title description category tags }
}"""
SIMILAR = "query($id: UUID!) { similarItems(itemId: $id, topK: 10) { item { id } } }"
RECOMMEND = "query { recommendations(options: {numRecommendations: 10}) { items { item { id } } } }"
# A new item not found by then counts as this long (and as missing the 1 s target).
NEW_ITEM_TIMEOUT_S = 5.0
POLL_S = 0.01


async def _post(http: httpx.AsyncClient, query: str, variables: dict, token: str) -> Any:
    body = {"query": query, "variables": variables}
    response = await http.post("/graphql", json=body, headers={"Authorization": f"Bearer {token}"})
    payload = response.json()
    if response.status_code != 200 or "errors" in payload:
        raise RuntimeError(f"GraphQL request failed: {response.status_code} {payload}")
    return payload["data"]


async def _catalogue(http: httpx.AsyncClient, token: str) -> list[str]:
    ids: list[str] = []
    while batch := (await _post(http, ITEMS, {"offset": len(ids)}, token))["items"]:
        ids.extend(entry["id"] for entry in batch)
    return ids


async def _one_push(
    http: httpx.AsyncClient, ws: GraphQLSocket, token: str, item_id: str
) -> tuple[float, float]:
    """(ms until the push arrived, ms until the mutation answered), both from the send."""
    started = time.perf_counter()
    variables = {"input": {"itemId": item_id, "interactionType": "click"}}
    await _post(http, RECORD, variables, token)
    replied = time.perf_counter()
    await ws.next_data(wait_s=PUSH_TIMEOUT_S)
    pushed = time.perf_counter()
    return (pushed - started) * 1000.0, (replied - started) * 1000.0


async def measure(base: str, tokens: list[str], interactions: int, subscribers: int) -> dict:
    rng = np.random.default_rng(7)
    users = [tokens[int(i)] for i in rng.choice(len(tokens), subscribers, replace=False)]
    ws_url = base.replace("http://", "ws://") + "/graphql"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http, AsyncExitStack() as stack:
        items = await _catalogue(http, users[0])
        sockets = [await stack.enter_async_context(graphql_socket(ws_url, t)) for t in users]
        for ws in sockets:
            await ws.subscribe(UPDATES)
            await ws.next_data(wait_s=PUSH_TIMEOUT_S)  # the list as of subscribing
        push_ms, mutation_ms = [], []
        for n in range(interactions):
            which = n % subscribers
            item_id = items[int(rng.integers(len(items)))]
            push, mutation = await _one_push(http, sockets[which], users[which], item_id)
            push_ms.append(push)
            mutation_ms.append(mutation)
    return {"push": push_ms, "mutation": mutation_ms}


async def _until_listed(
    http: httpx.AsyncClient, query: str, variables: dict, token: str, field: str, item_id: str
) -> float:
    """Seconds (from now) until ``item_id`` is in the list ``field``; the timeout if never."""
    started = time.perf_counter()
    while time.perf_counter() - started < NEW_ITEM_TIMEOUT_S:
        data = await _post(http, query, variables, token)
        entries = data[field]["items"] if field == "recommendations" else data[field]
        if item_id in {entry["item"]["id"] for entry in entries}:
            return time.perf_counter() - started
        await asyncio.sleep(POLL_S)
    return NEW_ITEM_TIMEOUT_S


async def measure_new_items(base: str, admin: str, tokens: list[str]) -> dict:
    """Per new item (one per token): ms from sending createItem to it being in similarItems of
    its model item, and to it being in the recommendations of a new user who viewed that item.
    """
    rng = np.random.default_rng(11)
    created_ms, similar_ms, recommended_ms = [], [], []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        catalogue: list[dict] = []
        while batch := (await _post(http, ITEM_TEXT, {"offset": len(catalogue)}, admin))["items"]:
            catalogue.extend(batch)
        # Distinct model items never copied before (an earlier variant's copies are still in
        # the catalogue): two identical new items would tie for the one exploration slot.
        titles = Counter(item["title"] for item in catalogue)
        unique = [item for item in catalogue if titles[item["title"]] == 1]
        picks = rng.choice(len(unique), size=len(tokens), replace=False)
        for user, pick in zip(tokens, picks, strict=True):
            model = unique[int(pick)]
            variables = {"input": {"itemId": model["id"], "interactionType": "view"}}
            await _post(http, RECORD, variables, user)
            item = {
                "title": model["title"],
                "description": model["description"],
                "category": model["category"],
                "tags": model["tags"],
            }
            started = time.perf_counter()
            new = (await _post(http, CREATE_ITEM, {"input": item}, admin))["createItem"]["id"]
            created = time.perf_counter() - started
            similar = created + await _until_listed(
                http, SIMILAR, {"id": model["id"]}, user, "similarItems", new
            )
            recommended = created + await _until_listed(
                http, RECOMMEND, {}, user, "recommendations", new
            )
            created_ms.append(created * 1000.0)
            similar_ms.append(min(similar, NEW_ITEM_TIMEOUT_S) * 1000.0)
            recommended_ms.append(min(recommended, NEW_ITEM_TIMEOUT_S) * 1000.0)
    return {"create": created_ms, "similar": similar_ms, "recommended": recommended_ms}


async def new_item_tokens(data_dir: Path, users: int, variant: str) -> tuple[str, list[str]]:
    """An admin of the benchmark tenant (items are created by admins) and ``users`` users
    without any history, one per new item and variant: their list is about the one item they
    view (a user reused by the next variant would carry the first one's view along)."""
    from cluster import operations as ops
    from storage.settings import Settings

    settings = Settings(data_dir=data_dir)
    database = await ops.open_database(settings)
    try:
        admin = await ops.issue_token_in(
            database, settings, domain=DOMAIN, email="bench-admin@bench.example", admin=True
        )
        fresh = [
            await ops.issue_token_in(
                database, settings, domain=DOMAIN, email=f"bench-new-{variant}-{n}@bench.example"
            )
            for n in range(users)
        ]
    finally:
        await database.dispose()
    return admin.access_token, [issued.access_token for issued in fresh]


async def run_single(tokens: list[str], args: Any) -> dict:
    from graph_api.app import create_app
    from recommend.inprocess import InProcessService
    from storage.settings import Settings

    settings = Settings(scheduler_enabled=False)  # no retraining in the middle of a measurement
    app = create_app(recommender=InProcessService(settings, ENGINES), settings=settings)
    async with live_server(app, lifespan="on") as address:
        base = f"http://{address}"
        result = await measure(base, tokens, args.interactions, args.subscribers)
        if args.new_items:
            result["new_items"] = await measure_new_items(base, args.admin, args.new_users)
        return result


def run_serve(tokens: list[str], args: Any) -> dict:
    port = _free_port()
    process = _start("serve", port, dict(os.environ))
    base = f"http://127.0.0.1:{port}"

    async def go() -> dict:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await wait_ready(http, READY_TIMEOUT_S, process)
        result = await measure(base, tokens, args.interactions, args.subscribers)
        if args.new_items:
            result["new_items"] = await measure_new_items(base, args.admin, args.new_users)
        return result

    try:
        return asyncio.run(go())
    finally:
        _stop(process)


def print_table(results: dict[str, dict]) -> None:
    header = f"{'variant':<10}{'n':>5}{'push p50':>10}{'push p99':>10}{'push max':>10}"
    header += f"{'mut p50':>10}{'mut p99':>10}{'<1s %':>8}"
    print(header)
    print("-" * len(header))
    for variant, row in results.items():
        push, mutation = np.array(row["push"]), np.array(row["mutation"])
        within = 100.0 * float(np.mean(push < 1000.0))
        print(
            f"{variant:<10}{len(push):>5}{np.percentile(push, 50):>10.1f}"
            f"{np.percentile(push, 99):>10.1f}{push.max():>10.1f}"
            f"{np.percentile(mutation, 50):>10.1f}{np.percentile(mutation, 99):>10.1f}"
            f"{within:>8.0f}"
        )
    print("(milliseconds; push = recordInteraction sent -> recommendationUpdates received)")
    rows = {variant: row["new_items"] for variant, row in results.items() if "new_items" in row}
    if not rows:
        return
    print()
    header = f"{'variant':<10}{'n':>5}{'create p50':>12}"
    for name in ("similar", "recommended"):
        header += f"{name[:5] + ' p50':>12}{name[:5] + ' p99':>12}{name[:5] + ' max':>12}"
        header += f"{'<1s %':>8}"
    print(header)
    print("-" * len(header))
    for variant, row in rows.items():
        line = f"{variant:<10}{len(row['create']):>5}{np.percentile(row['create'], 50):>12.1f}"
        for name in ("similar", "recommended"):
            values = np.array(row[name])
            line += f"{np.percentile(values, 50):>12.1f}{np.percentile(values, 99):>12.1f}"
            line += f"{values.max():>12.1f}{100.0 * float(np.mean(values < 1000.0)):>8.0f}"
        print(line)
    print(
        "(milliseconds from sending createItem until the new item is in similarItems of the item"
        " it resembles / in the recommendations of a new user who viewed that item)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=5)
    parser.add_argument("--new-items", type=int, default=20)
    parser.add_argument("--variants", default="single,serve")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",")]
    if unknown := sorted(set(variants) - {"single", "serve"}):
        parser.error(f"unknown variants: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="recserve-bench-realtime-") as tmp:
        os.environ.update(_child_environment(Path(tmp)))
        started = time.perf_counter()
        tokens = asyncio.run(prepare_tenant(Path(tmp), ENGINES))
        print(
            f"trained {', '.join(ENGINES)} in {time.perf_counter() - started:.1f}s", file=sys.stderr
        )
        results = {}
        for variant in variants:
            args.admin, args.new_users = asyncio.run(
                new_item_tokens(Path(tmp), args.new_items, variant)
            )
            if variant == "single":
                results[variant] = asyncio.run(run_single(tokens, args))
            else:
                results[variant] = run_serve(tokens, args)
    print_table(results)


if __name__ == "__main__":
    main()
