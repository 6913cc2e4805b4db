"""Result cache: cached vs uncached ``recommendations`` through the GraphQL app, in-process.

One synthetic tenant (``benchmarks.serve_load``: 500 users x 400 items) is ingested and trained
into a temporary data dir; ``create_app`` over ``recommend.inprocess.InProcessService``
is driven by httpx over ASGI (no sockets), so the figures are the API's own cost. For each cache
backend (in-process, plus Redis with ``--redis``) and client count:

- ``uncached``: every request is a different user, so every request misses and computes;
- ``cached``: the same users again, so every request is answered from the result cache.

Prints one table (p50, p99, requests/s, and uncached/cached ratios); the rate limits are lifted
so they are not what is measured.

    python -m benchmarks.cache [--requests 200] [--clients 1,8] [--redis redis://127.0.0.1:6379/5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serve_load import prepare_tenant
from graph_api.app import create_app
from recommend.inprocess import InProcessService
from storage.settings import Settings

ENGINES = ["popularity", "item_knn", "ease", "als", "content"]
QUERY = """query($k: Int!) {
  recommendations(options: {numRecommendations: $k}) {
    totalCount explanation { cached } items { score item { id title } }
  }
}"""
UNLIMITED = {
    tier: {"per_user": 10**9, "per_tenant": 10**9} for tier in ("basic", "premium", "enterprise")
}


async def _post(client: httpx.AsyncClient, token: str) -> tuple[float, bool]:
    started = time.perf_counter()
    response = await client.post(
        "/graphql",
        json={"query": QUERY, "variables": {"k": 10}},
        headers={"Authorization": f"Bearer {token}"},
    )
    elapsed = (time.perf_counter() - started) * 1000.0
    payload = response.json()
    if response.status_code != 200 or "errors" in payload:
        raise RuntimeError(f"request failed: {response.status_code} {payload}")
    return elapsed, bool(payload["data"]["recommendations"]["explanation"]["cached"])


async def _phase(client: httpx.AsyncClient, tokens: list[str], clients: int) -> dict[str, Any]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for token in tokens:
        queue.put_nowait(token)
    results: list[tuple[float, bool]] = []

    async def worker() -> None:
        while not queue.empty():
            results.append(await _post(client, queue.get_nowait()))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    latencies = sorted(ms for ms, _ in results)
    return {
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "rps": len(results) / wall,
        "hit_share": sum(hit for _, hit in results) / len(results),
    }


async def _backend(
    data_dir: Path, redis_url: str | None, tokens: list[str], args: argparse.Namespace
) -> list[dict[str, Any]]:
    settings = Settings(
        data_dir=data_dir,
        redis_url=redis_url,
        rate_limit_tiers=UNLIMITED,
        scheduler_enabled=False,  # no retraining in the middle of a measurement
    )
    app = create_app(recommender=InProcessService(settings, ENGINES), settings=settings)
    rows = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            await _post(client, tokens[-1])  # load the models once, outside the figures
            offset = 0
            for clients in args.clients:
                batch = tokens[offset : offset + args.requests]
                offset += args.requests
                uncached = await _phase(client, batch, clients)
                cached = await _phase(client, batch, clients)
                rows.append(
                    {"backend": "redis" if redis_url else "memory", "clients": clients}
                    | {"uncached": uncached, "cached": cached}
                )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'backend':<8} {'clients':>7} {'path':<9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>8} {'hits':>5} | {'p50 x':>6} {'p99 x':>6} {'rps x':>6}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        miss, hit = row["uncached"], row["cached"]
        for path, figures in (("uncached", miss), ("cached", hit)):
            ratios = (
                f"{miss['p50'] / hit['p50']:>6.1f} {miss['p99'] / hit['p99']:>6.1f} "
                f"{hit['rps'] / miss['rps']:>6.1f}"
                if path == "cached"
                else f"{'':>6} {'':>6} {'':>6}"
            )
            lines.append(
                f"{row['backend']:<8} {row['clients']:>7} {path:<9} {figures['p50']:>8.2f} "
                f"{figures['p99']:>8.2f} {figures['rps']:>8.1f} {figures['hit_share']:>5.0%} | "
                + ratios
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="recserve-bench-cache-") as tmp:
        data_dir = Path(tmp)
        tokens = await prepare_tenant(data_dir, ENGINES)
        needed = args.requests * len(args.clients) + 1
        if len(tokens) < needed:
            raise SystemExit(f"{needed} distinct users needed, the tenant has {len(tokens)}")
        rows = await _backend(data_dir, None, tokens, args)
        if args.redis:
            rows += await _backend(data_dir, args.redis, tokens, args)
    print("recommendations, uncached (every user new) vs cached (same users again)")
    print(_table(rows))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per phase")
    parser.add_argument("--clients", default="1,8", help="concurrent clients, comma-separated")
    parser.add_argument("--redis", default=None, help="also measure on this Redis URL")
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    return args


if __name__ == "__main__":
    asyncio.run(main(_parse()))
