"""Interaction-to-pushed-update latency: ``recordInteraction`` over HTTP until the subscriber's
``recommendationUpdates`` push arrives over a real graphql-transport-ws websocket.

One synthetic tenant (the serving benchmark's: 500 users x 400 items) is ingested and trained
once. Variants:

- ``single``: uvicorn running ``create_app`` over ``InProcessRecommender``, in this process;
- ``serve``: the full Serve app (ingress, combiner, engines) in a child process, as
  ``benchmarks.serve`` starts it.

A few users each hold one subscription; interactions rotate over them, one at a time, on items
the user has not seen, so every push is a fresh fold-in (the user's cached results were just
dropped). Prints one table: p50 / p99 / max of the push latency and of the mutation alone.

    python -m benchmarks.realtime [--interactions 50] [--subscribers 5] [--variants single,serve]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.serve import READY_TIMEOUT_S, _child_environment, _free_port, _start, _stop
from benchmarks.serve_load import prepare_tenant, wait_ready
from tests.graph_api.ws_client import GraphQLSocket, graphql_socket, live_server

ENGINES = ["popularity", "item_knn", "ease", "als"]
UPDATES = "subscription { recommendationUpdates(numRecommendations: 10) { score item { id } } }"
RECORD = """mutation($input: InteractionInput!) { recordInteraction(input: $input) { id } }"""
ITEMS = "query($offset: Int!) { items(limit: 100, offset: $offset) { id } }"
PUSH_TIMEOUT_S = 30.0


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


async def run_single(tokens: list[str], args: Any) -> dict:
    from deployments.inprocess import InProcessRecommender
    from graph_api.app import create_app
    from storage.settings import Settings

    settings = Settings(scheduler_enabled=False)  # no retraining in the middle of a measurement
    app = create_app(recommender=InProcessRecommender(settings, ENGINES), settings=settings)
    async with live_server(app, lifespan="on") as address:
        return await measure(f"http://{address}", tokens, args.interactions, args.subscribers)


def run_serve(tokens: list[str], args: Any) -> dict:
    port = _free_port()
    process = _start("serve", port, dict(os.environ))
    base = f"http://127.0.0.1:{port}"

    async def go() -> dict:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            await wait_ready(http, READY_TIMEOUT_S, process)
        return await measure(base, tokens, args.interactions, args.subscribers)

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, default=50)
    parser.add_argument("--subscribers", type=int, default=5)
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
            if variant == "single":
                results[variant] = asyncio.run(run_single(tokens, args))
            else:
                results[variant] = run_serve(tokens, args)
    print_table(results)


if __name__ == "__main__":
    main()
